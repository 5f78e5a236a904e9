#!/usr/bin/env python3
"""Mock LLM provider: OpenAI, Azure OpenAI, Anthropic, Gemini/Vertex and Bedrock wire formats.

Serves the golden cases of tests/fixtures/manifest.json exactly as each provider would:
JSON bodies, SSE streams (CRLF for Gemini), Gemini's JSON-array stream, and Bedrock's binary
application/vnd.amazon.eventstream (encoded here with zlib.crc32, independently of the Rust
encoder). It validates what the real APIs validate (credentials present, required fields such as
Anthropic's max_tokens, JSON bodies) and answers with their error bodies. Anthropic's
`POST /v1/messages/count_tokens` answers `{"input_tokens": 14}`, OpenAI's
`POST /v1/decisions` the answers with their `usage`, `POST /v1/audio/speech` the audio (or, with `stream_format: sse`, `speech.audio.delta` events
and `speech.audio.done` with its `usage`), `POST /v1/images/generations` the GPT Image answer (JSON, or `image_generation.*` SSE events when
`stream` is true) with its `usage` (`/v1/images/edits`, a multipart form, likewise with
`image_edit.*` events), `/v1/audio/transcriptions` (a form) the transcript with token usage (or
`whisper-1`'s seconds), OpenAI's
`POST /v1/responses/input_tokens` `{"object": "response.input_tokens", "input_tokens": 14}`,
`POST /v1/responses/compact` the compacted conversation (`response.compaction`) with its `usage`,
`POST /v1/conversations` the conversation (and `…/conversations/{id}/items` the items added), Gemini's
`POST …/cachedContents` the CachedContent resource, and Bedrock's
`POST /model/{id}/count-tokens` `{"inputTokens": 14}` (COUNT_TOKENS_INPUT). Anthropic's
`POST /v1/messages/batches` answers the created batch, `in_progress` (its results are not served).
Claude on Vertex AI (`…/publishers/anthropic/models/{model}:rawPredict`, `:streamRawPredict`,
`count-tokens:rawPredict`) answers as Anthropic does, given an `anthropic_version` in the body
(the model in the path) and an OAuth bearer token.
Gemini's `:countTokens` answers `{"totalTokens": 14}`; `:embedContent` and `:batchEmbedContents`
answer 8-value embeddings derived from the content's hash (on Vertex AI with `usageMetadata`:
one token per word or punctuation mark); a Vertex AI text embedding model's `:predict` answers
one prediction per instance with its `statistics.token_count` (the same count); Imagen's `:predict`
its images (a 1×1 PNG each) and Veo's `:predictLongRunning` the operation's name; `:batchGenerateContent` answers the
pending batch operation. Bedrock's `/model/{id}/invoke` answers Claude bodies in Anthropic's
format and `prompt` bodies in Llama's, with Bedrock's `x-amzn-bedrock-*-token-count` headers;
`invoke-with-response-stream` answers the same families as event-stream `chunk` events (each
model event base64 in `bytes`, the last with `amazon-bedrock-invocationMetrics`), and Nova's
Converse-shaped `messages` with Nova's stream (ConverseStream's events in chunks).

Which case answers a request: the `x-mock-case` header, else the default case for the route and
stream flag. OpenAI chat streams carry usage only when the request asked for
`stream_options.include_usage` (as OpenAI does), so a gateway that injects it can be seen to.

Test knobs (request headers):
  x-mock-case: <name>            pick a manifest case
  x-mock-delay-ms: N             pause N ms before each stream event (and before headers)
  x-mock-slow-route: R           apply x-mock-delay-ms only to route R
  x-mock-fail-route: R           answer requests of route R (anthropic, openai-chat, gemini, …)
                                 with x-mock-fail-status (default 503) in R's error format
  x-mock-chunking: event|split|bytes:N   how stream bytes are written (default: event)
  x-mock-gzip: 1|deflate|br      compress the response: gzip, deflate (zlib) or br (uncompressed
                                 brotli meta-blocks: valid brotli, no library needed)
  x-mock-trailers: 1             end an HTTP/1.1 chunked response with trailers
  x-mock-pad: N                  add N bytes (an extra string field) to a JSON answer
  x-mock-fault: F                reset-before-headers | reset-after-headers | reset-mid-stream (close
                                 the connection there); stall-before-headers | stall-after-headers
                                 (sleep 60 s there); malformed (a 200 whose JSON is cut short, SSE
                                 events with broken JSON, an event-stream frame cut in the middle)
  x-mock-status: N               answer N with the provider's error body for it

Admin: GET /mock/requests (recent requests: method, path, headers, body), POST /mock/reset,
GET /mock/health, GET /v1/models.

Usage: mock_provider.py [--host ADDR] [--port P] [--h2-port P] [--port-file F]
"""
import argparse
import asyncio
import gzip
import hashlib
import json
import os
import re
import struct
import sys
import zlib
from urllib.parse import urlsplit, parse_qs

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "fixtures")
MAX_RECORDED = 200

with open(os.path.join(FIXTURES, "manifest.json")) as f:
    CASES = {c["name"]: c for c in json.load(f)["cases"]}


def load(case):
    path = os.path.join(FIXTURES, "responses", case["response"])
    with open(path, "rb") as f:
        return f.read()


BODIES = {name: load(case) for name, case in CASES.items()}
RECORDED = []
WITHOUT_USAGE = {}
COUNT_TOKENS_INPUT = 14  # every POST …/messages/count_tokens
# Required body fields, as each API reference lists them (Azure names the model in the path).
REQUIRED = {"openai-chat": ("model", "messages"), "openai-embeddings": ("model", "input"), "openai-responses": ("model",),
            "openai-responses-compact": ("model",),
            "openai-images": ("prompt",),
            "openai-speech": ("model", "input", "voice"),
            "openai-decisions": ("model", "input", "questions"),
            "anthropic": ("model", "messages", "max_tokens"), "anthropic-count-tokens": ("model", "messages"),
            "anthropic-batch": ("requests",),
            "anthropic-vertex": ("anthropic_version", "messages", "max_tokens"),
            "anthropic-vertex-count-tokens": ("model", "messages"),
            "bedrock-count-tokens": ("input",)}

