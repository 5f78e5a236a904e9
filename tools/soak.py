#!/usr/bin/env python3
"""Soak: a bounded run of mixed requests through Envoy with every Tollgate stage, watching memory.

  soak.py [--requests 1000000] [--connections 16] [--segment-seconds 10] [--out FILE]

Envoy (2 workers, the all-in-one module with token-counter, guardrails, provider-rewrite and
quota) in front of the mock provider on loopback; wrk cycles through OpenAI and Anthropic
requests, streamed and not, same-API and translated, with and without personal data to mask.
Between segments it samples Envoy's RSS (/proc) and each VM's linear memory (the
`tollgate.vm.memory_bytes` gauge every VM records). At the end it reports the slopes of both over
the second half of the run (after warm-up), the non-2xx count (the mock never fails here, so
any is ours) and any panic or VM failure in Envoy's log; it exits non-zero if any of those is
not zero or a VM grew in the second half. The test command runs it with a small `--requests`.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from harness import Envoy, Mock, envoy_config, http_get  # noqa: E402

CONFIG = {
    **envoy_config.RUN_CONFIG_MOCK,
    "guardrails": {"entities": {"default": "mask"}, "injection": {"action": "block"}, "response": {"restore": True}},
}

# One request per line of the cycle: (path, headers, body).
REQUESTS = [
    ("/v1/chat/completions", {}, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}),
    ("/v1/chat/completions", {}, {"model": "gpt-4o-mini", "stream": True,
                                   "messages": [{"role": "user", "content": "Meu CPF é 529.982.247-25, e-mail ana@exemplo.com.br"}]}),
    ("/v1/chat/completions", {}, {"model": "claude", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}),
    ("/v1/chat/completions", {}, {"model": "claude", "messages": [{"role": "user", "content": "Hi"}]}),
    ("/v1/messages", {"anthropic-version": "2023-06-01"},
     {"model": "claude-sonnet-4", "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}),
    ("/v1/chat/completions", {}, {"model": "gemini-2.5-flash", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}),
    ("/v1/chat/completions", {}, {"model": "bedrock/claude-3-5-haiku", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}),
    ("/v1/embeddings", {}, {"model": "text-embedding-3-small", "input": "hello"}),
]


def lua_script(path):
    # Built in init(): wrk sets the Host header only then.
    lines = ["local requests = {}", "init = function(args)"]
    for i, (url, headers, body) in enumerate(REQUESTS):
        hs = {"content-type": "application/json", "authorization": f"Bearer sk-soak-{i % 3}", **headers}
        lua_headers = ", ".join(f'["{k}"] = "{v}"' for k, v in hs.items())
        lines.append(f'  requests[{i + 1}] = wrk.format("POST", "{url}", {{{lua_headers}}}, [==[{json.dumps(body)}]==])')
    lines += ["end", "local n = 0", "request = function()", f"  n = n % {len(REQUESTS)} + 1", "  return requests[n]", "end"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def wrk(url, script, seconds, connections):
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", script, url],
                         capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return total, int(bad.group(1)) if bad else 0, sum(map(int, errors.groups())) if errors else 0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


def vm_memory(envoy):
    """{vm id: bytes} from the gauges every VM records."""
    out = {}
    for line in http_get(envoy.admin + "/stats?filter=tollgate.vm.memory_bytes").splitlines():
        m = re.match(r"wasmcustom\.tollgate\.vm\.memory_bytes;vm=(\d+): (\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def slope(points):
    """Least-squares slope of (x, y) points."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def soak(requests_wanted, connections, segment, work):
    mock = Mock(work)
    envoy = Envoy(work, mock, name="soak", wasm="tollgate.wasm", filter_config=CONFIG, concurrency=2)
    try:
        script = os.path.join(work, "soak.lua")
        lua_script(script)
        samples, done, non2xx, socket_errors = [], 0, 0, 0
        start = time.monotonic()
        while done < requests_wanted:
            total, bad, errors = wrk(envoy.url, script, segment, connections)
            done, non2xx, socket_errors = done + total, non2xx + bad, socket_errors + errors
            samples.append({"requests": done, "seconds": round(time.monotonic() - start, 1),
                            "envoy_rss_kib": rss_kib(envoy.proc.pid), "vm_memory_bytes": vm_memory(envoy)})
        log = envoy.log_text()
        panics = len(re.findall(r"panicked at|wasm trap|Wasm VM failed|Function: proxy_on_\w+ failed", log))
        reloads = envoy.stat("wasm.token-counter.vm_reload_success")
    finally:
        envoy.stop()
        mock.stop()
    half = [s for s in samples if s["requests"] >= done / 2] or samples[-1:]
    rss_slope = slope([(s["requests"] / 100_000, s["envoy_rss_kib"] / 1024) for s in half])
    vms = sorted({vm for s in samples for vm in s["vm_memory_bytes"]})
    vm_growth = {vm: max(s["vm_memory_bytes"].get(vm, 0) for s in half) - (half[0]["vm_memory_bytes"].get(vm) or 0)
                 for vm in vms}
    return {
        "requests": done,
        "seconds": samples[-1]["seconds"],
        "connections": connections,
        "non_2xx": non2xx,
        "socket_errors": socket_errors,
        "panics_or_vm_failures_in_log": panics,
        "vm_reloads": reloads,
        "envoy_rss_mib": {"first": round(samples[0]["envoy_rss_kib"] / 1024, 1), "last": round(samples[-1]["envoy_rss_kib"] / 1024, 1)},
        "envoy_rss_slope_mib_per_100k_requests_second_half": round(rss_slope, 3),
        "vm_memory_mib_last": {vm: round(b / 2**20, 2) for vm, b in samples[-1]["vm_memory_bytes"].items()},
        "vm_memory_growth_bytes_second_half": vm_growth,
        "samples": samples,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=1_000_000)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--segment-seconds", type=int, default=10)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "soak.json"))
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="tollgate-soak-") as work:
        report = soak(a.requests, a.connections, a.segment_seconds, work)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)
    summary = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    failed = (report["non_2xx"] or report["socket_errors"] or report["panics_or_vm_failures_in_log"]
              or report["vm_reloads"] or any(g > 0 for g in report["vm_memory_growth_bytes_second_half"].values()))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
