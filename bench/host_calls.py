#!/usr/bin/env python3
"""What one proxy-wasm host call costs inside Envoy's V8, timed by the filter itself.

Runs the reference filter in `"timing"` mode (bench/reference-filter): at each response's
headers it makes 100 calls of every kind, timing each batch with the host clock, and logs the
mean ns per call every 100 requests. Unlike the CPU-per-request variants of run.py (±10 µs
run-to-run noise on this machine), this isolates the calls themselves: the `none` row is the
loop and the clock alone, to subtract.

With `--self`, it times Tollgate's own modules instead: built with the `self-timing` feature
(into target/self-timing), each callback is timed with the host clock inside Envoy, and the mean
ns per stream of each callback kind is reported: the module's own share (compute and host
calls) of the CPU a request costs, the rest being Envoy's. `--calls` also times each host call
by kind (its clock reads inflate the totals: use it for the breakdown, not to compare builds).

  bench/host_calls.py [--requests 2000]     (results: bench/results/host-calls-timed.json)
  bench/host_calls.py --self [--seconds 8] [--rounds N] [--compare DIR]   (bench/results/self-timing.json)
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from harness import Envoy, Mock  # noqa: E402

BODY = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": "x" * 900}]}).encode()


SELF_TARGET = os.path.join(ROOT, "target", "self-timing")
# Module, plugin configuration, bench/run.py scenario, per variant.
SELF_VARIANTS = {
    "token-counter chat-1k": ("tollgate_token_counter", None, "chat-1k"),
    "token-counter sse-20": ("tollgate_token_counter", None, "sse-20"),
    "token-counter sse-1": ("tollgate_token_counter", None, "sse-1"),
    "token-counter sse-20-observe": ("tollgate_token_counter", None, "sse-20-observe"),
    "token-counter sse-1-observe": ("tollgate_token_counter", None, "sse-1-observe"),
    "all-in-one quota chat-1k": ("tollgate", {"token_counter": {}, "quota": {
        "consumer": {"header": "authorization", "salt": "bench"},
        "limits": [{"name": "tpm", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": 1e15},
                   {"name": "rpm", "meter": "requests", "per": "consumer", "window": "minute", "limit": 1e15}]}},
        "chat-1k"),
    "all-in-one token-counter chat-1k": ("tollgate", {"token_counter": {}}, "chat-1k"),
    # A stream with and without stream_cut_off's metering (limits never reached: nothing cut).
    **{f"all-in-one {name} sse-20-observe": ("tollgate", {"token_counter": {}, "quota": {
        "consumer": {"header": "authorization", "salt": "bench"}, "stream_cut_off": cut,
        "limits": [{"name": "tpm", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": 1e15}]}},
        "sse-20-observe") for name, cut in (("quota", False), ("quota-cut", True))},
    # Four windows per consumer at once (issue #9: "several windows at once").
    "all-in-one quota-4 chat-1k": ("tollgate", {"token_counter": {}, "quota": {
        "consumer": {"header": "authorization", "salt": "bench"},
        "limits": [{"name": n, "meter": m, "per": "consumer", "window": w, "limit": 1e15}
                   for n, m, w in (("tpm", "total_tokens", "minute"), ("rpm", "requests", "minute"),
                                   ("tpd", "total_tokens", "day"), ("rpd", "requests", "day"))]}},
        "chat-1k"),
}


def self_timing(seconds, compare=None, rounds=1, out="self-timing.json", time_calls=False, only=None):
    """Each variant under wrk load (as bench/run.py: Envoy on CPU 1, wrk and the mock on CPU 0),
    so the module runs hot, as it does in the CPU benchmark. With `compare` (a directory of
    modules built with self-timing from another tree), both builds run variant by variant,
    alternating, `rounds` times: compare within one run, the machine's speed drifts between runs."""
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import run  # noqa: E402  (the same requests and wrk scripts as the CPU benchmark)
    subprocess.run(["cargo", "build", "-q", "--release", "--target", "wasm32-wasip1", "-p", "tollgate-token-counter",
                    "-p", "tollgate", "--features", "tollgate-host/self-timing" + ("-calls" if time_calls else ""),
                    "--target-dir", SELF_TARGET + ("-calls" if time_calls else "")],
                   cwd=ROOT, check=True)
    builds = {"this tree": os.path.join(SELF_TARGET + ("-calls" if time_calls else ""), "wasm32-wasip1", "release")}
    if compare:
        builds["compared"] = compare
    work = tempfile.mkdtemp(prefix="tollgate-self-timing-")
    envoy_cpu, run.WRK_CPU = ("1", "0") if (os.cpu_count() or 1) >= 2 else (None, None)
    mock = Mock(work, cpus=run.WRK_CPU)
    samples = {}
    try:
        for round_ in range(rounds):
            for name, (module, config, scenario) in SELF_VARIANTS.items():
                if only and not any(o in name for o in only.split(",")):
                    continue
                body, case, chunks = run.SCENARIOS[scenario]
                script = run.wrk_script(work, body, case, chunks)
                for build, modules in builds.items():
                    envoy = Envoy(work, mock, name=f"{name}-{build}-{round_}".replace(" ", "-"), concurrency=1, cpus=envoy_cpu,
                                  wasm=os.path.join(modules, f"{module}.wasm"), filter_config=config,
                                  wasm_log_level="warn")
                    try:
                        run.run_wrk(envoy.url, script, seconds, 16)
                        lines = wait_for_lines(envoy.log_path, "self-timing: streams=")
                    finally:
                        envoy.stop()
                    samples.setdefault(f"{name} [{build}]" if compare else name, []).append(steady(lines, "streams"))
    finally:
        mock.stop()
        shutil.rmtree(work, ignore_errors=True)
    results = {name: {k: round(statistics.median(r[k] for r in runs)) for k in runs[0]} for name, runs in samples.items()}
    with open(os.path.join(ROOT, "bench", "results", out), "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    first = next(iter(results.values()))
    kinds = [k for k in first if k not in ("total", "chunks") and not k.endswith(("_ns", "_x100"))]
    calls = sorted({k[:-3] for r in results.values() for k in r if k.endswith("_ns")})
    print("| variant | " + " | ".join(kinds) + " | total | of which host calls |\n|---|" + "---:|" * (len(kinds) + 2))
    for name, r in results.items():
        host = sum(r.get(c + "_ns", 0) for c in calls)
        print(f"| {name} | " + " | ".join(f"{r[k] / 1000:.2f}" for k in kinds)
              + f" | **{r['total'] / 1000:.2f}** | {host / 1000:.2f} |")
    if not calls:
        print("(µs per stream inside the module under load, steady state)")
        return
    print("\n| variant | " + " | ".join(calls) + " |\n|---|" + "---:|" * len(calls))
    for name, r in results.items():
        print(f"| {name} | " + " | ".join(
            f"{r.get(c + '_ns', 0) / 1000:.2f} ({r.get(c + '_calls_x100', 0) / 100:g})" for c in calls) + " |")
    print("(µs per stream inside the module under load, steady state; host calls: µs (calls) per stream,")
    print(" each timed call also includes one clock read, ≈ 0.12 µs)")



def wait_for_lines(path, marker):
    deadline = time.time() + 5
    while time.time() < deadline:
        lines = [l for l in open(path) if marker in l]
        if lines:
            return lines
        time.sleep(0.2)
    sys.exit(f"no '{marker}' lines in {path}")


def steady(lines, counter):
    """Means between the first and the last report: the steady state after V8's warm-up."""
    def parse(line):
        n = int(re.search(counter + r"=(\d+)", line).group(1))
        rest = line[line.index(counter + "="):]
        return n, {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", rest) if k != counter}
    (n0, first), (n1, last) = parse(lines[0]), parse(lines[-1])
    if n1 == n0:
        return last
    return {k: round((last[k] * n1 - first[k] * n0) / (n1 - n0)) for k in last}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--self", action="store_true", help="time Tollgate's modules instead of single host calls")
    p.add_argument("--seconds", type=int, default=8, help="wrk load per variant (--self)")
    p.add_argument("--compare", help="(--self) a directory of modules built with self-timing from another "
                   "tree (e.g. an older commit's), run alternately with this tree's")
    p.add_argument("--rounds", type=int, default=1, help="(--self) rounds; medians are reported")
    p.add_argument("--only", help="(--self) comma-separated parts of variant names to run")
    p.add_argument("--calls", action="store_true",
                   help="(--self) also time every host call (adds ≈ 0.12 µs per call: do not compare totals)")
    p.add_argument("--out", default="self-timing.json", help="(--self) result file in bench/results/")
    a = p.parse_args()
    if a.self:
        return self_timing(a.seconds, a.compare, a.rounds, a.out, a.calls, a.only)
    work = tempfile.mkdtemp(prefix="tollgate-host-calls-")
    mock = Mock(work)
    envoy = Envoy(work, mock, name="timing", concurrency=1, wasm="tollgate_bench_reference.wasm",
                  filter_config="timing", wasm_log_level="warn")
    try:
        for _ in range(a.requests):
            req = urllib.request.Request(envoy.url + "/v1/chat/completions", data=BODY, headers={
                "content-type": "application/json", "authorization": "Bearer sk-test", "x-mock-case": "openai-chat"})
            urllib.request.urlopen(req, timeout=10).read()
        lines = wait_for_lines(envoy.log_path, "timing: requests=")
    finally:
        envoy.stop()
        mock.stop()
        shutil.rmtree(work, ignore_errors=True)
    gross = steady(lines, "requests")
    base = gross.get("none", 0)
    net = {k: v - base for k, v in gross.items() if k != "none"}
    result = {"ns_per_call_gross": gross, "ns_per_call_net": net}
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "host-calls-timed.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print("| host call | ns per call in Envoy's V8 (net of loop and clock) |\n|---|---:|")
    for k, v in sorted(net.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    main()
