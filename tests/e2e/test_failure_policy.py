"""What each Envoy `failure_policy` does when a Tollgate VM traps, shown with the all-in-one
module built with the `test-trap` feature (a request carrying `x-tollgate-test-trap` makes the
VM execute `unreachable`; the feature is never in a shipped module), on one worker:

- FAIL_RELOAD (what every shipped configuration uses): the trapping request fails, Envoy builds
  a new VM after a backoff, and the filter works again — guardrails mask again.
- FAIL_CLOSED (Envoy's default): that worker refuses every later request, for good.
- FAIL_OPEN: later requests skip the filter: a prompt with personal data reaches the provider
  unmasked, which is why no Tollgate configuration uses it.
"""
import json
import os
import subprocess
import time

import pytest
import requests

from harness import ROOT, Envoy, envoy_config, wait_until

TRAP_TARGET = os.path.join(ROOT, "target", "test-trap")
CONFIG = {"token_counter": {}, "guardrails": {"entities": {"CPF": "mask"}},
          "quota": {"consumer": {"header": "authorization", "salt": "s"},
                    "limits": [{"name": "rpm", "meter": "requests", "per": "consumer", "window": "minute", "limit": 1000}]}}
CPF = "529.982.247-25"


@pytest.fixture(scope="module")
def trap_module():
    subprocess.run(["cargo", "build", "--release", "--target", "wasm32-wasip1", "-p", "tollgate",
                    "--features", "tollgate-host/test-trap", "--target-dir", TRAP_TARGET],
                   check=True, cwd=ROOT, capture_output=True)
    return os.path.join(TRAP_TARGET, "wasm32-wasip1", "release", "tollgate.wasm")


def start(work, mock, module, policy):
    text = envoy_config.render(wasm=module, provider=f"mock:{mock.port}", listen_port=0, admin_port=0,
                               access_log=f"{work}/{policy}.log", filter_config=CONFIG)
    assert "failure_policy: FAIL_RELOAD" in text
    return Envoy(work, mock, name=f"policy-{policy}", concurrency=1,
                 config_text=text.replace("failure_policy: FAIL_RELOAD", f"failure_policy: {policy}"))


LAST = {}


def send(envoy, content="Hi", trap=False):
    headers = {"authorization": "Bearer sk-p", **({"x-tollgate-test-trap": "1"} if trap else {})}
    try:
        r = requests.post(envoy.url + "/v1/chat/completions", timeout=10, headers=headers,
                          json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
    except requests.ConnectionError:
        return None
    LAST["remaining"] = r.headers.get("x-ratelimit-remaining-requests")
    return r.status_code


def masked_upstream(mock):
    body = mock.last_request("/chat/completions")["body"]
    return "[CPF_1]" in json.dumps(body) and CPF not in json.dumps(body)


def test_fail_reload_replaces_the_vm_and_the_filter_works_again(work, mock, trap_module):
    envoy = start(work, mock, trap_module, "FAIL_RELOAD")
    try:
        assert send(envoy, f"CPF {CPF}") == 200 and masked_upstream(mock)
        before = int(LAST["remaining"])
        assert send(envoy, trap=True) in (500, 503, None)
        started = time.monotonic()
        wait_until(lambda: send(envoy, f"CPF {CPF}") == 200, timeout=15, what="a new VM serving")
        assert masked_upstream(mock), "the new VM guards as the old one did"
        # The quota counters live in Envoy's shared data, not in the VM: they carry on.
        assert 0 < int(LAST["remaining"]) < before
        assert envoy.stat("wasm.token-counter.vm_reload_success") >= 1
        assert time.monotonic() - started < 10
    finally:
        envoy.stop()


def test_fail_closed_refuses_every_later_request_on_that_worker(work, mock, trap_module):
    envoy = start(work, mock, trap_module, "FAIL_CLOSED")
    try:
        assert send(envoy) == 200
        send(envoy, trap=True)
        statuses = [send(envoy) for _ in range(5)]
        time.sleep(2)
        statuses.append(send(envoy))
        assert all(s == 503 for s in statuses), statuses
    finally:
        envoy.stop()


def test_fail_open_lets_later_requests_skip_the_guard(work, mock, trap_module):
    envoy = start(work, mock, trap_module, "FAIL_OPEN")
    try:
        assert send(envoy, f"CPF {CPF}") == 200 and masked_upstream(mock)
        send(envoy, trap=True)
        assert send(envoy, f"CPF {CPF}") == 200
        assert not masked_upstream(mock), "the prompt went out unmasked: the filter is bypassed"
    finally:
        envoy.stop()
