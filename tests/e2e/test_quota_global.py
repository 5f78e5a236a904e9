"""Global quotas end to end: two Envoys (2 workers each), one rate-limit service, one Redis.

The rate-limit service is tests/rls_peer.py, a test double of envoyproxy/ratelimit
(`--flavor envoy`) and of Kuadrant Limitador (`--flavor limitador`), over a real redis-server
started here. Its limits are generated from the same quota configuration the filter gets
(tools/quota_global.py), in envoyproxy/ratelimit's format.

(a) `envoy_ratelimit`: Envoy's rate-limit filter after Tollgate's, descriptors and amounts from
    Tollgate's filter state, refunds with `is_negative_hits`.
(b) `check_report`: Tollgate calls ShouldRateLimit/CheckRateLimit itself, Report at stream end.
"""
import hashlib
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import anthropic
import openai
import pytest
import requests
import yaml

import quota_global  # noqa: E402 - tools/ is on the path (harness)
from harness import ROOT, Envoy, Redis, RlsPeer, wait_until
from test_quota import PLAIN_USAGE, PROMPT, STREAM_USAGE, away_from_hour_boundary

RESULTS = os.path.join(ROOT, "bench", "results")
LIMIT = 5000
SALT = "e2e-global"


def quota(global_section, limit=LIMIT):
    return {
        "consumer": {"header": "authorization", "salt": SALT},
        "limits": [
            {"name": "tokens_per_hour", "meter": "total_tokens", "per": "consumer", "window": "hour", "limit": limit},
            {"name": "requests_per_hour", "meter": "requests", "per": "consumer", "window": "hour", "limit": 100000},
        ],
        "global": global_section,
    }


def plugin(global_section):
    return {"token_counter": {"consumer_header": "x-tollgate-consumer"}, "quota": quota(global_section)}


def consumer_id(api_key):
    # The key without its `Bearer` scheme, as sent in `authorization` or in `x-api-key`.
    digest = hashlib.sha256(SALT.encode() + b"\0" + api_key.encode()).hexdigest()
    return "k:" + digest[:16]


class Deployment:
    """Two Envoys sharing one quota through one rate-limit service and one Redis."""

    def __init__(self, work, mock, name, global_section, flavor, draft_headers=False):
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.redis = Redis(self.dir)
        limits = os.path.join(self.dir, "ratelimit-config.yaml")
        with open(limits, "w") as f:
            yaml.safe_dump(quota_global.rls_config(quota(global_section)), f, sort_keys=False)
        self.rls = RlsPeer(self.dir, self.redis, limits, flavor=flavor, draft_headers=draft_headers)
        self.envoys = [Envoy(self.dir, mock, name=f"envoy-{i}", wasm="tollgate.wasm", filter_config=plugin(global_section),
                             rls_port=self.rls.port) for i in range(2)]

    def used(self, api_key, limit="tokens_per_hour"):
        """The service's counter of a consumer in the current hour (Redis, as the service keeps it)."""
        now = int(time.time())
        key = f"tollgate_limit_{limit}_tier_default_consumer_{consumer_id(api_key)}_{now - now % 3600}"
        return int(self.redis.client.get(key) or 0)

    def stop(self):
        for e in self.envoys:
            e.stop()
        self.rls.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def envoy_ratelimit(work, mock):
    d = Deployment(work, mock, "global-envoy-ratelimit", {"backend": "envoy_ratelimit", "refunds": True}, "envoy")
    yield d
    d.stop()


@pytest.fixture(scope="module")
def check_report(work, mock):
    d = Deployment(work, mock, "global-check-report", {"backend": "check_report", "cluster": "rls"}, "limitador",
                   draft_headers=True)
    yield d
    d.stop()


def key():
    return "sk-" + uuid.uuid4().hex


def plain(base, api_key, path="/v1/chat/completions", **extra):
    if path == "/v1/messages":
        body = {"model": "claude-sonnet-4-20250514", "max_tokens": 20, "messages": [{"role": "user", "content": "Hello!"}]}
        extra.setdefault("x-mock-case", "anthropic-messages")
    else:
        body = {"model": "gpt-4.1", "max_tokens": 20, "messages": [{"role": "user", "content": "Hello!"}]}
    return requests.post(base + path, data=json.dumps(body), timeout=30,
                         headers={"content-type": "application/json", "authorization": f"Bearer {api_key}", **extra})


def stream(base, api_key):
    body = {"model": "gpt-4o-mini", "stream": True, "max_tokens": 40, "messages": [{"role": "user", "content": PROMPT}]}
    r = requests.post(base + "/v1/chat/completions", data=json.dumps(body), timeout=60,
                      headers={"content-type": "application/json", "authorization": f"Bearer {api_key}",
                               "x-mock-case": "openai-chat-stream-20", "x-mock-delay-ms": "20"})
    return r.status_code