# ---- wire helpers -------------------------------------------------------------------------------


def eventstream_frame(event_type, payload):
    """One AWS event-stream message with string headers (AWS 'Event stream encoding')."""
    headers = b""
    for name, value in ((":event-type", event_type), (":content-type", "application/json"), (":message-type", "event")):
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
    body = json.dumps(payload, separators=(",", ":")).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + headers + body
    return message + struct.pack(">I", zlib.crc32(message))


def sse_events(raw):
    """Splits an SSE fixture into its events, keeping their bytes (any line ending)."""
    text = raw.decode("utf-8")
    sep = "\r\n\r\n" if "\r\n\r\n" in text else "\n\n"
    parts = text.split(sep)
    return [(p + sep).encode() for p in parts if p.strip()], sep


def without_usage(event_bytes, sep):
    """OpenAI without include_usage: no `usage` members, no usage-only chunk."""
    text = event_bytes.decode()
    if not text.startswith("data: ") or text.startswith("data: [DONE]"):
        return event_bytes
    data = json.loads(text[len("data: "):].strip())
    if "usage" not in data:
        return event_bytes
    if data.get("usage") is not None and data.get("choices") == []:
        return None
    del data["usage"]
    return ("data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False) + sep).encode()


# ---- routing -----------------------------------------------------------------------------------

def route_of(path):
    p = urlsplit(path).path
    if p.startswith("/model/") and p.endswith("/count-tokens"):
        return "bedrock-count-tokens"
    if p.startswith("/model/"):
        if p.endswith("/invoke"):
            return "bedrock-invoke"
        if p.endswith("/invoke-with-response-stream"):
            return "bedrock-invoke-stream"
        if not (p.endswith("/converse") or p.endswith("/converse-stream")):
            return None
        return "bedrock-stream" if p.endswith("/converse-stream") else "bedrock"
    if "/publishers/anthropic/models/" in p:
        # Claude on Vertex AI: Messages bodies without `model` (it is in the path), answered as
        # Anthropic answers; `count-tokens:rawPredict` counts (its body names the model).
        if p.endswith("/count-tokens:rawPredict"):
            return "anthropic-vertex-count-tokens"
        return "anthropic-vertex" if p.endswith(":rawPredict") or p.endswith(":streamRawPredict") else None
    if "/models/" in p and (p.endswith(":predict") or p.endswith(":predictLongRunning")):
        model = p.rsplit("/models/", 1)[1].split(":")[0]
        text_embedding = ("embedding-" in model or model.startswith("textembedding")) and not model.startswith("multimodal")
        if text_embedding and "/publishers/google/models/" in p and p.endswith(":predict"):
            return "vertex-predict"
        return "google-predict"
    if ":streamGenerateContent" in p:
        return "gemini-stream"
    if ":generateContent" in p:
        return "gemini"
    if p.endswith("/chat/completions"):
        return "azure-chat" if p.startswith("/openai/deployments/") else "openai-chat"
    if re.search(r"/conversations/[^/]+/items$", p):
        return "openai-conversation"
    return next((route for suffix, route in SUFFIX_ROUTES if p.endswith(suffix)), None)


# The routes a path's ending names (the first that matches).
SUFFIX_ROUTES = (
    (":countTokens", "gemini-count-tokens"), (":embedContent", "gemini-embed"), (":batchEmbedContents", "gemini-embed"),
    (":batchGenerateContent", "gemini-batch"), ("/embeddings", "openai-embeddings"), ("/responses", "openai-responses"),
    ("/responses/input_tokens", "openai-input-tokens"), ("/responses/compact", "openai-responses-compact"),
    ("/audio/transcriptions", "openai-transcription"), ("/audio/translations", "openai-transcription"),
    ("/audio/speech", "openai-speech"), ("/v1/decisions", "openai-decisions"),
    ("/cachedContents", "gemini-cache"), ("/conversations", "openai-conversation"),
    ("/images/generations", "openai-images"), ("/images/edits", "openai-images-edit"), ("/messages", "anthropic"),
    ("/messages/count_tokens", "anthropic-count-tokens"), ("/messages/batches", "anthropic-batch"),
)


def default_case(route, stream, path):
    vertex = "/projects/" in path
    return {
        ("openai-chat", False): "openai-chat", ("openai-chat", True): "openai-chat-stream",
        ("azure-chat", False): "azure-chat", ("azure-chat", True): "azure-chat-stream",
        ("openai-embeddings", False): "openai-embeddings",
        ("openai-images", False): "openai-images", ("openai-images", True): "openai-images-stream",
        ("openai-responses", False): "openai-responses", ("openai-responses", True): "openai-responses-stream",
        ("openai-responses-compact", False): "openai-responses-compact",
        ("openai-transcription", False): "openai-transcription",
        ("openai-images-edit", False): "openai-images-edit", ("openai-images-edit", True): "openai-images-edit-stream",
        ("openai-transcription", True): "openai-transcription-stream",
        ("openai-speech", True): "openai-speech-stream",
        ("openai-decisions", False): "openai-decision",
        ("anthropic", False): "anthropic-messages", ("anthropic", True): "anthropic-messages-stream",
        ("anthropic-vertex", False): "anthropic-messages", ("anthropic-vertex", True): "anthropic-messages-stream",
        ("gemini", False): "vertex-generate" if vertex else "gemini-generate",
        ("gemini-stream", True): ("vertex-stream-sse" if vertex else "gemini-stream-sse") if "alt=sse" in path else "gemini-stream-array",
        ("bedrock", False): "bedrock-converse", ("bedrock-stream", True): "bedrock-converse-stream",
    }.get((route, stream))


def embed_tokens(text):
    """The mock's token count of an embedded text: its words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def embed_values(content):
    """Eight embedding values derived from the content's hash."""
    text = json.dumps(content, sort_keys=True).encode()
    return [round(b / 255 - 0.5, 6) for b in hashlib.sha256(text).digest()[:8]]


# A 1×1 transparent PNG: what each Imagen prediction carries (base64).
PNG_1X1 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def google_predict(path, request):
    """Imagen's `:predict` (`instances: [{prompt}]`, `parameters.sampleCount`, 4 by default) answers
    `predictions[]` of `{bytesBase64Encoded, mimeType}`; Veo's `:predictLongRunning` answers the
    long-running operation's name (the video is fetched later). Neither reports tokens."""
    instances = request.get("instances")
    if not isinstance(instances, list) or not instances or any(
            not isinstance(i, dict) or not isinstance(i.get("prompt"), str) for i in instances):
        return json_reply(400, error_body("gemini", 400, "Invalid instances: each must have a prompt string."))
    p = urlsplit(path).path
    if p.endswith(":predictLongRunning"):
        name = p.split(":")[0].lstrip("/").split("/", 1)[1] + "/operations/" + hashlib.sha256(p.encode()).hexdigest()[:16]
        return json_reply(200, {"name": name})
    parameters = request.get("parameters") if isinstance(request.get("parameters"), dict) else {}
    mime = (parameters.get("outputOptions") or {}).get("mimeType", "image/png")
    count = parameters.get("sampleCount", 4)
    return json_reply(200, {"predictions": [{"bytesBase64Encoded": PNG_1X1, "mimeType": mime} for _ in range(count)]})


def form_fields(content_type, body):
    """A multipart/form-data body (RFC 7578): its text fields, and its files' sizes; None when
    it is not one."""
    from email.parser import BytesParser
    from email.policy import HTTP

    if not content_type.lower().startswith("multipart/form-data"):
        return None
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not message.is_multipart():
        return None
    fields, files = {}, {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[name] = len(data)
        else:
            fields[name] = data.decode("utf-8", errors="replace")
    return fields, files


# The APIs that take a multipart form: its required file and text fields. OpenAI's
# transcriptions (and translations): `file` and `model`, with `prompt`, `stream`,
# `response_format`…; image edits: `image` (or `image[]`) and `prompt`, with `model`, `n`, `stream`….
FORM_ROUTES = {"openai-transcription": ("file", "model"), "openai-images-edit": ("image", "prompt")}


def form_request(route, content_type, body):
    """A form's text fields as a dict, or the API's error reply."""
    parsed = form_fields(content_type, body)
    if parsed is None:
        return json_reply(400, error_body(route, 400, "Invalid Content-Type header (application/json), expected multipart/form-data."))
    fields, files = parsed
    file_field, text_field = FORM_ROUTES[route]
    present_file = file_field in files or f"{file_field}[]" in files
    for required, present in ((file_field, present_file), (text_field, text_field in fields)):
        if not present:
            return json_reply(400, {"error": {"message": f"Missing required parameter: '{required}'.", "type": "invalid_request_error",
                                              "param": required, "code": "missing_required_parameter"}})
    return fields


def transcription_without_tokens(request):
    """whisper-1 is billed by the second (`usage.type: duration`); `response_format: text` is the
    bare text, without usage."""
    text = json.loads(BODIES["openai-transcription"])["text"]
    if request.get("response_format") == "text":
        return Reply(200, [("content-type", "text/plain; charset=utf-8")], [(text + "\n").encode()])
    return json_reply(200, {"text": text, "usage": {"type": "duration", "seconds": 4}})


# Text to speech answered with the audio itself, by `response_format` (mp3 by default).
SPEECH_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac", "wav": "audio/wav",
                "pcm": "audio/pcm"}


def speech_audio(request):
    """The audio of `POST /v1/audio/speech` without `stream_format: sse`: bytes, written as they
    are made (chunked), with no usage anywhere. Deterministic: 400 bytes per character spoken."""
    kind = SPEECH_TYPES.get(request.get("response_format", "mp3"))
    if kind is None or not isinstance(request.get("input"), str):
        return json_reply(400, {"error": {"message": "Invalid value for 'response_format'.", "type": "invalid_request_error",
                                          "param": "response_format", "code": "invalid_value"}})
    audio = speech_bytes(400 * len(request["input"]))
    return Reply(200, [("content-type", kind)], [audio[i:i + 8192] for i in range(0, len(audio), 8192)], stream=True)


def speech_bytes(n):
    """`n` bytes of mock audio (an ID3 tag, then bytes that are no text)."""
    return (b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes((i * 7 + 3) % 256 for i in range(n)))[:n]


def gemini_cache(path, request):
    """Gemini's `cachedContents.create`: `model` and the contents to cache (`contents`,
    `systemInstruction`, `tools`), answered with the CachedContent resource, its size in
    `usageMetadata.totalTokenCount` (the mock's count: words and punctuation marks)."""
    if not isinstance(request.get("model"), str):
        return json_reply(400, error_body("gemini", 400, "* CreateCachedContentRequest.cached_content.model: model is required"))
    texts = [part.get("text", "") for content in (request.get("contents") or []) + [request.get("systemInstruction") or {}]
             for part in (content.get("parts") or []) if isinstance(part, dict)]
    p = urlsplit(path).path
    parent = p.rsplit("/cachedContents", 1)[0].split("/", 2)[2] if "/projects/" in p else ""
    name = (parent + "/" if parent else "") + "cachedContents/" + hashlib.sha256(json.dumps(request).encode()).hexdigest()[:12]
    stamp = "2026-11-28T12:00:00.000000Z"
    return json_reply(200, {"name": name, "model": request["model"], "createTime": stamp, "updateTime": stamp,
                            "expireTime": "2026-11-28T13:00:00.000000Z",
                            "usageMetadata": {"totalTokenCount": sum(embed_tokens(t) for t in texts)}})


def openai_conversation(path, request):
    """OpenAI's Conversations API: `POST /v1/conversations` (`items`, up to 20, and `metadata`)
    answers the conversation object; `POST /v1/conversations/{id}/items` the list of the items
    added, each a message whose string content becomes an `input_text` part."""
    items = request.get("items") or []
    if not isinstance(items, list) or len(items) > 20:
        return json_reply(400, error_body("openai", 400, "Invalid 'items': expected an array of at most 20 items."))
    p = urlsplit(path).path
    digest = hashlib.sha256(json.dumps(request).encode()).hexdigest()
    if p.endswith("/conversations"):
        return json_reply(200, {"id": "conv_" + digest[:24], "object": "conversation", "created_at": 1764331200,
                                "metadata": request.get("metadata") or {}})
    added = []
    for i, item in enumerate(items):
        content = item.get("content")
        kind = "output_text" if item.get("role") == "assistant" else "input_text"
        parts = [{"type": kind, "text": content}] if isinstance(content, str) else content
        added.append({"type": "message", "id": f"msg_{digest[:20]}{i:02d}", "status": "completed",
                      "role": item.get("role", "user"), "content": parts})
    return json_reply(200, {"object": "list", "data": added, "first_id": added[0]["id"] if added else None,
                            "last_id": added[-1]["id"] if added else None, "has_more": False})


def anthropic_batch(request):
    """Anthropic's Message Batches create: `requests` (1 to 100,000 of `{custom_id, params}`, each
    params a Messages request) answered at once with the batch, `in_progress`; the results are
    fetched later from `results_url`."""
    requests = request["requests"]
    if not isinstance(requests, list) or not requests:
        return json_reply(400, error_body("anthropic", 400, "requests: List should have at least 1 item after validation"))
    for i, item in enumerate(requests):
        params = item.get("params") if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str) or not isinstance(params, dict):
            return json_reply(400, error_body("anthropic", 400, f"requests.{i}: custom_id and params are required"))
        missing = next((f for f in REQUIRED["anthropic"] if f not in params), None)
        if missing:
            return json_reply(400, error_body("anthropic", 400, f"requests.{i}.params.{missing}: Field required"))
    batch_id = "msgbatch_01" + hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:22]
    return json_reply(200, {
        "id": batch_id, "type": "message_batch", "processing_status": "in_progress",
        "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
        "ended_at": None, "created_at": "2026-11-28T12:00:00.000000Z", "expires_at": "2026-11-29T12:00:00.000000Z",
        "archived_at": None, "cancel_initiated_at": None, "results_url": None})


