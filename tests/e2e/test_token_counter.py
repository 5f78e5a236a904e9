"""token-counter end to end: the built .wasm in a real Envoy 1.40, the mock provider, real SDKs.

Every assertion compares against the mock's known usage (tests/fixtures/manifest.json): the
Prometheus counters Envoy exports, the JSON access-log line, and the bytes the client received.
"""
import gzip
import json
import uuid

import anthropic
import openai
import pytest
import requests

from conftest import MANIFEST
from harness import Envoy, delta, metric_sum, wait_until

USAGE_METRIC = "tollgate_gen_ai_client_token_usage"


def metrics_after(gateway, before, consumer, requests):
    """The metrics once `requests` more requests of `consumer` are counted. A stream's end reaches
    the filter a moment after the client has read its last event ([DONE], message_stop), so on a
    busy machine the counters can lag what the SDK has already returned."""
    def counted():
        after = gateway.metrics()
        return after if delta(before, after, "tollgate_gen_ai_requests", consumer=consumer) >= requests else None
    return wait_until(counted, timeout=10, what=f"requests of {consumer} counted")
TOKEN_TYPES = [("input", "input"), ("output", "output"), ("total", "total"), ("cached_input", "cached_input"),
               ("cache_creation_input", "cache_creation"), ("reasoning", "reasoning")]
ACCESS_FIELDS = [("input_tokens", "input"), ("output_tokens", "output"), ("total_tokens", "total"),
                 ("cached_input_tokens", "cached_input"), ("cache_creation_input_tokens", "cache_creation"),
                 ("reasoning_tokens", "reasoning")]


def auth_headers(provider):
    return {
        "openai": {"authorization": "Bearer sk-test"},
        "azure": {"api-key": "azure-test-key"},
        "anthropic": {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"},
        "gemini": {"x-goog-api-key": "gemini-test-key"},
        "vertex": {"authorization": "Bearer ya29.test"},
        "bedrock": {"authorization": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/us-east-1/bedrock/aws4_request, SignedHeaders=host, Signature=0"},
    }[provider]


FORM_BOUNDARY = "tollgate-e2e-form-7MA4YWxkTrZu0gW"


def case_body(case):
    """A case's request as its client sends it, and its content type: JSON, or for a `form_file`
    case a multipart form (the `request` members as text fields, then the file)."""
    if "form_file" not in case:
        return json.dumps(case["request"]).encode(), "application/json"
    file = case["form_file"]
    body = b"".join(f'--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                    for name, value in case["request"].items())
    body += (f'--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name="{file["field"]}"; filename="{file["filename"]}"\r\n'
             f'Content-Type: {file["content_type"]}\r\n\r\n').encode()
    body += bytes(i % 251 for i in range(file["bytes"])) + f"\r\n--{FORM_BOUNDARY}--\r\n".encode()
    return body, f"multipart/form-data; boundary={FORM_BOUNDARY}"


def send(base, case, consumer, extra=None):
    request_id = str(uuid.uuid4())
    body, content_type = case_body(case)
    headers = {"content-type": content_type, "x-mock-case": case["name"], "x-tollgate-consumer": consumer,
               "x-request-id": request_id, **auth_headers(case["provider"]), **(extra or {})}
    response = requests.post(base + case["path"], data=body, headers=headers, timeout=30)
    return response, request_id


def expected_usage_check(gateway, before, after, case, consumer, request_id):
    name = case["name"]
    usage = case["usage"]
    entry = gateway.access_entry(request_id)
    if usage is None:
        assert delta(before, after, USAGE_METRIC, consumer=consumer) == 0, name
        assert delta(before, after, "tollgate_gen_ai_requests", consumer=consumer, error_type=str(case["status"])) == 1, name
        assert entry["usage"] == "none", (name, entry)
        return
    for token_type, key in TOKEN_TYPES:
        got = delta(before, after, USAGE_METRIC, consumer=consumer, gen_ai_token_type=token_type,
                    gen_ai_request_model=entry["gen_ai_request_model"], gen_ai_response_model=case["response_model"],
                    gen_ai_provider_name=case["provider"])
        assert got == usage[key], f"{name}: {token_type} metric {got} != {usage[key]}"
    for field, key in ACCESS_FIELDS:
        assert entry[field] == str(usage[key]), f"{name}: access log {field} {entry[field]} != {usage[key]}"
    assert entry["usage"] == "reported", (name, entry)
    assert entry["gen_ai_response_model"] == case["response_model"], name
    assert entry["gen_ai_provider"] == case["provider"], name
    assert int(entry["estimated_input_tokens"]) > 0, name
    assert delta(before, after, "tollgate_gen_ai_requests", consumer=consumer, error_type="") == 1, name


@pytest.mark.parametrize("case", MANIFEST, ids=[c["name"] for c in MANIFEST])
def test_every_fixture_is_counted_exactly_and_delivered_unaltered(gateway, mock, case):
    consumer = "case-" + case["name"]
    before = gateway.metrics()
    response, request_id = send(gateway.url, case, consumer)
    assert response.status_code == case["status"], response.text[:300]
    after = gateway.metrics()
    expected_usage_check(gateway, before, after, case, consumer, request_id)

    body, content_type = case_body(case)
    recorded = mock.last_request(case["path"].split("?")[0])["body"]
    if "form_file" in case:
        assert recorded == body.decode("utf-8", errors="replace"), "the form forwarded unchanged"
    elif case.get("openai_include_usage") and not (case["request"].get("stream_options") or {}).get("include_usage"):
        assert json.loads(recorded)["stream_options"] == {"include_usage": True}, "include_usage injected upstream"
    else:
        assert json.loads(recorded or "null") == case["request"], "forwarded unchanged"
    # The client gets exactly what the provider sends for the request the client sent.
    direct = requests.post(mock.url + case["path"], data=body, timeout=30,
                           headers={"content-type": content_type, "x-mock-case": case["name"], **auth_headers(case["provider"])})
    assert response.content == direct.content, f"{case['name']}: client bytes differ from the provider's"


def openai_client(gateway, consumer):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-test", default_headers={"x-tollgate-consumer": consumer})


def test_openai_sdk_chat_non_streaming(gateway):
    before = gateway.metrics()
    client = openai_client(gateway, "sdk-openai")
    completion = client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "Hello!"}])
    assert completion.choices[0].message.content == "Hello! How can I assist you today?"
    assert completion.usage.total_tokens == 29
    after = gateway.metrics()
    assert delta(before, after, USAGE_METRIC, consumer="sdk-openai", gen_ai_token_type="input") == 19
    assert delta(before, after, USAGE_METRIC, consumer="sdk-openai", gen_ai_token_type="output") == 10


