"""quota end to end: tollgate.wasm (token-counter + quota) in a real Envoy with 2 workers.

Counters live in Envoy's shared data, shared by both workers; every test uses its own API key
(the consumer), so tests do not see each other's counters.
"""
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from harness import ROOT, Envoy, wait_until

RESULTS = os.path.join(ROOT, "bench", "results")
STREAM_USAGE = 310 + 18  # openai-chat-stream-20: what the provider reports per request
PLAIN_USAGE = 19 + 10     # openai-chat


def quota_config(limit, admission="reserve", mode="enforce", window="hour"):
    return {
        "token_counter": {"consumer_header": "x-tollgate-consumer"},
        "quota": {
            "mode": mode,
            "admission": admission,
            "consumer": {"header": "authorization", "salt": "e2e"},
            "limits": [
                {"name": "tokens_per_hour", "meter": "total_tokens", "per": "consumer", "window": window, "limit": limit},
                {"name": "requests_per_hour", "meter": "requests", "per": "consumer", "window": window, "limit": 100000},
            ],
        },
    }


@pytest.fixture(scope="module")
def quota_gateway(work, mock):
    e = Envoy(work, mock, name="quota", wasm="tollgate.wasm", filter_config=quota_config(5000))
    yield e
    e.stop()


def away_from_hour_boundary():
    """Counters reset with the hour: do not start a test in its last seconds."""
    left = 3600 - time.time() % 3600
    if left < 15:
        time.sleep(left + 1)


def key():
    return "sk-" + uuid.uuid4().hex


# A prompt the estimator puts close to the 310 input tokens the fixture reports, and an output
# cap above the 18 it reports: each reservation covers the request's real usage.
PROMPT = ("Explain, step by step, how a gateway counts the tokens of a streamed answer and why it must never "
          "buffer the stream while doing so. ") * 12


def stream_request(base, api_key, delay_ms=20):
    body = {"model": "gpt-4o-mini", "stream": True, "max_tokens": 40, "messages": [{"role": "user", "content": PROMPT}]}
    response = requests.post(base + "/v1/chat/completions", data=json.dumps(body), timeout=60,
                             headers={"content-type": "application/json", "authorization": f"Bearer {api_key}",
                                      "x-mock-case": "openai-chat-stream-20", "x-mock-delay-ms": str(delay_ms)})
    return response.status_code, response.headers


def plain_request(base, api_key, **extra):
    body = {"model": "gpt-4.1", "max_tokens": 20, "messages": [{"role": "user", "content": "Hello!"}]}
    return requests.post(base + "/v1/chat/completions", data=json.dumps(body), timeout=30,
                         headers={"content-type": "application/json", "authorization": f"Bearer {api_key}", **extra})


def test_sequential_traffic_is_held_to_the_limit(quota_gateway):
    away_from_hour_boundary()
    api_key = key()
    admitted, last_remaining = 0, None
    for _ in range(400):
        r = plain_request(quota_gateway.url, api_key)
        if r.status_code == 429:
            refused = r
            break
        assert r.status_code == 200
        admitted += 1
        last_remaining = int(r.headers["x-ratelimit-remaining-tokens"])
    else:
        pytest.fail("never refused")
    used = admitted * PLAIN_USAGE
    assert used <= 5000, "never over the limit when each reservation covers its usage"
    # Refused only because the next reservation would not fit in what is left.
    remaining_at_refusal = int(refused.headers["x-ratelimit-remaining-tokens"])
    assert remaining_at_refusal == 5000 - used, "the 429 reports exactly what is left after settlement"
    assert remaining_at_refusal < 60, "refused only when the next reservation (≈ 50) no longer fits"
    assert last_remaining is not None
    body = refused.json()
    assert body["error"]["code"] == "rate_limit_exceeded" and "tokens_per_hour" in body["error"]["message"]
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    assert refused.headers["x-ratelimit-limit-tokens"] == "5000"