def error_body(route, status, message):
    if route and route.startswith("anthropic"):
        kind = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
                429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    if route and route.startswith("gemini"):
        state = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 429: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}.get(status, "INTERNAL")
        return {"error": {"code": status, "message": message, "status": state}}
    if route and route.startswith("bedrock"):
        return {"message": message}
    kind = {401: "invalid_request_error", 429: "requests"}.get(status, "invalid_request_error" if status < 500 else "server_error")
    code = {401: "invalid_api_key", 429: "rate_limit_exceeded", 404: "model_not_found"}.get(status)
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


# Bedrock credentials the mock knows. Requests signed with this key id are verified in full
# (SigV4, implemented here independently of the filter, from AWS's documentation); other
# `AWS4-HMAC-SHA256` requests (recorded fixtures, benchmarks) are only checked for shape.
MOCK_AWS_SECRETS = {"AKIDTOLLGATEMOCK": "tollgate-mock-secret-key"}


def sigv4_problem(method, raw_path, headers, body, service_name="bedrock"):
    """Why a SigV4 signature is wrong, or None when it is right."""
    import hashlib
    import hmac
    from urllib.parse import quote

    fields = dict(part.strip().split("=", 1) for part in headers["authorization"][len("AWS4-HMAC-SHA256 "):].split(","))
    key_id, date, region, service, terminal = fields["Credential"].split("/")
    secret = MOCK_AWS_SECRETS.get(key_id)
    if secret is None or terminal != "aws4_request" or service != service_name:
        return "The security token included in the request is invalid."
    amz_date = headers.get("x-amz-date", "")
    if not amz_date.startswith(date):
        return "Signature date does not match the credential scope."
    signed = fields["SignedHeaders"].split(";")
    if "host" not in signed or "x-amz-date" not in signed or any(name not in headers for name in signed):
        return "SignedHeaders must include host and x-amz-date, and every signed header must be sent."
    path, _, query = raw_path.partition("?")
    canonical_uri = "/".join(quote(segment, safe="-_.~") for segment in path.split("/")) or "/"
    canonical_query = "&".join(sorted(query.split("&"))) if query else ""
    canonical_headers = "".join(f"{name}:{' '.join(headers[name].split())}\n" for name in signed)
    canonical = "\n".join([method, canonical_uri, canonical_query, canonical_headers, fields["SignedHeaders"],
                           hashlib.sha256(body).hexdigest()])
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, fields["Signature"]):
        return ("The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method.")
    return None