def test_openai_sdk_streaming_sees_exactly_the_stream_it_asked_for(gateway, mock):
    before = gateway.metrics()
    client = openai_client(gateway, "sdk-openai-stream")
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello! How can I help you today?"
    assert all(c.usage is None for c in chunks), "the SDK must not see usage it did not ask for"
    assert all(c.choices for c in chunks), "no usage-only chunk reaches the client"
    assert json.loads(mock.last_request("/v1/chat/completions")["body"])["stream_options"] == {"include_usage": True}
    after = metrics_after(gateway, before, "sdk-openai-stream", 1)
    assert delta(before, after, USAGE_METRIC, consumer="sdk-openai-stream", gen_ai_token_type="input") == 19
    assert delta(before, after, USAGE_METRIC, consumer="sdk-openai-stream", gen_ai_token_type="output") == 9


def test_openai_sdk_streaming_with_include_usage_keeps_its_usage_chunk(gateway):
    client = openai_client(gateway, "sdk-openai-usage")
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}],
                                                  stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 28


def test_openai_sdk_tool_call_stream(gateway):
    before = gateway.metrics()
    client = openai_client(gateway, "sdk-tools")
    stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Weather in Recife?"}], stream=True,
                                            tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
                                            extra_headers={"x-mock-case": "openai-chat-tools-stream"})
    arguments = "".join(c.choices[0].delta.tool_calls[0].function.arguments or "" for c in stream if c.choices and c.choices[0].delta.tool_calls)
    assert json.loads(arguments) == {"city": "Recife", "unit": "celsius"}
    after = metrics_after(gateway, before, "sdk-tools", 1)
    assert delta(before, after, USAGE_METRIC, consumer="sdk-tools", gen_ai_token_type="total") == 99


def test_openai_sdk_embeddings_and_responses(gateway):
    before = gateway.metrics()
    client = openai_client(gateway, "sdk-more")
    embedding = client.embeddings.create(model="text-embedding-3-small", input="The food was delicious")
    assert len(embedding.data[0].embedding) == 4
    response = client.responses.create(model="gpt-4.1", input="Tell me a story")
    assert response.usage.total_tokens == 123
    events = list(client.responses.create(model="gpt-4.1", input="Say hi", stream=True))
    assert events[-1].type == "response.completed"
    after = gateway.metrics()
    assert delta(before, after, USAGE_METRIC, consumer="sdk-more", gen_ai_token_type="input") == 8 + 36 + 37
    assert delta(before, after, USAGE_METRIC, consumer="sdk-more", gen_ai_operation_name="embeddings", gen_ai_token_type="output") == 0


def test_openai_sdk_image_generation_is_counted(gateway):
    """GPT Image models bill tokens: `images.generate` is counted from its `usage`, whole or
    streamed (`image_generation.*` events, the usage in the last)."""
    before = gateway.metrics()
    client = openai_client(gateway, "sdk-images")
    prompt = "A watercolor lighthouse on a rocky coast at dawn"
    image = client.images.generate(model="gpt-image-1", prompt=prompt, size="1024x1024", quality="low")
    assert (image.usage.input_tokens, image.usage.output_tokens, len(image.data)) == (18, 272, 1)
    events = list(client.images.generate(model="gpt-image-1", prompt=prompt, stream=True, partial_images=1))
    assert [e.type for e in events] == ["image_generation.partial_image", "image_generation.completed"]
    after = metrics_after(gateway, before, "sdk-images", 2)
    labels = {"consumer": "sdk-images", "gen_ai_operation_name": "image_generation", "gen_ai_request_model": "gpt-image-1"}
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="input", **labels) == 18 + 18
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="output", **labels) == 272 + 272


