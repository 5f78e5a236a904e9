"""Fault injection against a real Envoy running every stage (token-counter, guardrails,
provider-rewrite, quota) on one worker: for each provider fault, what the client receives, what
the metrics say, and that the same worker (the same VM) serves the next request.

The table these tests assert is in the README (Reliability)."""
import json
import socket
import threading
import time

import pytest
import requests

from harness import Envoy, envoy_config, metric_sum, wait_until

FULL = {
    **envoy_config.RUN_CONFIG_MOCK,
    "guardrails": {"entities": {"default": "mask"}, "injection": {"action": "block"}, "response": {"restore": True}},
}


def short_timeouts(text):
    """The rendered config with 1.5 s route timeouts, so stalls time out within a test."""
    return text.replace("timeout: 300s", "timeout: 1.5s").replace('"timeout": "300s"', '"timeout": "1.5s"')


@pytest.fixture(scope="module")
def full(work, mock):
    text = envoy_config.render(wasm=envoy_config.ALL_IN_ONE, provider=f"mock:{mock.port}", listen_port=0, admin_port=0,
                               access_log=f"{work}/faults-access.log", filter_config=FULL)
    e = Envoy(work, mock, name="faults", config_text=short_timeouts(text), concurrency=1)
    yield e
    e.stop()


def call(envoy, model, stream=False, headers=None, timeout=10):
    """(status, content-type, body bytes, error): the raw bytes the client got, however it ended."""
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": "Hi"}]}
    try:
        r = requests.post(envoy.url + "/v1/chat/completions", json=body, timeout=timeout, stream=True,
                          headers={"authorization": "Bearer sk-faults", **(headers or {})})
    except requests.RequestException as e:
        return None, None, b"", type(e).__name__
    data, error = b"", None
    try:
        for chunk in r.raw.stream(4096, decode_content=False):
            data += chunk
    except Exception as e:  # noqa: BLE001 - how the body ended is what is checked
        error = type(e).__name__
    return r.status_code, r.headers.get("content-type"), data, error


def serves(envoy):
    """The worker still answers (the VM did not die): a plain request succeeds."""
    status, _, body, error = call(envoy, "gpt-4o-mini")
    assert (status, error) == (200, None) and json.loads(body)["choices"], body
    assert envoy.stat("wasm.token-counter.vm_reload_success") == 0, "no VM was replaced"
    assert envoy.stat("wasm.token-counter.vm_reload_backoff") == 0


def error_of(body):
    return json.loads(body)["error"]


RESETS = [
    ("reset-before-headers", "gpt-4o-mini", False),
    ("reset-before-headers", "claude", True),
    ("reset-before-headers", "bedrock/claude-3-5-haiku", True),
]


@pytest.mark.parametrize("fault,model,stream", RESETS)
def test_a_reset_before_the_response_is_a_503_in_the_clients_dialect(full, fault, model, stream):
    before = full.metrics()
    status, content_type, body, error = call(full, model, stream, {"x-mock-fault": fault})
    assert (status, content_type, error) == (503, "application/json", None)
    assert error_of(body)["code"] == "upstream_unreachable"
    assert "upstream_reset_before_response_started" in error_of(body)["message"]
    after = wait_until(lambda: (m := full.metrics()) and
                       metric_sum(m, "tollgate_errors", reason="upstream_unreachable") > metric_sum(before, "tollgate_errors", reason="upstream_unreachable") and m)
    assert metric_sum(after, "tollgate_gen_ai_requests", error_type="503") > metric_sum(before, "tollgate_gen_ai_requests", error_type="503")
    serves(full)


def test_an_anthropic_client_gets_anthropics_error_shape(full):
    r = requests.post(full.url + "/v1/messages", timeout=10, headers={"x-api-key": "sk-ant", "x-mock-fault": "reset-before-headers"},
                      json={"model": "claude-sonnet-4", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]})
    assert r.status_code == 503 and r.json()["type"] == "error" and r.json()["error"]["type"] == "api_error"
    serves(full)


