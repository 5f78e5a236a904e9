"""Claude through the clouds' own paths, with Tollgate in front: the Anthropic SDK's Bedrock
client (InvokeModel, SigV4-signed by the SDK) and Vertex AI client (`rawPredict`), boto3's
bedrock-runtime client (Llama), and Google's Gen AI SDK embedding on Vertex AI (`:predict`).
Tollgate counts, guards and limits them without changing them: Bedrock's own token counts are
read from its headers and its stream's last chunk, Vertex AI's from each embedding's statistics.

    python examples/clients/cloud_sdks.py     # gateway on 127.0.0.1:10000 (make run)

Needs `pip install "anthropic[bedrock,vertex]" boto3 google-genai`. The credentials below are the mock
provider's (it checks each signature); against the real clouds, drop them and let the SDKs find
yours, and point Envoy's route at bedrock-runtime.<region>.amazonaws.com and
<region>-aiplatform.googleapis.com.
"""
import json
import os

import anthropic
import boto3
import google.oauth2.credentials
from google import genai
from google.genai import types

base = os.environ.get("TOLLGATE_URL", "http://127.0.0.1:10000")
aws = {"aws_access_key": "AKIDTOLLGATEMOCK", "aws_secret_key": "tollgate-mock-secret-key", "aws_region": "us-east-1"}
hello = [{"role": "user", "content": "Hello, how are you?"}]

bedrock = anthropic.AnthropicBedrock(base_url=base, **aws)
message = bedrock.messages.create(model="anthropic.claude-3-5-haiku-20241022-v1:0", max_tokens=256, messages=hello)
print("bedrock:", message.content[0].text, "| usage:", message.usage.input_tokens, "in,", message.usage.output_tokens, "out")

vertex = anthropic.AnthropicVertex(base_url=base + "/v1", region="us-east5", project_id="my-project",
                                   access_token="ya29.example")
with vertex.messages.stream(model="claude-sonnet-4@20250514", max_tokens=256, messages=hello) as stream:
    text = "".join(stream.text_stream)
    usage = stream.get_final_message().usage
print("vertex:", text, "| usage:", usage.input_tokens, "in,", usage.output_tokens, "out")

runtime = boto3.client("bedrock-runtime", endpoint_url=base, region_name=aws["aws_region"],
                       aws_access_key_id=aws["aws_access_key"], aws_secret_access_key=aws["aws_secret_key"])
answer = runtime.invoke_model_with_response_stream(modelId="meta.llama3-1-70b-instruct-v1:0",
                                                   body=json.dumps({"prompt": "How far is the moon?", "max_gen_len": 128}))
print("llama:", "".join(json.loads(event["chunk"]["bytes"])["generation"] for event in answer["body"]))

google = genai.Client(vertexai=True, project="my-project", location="us-central1", http_options=types.HttpOptions(base_url=base),
                      credentials=google.oauth2.credentials.Credentials(token="ya29.example"))
embedded = google.models.embed_content(model="text-embedding-005", contents=["How far is the moon?", "Hello, how are you?"])
print("vertex embeddings:", len(embedded.embeddings), "| tokens:", [e.statistics.token_count for e in embedded.embeddings])
