"""provider-rewrite end to end: `make run`'s gateway (tollgate.wasm with provider-rewrite, an
OpenAI and an Anthropic backend, both the mock) in a real Envoy, driven by the real OpenAI SDK.

The OpenAI client names models; the gateway picks the backend, translates the request to
Anthropic Messages where needed, and translates the answer back (JSON, streams, errors).
"""
import json
import uuid

import anthropic
import openai
import pytest
import requests

from harness import delta, metric_sum, wait_until

ANTHROPIC_KEY = "mock-anthropic-key"  # the backend's key in envoy_config.RUN_CONFIG_MOCK


def client(gateway, **headers):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-client-secret", max_retries=0,
                         default_headers={"x-tollgate-consumer": "e2e-rewrite", **headers})


def last_messages_request(mock):
    return mock.last_request("/v1/messages")


def test_models_are_listed_by_the_gateway(run_gateway, mock):
    before = len(mock.requests())
    ids = [m.id for m in client(run_gateway).models.list()]
    assert ids == ["bedrock/claude-3-5-haiku", "cheapest", "claude", "claude-sonnet-4", "fastest", "gemini-2.5-flash",
                   "gpt-4.1", "gpt-4o", "gpt-4o-mini", "llama-3.1-8b", "resilient", "resilient-cloud",
                   "text-embedding-3-small", "vertex/gemini-2.0-flash"]
    owners = {m.id: m.owned_by for m in client(run_gateway).models.list()}
    assert {owners[m] for m in ("claude", "gpt-4o", "gpt-4o-mini", "llama-3.1-8b", "gemini-2.5-flash",
                                "vertex/gemini-2.0-flash", "bedrock/claude-3-5-haiku")} == {
        "anthropic", "azure", "openai", "openai-compatible", "gemini", "vertex", "bedrock"}
    assert len(mock.requests()) == before, "the model list never reaches a provider"


def test_one_model_and_anthropic_sdk_listings_are_answered_by_the_gateway(run_gateway, mock):
    before = len(mock.requests())
    openai_client = client(run_gateway)
    card = openai_client.models.retrieve("bedrock/claude-3-5-haiku")  # sent percent-encoded
    assert (card.id, card.object, card.owned_by) == ("bedrock/claude-3-5-haiku", "model", "bedrock")
    with pytest.raises(openai.NotFoundError) as e:
        openai_client.models.retrieve("no-such-model")
    assert e.value.body["code"] == "model_not_found" and "no-such-model" in e.value.body["message"]

    claude = anthropic.Anthropic(base_url=run_gateway.url, api_key="sk-client-secret", max_retries=0)
    card = claude.models.retrieve("claude")
    assert (card.id, card.type, card.display_name) == ("claude", "model", "claude")
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.models.retrieve("no-such-model")
    assert e.value.body["error"]["type"] == "not_found_error"
    everything = [m.id for m in openai_client.models.list()]
    page = claude.models.list(limit=5)
    assert ([m.id for m in page.data], page.has_more, page.last_id) == (everything[:5], True, everything[4])
    assert [m.id for m in claude.models.list(limit=5)] == everything, "the SDK pages through with after_id"
    assert len(mock.requests()) == before, "no model question reaches a provider"


def test_openai_client_on_an_anthropic_backend(run_gateway, mock):
    before = run_gateway.metrics()
    reply = client(run_gateway).chat.completions.create(
        model="claude", max_tokens=200,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}])
    assert reply.choices[0].message.content == "Hello! How can I help you today?"
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (21, 12, 33)
    assert reply.model == "claude-sonnet-4-20250514"

    sent = last_messages_request(mock)
    body = json.loads(sent["body"])
    assert body["model"] == "claude-sonnet-4-20250514", "the alias resolved to the backend's model id"
    assert body["system"] == [{"type": "text", "text": "Be brief."}]
    assert body["messages"] == [{"role": "user", "content": "Hello"}]
    assert body["max_tokens"] == 200
    assert sent["headers"]["x-api-key"] == ANTHROPIC_KEY
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent["headers"], "the client's key never reaches the provider"
    assert "sk-client-secret" not in json.dumps(sent)

    after = wait_until(lambda: (m := run_gateway.metrics()) and delta(
        before, m, "tollgate_gen_ai_client_token_usage", gen_ai_token_type="output", gen_ai_provider_name="anthropic") and m,
        what="token metrics")
    assert delta(before, after, "tollgate_gen_ai_client_token_usage", gen_ai_token_type="output",
                 gen_ai_provider_name="anthropic") == 12, "counted once, from the provider's own answer"
    assert delta(before, after, "tollgate_gen_ai_client_token_usage", gen_ai_token_type="input",
                 gen_ai_provider_name="anthropic") == 21