@pytest.mark.parametrize("fault", ["reset-after-headers", "reset-mid-stream"])
@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude", "bedrock/claude-3-5-haiku"])
def test_a_reset_after_the_headers_ends_the_stream_and_is_counted_incomplete(full, fault, model):
    before = full.metrics()
    status, _, body, error = call(full, model, True, {"x-mock-fault": fault})
    # The 200 already left: the client sees the connection end early, never a made-up ending.
    assert status == 200 and error is not None
    assert b"[DONE]" not in body
    wait_until(lambda: metric_sum(full.metrics(), "tollgate_gen_ai_requests", error_type="incomplete")
               > metric_sum(before, "tollgate_gen_ai_requests", error_type="incomplete"), what="incomplete counted")
    serves(full)


def test_a_stall_before_the_headers_is_a_504_in_the_clients_dialect(full):
    started = time.monotonic()
    status, content_type, body, error = call(full, "claude", True, {"x-mock-fault": "stall-before-headers"})
    assert (status, content_type, error) == (504, "application/json", None)
    assert error_of(body)["code"] == "upstream_timeout" and time.monotonic() - started < 8
    serves(full)


def test_a_stall_mid_response_is_cut_by_the_route_timeout(full):
    status, _, body, error = call(full, "gpt-4o-mini", True, {"x-mock-fault": "stall-after-headers"})
    assert status == 200 and error is not None and b"[DONE]" not in body
    serves(full)


def test_malformed_provider_answers_never_reach_the_client_as_if_valid(full):
    before = full.metrics()
    # JSON cut short, same API: guardrails cannot check it and withhold it (failure: closed); the
    # status already left as 200, so the body says what happened.
    status, _, body, _ = call(full, "gpt-4o-mini", False, {"x-mock-fault": "malformed"})
    assert status == 200 and error_of(body)["code"] == "bad_gateway"
    # Translated JSON: provider-rewrite cannot translate it.
    status, _, body, _ = call(full, "claude", False, {"x-mock-fault": "malformed"})
    assert error_of(body)["code"] == "bad_gateway"
    # SSE with broken events: the stream ends with one error event in the client's dialect.
    for model in ["gpt-4o-mini", "claude"]:
        status, _, body, error = call(full, model, True, {"x-mock-fault": "malformed"})
        events = [e for e in body.split(b"\n\n") if e.strip()]
        assert status == 200 and error is None
        assert json.loads(events[-1].removeprefix(b"data: "))["error"]["code"] == "bad_gateway", events[-1]
    # An event-stream frame cut in the middle: decoded up to the cut, then the stream ends.
    status, _, body, error = call(full, "bedrock/claude-3-5-haiku", True, {"x-mock-fault": "malformed"})
    assert status == 200 and b"[DONE]" not in body
    after = wait_until(lambda: (m := full.metrics()) and metric_sum(m, "tollgate_token_counter_unread", reason="eventstream_truncated")
                       > metric_sum(before, "tollgate_token_counter_unread", reason="eventstream_truncated") and m)
    assert metric_sum(after, "tollgate_guardrails_unchecked", reason="response_unreadable") > \
        metric_sum(before, "tollgate_guardrails_unchecked", reason="response_unreadable")
    serves(full)


@pytest.mark.parametrize("encoding", ["1", "deflate", "br"])
def test_compressed_answers_are_delivered_as_sent_and_counted(full, mock, encoding):
    before = full.metrics()
    status, _, body, error = call(full, "gpt-4o-mini", False, {"x-mock-gzip": encoding})
    assert (status, error) == (200, None) and body[:1] != b"{", "delivered compressed, byte for byte"
    if encoding == "br":
        wait_until(lambda: metric_sum(full.metrics(), "tollgate_token_counter_unread", reason="response_unsupported_encoding")
                   > metric_sum(before, "tollgate_token_counter_unread", reason="response_unsupported_encoding"))
    else:  # gzip and deflate are read on the side: usage counted.
        wait_until(lambda: metric_sum(full.metrics(), "tollgate_gen_ai_client_token_usage", gen_ai_token_type="output")
                   > metric_sum(before, "tollgate_gen_ai_client_token_usage", gen_ai_token_type="output"))
    # A compressed answer that must be translated is a 502, said before the body.
    status, content_type, body, _ = call(full, "claude", False, {"x-mock-gzip": encoding})
    assert (status, content_type) == (502, "application/json") and error_of(body)["code"] == "bad_gateway"
    serves(full)