def test_the_openai_sdk_sees_a_rate_limit_error_with_headers(quota_gateway):
    away_from_hour_boundary()
    client = openai.OpenAI(base_url=quota_gateway.url + "/v1", api_key=key(), max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4.1", messages=[{"role": "user", "content": "Hi"}], max_tokens=10)
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 5000
    assert raw.headers["x-ratelimit-limit-requests"] == "100000"
    with pytest.raises(openai.RateLimitError) as error:
        client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "Hi"}], max_tokens=9000)
    assert error.value.response.headers["retry-after"]
    assert error.value.body["code"] == "rate_limit_exceeded"
    # Eight completions of up to 1000 tokens each are reserved as 8000: refused, where one fits.
    hi = [{"role": "user", "content": "Hi"}]
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4.1", messages=hi, max_tokens=1000, n=8)
    assert client.chat.completions.create(model="gpt-4.1", messages=hi, max_tokens=1000, n=1).usage.total_tokens > 0


def test_consumers_do_not_affect_each_other(quota_gateway):
    away_from_hour_boundary()
    a, b = key(), key()
    for _ in range(200):
        if plain_request(quota_gateway.url, a).status_code == 429:
            break
    assert plain_request(quota_gateway.url, a).status_code == 429
    r = plain_request(quota_gateway.url, b)
    assert r.status_code == 200 and int(r.headers["x-ratelimit-remaining-tokens"]) > 4900


def test_a_reset_stream_releases_its_reservation(quota_gateway):
    away_from_hour_boundary()
    api_key = key()
    with pytest.raises(requests.exceptions.RequestException):
        body = {"model": "gpt-4o-mini", "stream": True, "max_tokens": 3000, "messages": [{"role": "user", "content": "Hi"}]}
        r = requests.post(quota_gateway.url + "/v1/chat/completions", data=json.dumps(body), timeout=30, stream=True,
                          headers={"content-type": "application/json", "authorization": f"Bearer {api_key}",
                                   "x-mock-fault": "reset-mid-stream", "x-mock-case": "openai-chat-stream-20"})
        b"".join(r.iter_content(64))
    time.sleep(0.3)
    r = plain_request(quota_gateway.url, api_key)
    assert r.status_code == 200
    # Only this request's own reservation is missing: the reset one was given back.
    assert int(r.headers["x-ratelimit-remaining-tokens"]) > 5000 - 60


def concurrent_streams(gateway, n=64):
    api_key = key()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda _: stream_request(gateway.url, api_key), range(n)))
    admitted = sum(1 for status, _ in results if status == 200)
    refused = sum(1 for status, _ in results if status == 429)
    assert admitted + refused == n, results
    return admitted


def test_concurrent_streams_overshoot_by_at_most_one_request(quota_gateway, work, mock):
    """64 concurrent streaming requests of one consumer, limit 5000 tokens: with reservations
    the admitted total stays within one request of the limit; post-accounting (admit while
    under, charge at the end) lets them all through. Both measured here, in the same run."""
    away_from_hour_boundary()
    admitted = concurrent_streams(quota_gateway)
    overshoot = admitted * STREAM_USAGE - 5000
    one_request = STREAM_USAGE + 40
    assert overshoot <= one_request, f"{admitted} admitted: {admitted * STREAM_USAGE} tokens"
    assert admitted >= 5000 // (STREAM_USAGE + 60), f"{admitted}: reservations too large to be useful"

    post = Envoy(work, mock, name="quota-post-accounting", wasm="tollgate.wasm", filter_config=quota_config(5000, "post_accounting"))
    try:
        post_admitted = concurrent_streams(post)
    finally:
        post.stop()
    post_overshoot = post_admitted * STREAM_USAGE - 5000
    assert post_overshoot > overshoot
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "quota-overshoot.json"), "w") as f:
        json.dump({"limit": 5000, "requests": 64, "tokens_per_request": STREAM_USAGE,
                   "reserve": {"admitted": admitted, "overshoot": overshoot},
                   "post_accounting": {"admitted": post_admitted, "overshoot": post_overshoot}}, f, indent=2)
    print(f"\nreserve: {admitted} admitted, overshoot {overshoot}; post-accounting: {post_admitted} admitted, overshoot {post_overshoot}")