def test_anthropic_sdk_token_counts_reach_backends_that_count_them(run_gateway, mock):
    claude = anthropic.Anthropic(base_url=run_gateway.url, api_key="sk-client-secret", max_retries=0)
    before = run_gateway.metrics()
    counted = claude.messages.count_tokens(model="claude", system="Be brief.",
                                           messages=[{"role": "user", "content": "Hello"}])
    assert counted.input_tokens == 14, "the provider's own count, passed through"
    sent = mock.last_request("/v1/messages/count_tokens")
    assert json.loads(sent["body"])["model"] == "claude-sonnet-4-20250514", "the alias resolved"
    assert sent["headers"]["x-api-key"] == ANTHROPIC_KEY
    assert "sk-client-secret" not in json.dumps(sent)
    wait_until(lambda: delta(before, run_gateway.metrics(), "tollgate_provider_requests", api="count_tokens") == 1,
               what="the routed count")
    assert delta(before, run_gateway.metrics(), "tollgate_gen_ai_client_token_usage") == 0, "nothing generated"

    # Bedrock counts with its own CountTokens API (signed; the mock verifies the signature).
    assert claude.messages.count_tokens(model="bedrock/claude-3-5-haiku",
                                        messages=[{"role": "user", "content": "Hello"}]).input_tokens == 14
    sent = [r for r in mock.requests() if r["path"].endswith("/count-tokens")][-1]
    assert json.loads(sent["body"]) == {"input": {"converse": {"messages": [
        {"role": "user", "content": [{"text": "Hello"}]}]}}}
    assert sent["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTOLLGATEMOCK/")

    with pytest.raises(anthropic.BadRequestError) as e:  # an OpenAI backend cannot count Claude's tokens
        claude.messages.count_tokens(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}])
    assert "count_tokens" in e.value.body["error"]["message"]


def test_streamed_tool_calls_through_an_anthropic_backend(run_gateway, mock):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    stream = client(run_gateway, **{"x-mock-case": "anthropic-tool-stream"}).chat.completions.create(
        model="claude-sonnet-4", messages=[{"role": "user", "content": "Weather in Recife?"}], tools=tools,
        stream=True, stream_options={"include_usage": True})
    text, arguments, names, finish, usage = "", "", [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                if call.function.name:
                    names.append(call.function.name)
                arguments += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert text == "Let me check the weather."
    assert names == ["get_weather"]
    assert json.loads(arguments) == {"city": "Recife", "unit": "celsius"}
    assert finish == "tool_calls"
    assert (usage.prompt_tokens, usage.completion_tokens) == (472 + 1024, 58)
    body = json.loads(last_messages_request(mock)["body"])
    assert body["stream"] is True and body["tools"][0]["input_schema"]["required"] == ["city"]


def test_same_api_backends_only_get_the_model_and_credentials_changed(run_gateway, mock):
    reply = client(run_gateway).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content
    sent = mock.last_request("/v1/chat/completions")
    assert sent["headers"]["authorization"] == "Bearer mock-openai-key"
    assert json.loads(sent["body"])["model"] == "gpt-4o-mini"


def test_unknown_models_and_unsupported_parameters_are_clear_errors(run_gateway, mock):
    with pytest.raises(openai.NotFoundError) as e:
        client(run_gateway).chat.completions.create(model="llama-99", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.body["code"] == "model_not_found" and "llama-99" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client(run_gateway).chat.completions.create(model="claude", n=2, messages=[{"role": "user", "content": "Hi"}])
    assert e.value.body["param"] == "n"
    # A field of the wrong type is named, with the type it must have, not called invalid JSON.
    before = run_gateway.metrics()
    with pytest.raises(openai.BadRequestError) as e:
        client(run_gateway).chat.completions.create(model="gpt-4o-mini", max_tokens=-5,
                                                    messages=[{"role": "user", "content": "Hi"}])
    assert e.value.body["param"] == "max_tokens"
    assert e.value.body["message"] == "invalid 'max_tokens': expected a non-negative integer"
    wait_until(lambda: delta(before, run_gateway.metrics(), "tollgate_errors", reason="invalid_request") == 1)
    # No body, no model: refused, not sent to the route's default cluster without credentials.
    before = len(mock.requests())
    r = requests.post(run_gateway.url + "/v1/chat/completions", data=b"", timeout=10,
                      headers={"content-type": "application/json", "authorization": "Bearer sk-client-secret"})
    assert (r.status_code, r.json()["error"]["code"]) == (400, "invalid_json"), r.text
    assert len(mock.requests()) == before
    # What only the provider checks (a required field missing) is its own answer, unchanged.
    r = requests.post(run_gateway.url + "/v1/chat/completions", json={"model": "gpt-4o-mini"}, timeout=10,
                      headers={"authorization": "Bearer sk-client-secret"})
    assert (r.status_code, r.json()["error"]["code"], r.json()["error"]["param"]) == (
        400, "missing_required_parameter", "messages"), r.text


def test_provider_errors_arrive_in_the_openai_dialect(run_gateway):
    with pytest.raises(openai.InternalServerError) as e:
        client(run_gateway, **{"x-mock-status": "529"}).chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.status_code == 503
    assert e.value.body["code"] == "overloaded"
    with pytest.raises(openai.RateLimitError) as e:
        client(run_gateway, **{"x-mock-status": "429"}).chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.response.headers["retry-after"] == "2"
    assert e.value.body["code"] == "rate_limit_exceeded"


def test_clients_cannot_choose_a_cluster_by_header(run_gateway):
    request_id = str(uuid.uuid4())
    r = requests.post(run_gateway.url + "/v1beta/models/gemini-2.0-flash:generateContent", timeout=10,
                      headers={"x-tollgate-cluster": "anthropic", "x-request-id": request_id,
                               "content-type": "application/json", "x-goog-api-key": "k"},
                      data=json.dumps({"contents": [{"parts": [{"text": "Hi"}]}]}))
    assert r.status_code == 200
    entry = run_gateway.access_entry(request_id)
    assert (entry["route_name"], entry["upstream_cluster"]) == ("llm-provider", "provider")
    # A rewritten request goes where the model says, by the same header, set by the filter.
    request_id = str(uuid.uuid4())
    client(run_gateway, **{"x-request-id": request_id, "x-tollgate-cluster": "openai"}).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "Hi"}])
    entry = run_gateway.access_entry(request_id)
    assert (entry["route_name"], entry["upstream_cluster"]) == ("tollgate-backend", "anthropic")