def test_answers_larger_than_what_the_filters_hold_are_refused_not_truncated(full):
    """Guardrails hold a JSON answer to check it (up to 4 MiB), provider-rewrite to translate it
    (`max_response_bytes`, 8 MiB by default): beyond, the client gets an error, never a cut answer."""
    before = full.metrics()
    status, _, body, error = call(full, "gpt-4o-mini", False, {"x-mock-pad": str(5 << 20)}, timeout=30)
    assert (status, error) == (200, None) and error_of(body)["code"] == "content_blocked"
    assert "response_too_large" in error_of(body)["message"]
    wait_until(lambda: metric_sum(full.metrics(), "tollgate_guardrails_unchecked", reason="answer_too_large")
               > metric_sum(before, "tollgate_guardrails_unchecked", reason="answer_too_large"))
    status, _, body, error = call(full, "claude", False, {"x-mock-pad": str(9 << 20)}, timeout=30)
    assert error is None and error_of(body)["code"] == "bad_gateway", body[:200]
    assert "max_response_bytes" in error_of(body)["message"]
    serves(full)


def test_a_client_that_disconnects_mid_stream_leaves_nothing_behind(full):
    before = full.metrics()
    host, port = full.url.removeprefix("http://").split(":")
    body = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}).encode()
    for _ in range(5):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
                  b"authorization: Bearer sk-gone\r\nx-mock-delay-ms: 200\r\n"
                  b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.close()  # gone, mid-stream
    wait_until(lambda: metric_sum(full.metrics(), "tollgate_quota_settlements")
               >= metric_sum(before, "tollgate_quota_settlements") + 5, what="the 5 reservations settled")
    serves(full)


def test_a_tollgate_503_stays_tollgates(work, mock):
    """The rate-limit service is down and `failure_mode: deny`: the quota's own 503 reaches the
    client as written (`service_unavailable`), not reworded as an unreachable provider."""
    from harness import free_port

    config = {"quota": {"consumer": {"header": "authorization", "salt": "s"},
                        "limits": [{"name": "rpm", "meter": "requests", "per": "consumer", "window": "minute", "limit": 10}],
                        "global": {"backend": "check_report", "cluster": "rls", "failure_mode": "deny", "timeout_ms": 200}}}
    envoy = Envoy(work, mock, name="rls-down", wasm="tollgate.wasm", filter_config=config, rls_port=free_port())
    try:
        status, content_type, body, error = call(envoy, "gpt-4o-mini")
        assert (status, content_type, error) == (503, "application/json", None)
        assert error_of(body)["code"] == "service_unavailable", body
    finally:
        envoy.stop()


def test_concurrent_config_reloads_lose_no_request(work, mock):
    envoy = Envoy(work, mock, name="reloads", wasm="tollgate.wasm", filter_config=FULL, dynamic=True, concurrency=2)
    results, stop = [], threading.Event()

    def traffic():
        while not stop.is_set():
            status, _, body, error = call(envoy, "gpt-4o-mini", stream=bool(len(results) % 2))
            results.append((status, error))

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for i in range(8):
            limit = 100000 + i
            config = json.loads(json.dumps(FULL))
            config["quota"]["limits"][0]["limit"] = limit
            envoy.reload(config)
        stop.set()
        for t in threads:
            t.join(30)
        assert len(results) > 50
        assert all(r == (200, None) for r in results), [r for r in results if r != (200, None)][:5]
        reply = requests.post(envoy.url + "/v1/chat/completions", timeout=10, headers={"authorization": "Bearer sk-r"},
                              json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})
        assert reply.headers["x-ratelimit-limit-tokens"] == "100007", "the last configuration is in effect"
    finally:
        stop.set()
        envoy.stop()