def test_shadow_mode_never_refuses_and_reports(work, mock):
    shadow = Envoy(work, mock, name="quota-shadow", wasm="tollgate.wasm", filter_config=quota_config(100, mode="shadow"))
    try:
        api_key = key()
        for _ in range(8):
            r = plain_request(shadow.url, api_key)
            assert r.status_code == 200
        assert r.headers["x-ratelimit-remaining-tokens"] == "0"
        assert r.headers["x-tollgate-quota-shadow"] == "exhausted=tokens_per_hour"
    finally:
        shadow.stop()


def test_one_key_is_one_budget_for_the_openai_and_the_anthropic_sdk(work, mock):
    """OpenAI's SDK sends the key as `authorization: Bearer`, Anthropic's as `x-api-key`: with
    both headers named, the key's budget is one, whichever SDK spends it."""
    import anthropic

    config = {"token_counter": {}, "quota": {
        "consumer": {"header": ["authorization", "x-api-key"], "salt": "e2e", "downstream_address": False},
        "unknown_consumer": "refuse",
        "limits": [{"name": "requests_per_hour", "meter": "requests", "per": "consumer", "window": "hour", "limit": 3}]}}
    gateway = Envoy(work, mock, name="quota-two-sdks", wasm="tollgate.wasm", filter_config=config)
    try:
        away_from_hour_boundary()
        api_key = key()
        gpt = openai.OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0)
        claude = anthropic.Anthropic(base_url=gateway.url, api_key=api_key, max_retries=0)
        hi = [{"role": "user", "content": "Hi"}]
        gpt.chat.completions.create(model="gpt-4.1", messages=hi, max_tokens=10)
        claude.messages.create(model="claude-sonnet-4-20250514", max_tokens=10, messages=hi)
        raw = claude.messages.with_raw_response.create(model="claude-sonnet-4-20250514", max_tokens=10, messages=hi)
        assert raw.headers["x-ratelimit-remaining-requests"] == "0", "three requests of one key"
        with pytest.raises(openai.RateLimitError):
            gpt.chat.completions.create(model="gpt-4.1", messages=hi, max_tokens=10)
        with pytest.raises(anthropic.RateLimitError) as error:
            claude.messages.create(model="claude-sonnet-4-20250514", max_tokens=10, messages=hi)
        assert error.value.body["error"]["type"] == "rate_limit_error"
        # Another key has its own budget; no key at all is refused.
        other = anthropic.Anthropic(base_url=gateway.url, api_key=key(), max_retries=0)
        assert other.messages.create(model="claude-sonnet-4-20250514", max_tokens=10, messages=hi).content
        r = requests.post(gateway.url + "/v1/chat/completions", json={"model": "gpt-4.1", "messages": hi}, timeout=10)
        assert r.status_code == 401
    finally:
        gateway.stop()


def test_a_token_count_is_not_metered(quota_gateway):
    """Counting tokens generates nothing and is free at the providers: a count whose prompt alone
    is past the limit is answered, with the key's standing in its headers, and nothing is charged."""
    away_from_hour_boundary()
    api_key = key()
    long = "Count the tokens of this prompt, which is longer than the whole hourly budget. " * 400
    body = {"model": "claude-sonnet-4-20250514", "messages": [{"role": "user", "content": long}]}
    counted = requests.post(quota_gateway.url + "/v1/messages/count_tokens", data=json.dumps(body), timeout=30,
                            headers={"content-type": "application/json", "authorization": f"Bearer {api_key}",
                                     "anthropic-version": "2023-06-01"})
    assert counted.status_code == 200, counted.text[:300]
    assert counted.json() == {"input_tokens": 14}
    # The answer shows the key's standing, untouched.
    limit = counted.headers["x-ratelimit-limit-tokens"]
    assert counted.headers["x-ratelimit-remaining-tokens"] == limit
    assert counted.headers["x-ratelimit-remaining-requests"] == counted.headers["x-ratelimit-limit-requests"]
    after = plain_request(quota_gateway.url, api_key)
    assert after.status_code == 200
    assert after.headers["x-ratelimit-limit-tokens"] == limit
    assert 4900 < int(after.headers["x-ratelimit-remaining-tokens"]) < 5000, "only this request's reservation"