def alternate_until_refused(d, api_key, max_requests=400):
    """Sequential requests, alternating between the two Envoys, until one is refused."""
    for i in range(max_requests):
        r = plain(d.envoys[i % 2].url, api_key)
        if r.status_code == 429:
            return i, r
        assert r.status_code == 200, r.text
    pytest.fail("never refused")


def concurrent(d, n=64):
    api_key = key()
    with ThreadPoolExecutor(max_workers=n) as pool:
        statuses = list(pool.map(lambda i: stream(d.envoys[i % 2].url, api_key), range(n)))
    assert set(statuses) <= {200, 429}, statuses
    return statuses.count(200), api_key


def record(section, data):
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, "quota-overshoot.json")
    results = json.load(open(path)) if os.path.exists(path) else {}
    results.setdefault("global", {})[section] = data
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


# ---- (a) Envoy's rate-limit filter + envoyproxy/ratelimit semantics ---------------------------

def test_envoy_ratelimit_holds_the_shared_quota_exactly_across_two_envoys(envoy_ratelimit):
    away_from_hour_boundary()
    d = envoy_ratelimit
    api_key = key()
    admitted, refused = alternate_until_refused(d, api_key)
    assert admitted > 10, "both Envoys served until the shared quota ran out"
    # Refunds give back every unused reservation: the service's counter is the real usage.
    wait_until(lambda: d.used(api_key) == admitted * PLAIN_USAGE, timeout=5, what="settled counter")
    assert admitted * PLAIN_USAGE <= LIMIT
    assert LIMIT - admitted * PLAIN_USAGE < 60, "refused only when the next reservation no longer fits"
    # The refusal (by Envoy's rate-limit filter) is an OpenAI error with the standard headers.
    assert refused.headers["x-envoy-ratelimited"] == "true"
    body = refused.json()
    assert body["error"]["code"] == "rate_limit_exceeded", body
    assert 0 < int(refused.headers["retry-after"]) <= 3600
    assert refused.headers["x-ratelimit-limit-tokens"] == str(LIMIT)
    # The refused request's reservation was given back too.
    time.sleep(0.3)
    assert d.used(api_key) == admitted * PLAIN_USAGE
    # Every response carried the service's standing as OpenAI-style headers.
    ok = plain(d.envoys[0].url, key())
    assert int(ok.headers["x-ratelimit-remaining-tokens"]) < LIMIT
    assert ok.headers["x-ratelimit-reset-tokens"].endswith(("s", "m"))


def test_envoy_ratelimit_refusals_speak_each_clients_dialect(envoy_ratelimit):
    away_from_hour_boundary()
    d = envoy_ratelimit
    api_key = key()
    alternate_until_refused(d, api_key)
    client = anthropic.Anthropic(base_url=d.envoys[1].url, api_key="unused", max_retries=0,
                                 default_headers={"authorization": f"Bearer {api_key}", "x-mock-case": "anthropic-messages"})
    with pytest.raises(anthropic.RateLimitError) as error:
        client.messages.create(model="claude-sonnet-4-20250514", max_tokens=20, messages=[{"role": "user", "content": "Hi"}])
    assert error.value.body["type"] == "error" and error.value.body["error"]["type"] == "rate_limit_error"
    oa = openai.OpenAI(base_url=d.envoys[0].url + "/v1", api_key=api_key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as error:
        oa.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "Hi"}], max_tokens=10)
    assert error.value.response.headers["retry-after"]


def test_envoy_ratelimit_concurrent_streams_across_two_envoys(envoy_ratelimit):
    away_from_hour_boundary()
    d = envoy_ratelimit
    admitted, api_key = concurrent(d)
    overshoot = admitted * STREAM_USAGE - LIMIT
    assert overshoot <= STREAM_USAGE + 40, f"{admitted} admitted"
    assert admitted >= LIMIT // (STREAM_USAGE + 60)
    wait_until(lambda: d.used(api_key) == admitted * STREAM_USAGE, timeout=5, what="refunded counter")
    record("envoy_ratelimit", {"envoys": 2, "requests": 64, "limit": LIMIT, "admitted": admitted, "overshoot": overshoot,
                               "counter_after": d.used(api_key)})


# ---- (b) the filter calls the service itself (Limitador's Check/Report) ----------------------