def test_openai_sdk_image_edits_are_counted(gateway, mock):
    """`images.edit` sends a multipart form (the prompt and model, then the image): counted from
    its usage, whole or streamed, the image passed on untouched."""
    client = openai_client(gateway, "sdk-image-edits")
    image = b"\x89PNG\r\n\x1a\n" + b"IDAT" * 10000
    before = gateway.metrics()
    edited = client.images.edit(model="gpt-image-1", image=("lighthouse.png", image, "image/png"),
                                prompt="Add a red sailboat near the lighthouse")
    assert edited.usage.input_tokens == 354 and len(edited.data) == 1
    events = list(client.images.edit(model="gpt-image-1", image=("lighthouse.png", image, "image/png"),
                                     prompt="Add a red sailboat near the lighthouse", stream=True, partial_images=1))
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert "IDAT" * 10000 in mock.last_request("/images/edits")["body"], "the image reached the provider whole"
    after = metrics_after(gateway, before, "sdk-image-edits", 2)
    labels = {"consumer": "sdk-image-edits", "gen_ai_operation_name": "image_edit", "gen_ai_request_model": "gpt-image-1"}
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="input", **labels) == 354 + 354
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="output", **labels) == 272 + 272


def test_a_form_that_names_its_model_after_the_file_is_labelled_with_it(gateway):
    """OpenAI's curl example for transcriptions sends the file first (`-F file=@audio.mp3 -F
    model=gpt-4o-transcribe`): the model and prompt after 200 KB of audio are read as the form
    passes (the audio never held) and label the usage."""
    boundary = "----tollgate-curl-order"
    audio = bytes(i % 251 for i in range(200_000))
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
            "Content-Type: audio/wav\r\n\r\n").encode() + audio + b"\r\n"
    for name, value in (("model", "gpt-transcribe"), ("prompt", "Tollgate, Envoy")):
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    body += f"--{boundary}--\r\n".encode()
    before = gateway.metrics()
    reply = requests.post(gateway.url + "/v1/audio/transcriptions", data=body, timeout=30,
                          headers={"content-type": f"multipart/form-data; boundary={boundary}",
                                   "authorization": "Bearer sk-test", "x-tollgate-consumer": "curl-order"})
    assert reply.status_code == 200 and reply.json()["usage"]["total_tokens"] == 71
    after = metrics_after(gateway, before, "curl-order", 1)
    assert delta(before, after, USAGE_METRIC, consumer="curl-order", gen_ai_token_type="total",
                 gen_ai_request_model="gpt-transcribe") == 71


def test_openai_sdk_compaction_is_counted(gateway):
    """`responses.compact` sends the whole conversation and bills tokens: counted from its usage."""
    before = gateway.metrics()
    client = openai_client(gateway, "sdk-compact")
    compacted = client.responses.compact(model="gpt-5.5", instructions="You are a travel planner.", input=[
        {"role": "user", "content": "Plan a three-day walking tour of Lisbon."},
        {"role": "assistant", "content": "Day 1: Alfama and the castle. Day 2: Baixa and Chiado. Day 3: Belém."}])
    assert compacted.object == "response.compaction" and [o.type for o in compacted.output] == ["message", "compaction"]
    after = metrics_after(gateway, before, "sdk-compact", 1)
    labels = {"consumer": "sdk-compact", "gen_ai_operation_name": "compact", "gen_ai_request_model": "gpt-5.5"}
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="input", **labels) == 1264
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="output", **labels) == 318


def test_openai_sdk_cache_writes_are_counted(gateway):
    """OpenAI's prompt cache writes (`prompt_cache_options`, `input_tokens_details.cache_write_tokens`)
    are counted as cache creation, part of the input, as the SDK reads them."""
    before = gateway.metrics()
    client = openai_client(gateway, "sdk-cache-write")
    response = client.responses.create(model="gpt-5.6", input="When does the contract renew?",
                                       prompt_cache_options={"ttl": "12h"},
                                       extra_headers={"x-mock-case": "openai-responses-cache-write"})
    details = response.usage.input_tokens_details
    assert (details.cache_write_tokens, details.cache_write_tokens_details.ttl_12h_tokens) == (6144, 6144)
    after = metrics_after(gateway, before, "sdk-cache-write", 1)
    labels = {"consumer": "sdk-cache-write", "gen_ai_request_model": "gpt-5.6"}
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="cache_creation_input", **labels) == 6144
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="input", **labels) == 6212


def test_openai_sdk_decisions_are_counted(gateway, mock):
    """`decisions.create` (OpenAI's classification and scoring API) bills tokens: counted from its
    usage, the request passed on unchanged."""
    before = gateway.metrics()
    client = openai_client(gateway, "sdk-decisions")
    questions = [{"type": "predicate", "name": "is_complaint", "instructions": "The customer is complaining."},
                 {"type": "choice", "name": "department", "instructions": "Which department should handle this?",
                  "choices": [{"value": "billing"}, {"value": "shipping"}, {"value": "other"}]}]
    decision = client.decisions.create(model="gpt-6-luna", input="I was charged twice for order 4521!",
                                       questions=questions)
    assert [a.type for a in decision.answers] == ["predicate", "choice", "score"] and decision.usage.total_tokens == 221
    assert json.loads(mock.last_request("/v1/decisions")["body"])["questions"] == questions
    after = metrics_after(gateway, before, "sdk-decisions", 1)
    labels = {"consumer": "sdk-decisions", "gen_ai_operation_name": "decision", "gen_ai_request_model": "gpt-6-luna"}
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="input", **labels) == 212
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="output", **labels) == 9