def test_speech_is_reserved_and_settled(quota_gateway):
    """Text to speech is limited like any generation: a stream is settled to its
    `speech.audio.done` usage (115), the audio answer (no usage in it) keeps its reservation
    (the text's estimate + the default output, 4096), and the next is refused with a 429."""
    away_from_hour_boundary()
    client = openai.OpenAI(base_url=quota_gateway.url + "/v1", api_key=key(), max_retries=0)
    text = "Today is a wonderful day to build something people love!"
    with client.audio.speech.with_streaming_response.create(model="gpt-4o-mini-tts", voice="coral", input=text,
                                                            stream_format="sse") as streamed:
        assert b'"usage":{"input_tokens":14,"output_tokens":101,"total_tokens":115}' in streamed.read()
    raw = client.audio.speech.with_raw_response.create(model="gpt-4o-mini-tts", voice="coral", input=text)
    assert raw.content.startswith(b"ID3")
    left = int(raw.headers["x-ratelimit-remaining-tokens"])
    assert 5000 - 115 - 4200 < left < 5000 - 115 - 4096, f"115 settled, this one's reservation held: {left}"
    with pytest.raises(openai.RateLimitError) as refused:
        client.audio.speech.create(model="gpt-4o-mini-tts", voice="coral", input=text)
    assert "tokens_per_hour" in refused.value.body["message"]


def test_a_background_response_is_charged_its_reservation(quota_gateway):
    """OpenAI's background mode answers queued and generates afterwards: the gateway keeps the
    reservation as the charge (releasing it would let `background` slip past the limit)."""
    away_from_hour_boundary()
    client = openai.OpenAI(base_url=quota_gateway.url + "/v1", api_key=key(), max_retries=0)
    raw = client.responses.with_raw_response.create(model="gpt-4.1", input="Hi", background=True, max_output_tokens=1000)
    response = raw.parse()
    assert (response.status, response.usage) == ("queued", None)
    left = int(raw.headers["x-ratelimit-remaining-tokens"])
    assert 3990 <= left < 4000, "the reservation (≈ 1000 + the prompt) is held while the answer leaves"
    # The next request sees it kept: settled to the reservation, not released.
    after = client.responses.with_raw_response.create(model="gpt-4.1", input="Hi", max_output_tokens=10)
    assert int(after.headers["x-ratelimit-remaining-tokens"]) < left, "still charged"
    # The access log tells the queued answer's usage as deferred (not missing), the other's as reported.
    def usage_logged():
        usage = [e["usage"] for e in quota_gateway.access_entries() if e.get("path") == "/v1/responses"]
        return usage if len(usage) >= 2 else None

    assert wait_until(usage_logged, what="access log lines of both requests")[-2:] == ["deferred", "reported"]


def test_a_message_batch_is_charged_each_of_its_requests(work, mock):
    """Anthropic's Message Batches answer queued, with no usage: the batch reserves every request
    (prompt + max_tokens), counts as that many requests, keeps the reservation as its charge,
    and a batch past the budget is refused in Anthropic's dialect."""
    import anthropic

    config = {"token_counter": {}, "quota": {
        "consumer": {"header": ["authorization", "x-api-key"], "salt": "e2e"},
        "limits": [{"name": "tokens_per_hour", "meter": "total_tokens", "per": "consumer", "window": "hour", "limit": 5000},
                   {"name": "requests_per_hour", "meter": "requests", "per": "consumer", "window": "hour", "limit": 100}]}}
    gateway = Envoy(work, mock, name="quota-batch", wasm="tollgate.wasm", filter_config=config)
    try:
        away_from_hour_boundary()
        client = anthropic.Anthropic(base_url=gateway.url, api_key=key(), max_retries=0)

        def requests_of(n):
            return [{"custom_id": f"r{i}", "params": {"model": "claude-sonnet-4-20250514", "max_tokens": 1000,
                                                      "messages": [{"role": "user", "content": "Hi"}]}} for i in range(n)]

        raw = client.messages.batches.with_raw_response.create(requests=requests_of(3))
        assert raw.parse().processing_status == "in_progress"
        assert raw.headers["x-ratelimit-remaining-requests"] == "97", "three requests"
        left = int(raw.headers["x-ratelimit-remaining-tokens"])
        assert 1950 <= left < 2000, f"3 × (1000 + the prompt) reserved: {left} left"
        # Still charged after the answer (no usage to settle to), and two more of 1000 do not fit.
        with pytest.raises(anthropic.RateLimitError) as error:
            client.messages.batches.create(requests=requests_of(2))
        assert error.value.body["error"]["type"] == "rate_limit_error"
        one = client.messages.with_raw_response.create(model="claude-sonnet-4-20250514", max_tokens=10,
                                                       messages=[{"role": "user", "content": "Hi"}])
        assert int(one.headers["x-ratelimit-remaining-tokens"]) < left
        usage = wait_until(lambda: [e["usage"] for e in gateway.access_entries() if e.get("path") == "/v1/messages/batches"],
                           what="the batch's access log line")
        assert usage[0] == "deferred"
    finally:
        gateway.stop()


