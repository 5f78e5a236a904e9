"""One OpenAI client, many providers: the gateway routes by model name (make run's table).

    python examples/clients/many_providers.py         # gateway on 127.0.0.1:10000 (make run)
"""
import os

from openai import OpenAI

base = os.environ.get("TOLLGATE_URL", "http://127.0.0.1:10000")
client = OpenAI(base_url=base + "/v1", api_key="anything")
print([m.id for m in client.models.list()])
for model in ["gpt-4o-mini", "claude", "gemini-2.5-flash", "bedrock/claude-3-5-haiku"]:
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}])
    print(model, "->", reply.choices[0].message.content, reply.usage.total_tokens)