def test_openai_sdk_transcription_is_counted(gateway, mock):
    """GPT transcription models bill tokens: `audio.transcriptions.create` (a multipart form with
    the audio) is counted from its usage, whole or streamed, with the model its form names; the
    audio goes through untouched; whisper-1, billed by the second, reports no tokens."""
    client = openai_client(gateway, "sdk-transcribe")
    audio = b"RIFF" + b"0123456789abcdef" * 12800  # 200 KiB (text, so the mock's record shows it)
    before = gateway.metrics()
    transcript = client.audio.transcriptions.create(model="gpt-transcribe", file=("speech.wav", audio, "audio/wav"),
                                                    prompt="Tollgate, Envoy")
    assert transcript.text.startswith("Tollgate counts") and transcript.usage.input_tokens == 57
    events = list(client.audio.transcriptions.create(model="gpt-transcribe", file=("speech.wav", audio, "audio/wav"),
                                                     stream=True))
    assert [e.type for e in events][-1] == "transcript.text.done" and events[-1].usage.total_tokens == 71
    assert audio.decode() in mock.last_request("/audio/transcriptions")["body"], "the audio reached the provider whole"
    after = metrics_after(gateway, before, "sdk-transcribe", 2)
    labels = {"consumer": "sdk-transcribe", "gen_ai_operation_name": "transcription", "gen_ai_request_model": "gpt-transcribe"}
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="input", **labels) == 57 + 57
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="output", **labels) == 14 + 14
    whisper = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", audio, "audio/wav"))
    assert whisper.usage.type == "duration"
    later = metrics_after(gateway, after, "sdk-transcribe", 1)
    assert delta(after, later, USAGE_METRIC, consumer="sdk-transcribe") == 0, "seconds are no tokens"


def test_openai_sdk_speech_is_counted(gateway, mock):
    """Text to speech with a GPT TTS model bills tokens: `audio.speech.create` answered with the
    audio (no usage in it: counted as a request, `usage_missing`) and streamed as SSE events (the
    `speech.audio.done` event's usage counted); the client gets the bytes the provider made."""
    client = openai_client(gateway, "sdk-speech")
    text = "Today is a wonderful day to build something people love!"
    before = gateway.metrics()
    audio = client.audio.speech.create(model="gpt-4o-mini-tts", voice="coral", input=text,
                                       instructions="Speak in a cheerful and positive tone.")
    made = (b"ID3\x04" + bytes(6) + bytes((i * 7 + 3) % 256 for i in range(400 * len(text))))[:400 * len(text)]
    assert audio.content == made, "the audio passed as the provider made it"
    with client.audio.speech.with_streaming_response.create(model="gpt-4o-mini-tts", voice="coral", input=text,
                                                            stream_format="sse") as response:
        streamed = response.read()
    events = [json.loads(line[len(b"data: "):]) for line in streamed.split(b"\n") if line.startswith(b"data: ")]
    assert [e["type"] for e in events] == ["speech.audio.delta"] * 3 + ["speech.audio.done"]
    assert events[-1]["usage"] == {"input_tokens": 14, "output_tokens": 101, "total_tokens": 115}
    assert json.loads(mock.last_request("/audio/speech")["body"])["input"] == text
    after = metrics_after(gateway, before, "sdk-speech", 2)
    labels = {"consumer": "sdk-speech", "gen_ai_operation_name": "speech", "gen_ai_request_model": "gpt-4o-mini-tts"}
    assert delta(before, after, "tollgate_gen_ai_requests", **labels) == 2
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="input", **labels) == 14
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="output", **labels) == 101
    assert delta(before, after, "tollgate_token_counter_unread", reason="usage_missing") == 1, "the audio's request"