def test_bedrock_invoke_is_settled_to_bedrocks_counts_per_access_key(work, mock):
    """The Anthropic SDK's Bedrock client signs every request anew (SigV4): the consumer is the
    access key id, so re-signing is no way round the limit; InvokeModel reserves `max_tokens` and
    settles to the counts Bedrock sends in its `x-amzn-bedrock-*-token-count` headers."""
    import anthropic

    config = {"token_counter": {}, "quota": {
        "consumer": {"header": "authorization", "salt": "e2e", "downstream_address": False},
        "unknown_consumer": "refuse",
        "limits": [{"name": "tokens_per_hour", "meter": "total_tokens", "per": "consumer", "window": "hour", "limit": 5000},
                   {"name": "requests_per_hour", "meter": "requests", "per": "consumer", "window": "hour", "limit": 3}]}}
    gateway = Envoy(work, mock, name="quota-bedrock", wasm="tollgate.wasm", filter_config=config)
    try:
        away_from_hour_boundary()
        client = anthropic.AnthropicBedrock(base_url=gateway.url, aws_access_key="AKIDTOLLGATEMOCK",
                                            aws_secret_key="tollgate-mock-secret-key", aws_region="us-east-1", max_retries=0)
        hi = [{"role": "user", "content": "Hello, how are you?"}]
        model = "anthropic.claude-3-5-haiku-20241022-v1:0"
        first = client.messages.with_raw_response.create(model=model, max_tokens=1000, messages=hi)
        second = client.messages.with_raw_response.create(model=model, max_tokens=1000, messages=hi)
        left = [int(r.headers["x-ratelimit-remaining-tokens"]) for r in (first, second)]
        assert 3950 <= left[0] < 4000, f"the reservation (1000 + the prompt) is held: {left}"
        assert left[0] - left[1] == 14 + 10, f"the first was settled to Bedrock's counts: {left}"
        assert second.headers["x-ratelimit-remaining-requests"] == "1", "one consumer, however each request was signed"
        client.messages.create(model=model, max_tokens=10, messages=hi)
        with pytest.raises(anthropic.RateLimitError):
            client.messages.create(model=model, max_tokens=10, messages=hi)
        other = anthropic.AnthropicBedrock(base_url=gateway.url, aws_access_key="AKIDANOTHERKEY", aws_secret_key="x",
                                           aws_region="us-east-1", max_retries=0)
        assert other.messages.create(model=model, max_tokens=10, messages=hi).content, "another key, another budget"
    finally:
        gateway.stop()


# --- stream cut-off -------------------------------------------------------------------------

CUT_PROMPT = "Tell me how a gateway streams an answer."


def cut_off_config(limit):
    return {
        "token_counter": {},
        "quota": {
            "consumer": {"header": "authorization", "salt": "e2e"},
            "stream_cut_off": True,
            "default_max_output_tokens": 1,
            "limits": [{"name": "tokens_per_hour", "meter": "total_tokens", "per": "consumer", "window": "hour",
                        "limit": limit}],
        },
    }


