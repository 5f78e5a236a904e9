"""OpenAI SDK through Tollgate: one plain and one streamed chat completion.

    python examples/clients/openai_chat.py            # gateway on 127.0.0.1:10000 (make run)
    TOLLGATE_URL=http://host:port python ...

With `make run` the mock provider answers; with `make run PROVIDER=openai`, set OPENAI_API_KEY
and the real API answers. The client never asks for usage in the stream: Tollgate counts it.
"""
import os

from openai import OpenAI

base = os.environ.get("TOLLGATE_URL", "http://127.0.0.1:10000")
client = OpenAI(base_url=base + "/v1", api_key=os.environ.get("OPENAI_API_KEY", "sk-test"),
                default_headers={"x-tollgate-consumer": "examples"})

reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}])
print("plain:   ", reply.choices[0].message.content, "| usage:", reply.usage.total_tokens, "tokens")

stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}], stream=True)
print("streamed:", "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))