def test_azure_openai_sdk(gateway):
    before = gateway.metrics()
    client = openai.AzureOpenAI(azure_endpoint=gateway.url, api_key="azure-test-key", api_version="2024-10-21",
                                default_headers={"x-tollgate-consumer": "sdk-azure"})
    completion = client.chat.completions.create(model="gpt-4o-prod", messages=[{"role": "user", "content": "Olá"}])
    assert completion.choices[0].message.content == "Olá! Como posso ajudar?"
    chunks = list(client.chat.completions.create(model="gpt-4o-prod", messages=[{"role": "user", "content": "Olá"}], stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Olá! Como posso ajudar?"
    assert all(c.usage is None for c in chunks)
    after = gateway.metrics()
    assert delta(before, after, USAGE_METRIC, consumer="sdk-azure", gen_ai_provider_name="azure", gen_ai_token_type="total") == 22 + 21


def anthropic_client(gateway, consumer):
    return anthropic.Anthropic(base_url=gateway.url, api_key="sk-ant-test", default_headers={"x-tollgate-consumer": consumer})


def test_anthropic_sdk_non_streaming_and_streaming(gateway):
    before = gateway.metrics()
    client = anthropic_client(gateway, "sdk-anthropic")
    message = client.messages.create(model="claude-sonnet-4-20250514", max_tokens=1024, messages=[{"role": "user", "content": "Hello, Claude"}])
    assert message.content[0].text == "Hello! How can I help you today?"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 12)
    with client.messages.stream(model="claude-3-5-sonnet-20241022", max_tokens=1024, messages=[{"role": "user", "content": "Hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello! How can I help?"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (25, 15)
    after = metrics_after(gateway, before, "sdk-anthropic", 2)
    assert delta(before, after, USAGE_METRIC, consumer="sdk-anthropic", gen_ai_token_type="input") == 21 + 25
    assert delta(before, after, USAGE_METRIC, consumer="sdk-anthropic", gen_ai_token_type="output") == 12 + 15


def test_anthropic_sdk_cache_and_tool_use_stream(gateway):
    before = gateway.metrics()
    client = anthropic_client(gateway, "sdk-anthropic-tools")
    with client.messages.stream(model="claude-sonnet-4-20250514", max_tokens=1024, messages=[{"role": "user", "content": "Weather?"}],
                                extra_headers={"x-mock-case": "anthropic-tool-stream"}) as stream:
        final = stream.get_final_message()
    assert final.content[1].input == {"city": "Recife", "unit": "celsius"}
    after = metrics_after(gateway, before, "sdk-anthropic-tools", 1)
    assert delta(before, after, USAGE_METRIC, consumer="sdk-anthropic-tools", gen_ai_token_type="cached_input") == 1024
    assert delta(before, after, USAGE_METRIC, consumer="sdk-anthropic-tools", gen_ai_token_type="input") == 1496


def test_anthropic_sdk_thinking_and_hour_long_cache_writes(gateway):
    """Extended thinking with the system prompt cached for an hour: the SDK's final usage has the
    thinking tokens and the one-hour writes; the metrics count them as reasoning and cache creation."""
    before = gateway.metrics()
    client = anthropic_client(gateway, "sdk-anthropic-thinking")
    with client.messages.stream(model="claude-opus-4-6", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
                                system=[{"type": "text", "text": "You answer questions about this contract.",
                                         "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
                                messages=[{"role": "user", "content": "Summarise the supplier's obligations."}],
                                extra_headers={"x-mock-case": "anthropic-thinking-stream"}) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.usage.output_tokens_details.thinking_tokens == 350
    after = metrics_after(gateway, before, "sdk-anthropic-thinking", 1)
    totals = {kind: delta(before, after, USAGE_METRIC, consumer="sdk-anthropic-thinking", gen_ai_token_type=kind)
              for kind in ("input", "output", "reasoning", "cache_creation_input")}
    assert totals == {"input": 2078, "output": 412, "reasoning": 350, "cache_creation_input": 2048}


# Bedrock's InvokeModel through the AWS-signing clients: the Anthropic SDK's Bedrock client (Claude,
# Anthropic's own format inside) and boto3's bedrock-runtime client (Llama), whose botocore reads the
# event stream with the service's published model. Signed with the mock's known key, so the mock
# checks each signature: the gateway passes the request unaltered.
MOCK_AWS = {"aws_access_key": "AKIDTOLLGATEMOCK", "aws_secret_key": "tollgate-mock-secret-key", "aws_region": "us-east-1"}
HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"
LLAMA = "meta.llama3-1-70b-instruct-v1:0"


def bedrock_client(gateway, consumer):
    return anthropic.AnthropicBedrock(base_url=gateway.url, default_headers={"x-tollgate-consumer": consumer}, **MOCK_AWS)


def test_anthropic_bedrock_sdk_invoke_is_counted_from_bedrocks_own_counts(gateway):
    before = gateway.metrics()
    client = bedrock_client(gateway, "sdk-bedrock-invoke")
    hi = [{"role": "user", "content": "Hello, how are you?"}]
    message = client.messages.create(model=HAIKU, max_tokens=512, messages=hi)
    assert (message.content[0].text, message.usage.input_tokens, message.usage.output_tokens) == (
        "Hello! How can I help you today?", 14, 10)
    with client.messages.stream(model=HAIKU, max_tokens=512, messages=hi) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert (text, final.usage.cache_read_input_tokens) == ("Hello! How can I help?", 1024)
    after = metrics_after(gateway, before, "sdk-bedrock-invoke", 2)
    labels = {"consumer": "sdk-bedrock-invoke", "gen_ai_provider_name": "bedrock", "gen_ai_request_model": HAIKU,
              "gen_ai_operation_name": "chat"}
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="input", **labels) == 14 + 10 + 1024
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="output", **labels) == 10 + 15
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="cached_input", **labels) == 1024
    entries = [e for e in gateway.access_entries() if "/invoke" in (e.get("path") or "")][-2:]
    assert [e["usage"] for e in entries] == ["reported", "reported"], entries


def test_boto3_invoke_model_is_counted_whatever_the_model_family(gateway):
    import boto3

    client = boto3.client("bedrock-runtime", endpoint_url=gateway.url, region_name=MOCK_AWS["aws_region"],
                          aws_access_key_id=MOCK_AWS["aws_access_key"], aws_secret_access_key=MOCK_AWS["aws_secret_key"])

    def consumer_header(request, **_):
        request.headers["x-tollgate-consumer"] = "sdk-boto3-invoke"

    client.meta.events.register("before-sign.bedrock-runtime.*", consumer_header)
    before = gateway.metrics()
    body = json.dumps({"prompt": "How far is the moon?", "max_gen_len": 256})
    answer = client.invoke_model(modelId=LLAMA, body=body)
    assert json.loads(answer["body"].read())["generation"] == "The Moon is about 384,400 km from Earth."
    streamed = client.invoke_model_with_response_stream(modelId=LLAMA, body=body)
    chunks = [json.loads(event["chunk"]["bytes"]) for event in streamed["body"]]
    assert "".join(c["generation"] for c in chunks) == "The Moon is about 384,400 km from Earth."
    after = metrics_after(gateway, before, "sdk-boto3-invoke", 2)
    labels = {"consumer": "sdk-boto3-invoke", "gen_ai_provider_name": "bedrock", "gen_ai_request_model": LLAMA}
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="input", **labels) == 12 + 12
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="output", **labels) == 9 + 9


def test_anthropic_vertex_sdk_is_counted(gateway):
    """Claude on Vertex AI: the Anthropic SDK's Vertex client (`:rawPredict`, `:streamRawPredict`,
    and the token count, which reports no usage)."""
    before = gateway.metrics()
    client = anthropic.AnthropicVertex(region="us-east5", project_id="p-1", access_token="ya29.test", base_url=gateway.url + "/v1",
                                       default_headers={"x-tollgate-consumer": "sdk-vertex-claude"})
    hi = [{"role": "user", "content": "Hello, Claude"}]
    message = client.messages.create(model="claude-sonnet-4@20250514", max_tokens=1024, messages=hi)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 12)
    with client.messages.stream(model="claude-sonnet-4@20250514", max_tokens=1024, messages=hi) as stream:
        assert "".join(stream.text_stream) == "Hello! How can I help?"
    assert client.messages.count_tokens(model="claude-sonnet-4@20250514", messages=hi).input_tokens == 14
    after = metrics_after(gateway, before, "sdk-vertex-claude", 2)
    labels = {"consumer": "sdk-vertex-claude", "gen_ai_provider_name": "vertex", "gen_ai_request_model": "claude-sonnet-4@20250514"}
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="input", **labels) == 21 + 25
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="output", **labels) == 12 + 15
    assert delta(before, after, "tollgate_gen_ai_requests", consumer="sdk-vertex-claude") == 2, "the count is no generation"