def openai_stream(client, case="openai-chat-stream-20"):
    """Streams with the OpenAI SDK; returns (text received, the error raised or None)."""
    text = []
    try:
        stream = client.chat.completions.create(model="gpt-4o-mini", stream=True,
                                                messages=[{"role": "user", "content": CUT_PROMPT}],
                                                extra_headers={"x-mock-case": case, "x-mock-delay-ms": "5"})
        for chunk in stream:
            text.extend(c.delta.content or "" for c in chunk.choices)
    except openai.APIError as error:
        return "".join(text), error
    return "".join(text), None


def test_a_stream_that_outgrows_its_consumers_quota_is_cut_off(work, mock):
    """stream_cut_off: the OpenAI SDK gets the first part of the answer, then one error event naming
    the limit (raised as APIError); the stream is reset, the consumer is charged what was streamed
    and refused next. Without the option the same stream runs to its end."""
    import anthropic

    away_from_hour_boundary()
    # What one request reserves (estimated prompt + 1 output token), from the headers of a
    # gateway with room to spare.
    probe = Envoy(work, mock, name="cut-probe", wasm="tollgate.wasm", filter_config=cut_off_config(100000))
    try:
        client = openai.OpenAI(base_url=probe.url + "/v1", api_key=key(), max_retries=0)
        full, error = openai_stream(client)
        assert error is None and full.startswith("Streaming responses arrive token by token")
        fresh = openai.OpenAI(base_url=probe.url + "/v1", api_key=key(), max_retries=0)
        raw = fresh.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", max_tokens=1, messages=[{"role": "user", "content": CUT_PROMPT}])
        reserved = 100000 - int(raw.headers["x-ratelimit-remaining-tokens"])
    finally:
        probe.stop()

    # Room for about eight output tokens: the 18-token answer is cut.
    gateway = Envoy(work, mock, name="cut-off", wasm="tollgate.wasm", filter_config=cut_off_config(reserved + 8))
    try:
        api_key = key()
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0)
        text, error = openai_stream(client)
        assert error is not None, "the stream was cut"
        assert "tokens_per_hour" in str(error) and getattr(error, "code", None) == "rate_limit_exceeded", error
        assert 0 < len(text) < len(full) and full.startswith(text), (text, full)
        _, refused = openai_stream(client)
        assert isinstance(refused, openai.RateLimitError), refused
        time.sleep(0.5)
        metrics = gateway.metrics()
        cut = [v for (name, labels), v in metrics.items()
               if name == "tollgate_quota_streams_cut" and ("limit", "tokens_per_hour") in labels]
        assert cut == [1.0], cut
        settled = [v for (name, labels), v in metrics.items()
                   if name == "tollgate_quota_settlements" and ("outcome", "estimated") in labels]
        assert settled == [1.0], "settled to what was streamed (the provider's usage never came)"

        # A client that reads on after the error event: the stream was reset (no clean end of
        # the chunked body), and the error event was the last thing sent.
        body = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": CUT_PROMPT}]}
        response = requests.post(gateway.url + "/v1/chat/completions", data=json.dumps(body), stream=True, timeout=30,
                                 headers={"content-type": "application/json", "authorization": f"Bearer {key()}",
                                          "x-mock-case": "openai-chat-stream-20", "x-mock-delay-ms": "20"})
        received = b""
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            for part in response.iter_content(None):
                received += part
        events = [e for e in received.decode().split("\n\n") if e.strip()]
        assert json.loads(events[-1].removeprefix("data: "))["error"]["code"] == "rate_limit_exceeded"
        assert all('"error"' not in e for e in events[:-1]) and len(events) > 2

        # Anthropic's SDK: the same cut as an `event: error` in Anthropic's format.
        client = anthropic.Anthropic(base_url=gateway.url, api_key=key(), max_retries=0)
        received = []
        with pytest.raises(anthropic.APIStatusError) as raised:
            stream = client.messages.create(model="claude-sonnet-4", max_tokens=1, stream=True,
                                            messages=[{"role": "user", "content": CUT_PROMPT}],
                                            extra_headers={"x-mock-case": "anthropic-pii-stream", "x-mock-delay-ms": "5"})
            for event in stream:
                if event.type == "content_block_delta":
                    received.append(event.delta.text)
        assert "tokens_per_hour" in str(raised.value), raised.value
        assert received, "part of the answer arrived before the cut"
    finally:
        gateway.stop()
