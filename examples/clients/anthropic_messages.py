"""Anthropic SDK through Tollgate: a streamed Messages call.

    python examples/clients/anthropic_messages.py     # gateway on 127.0.0.1:10000 (make run)
"""
import os

import anthropic

base = os.environ.get("TOLLGATE_URL", "http://127.0.0.1:10000")
client = anthropic.Anthropic(base_url=base, api_key=os.environ.get("ANTHROPIC_API_KEY", "sk-ant-test"),
                             default_headers={"x-tollgate-consumer": "examples"})
with client.messages.stream(model="claude-3-5-sonnet-20241022", max_tokens=256,
                            messages=[{"role": "user", "content": "Hello, Claude"}]) as stream:
    text = "".join(stream.text_stream)
    usage = stream.get_final_message().usage
print(text, "| usage:", usage.input_tokens, "in,", usage.output_tokens, "out")