def test_google_genai_sdk_vertex_embeddings_are_counted(gateway):
    """The Gen AI SDK's Vertex AI client embeds through `:predict` (text embedding models) and
    `:embedContent` (Gemini's): both report tokens there, and both are counted; the Gemini API's
    `:batchEmbedContents` reports none, and is no request for the token metrics."""
    from google import genai
    from google.genai import types
    import google.oauth2.credentials

    consumer = {"x-tollgate-consumer": "sdk-genai-vertex"}
    client = genai.Client(vertexai=True, project="demo", location="us-central1",
                          credentials=google.oauth2.credentials.Credentials(token="ya29.test"),
                          http_options=types.HttpOptions(base_url=gateway.url, headers=consumer))
    before = gateway.metrics()
    texts = ["What is the meaning of life?", "How much wood would a woodchuck chuck?"]
    predicted = client.models.embed_content(model="text-embedding-005", contents=texts)
    assert [e.statistics.token_count for e in predicted.embeddings] == [7, 8]
    embedded = client.models.embed_content(model="gemini-embedding-001", contents=texts[0])
    assert embedded.usage_metadata.prompt_token_count == 7
    gemini_api = genai.Client(api_key="AIza-test", http_options=types.HttpOptions(base_url=gateway.url, headers=consumer))
    assert len(gemini_api.models.embed_content(model="gemini-embedding-001", contents=texts).embeddings) == 2
    after = metrics_after(gateway, before, "sdk-genai-vertex", 2)
    labels = {"consumer": "sdk-genai-vertex", "gen_ai_provider_name": "vertex", "gen_ai_operation_name": "embeddings"}
    for model, tokens in [("text-embedding-005", 7 + 8), ("gemini-embedding-001", 7)]:
        assert delta(before, after, USAGE_METRIC, gen_ai_token_type="input", gen_ai_request_model=model, **labels) == tokens
        assert delta(before, after, USAGE_METRIC, gen_ai_token_type="output", gen_ai_request_model=model, **labels) == 0
    assert delta(before, after, "tollgate_gen_ai_requests", consumer="sdk-genai-vertex") == 2, "the Gemini API's is not"


def test_anthropic_sdk_gets_the_providers_error(gateway):
    client = anthropic_client(gateway, "sdk-anthropic-error")
    with pytest.raises(anthropic.BadRequestError) as error:
        client.messages.create(model="claude-sonnet-4-20250514", max_tokens=10, messages=[], extra_headers={"x-mock-status": "400"})
    assert error.value.body["error"]["type"] == "invalid_request_error"


# ---- bad input and the awkward cases ---------------------------------------------------------

def test_non_ai_traffic_passes_untouched_and_makes_no_metrics(gateway):
    before = gateway.metrics()
    response = requests.get(gateway.url + "/mock/health", timeout=5)
    assert response.json() == {"ok": True}
    response = requests.post(gateway.url + "/v1/unknown", data=b"\x00\x01binary", timeout=5)
    assert response.status_code == 404
    after = gateway.metrics()
    # Counters only: histograms of earlier requests are flushed on Envoy's own schedule.
    def tollgate(m):
        return {k: v for k, v in m.items() if k[0].startswith("tollgate") and not k[0].endswith(("_bucket", "_sum", "_count"))}
    assert tollgate(before) == tollgate(after)