def test_azure_deployments(run_gateway, mock):
    before = run_gateway.metrics()
    stream = client(run_gateway).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hi"}], stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    sent = mock.last_request("/openai/deployments/")
    assert sent["path"] == "/openai/deployments/gpt-4o-prod/chat/completions?api-version=2024-10-21"
    assert sent["headers"]["api-key"] == "mock-azure-key" and "authorization" not in sent["headers"]
    after = wait_until(lambda: (m := run_gateway.metrics()) and delta(
        before, m, "tollgate_gen_ai_client_token_usage", gen_ai_token_type="output", gen_ai_provider_name="azure") and m,
        what="azure token metrics")
    assert delta(before, after, "tollgate_gen_ai_client_token_usage", gen_ai_token_type="output",
                 gen_ai_provider_name="azure") == 7, "usage the filter asked Azure for (include_usage)"


def test_openai_compatible_servers(run_gateway, mock):
    client(run_gateway).embeddings.create(model="llama-3.1-8b", input="hello")
    sent = mock.last_request("/v1/embeddings")
    assert json.loads(sent["body"])["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert sent["headers"]["authorization"] == "Bearer mock-local-key"


def split_config(stable, canary):
    import copy

    import envoy_config

    config = copy.deepcopy(envoy_config.RUN_CONFIG_MOCK)
    table = config["provider_rewrite"]
    table["sticky_header"] = "x-tollgate-consumer"
    table["variant_header"] = "x-tollgate-variant"
    table["models"].append({"name": "chat", "split": [
        {"variant": "stable", "backend": "openai", "model": "gpt-4o-mini", "weight": stable},
        {"variant": "canary", "backend": "anthropic", "model": "claude-sonnet-4-20250514", "weight": canary}]})
    return config


@pytest.fixture(scope="module")
def canary_gateway(work, mock):
    from harness import Envoy

    e = Envoy(work, mock, name="canary", wasm="tollgate.wasm", filter_config=split_config(80, 20), dynamic=True)
    yield e
    e.stop()


def variants(gateway, consumers, **headers):
    """The variant each consumer's request went to, read from the access log."""
    session = requests.Session()
    ids = {}
    for consumer in consumers:
        request_id = str(uuid.uuid4())
        r = session.post(gateway.url + "/v1/chat/completions", timeout=10, data=json.dumps(
            {"model": "chat", "messages": [{"role": "user", "content": "Hi"}]}), headers={
            "content-type": "application/json", "authorization": "Bearer k", "x-tollgate-consumer": consumer,
            "x-request-id": request_id, **headers})
        assert r.status_code == 200, r.text
        assert r.json()["object"] == "chat.completion", "both variants answer in the client's dialect"
        ids[consumer] = request_id
    wait_until(lambda: {e.get("request_id") for e in gateway.access_entries()} >= set(ids.values()), what="access log")
    by_id = {e["request_id"]: e for e in gateway.access_entries()}
    return {consumer: by_id[rid]["variant"] for consumer, rid in ids.items()}


def test_canary_split_holds_its_weights_sticks_and_rolls_back_without_restart(canary_gateway):
    consumers = [f"team-{i}" for i in range(1000)]
    before = canary_gateway.metrics()
    first = variants(canary_gateway, consumers)
    canary = sum(v == "canary" for v in first.values())
    # Binomial(1000, 0.2): sd ≈ 12.6; 4 sd either side.
    assert 150 <= canary <= 250, canary
    after = canary_gateway.metrics()
    assert delta(before, after, "tollgate_provider_requests", variant="canary", backend="anthropic") == canary
    assert delta(before, after, "tollgate_provider_responses", variant="canary", status="2xx") == canary

    sample = consumers[:200]
    assert variants(canary_gateway, sample) == {c: first[c] for c in sample}, "sticky per consumer"
    stable_one = next(c for c in sample if first[c] == "stable")
    assert variants(canary_gateway, [stable_one], **{"x-tollgate-variant": "canary"})[stable_one] == "canary"

    pid = canary_gateway.proc.pid
    canary_gateway.reload(split_config(100, 0))  # rollback: a config change, no restart
    assert set(variants(canary_gateway, sample).values()) == {"stable"}
    canary_gateway.reload(split_config(80, 20))  # and forward again: the same consumers return
    assert variants(canary_gateway, sample) == {c: first[c] for c in sample}
    assert canary_gateway.proc.pid == pid and canary_gateway.proc.poll() is None


def anthropic_client(gateway, **headers):
    import anthropic

    return anthropic.Anthropic(base_url=gateway.url, api_key="sk-ant-client-secret", max_retries=0,
                               default_headers={"x-tollgate-consumer": "e2e-rewrite", **headers})


def test_anthropic_client_on_an_openai_backend(run_gateway, mock):
    reply = anthropic_client(run_gateway).messages.create(
        model="gpt-4o-mini", max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "Hello"}])
    assert reply.content[0].type == "text" and reply.content[0].text
    assert reply.stop_reason == "end_turn"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (19, 10)
    sent = mock.last_request("/v1/chat/completions")
    body = json.loads(sent["body"])
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["max_completion_tokens"] == 100
    assert sent["headers"]["authorization"] == "Bearer mock-openai-key"
    assert "x-api-key" not in sent["headers"] and "sk-ant-client-secret" not in json.dumps(sent)

    with anthropic_client(run_gateway).messages.stream(
            model="gpt-4o-mini", max_tokens=100, messages=[{"role": "user", "content": "Hello"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello! How can I help you today?"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (19, 9)


def test_anthropic_client_streams_tool_calls_from_an_openai_backend(run_gateway):
    tools = [{"name": "get_weather", "description": "Weather by city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    with anthropic_client(run_gateway, **{"x-mock-case": "openai-chat-tools-stream"}).messages.stream(
            model="gpt-4o-mini", max_tokens=100, tools=tools,
            messages=[{"role": "user", "content": "Weather in Recife?"}]) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    call = next(b for b in final.content if b.type == "tool_use")
    assert (call.name, call.input) == ("get_weather", {"city": "Recife", "unit": "celsius"})

    import anthropic

    with pytest.raises(anthropic.RateLimitError) as e:
        anthropic_client(run_gateway, **{"x-mock-status": "429"}).messages.create(
            model="gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    assert e.value.body["error"]["type"] == "rate_limit_error"


def test_gemini_and_vertex_backends(run_gateway, mock):
    reply = client(run_gateway).chat.completions.create(
        model="vertex/gemini-2.0-flash", messages=[{"role": "system", "content": "Be brief."},
                                                   {"role": "user", "content": "What is AI?"}])
    assert reply.choices[0].message.content == "AI learns patterns from data to make predictions."
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (8, 12)
    sent = mock.last_request(":generateContent")
    assert sent["path"] == "/v1/projects/demo/locations/us-central1/publishers/google/models/gemini-2.0-flash:generateContent"
    assert sent["headers"]["authorization"] == "Bearer mock-vertex-token"
    body = json.loads(sent["body"])
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "What is AI?"}]}]

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    stream = client(run_gateway, **{"x-mock-case": "gemini-function-stream"}).chat.completions.create(
        model="gemini-2.5-flash", messages=[{"role": "user", "content": "Weather in Recife?"}], tools=tools,
        stream=True, stream_options={"include_usage": True})
    calls, usage = [], None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            calls += choice.delta.tool_calls or []
    assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments)["city"] == "Recife"
    assert usage.completion_tokens == 70 and usage.completion_tokens_details.reasoning_tokens == 48
    sent = mock.last_request(":streamGenerateContent")
    assert sent["path"].endswith("/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    assert sent["headers"]["x-goog-api-key"] == "mock-gemini-key"

    # The next turn sends the call back: its thought signature goes back to Gemini with it.
    client(run_gateway).chat.completions.create(model="gemini-2.5-flash", tools=tools, messages=[
        {"role": "user", "content": "Weather in Recife?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude={"index"}) for call in calls]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "31C"}])
    body = json.loads(mock.last_request(":generateContent")["body"])
    assert body["contents"][1]["parts"][0]["thoughtSignature"] == "CiQBVKhc7hJ3wqv0kQ0iT9bUW8zZ1g=="
    assert body["contents"][2]["parts"][0]["functionResponse"] == {"name": "get_weather", "response": {"result": "31C"}}

    # Anthropic SDK on Gemini, streamed, through the OpenAI pivot.
    with anthropic_client(run_gateway, **{"x-mock-case": "gemini-function-stream"}).messages.stream(
            model="gemini-2.5-flash", max_tokens=100, messages=[{"role": "user", "content": "Weather?"}]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    assert next(b for b in final.content if b.type == "tool_use").input == {"city": "Recife", "unit": "celsius"}

    with pytest.raises(openai.BadRequestError):
        client(run_gateway, **{"x-mock-status": "400"}).chat.completions.create(
            model="gemini-2.5-flash", messages=[{"role": "user", "content": "Hi"}])


def test_bedrock_backend_signed_with_sigv4(run_gateway, mock):
    """The mock verifies each signature with its own SigV4 implementation (checked against AWS's
    test suite in test_mock_sigv4.py): a wrong one is a 403 the client would see."""
    reply = client(run_gateway).chat.completions.create(
        model="bedrock/claude-3-5-haiku", messages=[{"role": "system", "content": "Be brief."},
                                                    {"role": "user", "content": "Hello"}])
    assert reply.choices[0].message.content == "Hello! I'm doing well, thank you."
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (15, 42)
    sent = mock.last_request("/converse")
    assert sent["path"] == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    assert sent["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDTOLLGATEMOCK/")
    assert json.loads(sent["body"])["system"] == [{"text": "Be brief."}]

    stream = client(run_gateway).chat.completions.create(
        model="bedrock/claude-3-5-haiku", messages=[{"role": "user", "content": "Hello"}], stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello! How can I help you today?"
    assert chunks[-1].usage.total_tokens == 51
    assert mock.last_request("/converse-stream")["path"].endswith("v1%3A0/converse-stream")

    with anthropic_client(run_gateway).messages.stream(
            model="bedrock/claude-3-5-haiku", max_tokens=50, messages=[{"role": "user", "content": "Hi"}]) as s:
        assert "".join(s.text_stream) == "Hello! How can I help you today?"
        assert s.get_final_message().usage.output_tokens == 31

    with pytest.raises(openai.BadRequestError):
        client(run_gateway, **{"x-mock-status": "400"}).chat.completions.create(
            model="bedrock/claude-3-5-haiku", messages=[{"role": "user", "content": "Hi"}])


def test_a_tampered_bedrock_request_is_refused_by_the_mock(mock):
    """The mock's check is real: the same request with one byte changed after signing fails."""
    import requests as http

    r = http.post(mock.url + "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse", data=b'{"messages":[]}',
                  headers={"host": "bedrock-runtime.us-east-1.amazonaws.com", "x-amz-date": "20261127T000000Z",
                           "content-type": "application/json",
                           "authorization": "AWS4-HMAC-SHA256 Credential=AKIDTOLLGATEMOCK/20261127/us-east-1/bedrock/"
                                            "aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=00"})
    assert r.status_code == 403 and r.headers["x-amzn-errortype"] == "InvalidSignatureException"


def test_readme_many_providers_example_runs(run_gateway):
    """The README's 'One API, many providers' snippet, run as a user would run it."""
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, os.path.join(root, "examples/clients/many_providers.py")],
                         env={**os.environ, "TOLLGATE_URL": run_gateway.url}, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "claude -> Hello! How can I help you today? 33" in out
    assert "gemini-2.5-flash -> AI learns patterns from data to make predictions. 20" in out
    assert "bedrock/claude-3-5-haiku -> Hello! I'm doing well, thank you. 57" in out


def test_fallback_to_the_next_backend_with_per_attempt_translation(run_gateway, mock):
    # Claude answers: translated for the OpenAI client by the upstream filter.
    reply = client(run_gateway).chat.completions.create(model="resilient", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "Hello! How can I help you today?"
    assert reply.model == "claude-sonnet-4-20250514"

    # Claude fails (503 in Anthropic's format): Envoy retries on the next priority, GPT, and
    # that attempt is rewritten for OpenAI's API.
    request_id = str(uuid.uuid4())
    reply = client(run_gateway, **{"x-mock-fail-route": "anthropic", "x-request-id": request_id}).chat.completions.create(
        model="resilient", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "Hello! How can I assist you today?"
    attempts = [r for r in mock.requests() if r["headers"].get("x-request-id") == request_id]
    assert [r["path"] for r in attempts] == ["/v1/messages", "/v1/chat/completions"]
    assert json.loads(attempts[0]["body"])["model"] == "claude-sonnet-4-20250514"
    assert json.loads(attempts[1]["body"])["model"] == "gpt-4o-mini"
    assert attempts[0]["headers"]["x-api-key"] == "mock-anthropic-key"
    assert attempts[1]["headers"]["authorization"] == "Bearer mock-openai-key"
    entry = run_gateway.access_entry(request_id)
    assert entry["upstream_cluster"] == "fallback-resilient"

    # And for an Anthropic client: Claude fails, GPT answers in Anthropic's format.
    reply = anthropic_client(run_gateway, **{"x-mock-fail-route": "anthropic"}).messages.create(
        model="resilient", max_tokens=50, messages=[{"role": "user", "content": "Hi"}])
    assert reply.content[0].text == "Hello! How can I assist you today?"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (19, 10)

    # Gemini failing, Bedrock answering: that attempt is translated and SigV4-signed by the
    # upstream filter (the mock verifies the signature).
    request_id = str(uuid.uuid4())
    reply = client(run_gateway, **{"x-mock-fail-route": "gemini", "x-request-id": request_id}).chat.completions.create(
        model="resilient-cloud", messages=[{"role": "user", "content": "Hi"}])
    assert reply.choices[0].message.content == "Hello! I'm doing well, thank you."
    attempts = [r for r in mock.requests() if r["headers"].get("x-request-id") == request_id]
    assert [r["path"].rsplit("/", 1)[-1] for r in attempts] == ["gemini-2.0-flash:generateContent", "converse"]
    assert "x-goog-api-key" not in attempts[1]["headers"], "the previous attempt's credentials are gone"

    # Every backend failing: the last error, in the client's dialect.
    with pytest.raises(openai.InternalServerError) as e:
        client(run_gateway, **{"x-mock-fail-route": "", "x-mock-status": "500"}).chat.completions.create(
            model="resilient", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.status_code == 500 and e.value.body["type"] == "server_error"


def backends_used(gateway, n, model, **headers):
    """Sends n sequential requests for `model`; the backend each went to (access log)."""
    used = []
    for _ in range(n):
        request_id = str(uuid.uuid4())
        try:
            client(gateway, **{"x-request-id": request_id, **headers}).chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hi"}])
        except openai.APIStatusError:
            pass
        used.append(gateway.access_entry(request_id)["backend"])
    return used


def test_latency_policy_moves_traffic_to_the_faster_backend(run_gateway):
    used = backends_used(run_gateway, 40, "fastest", **{"x-mock-slow-route": "anthropic", "x-mock-delay-ms": "80"})
    assert "anthropic" in used[:3] and "openai" in used[:3], "each backend is measured first"
    # Then the fast one, but for the one request in twenty (drawn at random here) that explores
    # uniformly, so keeps measuring the other.
    assert used[3:].count("openai") >= 32, used


def test_cost_policy_takes_the_cheapest_and_leaves_out_a_failing_one(run_gateway):
    # One request in twenty explores, half of those to the dearer backend: over 20 requests, 5 or
    # more of them there has a chance of about 1 in 10,000 (6 requests allowing one, as before,
    # failed about once in a hundred runs); a uniform choice would send about 10.
    used = backends_used(run_gateway, 20, "cheapest")
    assert used.count("local") <= 4, f"the cheapest for these requests (one in twenty explores): {used}"
    # The cheapest starts failing: after two failures its error rate (40 %) takes it out, and
    # exploration never goes to a backend that is out.
    used = backends_used(run_gateway, 15, "cheapest", **{"x-mock-fail-route": "gemini"})
    assert set(used[7:]) == {"local"}, used


def test_backend_credentials_never_appear_in_logs_or_access_logs(run_gateway):
    """Run last in this module: by now every backend has been used. The keys of the run config
    reach the mock (checked above), never Envoy's log, the access log, metrics or an answer."""
    import envoy_config

    secrets = []
    for backend in envoy_config.RUN_CONFIG_MOCK["provider_rewrite"]["backends"].values():
        for field in ("api_key", "aws_secret_access_key"):
            if field in backend:
                secrets.append(backend[field]["value"])
    assert len(secrets) >= 7
    texts = [run_gateway.log_text(), json.dumps(run_gateway.access_entries()),
             "\n".join(str(k) for k in run_gateway.metrics())]
    for secret in secrets:
        assert all(secret not in text for text in texts), "a backend credential leaked"
    assert "panicked" not in texts[0]


def test_the_provider_rewrite_module_alone(work, mock):
    """tollgate_provider_rewrite.wasm (root id provider_rewrite) on its own in Envoy."""
    import copy

    import envoy_config
    from harness import Envoy

    config = copy.deepcopy(envoy_config.RUN_CONFIG_MOCK["provider_rewrite"])
    e = Envoy(work, mock, name="rewrite-alone", wasm="tollgate_provider_rewrite.wasm", filter_config=config)
    try:
        # Rendered from the bare section: the routes and clusters come from it as well.
        reply = client(e).chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}])
        assert reply.choices[0].message.content == "Hello! How can I help you today?"
        assert [m.id for m in client(e).models.list()][:2] == ["bedrock/claude-3-5-haiku", "cheapest"]
    finally:
        e.stop()


def access_config():
    """examples/access/api-keys.json: the example is what the test runs."""
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "examples", "access", "api-keys.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def access_gateway(work, mock):
    from harness import Envoy

    e = Envoy(work, mock, name="access", wasm="tollgate.wasm", filter_config=access_config())
    yield e
    e.stop()


def keyed(gateway, key, **headers):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, default_headers=headers)


def test_access_by_tier_behind_envoys_api_key_filter(access_gateway, mock):
    hi = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.AuthenticationError):  # Envoy's own filter: 401
        openai.OpenAI(base_url=access_gateway.url + "/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model="gpt-4o-mini", messages=hi)
    r = requests.post(access_gateway.url + "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": hi}, timeout=10)
    assert r.status_code == 401

    basic, premium = keyed(access_gateway, "key-basic"), keyed(access_gateway, "key-premium")
    assert basic.chat.completions.create(model="gpt-4o-mini", messages=hi).choices[0].message.content
    assert basic.chat.completions.create(model="claude", messages=hi).choices[0].message.content
    with pytest.raises(openai.PermissionDeniedError) as e:
        basic.chat.completions.create(model="gpt-4o", messages=hi)
    assert e.value.body["code"] == "model_not_allowed" and "gpt-4o" in e.value.body["message"]
    assert [m.id for m in basic.models.list()] == ["claude", "gpt-4o-mini"], "only the caller's models"

    assert premium.chat.completions.create(model="gemini-2.5-flash", messages=hi).choices[0].message.content
    premium.chat.completions.create(model="gpt-4o-mini", messages=hi)
    assert mock.last_request("/v1/chat/completions")["headers"]["authorization"] == "Bearer premium-own-openai-key"
    basic.chat.completions.create(model="gpt-4o-mini", messages=hi)
    assert mock.last_request("/v1/chat/completions")["headers"]["authorization"] == "Bearer mock-openai-key"
    for model in ("gpt-4.1", "legacy"):  # denied, directly or through an alias
        with pytest.raises(openai.PermissionDeniedError):
            premium.chat.completions.create(model=model, messages=hi)
    assert "legacy" not in [m.id for m in premium.models.list()]

    # Anthropic's SDK sends the key as `x-api-key`: the same keys, tiers and answers, in its dialect.
    import anthropic

    claude = anthropic.Anthropic(base_url=access_gateway.url, api_key="key-basic", max_retries=0)
    assert claude.messages.create(model="claude", max_tokens=10, messages=hi).content[0].text
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        claude.messages.create(model="gpt-4o", max_tokens=10, messages=hi)
    assert denied.value.body["error"]["type"] == "permission_error"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=access_gateway.url, api_key="wrong", max_retries=0).messages.create(
            model="claude", max_tokens=10, messages=hi)
    assert "key-basic" not in json.dumps(mock.last_request("/v1/messages")), "the key is hidden from the provider"

    # A client cannot claim another identity: the header is stripped before Envoy's filter sets it.
    forged = keyed(access_gateway, "key-basic", **{"x-tollgate-client": "team-premium"})
    with pytest.raises(openai.PermissionDeniedError):
        forged.chat.completions.create(model="gemini-2.5-flash", messages=hi)
    # The API key never reaches the provider, and metrics carry the authenticated identity.
    sent = mock.last_request("/v1/chat/completions")
    assert "key-basic" not in json.dumps(sent) and "key-premium" not in json.dumps(sent)
    metrics = access_gateway.metrics()
    assert metric_sum(metrics, "tollgate_gen_ai_client_token_usage", consumer="team-basic") > 0
    assert metric_sum(metrics, "tollgate_access_decisions", tier="basic", outcome="denied") >= 2
    assert metric_sum(metrics, "tollgate_gen_ai_client_token_usage", consumer="team-premium") > 0

    # The tier picks the guardrail profile: the basic tier may not send a CPF at all; the
    # premium tier (the base policy) sends it masked. A forged identity header changes nothing.
    cpf = [{"role": "user", "content": "Meu CPF é 529.982.247-25"}]
    for client in (basic, forged):
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(model="gpt-4o-mini", messages=cpf)
        assert e.value.code == "content_blocked" and "CPF" in e.value.message
    premium.chat.completions.create(model="gpt-4o-mini", messages=cpf)
    sent = json.loads(mock.last_request("/v1/chat/completions")["body"])
    assert sent["messages"][0]["content"] == "Meu CPF é [CPF_1]"


def jwt(secret, claims):
    """An HS256 JWT, made here (no library): header.payload.signature, base64url."""
    import base64
    import hashlib
    import hmac
    import time

    def b64(data):
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps({"iss": "tollgate-example", "exp": int(time.time()) + 3600, **claims}).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def test_jwt_claims_drive_the_consumer_and_tier(work, mock):
    from harness import Envoy

    config = access_config()
    table = config["provider_rewrite"]
    del table["api_keys"]
    secret = "tollgate-example-hs256-secret-32b"
    table["jwt"] = {"issuer": "tollgate-example", "secret": secret}
    claims = ["metadata", "filter_metadata", "envoy.filters.http.jwt_authn", "payload"]
    table["access"] = {"consumer": {"property": claims + ["sub"], "downstream_address": False},
                       "tier_property": claims + ["tier"],
                       "tiers": {"basic": {"allow": ["gpt-4o-mini"]}, "premium": {"allow": ["*"]}}}
    config["token_counter"] = {}
    e = Envoy(work, mock, name="jwt", wasm="tollgate.wasm", filter_config=config)
    try:
        hi = [{"role": "user", "content": "Hi"}]
        with pytest.raises(openai.AuthenticationError):  # jwt_authn: 401
            keyed(e, "not-a-jwt").chat.completions.create(model="gpt-4o-mini", messages=hi)
        forged = jwt("another-secret-of-the-same-size!!", {"sub": "mallory", "tier": "premium"})
        with pytest.raises(openai.AuthenticationError):
            keyed(e, forged).chat.completions.create(model="gpt-4o-mini", messages=hi)
        alice = keyed(e, jwt(secret, {"sub": "alice", "tier": "basic"}))
        bob = keyed(e, jwt(secret, {"sub": "bob", "tier": "premium"}))
        assert alice.chat.completions.create(model="gpt-4o-mini", messages=hi).choices
        with pytest.raises(openai.PermissionDeniedError):
            alice.chat.completions.create(model="gemini-2.5-flash", messages=hi)
        assert bob.chat.completions.create(model="gemini-2.5-flash", messages=hi).choices
        assert [m.id for m in alice.models.list()] == ["gpt-4o-mini"]
        metrics = e.metrics()
        assert metric_sum(metrics, "tollgate_access_decisions", tier="basic", outcome="denied") == 1
        assert metric_sum(metrics, "tollgate_access_decisions", tier="premium", outcome="allowed") == 1
    finally:
        e.stop()


@pytest.mark.parametrize("example,provider", [("provider-rewrite/providers.json", "https://api.openai.com"),
                                              ("access/api-keys.json", "mock:8081")])
def test_example_configurations_render_to_valid_envoy_configs(work, example, provider):
    """The examples' Envoy configurations, rendered as their READMEs say, pass `envoy --mode validate`."""
    import os
    import subprocess

    import envoy_config
    from harness import ROOT, WASM_DIR, envoy_binary

    with open(os.path.join(ROOT, "examples", example)) as f:
        config = json.load(f)
    path = os.path.join(work, example.replace("/", "-") + ".yaml")
    with open(path, "w") as f:
        f.write(envoy_config.render(wasm=os.path.join(WASM_DIR, "tollgate.wasm"), provider=provider, filter_config=config))
    # The keys the example takes from Envoy's environment (stand-ins here): validation runs the
    # plugin's configuration, which refuses a missing one.
    env = {**os.environ, **{name: "stand-in-key" for name in (
        "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}}
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", path], capture_output=True, text=True, timeout=60,
                            env=env)
    assert result.returncode == 0 and "OK" in result.stdout + result.stderr, result.stdout[-2000:] + result.stderr[-2000:]