def test_check_report_holds_the_shared_quota_across_two_envoys(check_report):
    away_from_hour_boundary()
    d = check_report
    api_key = key()
    admitted, refused = alternate_until_refused(d, api_key)
    assert admitted > 10
    # No refunds in this API: each request stays charged max(reservation, usage): the
    # reservation when it covers the usage, else the excess is reported after the stream.
    mine = [c for c in d.rls.calls() if ["consumer", consumer_id(api_key)] in c["request"]["descriptors"][0]["entries"]
            and c["request"]["descriptors"][0]["entries"][0] == ["limit", "tokens_per_hour"]]
    reserved = [c["request"]["hits_addend"] for c in mine if c["method"] == "ShouldRateLimit" and c["response"]["overall"] == 1]
    assert len(reserved) == admitted
    expected = sum(max(r, PLAIN_USAGE) for r in reserved)
    wait_until(lambda: d.used(api_key) == expected, timeout=5, what="reported excess")
    assert expected <= LIMIT + PLAIN_USAGE, "the last excess report can pass the limit by at most one request's error"
    body = refused.json()
    assert body["error"]["code"] == "rate_limit_exceeded" and "tokens_per_hour" in body["error"]["message"]
    assert refused.headers["x-ratelimit-limit-tokens"] == str(LIMIT)
    assert int(refused.headers["retry-after"]) > 0
    # Limitador-style answers carry draft-03 headers, which become the OpenAI ones.
    ok = plain(d.envoys[1].url, key())
    assert ok.status_code == 200 and int(ok.headers["x-ratelimit-remaining-tokens"]) < LIMIT


def test_check_report_reports_the_excess_after_the_stream(check_report):
    away_from_hour_boundary()
    d = check_report
    api_key = key()
    # A short prompt and max_tokens 1: the reservation is far below the 328 tokens the provider reports.
    body = {"model": "gpt-4o-mini", "stream": True, "max_tokens": 1, "messages": [{"role": "user", "content": "Hi"}]}
    r = requests.post(d.envoys[0].url + "/v1/chat/completions", data=json.dumps(body), timeout=60,
                      headers={"content-type": "application/json", "authorization": f"Bearer {api_key}",
                               "x-mock-case": "openai-chat-stream-20"})
    assert r.status_code == 200
    wait_until(lambda: d.used(api_key) == STREAM_USAGE, timeout=5, what="report of the excess")
    reports = [c for c in d.rls.calls() if c["method"] == "Report"
               and any(["consumer", consumer_id(api_key)] in desc["entries"] for desc in c["request"]["descriptors"])]
    assert len(reports) == 1 and 0 < reports[0]["request"]["hits_addend"] < STREAM_USAGE


def test_check_report_concurrent_streams_charge_vs_check(check_report, work, mock):
    """charge (ShouldRateLimit = atomic check-and-charge) holds across two Envoys; check
    (CheckRateLimit, Report at the end) lets concurrent requests through. Both measured."""
    away_from_hour_boundary()
    admitted, api_key = concurrent(check_report)
    overshoot = admitted * STREAM_USAGE - LIMIT
    assert overshoot <= STREAM_USAGE + 40, f"{admitted} admitted"
    assert admitted >= LIMIT // (STREAM_USAGE + 80)

    check = Deployment(work, mock, "global-check-mode", {"backend": "check_report", "cluster": "rls", "reservation": "check"},
                       "limitador", draft_headers=True)
    try:
        check_admitted, check_key = concurrent(check)
        wait_until(lambda: check.used(check_key) == check_admitted * STREAM_USAGE, timeout=5, what="reports")
    finally:
        check.stop()
    check_overshoot = check_admitted * STREAM_USAGE - LIMIT
    assert check_overshoot > overshoot
    record("check_report", {"envoys": 2, "requests": 64, "limit": LIMIT,
                            "charge": {"admitted": admitted, "overshoot": overshoot, "counter_after": check_report.used(api_key)},
                            "check": {"admitted": check_admitted, "overshoot": check_overshoot}})


def test_check_report_fails_open_when_the_service_is_down(work, mock):
    d = Deployment(work, mock, "global-down", {"backend": "check_report", "cluster": "rls", "timeout_ms": 300}, "limitador")
    try:
        d.rls.stop()
        r = plain(d.envoys[0].url, key())
        assert r.status_code == 200
        metrics = d.envoys[0].metrics()
        assert any(name.endswith("tollgate_quota_rls_errors") and v > 0 for (name, _), v in metrics.items()), metrics.keys()
    finally:
        for e in d.envoys:
            e.stop()
        d.redis.stop()


# ---- shipped examples ------------------------------------------------------------------------

def test_shipped_rls_config_is_what_the_generator_makes_and_loads():
    example = os.path.join(ROOT, "examples", "quota")
    plugin_config = json.load(open(os.path.join(example, "global-envoy-ratelimit.json")))
    shipped = yaml.safe_load(open(os.path.join(example, "ratelimit-config.yaml")))
    quota_section = quota_global.quota_section(plugin_config)
    assert shipped == quota_global.rls_config(quota_section), "regenerate: tools/quota_global.py (see examples/quota/README.md)"
    snippet = yaml.safe_load(open(os.path.join(example, "envoy-ratelimit-snippet.yaml")))
    assert snippet == quota_global.envoy_snippet(quota_section)
    import sys

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import rls_peer  # the test double loads it as the real service would

    limits = rls_peer.Limits(os.path.join(example, "ratelimit-config.yaml"))
    assert limits.find([("limit", "tokens_per_minute"), ("tier", "default"), ("consumer", "k:1")])["requests_per_unit"] > 0