def test_malformed_json_request_is_forwarded_unchanged_and_counted(gateway, mock):
    before = gateway.metrics()
    body = b'{"model": "gpt-4o", "messages": [ {"role": "user", "content": "unterminated'
    response = requests.post(gateway.url + "/v1/chat/completions", data=body, timeout=5,
                             headers={"content-type": "application/json", "authorization": "Bearer sk-test"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error", "the provider's own error reaches the client"
    assert mock.last_request("/v1/chat/completions")["body"].encode() == body
    after = gateway.metrics()
    assert delta(before, after, "tollgate_token_counter_unread", reason="request_malformed_json") == 1

    # JSON with a field of the wrong type: forwarded as sent too (no include_usage added to this
    # streaming request), counted under its own reason.
    body = b'{"model": "gpt-4o", "stream": true, "max_tokens": "many", "messages": [{"role": "user", "content": "hi"}]}'
    requests.post(gateway.url + "/v1/chat/completions", data=body, timeout=5,
                  headers={"content-type": "application/json", "authorization": "Bearer sk-test"})
    assert mock.last_request("/v1/chat/completions")["body"].encode() == body
    later = wait_until(lambda: (m := gateway.metrics()) and delta(
        after, m, "tollgate_token_counter_unread", reason="request_invalid_field") == 1 and m)
    assert delta(after, later, "tollgate_token_counter_unread", reason="request_malformed_json") == 0


def test_gzip_response_is_read_and_delivered_valid(gateway):
    before = gateway.metrics()
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-test",
                           default_headers={"x-tollgate-consumer": "gzip", "x-mock-gzip": "1", "accept-encoding": "gzip"})
    completion = client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "Hello!"}])
    assert completion.usage.total_tokens == 29
    raw = requests.post(gateway.url + "/v1/chat/completions", timeout=5, stream=True,
                        data=json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": []}),
                        headers={"content-type": "application/json", "authorization": "Bearer sk-test", "x-mock-gzip": "1",
                                 "accept-encoding": "gzip", "x-tollgate-consumer": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert b"[DONE]" in gzip.decompress(raw.raw.read())
    after = gateway.metrics()
    assert delta(before, after, USAGE_METRIC, consumer="gzip", gen_ai_token_type="total") == 29 + 28


def test_upstream_reset_mid_stream_is_marked_incomplete(gateway):
    before = gateway.metrics()
    request_id = str(uuid.uuid4())
    with pytest.raises(requests.exceptions.RequestException):
        r = requests.post(gateway.url + "/v1/messages", timeout=10, stream=True,
                          data=json.dumps({"model": "claude-3-5-sonnet-20241022", "max_tokens": 50, "stream": True, "messages": []}),
                          headers={"content-type": "application/json", "x-api-key": "k", "x-mock-fault": "reset-mid-stream",
                                   "x-tollgate-consumer": "reset", "x-request-id": request_id})
        b"".join(r.iter_content(64))
    entry = gateway.access_entry(request_id)
    assert entry["usage"] == "incomplete"
    assert entry["input_tokens"] == "25", "message_start had arrived before the reset"
    after = gateway.metrics()
    assert delta(before, after, "tollgate_gen_ai_requests", consumer="reset", error_type="incomplete") == 1
    # The worker keeps serving.
    assert openai_client(gateway, "after-reset").chat.completions.create(model="gpt-4.1", messages=[]).usage.total_tokens == 29


def test_response_trailers_and_split_chunks(gateway):
    before = gateway.metrics()
    for chunking in ("split", "bytes:7"):
        response = requests.post(gateway.url + "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", timeout=10,
                                 data=json.dumps({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}),
                                 headers={"content-type": "application/json", "x-goog-api-key": "k", "x-mock-trailers": "1",
                                          "x-mock-chunking": chunking, "x-tollgate-consumer": "trailers"})
        assert response.status_code == 200
    after = gateway.metrics()
    assert delta(before, after, USAGE_METRIC, consumer="trailers", gen_ai_token_type="total") == 2 * 25


def test_http2_upstream(work, mock):
    gateway = Envoy(work, mock, name="h2", h2=True)
    try:
        before = gateway.metrics()
        client = anthropic_client(gateway, "h2")
        with client.messages.stream(model="claude-3-5-sonnet-20241022", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]) as stream:
            assert "".join(stream.text_stream) == "Hello! How can I help?"
        client = openai_client(gateway, "h2")
        chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=[], stream=True))
        assert all(c.usage is None for c in chunks)
        # The counters are written when Envoy ends the stream, which may be just after the
        # client read its last byte.
        wait_until(lambda: delta(before, gateway.metrics(), USAGE_METRIC, consumer="h2", gen_ai_token_type="total") == 40 + 28,
                   timeout=5, what="h2 usage counted")
    finally:
        gateway.stop()