class Reply:
    """A response to write: status, headers, and body pieces with pacing."""

    def __init__(self, status, headers, pieces, delay=0.0, stream=False, trailers=None, reset_at=None, fault=None):
        self.status, self.headers, self.pieces = status, headers, pieces
        self.delay, self.stream, self.trailers, self.reset_at = delay, stream, trailers, reset_at
        self.fault = fault


def json_reply(status, obj, extra=None):
    body = json.dumps(obj).encode()
    headers = [("content-type", "application/json")] + list((extra or {}).items())
    return Reply(status, headers, [body])


def handle(method, path, headers, body):
    """Pure request handler: returns a Reply."""
    h = {k.lower(): v for k, v in headers}
    if path == "/mock/health":
        return json_reply(200, {"ok": True})
    if path == "/mock/requests":
        return json_reply(200, RECORDED)
    if path == "/mock/reset":
        RECORDED.clear()
        return json_reply(200, {"ok": True})
    if method == "GET" and urlsplit(path).path.endswith("/models"):
        return json_reply(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 1700000000, "owned_by": "mock"}
                                                           for m in ("gpt-4o-mini", "gpt-4.1", "o3", "text-embedding-3-small")]})
    route = route_of(path)
    try:
        text = body.decode("utf-8", errors="replace")
    except Exception:
        text = ""
    RECORDED.append({"method": method, "path": path, "headers": h, "body": text})
    del RECORDED[:-MAX_RECORDED]
    if route is None or method != "POST":
        return json_reply(404, {"error": {"message": f"Unknown request URL: {method} {path}", "type": "invalid_request_error", "param": None, "code": "unknown_url"}})

    # Credentials, as each API requires them.
    if route.startswith("openai") and not h.get("authorization", "").startswith("Bearer "):
        return json_reply(401, error_body(route, 401, "You didn't provide an API key."))
    if route == "azure-chat" and not (h.get("api-key") or h.get("authorization")):
        return json_reply(401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}})
    if route.startswith("anthropic") and not (h.get("x-api-key") or h.get("authorization")):
        return json_reply(401, error_body(route, 401, "x-api-key header is required"))
    if route.startswith("anthropic-vertex") and not h.get("authorization", "").startswith("Bearer "):
        return json_reply(401, error_body(route, 401, "Request had invalid authentication credentials. "
                                                      "Expected OAuth 2 access token."))
    if (route.startswith("gemini") or route in ("vertex-predict", "google-predict")) and not (
            h.get("x-goog-api-key") or "key=" in path or h.get("authorization")):
        return json_reply(403, error_body(route, 403, "Method doesn't allow unregistered callers."))
    # Bedrock takes a SigV4 signature or a Bedrock API key (`Bearer`, long-term keys `ABSK…`).
    if route.startswith("bedrock") and not h.get("authorization", "").startswith(("AWS4-HMAC-SHA256", "Bearer ")):
        return json_reply(403, {"message": "Missing Authentication Token"}, {"x-amzn-errortype": "MissingAuthenticationTokenException"})
    if route.startswith("bedrock") and h["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTOLLGATEMOCK/"):
        problem = sigv4_problem(method, path, h, body)
        if problem:
            return json_reply(403, {"message": problem}, {"x-amzn-errortype": "InvalidSignatureException"})

    if route in FORM_ROUTES:
        request = form_request(route, h.get("content-type", ""), body)
        if not isinstance(request, dict):
            return request  # the error reply
        if route == "openai-transcription" and (request.get("model") == "whisper-1" or request.get("response_format") == "text"):
            return transcription_without_tokens(request)
    else:
        try:
            request = json.loads(body) if body else {}
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            return json_reply(400, error_body(route, 400, "We could not parse the JSON body of your request."))
    missing = next((f for f in REQUIRED.get(route, ()) if f not in request), None)
    if missing and route.startswith("openai"):
        return json_reply(400, {"error": {"message": f"Missing required parameter: '{missing}'.", "type": "invalid_request_error",
                                          "param": missing, "code": "missing_required_parameter"}})
    if missing:
        return json_reply(400, error_body(route, 400, f"{missing}: Field required"))
    if route == "openai-input-tokens":
        # Responses' input token count: a Responses body (every field optional), answered with
        # the count; the mock's is fixed, like its usage.
        return json_reply(200, {"object": "response.input_tokens", "input_tokens": COUNT_TOKENS_INPUT})
    if route in ("anthropic-count-tokens", "anthropic-vertex-count-tokens"):
        # Anthropic's reference: the body of a Messages request without max_tokens (model and
        # messages required), answered {"input_tokens": n}. The mock's n is fixed, like its usage.
        return json_reply(200, {"input_tokens": COUNT_TOKENS_INPUT})
    if route == "anthropic-batch":
        return anthropic_batch(request)
    if route == "gemini-count-tokens":
        # Gemini's countTokens: `contents` or a whole `generateContentRequest` (either spelling),
        # not both; answered {"totalTokens": n}.
        given = [k for k in ("contents", "generateContentRequest", "generate_content_request") if k in request]
        if len(given) != 1:
            return json_reply(400, error_body(route, 400, "Exactly one of contents or generate_content_request must be set."))
        return json_reply(200, {"totalTokens": COUNT_TOKENS_INPUT})
    if route == "gemini-batch":
        # Batch Mode: {"batch": {"display_name", "input_config": {"requests": {"requests": [{"request", "metadata"}]}}
        # or {"file_name"}}} (either spelling), answered with the long-running operation, pending.
        batch = request.get("batch") if isinstance(request.get("batch"), dict) else {}
        config = batch.get("inputConfig", batch.get("input_config"))
        if not isinstance(config, dict) or not (config.get("requests") or config.get("fileName") or config.get("file_name")):
            return json_reply(400, error_body(route, 400, "* Batch.input_config: input_config is required"))
        model = "models/" + urlsplit(path).path.rsplit("/", 1)[-1].split(":")[0]
        name = "batches/" + hashlib.sha256(body).hexdigest()[:16]
        count = len((config.get("requests") or {}).get("requests") or [])
        return json_reply(200, {"name": name, "metadata": {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerateContentBatch",
            "name": name, "model": model, "displayName": batch.get("displayName", batch.get("display_name", "")),
            "createTime": "2026-11-28T12:00:00.000000Z", "updateTime": "2026-11-28T12:00:00.000000Z",
            "batchStats": {"requestCount": str(count), "pendingRequestCount": str(count)},
            "state": "BATCH_STATE_PENDING"}})
    if route == "gemini-embed":
        # embedContent: `content` → {"embedding": {"values": […]}}; batchEmbedContents:
        # `requests[]` (each with `model` and `content`) → {"embeddings": [{"values": […]}, …]}.
        # Vertex AI adds `usageMetadata` (the Gemini API reports none).
        vertex = "/projects/" in path or "/publishers/google/" in path
        def usage(contents):
            n = sum(embed_tokens(part.get("text", "")) for c in contents for part in c.get("parts", []) if isinstance(part, dict))
            return {"usageMetadata": {"promptTokenCount": n, "totalTokenCount": n}} if vertex else {}
        if path.split("?")[0].endswith(":batchEmbedContents"):
            items = request.get("requests")
            if not isinstance(items, list) or not items or any(not isinstance(r, dict) or "content" not in r for r in items):
                return json_reply(400, error_body(route, 400, "* BatchEmbedContentsRequest.requests: content is required"))
            return json_reply(200, {"embeddings": [{"values": embed_values(r["content"])} for r in items],
                                    **usage([r["content"] for r in items])})
        if not isinstance(request.get("content"), dict):
            return json_reply(400, error_body(route, 400, "* EmbedContentRequest.content: content is not specified"))
        return json_reply(200, {"embedding": {"values": embed_values(request["content"])}, **usage([request["content"]]),
                                **({"truncated": False} if vertex else {})})
    if route == "vertex-predict":
        # A Vertex AI text embedding model's `:predict`: `instances[]` of {content, task_type?,
        # title?} → one prediction each, with `embeddings.statistics.token_count`, and the
        # billable characters (whitespace excluded) in `metadata`.
        instances = request.get("instances")
        if not isinstance(instances, list) or not instances or any(
                not isinstance(i, dict) or not isinstance(i.get("content"), str) for i in instances):
            return json_reply(400, error_body("gemini", 400, "Invalid instances: each must have a content string."))
        predictions = [{"embeddings": {"statistics": {"truncated": False, "token_count": embed_tokens(i["content"])},
                                       "values": embed_values(i["content"])}} for i in instances]
        billable = sum(len(re.sub(r"\s", "", i["content"])) for i in instances)
        return json_reply(200, {"predictions": predictions, "metadata": {"billableCharacterCount": billable}})
    if route == "google-predict":
        return google_predict(path, request)
    if route == "gemini-cache":
        return gemini_cache(path, request)
    if route == "openai-conversation":
        return openai_conversation(path, request)
    if route == "bedrock-count-tokens":
        # Bedrock's CountTokens: {"input": {"converse": {...}} or {"invokeModel": {...}}} (a union),
        # answered {"inputTokens": n}.
        given = [k for k in ("converse", "invokeModel") if k in (request["input"] if isinstance(request["input"], dict) else {})]
        if len(given) != 1:
            return json_reply(400, {"message": "input must set exactly one of converse, invokeModel"},
                              {"x-amzn-errortype": "ValidationException"})
        return json_reply(200, {"inputTokens": COUNT_TOKENS_INPUT})
    invoke_case = None
    if route in ("bedrock-invoke", "bedrock-invoke-stream"):
        # InvokeModel answers in the model family's own format: Anthropic Messages for Claude
        # (its body names `anthropic_version`), Llama's `generation` for a `prompt`, Nova's
        # ConverseStream events in chunks for a stream of Converse-shaped `messages`.
        if "anthropic_version" in request:
            if "max_tokens" not in request or "messages" not in request:
                return json_reply(400, {"message": "Malformed input request: required key [max_tokens] not found"},
                                  {"x-amzn-errortype": "ValidationException"})
            family = "claude"
        elif isinstance(request.get("prompt"), str):
            family = "llama"
        elif isinstance(request.get("messages"), list) and route.endswith("stream"):
            family = "nova-pii"  # Nova's Converse-shaped body (only its stream is a case)
        else:
            return json_reply(400, {"message": "Malformed input request, please reformat your input and try again."},
                              {"x-amzn-errortype": "ValidationException"})
        invoke_case = f"bedrock-invoke-{family}" + ("-stream" if route.endswith("stream") else "")
    if route.startswith("gemini"):
        contents = request.get("contents")
        if not isinstance(contents, list) or not contents:
            return json_reply(400, error_body(route, 400, "* GenerateContentRequest.contents: contents is not specified\n"))
        if any(c.get("role") not in (None, "user", "model") or not c.get("parts") for c in contents if isinstance(c, dict)):
            return json_reply(400, error_body(route, 400, "Please use a valid role: user, model."))

    if h.get("x-mock-fail-route") and route.startswith(h["x-mock-fail-route"]):
        # Only this provider fails (fallback tests): its own error body and status.
        status = int(h.get("x-mock-fail-status", "503"))
        return json_reply(status, error_body(route, status, f"mock {route} failure {status}"))
    if "x-mock-status" in h:
        status = int(h["x-mock-status"])
        extra = {"retry-after": "2"} if status == 429 else None
        return json_reply(status, error_body(route, status, f"mock error {status}"), extra)

    if route in FORM_ROUTES:
        request["stream"] = request.get("stream") == "true"  # a form's field is text
    if route == "openai-speech":
        if request.get("stream_format", "audio") == "audio":
            return speech_audio(request)
        request["stream"] = request.get("stream_format") == "sse"
    stream = bool(request.get("stream")) if not (route.startswith("gemini") or route.startswith("bedrock")) else route.endswith("stream")
    if route == "openai-responses" and request.get("background") is True and not stream:
        # OpenAI's background mode: the response object answers at once, queued, with no output
        # and no usage yet; the client polls GET /v1/responses/{id} for the result.
        queued = json.loads(BODIES["openai-responses"])
        queued.update({"status": "queued", "background": True, "output": [], "usage": None,
                       "max_output_tokens": request.get("max_output_tokens")})
        return json_reply(200, queued)
    name = h.get("x-mock-case") or invoke_case or default_case(route, stream, path)
    case = CASES.get(name)
    if case is None:
        return json_reply(400, error_body(route, 400, f"unknown mock case {name!r}"))
    raw = BODIES[name]
    delay = float(h.get("x-mock-delay-ms", "0")) / 1000.0
    if h.get("x-mock-slow-route") and not route.startswith(h["x-mock-slow-route"]):
        delay = 0.0  # only that provider is slow
    extra_headers = list(case.get("headers", {}).items())
    content_type = case["content_type"]

    if content_type == "application/vnd.amazon.eventstream":
        pieces = [eventstream_frame(e["event"], e["payload"]) for e in json.loads(raw)]
        is_stream = True
    elif content_type == "text/event-stream":
        events, sep = sse_events(raw)
        if case.get("openai_include_usage") and not (request.get("stream_options") or {}).get("include_usage") is True:
            events = WITHOUT_USAGE.get(name)
            if events is None:
                events = [e for e in (without_usage(ev, sep) for ev in sse_events(raw)[0]) if e is not None]
                WITHOUT_USAGE[name] = events
        pieces = events
        is_stream = True
        content_type = "text/event-stream; charset=utf-8"
    elif name.startswith("gemini-stream-array"):
        text = raw.decode()
        # Stream the array element by element, as Gemini does without alt=sse.
        parts = text.split(",\r\n")
        pieces = [(p + (",\r\n" if i < len(parts) - 1 else "")).encode() for i, p in enumerate(parts)]
        is_stream = True
    else:
        pieces = [raw]
        is_stream = False

    return prepared(name, case, content_type, pieces, is_stream, extra_headers, delay, h)