def test_body_over_envoys_buffer_limit_gets_a_json_413(work, mock):
    gateway = Envoy(work, mock, name="small-buffer", buffer_limit=4096)
    try:
        big = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 20000}]}
        response = requests.post(gateway.url + "/v1/chat/completions", data=json.dumps(big), timeout=10,
                                 headers={"content-type": "application/json", "authorization": "Bearer sk-test"})
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"
        anthropic_big = {"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "y" * 20000}]}
        response = requests.post(gateway.url + "/v1/messages", data=json.dumps(anthropic_big), timeout=10,
                                 headers={"content-type": "application/json", "x-api-key": "k"})
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "request_too_large"
        assert metric_sum(gateway.metrics(), "tollgate_errors", reason="payload_too_large") == 2
        assert_a_form_is_not_held(gateway)
    finally:
        gateway.stop()


def assert_a_form_is_not_held(gateway):
    """A transcription's form, far over the limit, is passed on as it comes once its fields are
    read: counted, never refused for its size."""
    case = next(c for c in MANIFEST if c["name"] == "openai-transcription")
    body, content_type = case_body(case)
    before = gateway.metrics()
    response = requests.post(gateway.url + case["path"], data=body, timeout=10,
                             headers={"content-type": content_type, "authorization": "Bearer sk-test"})
    assert response.status_code == 200 and response.json()["usage"]["total_tokens"] == 71, response.text[:200]
    def counted():
        after = gateway.metrics()
        return after if delta(before, after, USAGE_METRIC, gen_ai_token_type="total") else None
    after = wait_until(counted, timeout=10, what="the form counted")
    assert delta(before, after, USAGE_METRIC, gen_ai_token_type="total", gen_ai_request_model="gpt-transcribe") == 71


def test_configured_request_limit_and_consumer_property(work, mock):
    gateway = Envoy(work, mock, name="limited", filter_config={"max_request_bytes": 2000, "consumer_header": "x-team"})
    try:
        response = requests.post(gateway.url + "/v1/chat/completions", timeout=10,
                                 data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "z" * 3000}]}),
                                 headers={"content-type": "application/json", "authorization": "Bearer sk-test"})
        assert response.status_code == 413
        assert "2000 bytes" in response.json()["error"]["message"]
        before = gateway.metrics()
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-test", default_headers={"x-team": "payments"}).chat.completions.create(
            model="gpt-4.1", messages=[])
        assert delta(before, gateway.metrics(), USAGE_METRIC, consumer="payments", gen_ai_token_type="total") == 29
        assert_a_form_is_not_held(gateway)
    finally:
        gateway.stop()


def test_invalid_configuration_is_refused_naming_the_field(work, mock):
    gateway = Envoy(work, mock, name="bad-config", filter_config={"max_event_bytes": "lots"}, expect_failure=True)
    assert gateway.exit_code != 0
    log = gateway.log_text()
    assert "invalid configuration: max_event_bytes: invalid type" in log, log[-2000:]


def test_all_in_one_module_counts_the_same(work, mock):
    gateway = Envoy(work, mock, name="all-in-one", wasm="tollgate.wasm", filter_config={"token_counter": {"consumer_header": "x-tollgate-consumer"}})
    try:
        before = gateway.metrics()
        chunks = list(openai_client(gateway, "aio").chat.completions.create(model="gpt-4o-mini", messages=[], stream=True))
        assert all(c.usage is None for c in chunks)
        assert delta(before, gateway.metrics(), USAGE_METRIC, consumer="aio", gen_ai_token_type="total") == 28
    finally:
        gateway.stop()


def test_without_filter_state_the_access_log_fields_are_empty_and_metrics_the_same(work, mock):
    gateway = Envoy(work, mock, name="no-state", filter_config={"consumer_header": "x-tollgate-consumer", "filter_state": False})
    try:
        before = gateway.metrics()
        request_id = str(uuid.uuid4())
        chunks = list(openai_client(gateway, "no-state").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}], stream=True,
            extra_headers={"x-request-id": request_id}))
        assert all(c.usage is None for c in chunks), "the injected usage is still stripped"
        after = metrics_after(gateway, before, "no-state", 1)
        assert delta(before, after, USAGE_METRIC, consumer="no-state", gen_ai_token_type="total") == 28
        entry = gateway.access_entry(request_id)
        assert entry["status"] == 200
        assert all(entry[f] is None for f in ("gen_ai_request_model", "usage", "input_tokens", "total_tokens", "ttft_ms")), entry
    finally:
        gateway.stop()


def test_no_panics_and_no_prompt_text_in_logs(gateway):
    log = gateway.log_text()
    assert "panicked" not in log and "wasm_fail_stream" not in log
    assert "Hello, Claude" not in log and "unterminated" not in log and "sk-test" not in log


def test_readme_client_examples_run(run_gateway):
    """The snippets the README shows, run as a user would run them, against `make run`'s gateway."""
    gateway = run_gateway
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "TOLLGATE_URL": gateway.url, "TOLLGATE_ADMIN": gateway.admin}
    out = subprocess.run([sys.executable, os.path.join(root, "examples/clients/openai_chat.py")], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "plain:    Hello! How can I assist you today? | usage: 29 tokens" in out
    assert "streamed: Hello! How can I help you today?" in out
    out = subprocess.run([sys.executable, os.path.join(root, "examples/clients/anthropic_messages.py")], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "Hello! How can I help? | usage: 25 in, 15 out" in out
    out = subprocess.run([sys.executable, os.path.join(root, "examples/clients/cloud_sdks.py")], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "bedrock: Hello! How can I help you today? | usage: 14 in, 10 out" in out
    assert "vertex: Hello! How can I help? | usage: 25 in, 15 out" in out
    assert "llama: The Moon is about 384,400 km from Earth." in out
    assert "vertex embeddings: 2 | tokens: [6.0, 6.0]" in out
    metrics = subprocess.run([os.path.join(root, "examples/clients/metrics.sh")], env=env, capture_output=True, text=True,
                             timeout=30, check=True).stdout
    assert 'consumer="examples"' in metrics and "tollgate_gen_ai_client_token_usage" in metrics
    # Quota runs in shadow mode: every response says where the caller stands, nothing is refused.
    r = requests.post(gateway.url + "/v1/chat/completions", timeout=10, data=json.dumps({"model": "gpt-4.1", "messages": []}),
                      headers={"content-type": "application/json", "authorization": "Bearer sk-readme"})
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit-tokens"] == "100000" and r.headers["x-ratelimit-limit-requests"] == "600"