PREPARED = {}
STALL_S = 60


def brotli_stored(data):
    """A valid brotli stream of uncompressed meta-blocks (RFC 7932 9.2), bits LSB first."""
    out, acc, n = bytearray(), 0, 0

    def put(value, bits):
        nonlocal acc, n
        acc |= value << n
        n += bits
        while n >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            n -= 8

    def pad():
        nonlocal acc, n
        if n:
            out.append(acc & 0xFF)
            acc, n = 0, 0

    put(0, 1)  # WBITS = 16
    for i in range(0, len(data), 65536):
        block = data[i:i + 65536]
        put(0, 1)  # ISLAST = 0
        put(0, 2)  # MNIBBLES = 4
        put(len(block) - 1, 16)  # MLEN - 1
        put(1, 1)  # ISUNCOMPRESSED
        pad()
        out += block
    put(1, 1)  # ISLAST
    put(1, 1)  # ISLASTEMPTY
    pad()
    return bytes(out)


def malformed(pieces, content_type):
    """The same answer, broken the way a faulty provider breaks it."""
    if content_type == "application/vnd.amazon.eventstream":
        middle = len(pieces) // 2
        return pieces[:middle] + [pieces[middle][: len(pieces[middle]) // 2]]
    if content_type.startswith("text/event-stream"):
        return [pieces[0], b'data: {"id": "broken", "choices": [{"delta": {"content": "x\n\n',
                b"data: \xff\xfe not json\n\n", b"event: message_delta\ndata: {\n\n"] + pieces[1:]
    joined = b"".join(pieces)
    return [joined[: max(1, len(joined) // 3)]]


def prepared(name, case, content_type, pieces, is_stream, extra_headers, delay, h):
    """Applies chunking, gzip and faults; cached per variant so the mock's own CPU stays low."""
    chunking = h.get("x-mock-chunking", "event")
    fault = h.get("x-mock-fault")
    key = (name, len(pieces), chunking, h.get("x-mock-gzip"), fault, h.get("x-mock-trailers"), h.get("x-mock-pad"))
    if key in PREPARED:
        status, out_headers, pieces, is_stream, trailers, reset_at = PREPARED[key]
        return Reply(status, out_headers, pieces, delay, is_stream, trailers, reset_at, fault)
    if fault == "malformed":
        pieces = malformed(pieces, content_type)
    if h.get("x-mock-pad") and not is_stream:
        answer = json.loads(b"".join(pieces))
        answer["x_padding"] = "a" * int(h["x-mock-pad"])
        pieces = [json.dumps(answer).encode()]
    if chunking == "split":
        split = []
        for p in pieces:
            cut = max(1, len(p) // 2 - 3)
            split += [p[:cut], p[cut:]]
        pieces = split
    elif chunking.startswith("bytes:"):
        n = max(1, int(chunking.split(":", 1)[1]))
        joined = b"".join(pieces)
        pieces = [joined[i:i + n] for i in range(0, len(joined), n)]

    out_headers = [("content-type", content_type)] + extra_headers
    if h.get("x-mock-gzip") == "deflate":
        pieces = [zlib.compress(b"".join(pieces))]
        out_headers.append(("content-encoding", "deflate"))
    elif h.get("x-mock-gzip") == "br":
        pieces = [brotli_stored(b"".join(pieces))]
        out_headers.append(("content-encoding", "br"))
    elif h.get("x-mock-gzip") == "1":
        if is_stream:
            compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
            pieces = [compressor.compress(p) + compressor.flush(zlib.Z_SYNC_FLUSH) for p in pieces] + [compressor.flush()]
        else:
            pieces = [gzip.compress(b"".join(pieces))]
        out_headers.append(("content-encoding", "gzip"))
    reset_at = {"reset-mid-stream": len(pieces) // 2, "reset-after-headers": 0}.get(fault)
    trailers = [("x-mock-trailer", "done")] if h.get("x-mock-trailers") == "1" else None
    if len(PREPARED) < 1024:
        PREPARED[key] = (case["status"], out_headers, pieces, is_stream, trailers, reset_at)
    return Reply(case["status"], out_headers, pieces, delay, is_stream, trailers, reset_at, fault)


# ---- HTTP/1.1 server ------------------------------------------------------------------------------

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 413: "Payload Too Large",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable", 529: "Overloaded"}


async def serve_http1(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = []
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers.append((k.strip(), v.strip()))
            h = {k.lower(): v for k, v in headers}
            if h.get("transfer-encoding", "").lower() == "chunked":
                body = b""
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    if size == 0:
                        while (await reader.readuntil(b"\r\n")) != b"\r\n":
                            pass
                        break
                    body += await reader.readexactly(size)
                    await reader.readexactly(2)
            else:
                body = await reader.readexactly(int(h.get("content-length", "0")))
            reply = handle(method, path, headers, body)
            if reply.fault == "reset-before-headers":
                writer.transport.abort()
                return
            if reply.fault == "stall-before-headers":
                await asyncio.sleep(STALL_S)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            chunked = reply.stream or reply.trailers
            out = [f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}\r\n"]
            for k, v in reply.headers:
                out.append(f"{k}: {v}\r\n")
            if chunked:
                out.append("transfer-encoding: chunked\r\n")
            else:
                out.append(f"content-length: {sum(len(p) for p in reply.pieces)}\r\n")
            out.append("\r\n")
            writer.write("".join(out).encode("latin-1"))
            if reply.fault == "stall-after-headers":
                await writer.drain()
                await asyncio.sleep(STALL_S)
            for i, piece in enumerate(reply.pieces):
                if reply.reset_at is not None and i == reply.reset_at:
                    await writer.drain()
                    writer.transport.abort()
                    return
                if reply.stream and reply.delay and i > 0:
                    await writer.drain()
                    await asyncio.sleep(reply.delay)
                if chunked:
                    if piece:
                        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    writer.write(piece)
                if reply.stream:
                    await writer.drain()
            if chunked:
                trailer = "".join(f"{k}: {v}\r\n" for k, v in (reply.trailers or []))
                writer.write(b"0\r\n" + trailer.encode() + b"\r\n")
            await writer.drain()
            if h.get("connection", "").lower() == "close":
                break
    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError, asyncio.LimitOverrunError):
        pass
    finally:
        try:
            writer.close()
        except Exception:
            pass


# ---- HTTP/2 (h2c, prior knowledge) ----------------------------------------------------------------

async def serve_h2(reader, writer):
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    streams = {}

    async def respond(stream_id, headers, body):
        pseudo = dict(headers)
        plain = [(k, v) for k, v in headers if not k.startswith(":")]
        if ":authority" in pseudo:
            plain.append(("host", pseudo[":authority"]))  # HTTP/2's Host, for SigV4
        reply = handle(pseudo.get(":method", "GET"), pseudo.get(":path", "/"), plain, body)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        conn.send_headers(stream_id, [(":status", str(reply.status))] + [(k, v) for k, v in reply.headers])
        writer.write(conn.data_to_send())
        for i, piece in enumerate(reply.pieces):
            if reply.reset_at is not None and i == reply.reset_at:
                conn.reset_stream(stream_id)
                writer.write(conn.data_to_send())
                return
            if reply.stream and reply.delay and i > 0:
                await asyncio.sleep(reply.delay)
            while piece:
                window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
                if window <= 0:
                    await writer.drain()
                    await asyncio.sleep(0.001)
                    continue
                conn.send_data(stream_id, piece[:window])
                piece = piece[window:]
                writer.write(conn.data_to_send())
            await writer.drain()
        if reply.trailers:
            conn.send_headers(stream_id, reply.trailers, end_stream=True)
        else:
            conn.end_stream(stream_id)
        writer.write(conn.data_to_send())
        await writer.drain()

    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    streams[event.stream_id] = (event.headers, bytearray())
                    if event.stream_ended:
                        asyncio.ensure_future(respond(event.stream_id, event.headers, b""))
                elif isinstance(event, h2.events.DataReceived):
                    streams[event.stream_id][1].extend(event.data)
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    if event.stream_ended:
                        headers, body = streams[event.stream_id]
                        asyncio.ensure_future(respond(event.stream_id, headers, bytes(body)))
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id in streams:
                    headers, body = streams[event.stream_id]
                    if body:
                        pass
                elif isinstance(event, h2.events.ConnectionTerminated):
                    return
            writer.write(conn.data_to_send())
            await writer.drain()
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        writer.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--h2-port", type=int, default=None, help="also serve h2c (prior knowledge) on this port (0 = any)")
    parser.add_argument("--port-file", help="write the bound ports here as JSON once listening")
    args = parser.parse_args()
    server = await asyncio.start_server(serve_http1, args.host, args.port, limit=1 << 24, backlog=1024)
    ports = {"http1": server.sockets[0].getsockname()[1]}
    servers = [server]
    if args.h2_port is not None:
        h2server = await asyncio.start_server(serve_h2, args.host, args.h2_port, limit=1 << 24)
        ports["h2"] = h2server.sockets[0].getsockname()[1]
        servers.append(h2server)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(ports, f)
        os.replace(tmp, args.port_file)
    print(f"mock provider listening: {ports}", file=sys.stderr, flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    try:
        import uvloop  # optional: faster, so the mock is never the benchmark's bottleneck
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
