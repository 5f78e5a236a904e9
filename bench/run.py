#!/usr/bin/env python3
"""Benchmark: bare Envoy vs Envoy + Tollgate filters, same machine, one interleaved run.

Every variant is its own Envoy (1 worker, identical config but for the wasm filter) in front of
the same mock provider. With 2+ CPUs the Envoys are pinned to CPU 1 and the mock and wrk to
CPU 0, so the Envoy under load has a core to itself. For each scenario, wrk drives each variant
in turn, round after round; the Envoy process's CPU time (/proc/<pid>/stat utime+stime) divided
by the requests it served gives CPU µs per request. CPU added over bare Envoy is taken round by
round (each variant against bare Envoy in the same round) and reported as the median with the
lowest and highest round, per request and per SSE chunk, and as ratios of the medians.

Variants:
  bare             no wasm filter
  reference-null   a wasm filter whose callbacks do nothing: what any wasm filter costs
  reference-parse  holds headers, buffers and parses the body: the minimal buffer-and-parse filter
  reference-read, reference-rewrite   parse plus reading each response chunk (and writing it back
                   unchanged): the floor of observing, and of rewriting, a stream chunk by chunk
  reference-mimic  reference-parse plus every host call token-counter makes on a chat exchange
                   (headers, bodies, clock, route, six metrics, 14 filter-state keys), no work:
                   token-counter − mimic is its own code; mimic − parse what its outputs cost Envoy
  reference-mimic-<state|metrics|headers|route>   the same without one kind of call
  reference-mimic-one-key, -json-key   one filter-state key (short; the 14 fields as JSON) instead of 14
  reference-mimic-quota   mimic plus the local quota's calls  [quota's calls alone vs ≤ 10 µs]
  token-counter    tollgate_token_counter.wasm, default configuration
  token-counter-no-fs-log   the same, the access log without its %FILTER_STATE% fields
  token-counter-no-state    filter_state false: metrics only (no filter state for access logs)
  token-counter-no-hold     hold_request_headers false (Istio): headers go on at once, body held
  all-in-one       tollgate.wasm with the token_counter stage
  quota            tollgate.wasm with token_counter + a local quota (two limits, never refusing)
                   [quota − all-in-one ≤ 10 µs CPU per request]
  quota-4          the same with four windows per consumer (minute and day, tokens and requests)
  quota-cut        quota with stream_cut_off: the cost of metering a stream's text (nothing cut)
  rewrite          tollgate.wasm with provider_rewrite alone, every model to an Anthropic backend:
                   OpenAI → Anthropic translation of the request and of the answer or stream
                   (run it on the *-anthropic scenarios) [≤ 1.5 × token-counter's added CPU on
                   chat-1k; ≤ 5 µs per stream chunk]
  rewrite-tc       the same with token_counter (usage read from the Anthropic answer)
  rewrite-access   rewrite with an access policy (API-key consumer, tier, allow/deny)
                   [rewrite-access − rewrite ≈ 0, issue #8]
  guardrails       tollgate.wasm with guardrails alone: the default detector set (every built-in
                   entity masked, injection heuristics) over request and answer
                   [≤ 1.3 × token-counter's added CPU on chat-1k, issue #5]
  guardrails-tc    guardrails + token_counter (one parse of the body for both)

Scenarios (issue targets for token-counter in brackets):
  chat-1k          1 KB chat request, JSON response              [≤ 25 µs CPU added per request]
  chat-16k         16 KB chat request, JSON response
  sse-20           20-chunk SSE stream, include_usage injected and stripped (rewriting path)
  sse-20-observe   20-chunk SSE stream the client asked usage for (observing path)
                                                                  [≤ 3 µs CPU added per chunk]
  ttfb             time to first byte of sse-20, sequential      [< 0.2 ms added]
  chat-1k-anthropic, sse-13-anthropic (and its 1-chunk pair): the same, answered by the mock in
                   Anthropic's format (for the rewrite variants)

  bench/run.py [--variants bare,reference-null,...] [--only chat-1k,...] [--seconds 6] [--rounds 3] [--perf]
"""
import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from harness import Envoy, Mock  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
VARIANTS = {
    "bare": dict(with_filter=False),
    "reference-null": dict(wasm="tollgate_bench_reference.wasm", filter_config="null"),
    "reference-parse": dict(wasm="tollgate_bench_reference.wasm", filter_config="parse"),
    "reference-read": dict(wasm="tollgate_bench_reference.wasm", filter_config="read"),
    "reference-rewrite": dict(wasm="tollgate_bench_reference.wasm", filter_config="rewrite"),
    "reference-estimate": dict(wasm="tollgate_bench_reference.wasm", filter_config="estimate"),
    # Every host call token-counter makes on a chat exchange, none of its work (see bench/reference-filter).
    "reference-mimic": dict(wasm="tollgate_bench_reference.wasm", filter_config="mimic"),
    # The same, each without one kind of call: what that kind costs in place.
    **{f"reference-mimic-{part}": dict(wasm="tollgate_bench_reference.wasm", filter_config=f"mimic-{part}")
       for part in ("state", "metrics", "headers", "route")},
    # mimic writing one filter-state key (short; all 14 fields as JSON) instead of 14.
    "reference-mimic-one-key": dict(wasm="tollgate_bench_reference.wasm", filter_config="mimic=one"),
    "reference-mimic-json-key": dict(wasm="tollgate_bench_reference.wasm", filter_config="mimic=json"),
    # mimic plus the local quota's calls (shared data, x-ratelimit-* headers, its filter state).
    "reference-mimic-quota": dict(wasm="tollgate_bench_reference.wasm", filter_config="mimic+quota"),
    "token-counter": dict(wasm="tollgate_token_counter.wasm"),
    # The same with an access log that leaves out the filter-state fields: what Envoy spends
    # formatting them into each log line (≈ 0.7 µs per field), apart from the filter's own cost.
    "token-counter-no-fs-log": dict(wasm="tollgate_token_counter.wasm", access_log_state=False),
    # filter_state false: metrics only, no filter state for the access log.
    "token-counter-no-state": dict(wasm="tollgate_token_counter.wasm",
                                   filter_config={"consumer_header": "x-tollgate-consumer", "filter_state": False}),
    # hold_request_headers false (Istio's WasmPlugin cannot allow a headers stop): the headers go
    # on at once, content-length removed from chat requests, the body held instead.
    "token-counter-no-hold": dict(wasm="tollgate_token_counter.wasm",
                                  filter_config={"consumer_header": "x-tollgate-consumer", "hold_request_headers": False}),
    # 20 host calls of one kind per request (see bench/reference-filter): (x − null) / 20 each.
    **{f"calls-{kind}": dict(wasm="tollgate_bench_reference.wasm", filter_config=f"calls:{kind}")
       for kind in ("set_header", "get_header", "get_headers", "get_property", "set_property", "metric",
                    "shared", "time")},
    "all-in-one": dict(wasm="tollgate.wasm", filter_config={"token_counter": {}}),
    # The local quota on top: reserve (CAS on shared data) at request time, settle at the end,
    # x-ratelimit-* headers; limits high enough never to refuse.
    "rewrite": dict(wasm="tollgate.wasm", filter_config={"provider_rewrite": {
        "backends": {"claude": {"kind": "anthropic", "cluster": "anthropic", "api_key": {"value": "bench"}}},
        "models": [{"name": "*", "backend": "claude"}]}}),
    # The same with an access policy: the consumer from the API key (salted hash), its tier,
    # allow/deny patterns checked after resolution [≈ no CPU over `rewrite`, issue #8].
    "rewrite-access": dict(wasm="tollgate.wasm", filter_config={"provider_rewrite": {
        "backends": {"claude": {"kind": "anthropic", "cluster": "anthropic", "api_key": {"value": "bench"}}},
        "models": [{"name": "*", "backend": "claude"}],
        "access": {"consumer": {"header": "authorization", "salt": "bench"}, "default_tier": "all",
                   "tiers": {"all": {"allow": ["gpt-*", "claude-*"], "deny": ["o1-pro"]}}}}}),
    "rewrite-tc": dict(wasm="tollgate.wasm", filter_config={"token_counter": {}, "provider_rewrite": {
        "backends": {"claude": {"kind": "anthropic", "cluster": "anthropic", "api_key": {"value": "bench"}}},
        "models": [{"name": "*", "backend": "claude"}]}}),
    "guardrails": dict(wasm="tollgate.wasm", filter_config={"guardrails": {
        "entities": {"default": "mask"}, "injection": {"action": "block"}}}),
    "guardrails-tc": dict(wasm="tollgate.wasm", filter_config={"token_counter": {}, "guardrails": {
        "entities": {"default": "mask"}, "injection": {"action": "block"}}}),
    "quota": dict(wasm="tollgate.wasm", filter_config={"token_counter": {}, "quota": {
        "consumer": {"header": "authorization", "salt": "bench"},
        "limits": [{"name": "tpm", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": 1e15},
                   {"name": "rpm", "meter": "requests", "per": "consumer", "window": "minute", "limit": 1e15}]}}),
    # The same with stream_cut_off: every event of a streamed answer is read for its text (the
    # limits are never reached, so nothing is cut; this is the metering cost).
    "quota-cut": dict(wasm="tollgate.wasm", filter_config={"token_counter": {}, "quota": {
        "consumer": {"header": "authorization", "salt": "bench"}, "stream_cut_off": True,
        "limits": [{"name": "tpm", "meter": "total_tokens", "per": "consumer", "window": "minute", "limit": 1e15},
                   {"name": "rpm", "meter": "requests", "per": "consumer", "window": "minute", "limit": 1e15}]}}),
    # Four windows per consumer (tokens and requests per minute and per day): one shared-data
    # record holds all four counters.
    "quota-4": dict(wasm="tollgate.wasm", filter_config={"token_counter": {}, "quota": {
        "consumer": {"header": "authorization", "salt": "bench"},
        "limits": [{"name": n, "meter": m, "per": "consumer", "window": w, "limit": 1e15}
                   for n, m, w in (("tpm", "total_tokens", "minute"), ("rpm", "requests", "minute"),
                                   ("tpd", "total_tokens", "day"), ("rpd", "requests", "day"))]}}),
}


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def chat_body(size):
    filler = "The gateway reads each request once and never buffers a stream. " * 400
    body = {"model": "gpt-4.1", "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                              {"role": "user", "content": ""}]}
    body["messages"][1]["content"] = filler[: max(0, size - len(json.dumps(body)))]
    return json.dumps(body)


STREAM = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "Explain streaming."}]}
OBSERVE = json.dumps({**STREAM, "stream_options": {"include_usage": True}})
# SSE scenarios come in pairs: the same 20-event stream as 20 chunks and as 1 chunk, so the
# marginal cost of a chunk is ((added with 20) − (added with 1)) / 19, free of per-request costs.
SCENARIOS = {
    "chat-1k": (chat_body(1024), "openai-chat", 1),
    "chat-16k": (chat_body(16 * 1024), "openai-chat", 1),
    "sse-20": (json.dumps(STREAM), "openai-chat-stream-20", 20),
    "sse-1": (json.dumps(STREAM), "openai-chat-stream-20", 1),
    "sse-20-observe": (OBSERVE, "openai-chat-stream-20", 20),
    "sse-1-observe": (OBSERVE, "openai-chat-stream-20", 1),
    "chat-1k-anthropic": (chat_body(1024), "anthropic-messages", 1),
    "sse-13-anthropic": (OBSERVE, "anthropic-tool-stream", 13),
    "sse-1-anthropic": (OBSERVE, "anthropic-tool-stream", 1),
}
PAIRS = {"sse-20": "sse-1", "sse-20-observe": "sse-1-observe", "sse-13-anthropic": "sse-1-anthropic"}
WRK_CPU = None


def wrk_script(directory, body, case, chunks):
    path = os.path.join(directory, f"{case}-{len(body)}-{chunks}.lua")
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write('wrk.headers["content-type"] = "application/json"\n')
        f.write('wrk.headers["authorization"] = "Bearer sk-test"\n')
        f.write(f'wrk.headers["x-mock-case"] = "{case}"\n')
        if "stream" in case:
            # 1 ms between writes, so every Envoy sees the same chunks: one per event, or the
            # whole stream as one chunk.
            f.write('wrk.headers["x-mock-delay-ms"] = "1"\n')
            if chunks == 1:
                f.write('wrk.headers["x-mock-chunking"] = "bytes:1000000"\n')
        f.write(f"wrk.body = [==[{body}]==]\n")
    return path


def run_wrk(url, script, seconds, connections):
    cmd = (["taskset", "-c", WRK_CPU] if WRK_CPU else []) + ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", script,
                                                              url + "/v1/chat/completions"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"wrk saw non-2xx responses:\n{out}")
    return int(re.search(r"(\d+) requests in", out).group(1))


def perf_split(pid, url, script, seconds, connections, work):
    """One more wrk run under `perf record` (sampling the Envoy process): CPU µs per request by
    where it was spent — the module's compiled code (V8's JIT), the Envoy binary (Envoy itself
    and V8's runtime, host-call implementations included), the kernel, the rest. perf's sampling
    inflates the totals by some 10–20 %: compare the rows of one run, not with the table."""
    data = os.path.join(work, "perf.data")
    perf = subprocess.Popen(["perf", "record", "-q", "-F", "1999", "-o", data, "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    cpu0 = cpu_seconds(pid)
    n = run_wrk(url, script, seconds, connections)
    us = (cpu_seconds(pid) - cpu0) / n * 1e6
    perf.send_signal(2)
    perf.wait()
    report = subprocess.run(["perf", "report", "-i", data, "--sort", "dso", "--stdio", "-q"],
                            capture_output=True, text=True, check=True).stdout
    split = {"module (JIT)": 0.0, "envoy binary": 0.0, "kernel": 0.0, "other": 0.0}
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.+?)\s*$", line)
        if not m:
            continue
        dso = m.group(2)
        group = ("module (JIT)" if dso.startswith("[JIT]") else "envoy binary" if dso == "envoy"
                 else "kernel" if dso.startswith("[kernel") else "other")
        split[group] += float(m.group(1)) / 100 * us
    return {"us_per_request": round(us, 1), **{k: round(v, 1) for k, v in split.items()}}


def scenario_groups(order):
    """The scenarios in the order asked, a stream grouped with its one-chunk twin when both are."""
    groups = []
    for scenario in order:
        if any(scenario in g for g in groups):
            continue
        twin = PAIRS.get(scenario) or next((m for m, o in PAIRS.items() if o == scenario), None)
        groups.append([scenario, twin] if twin in order else [scenario])
    return groups


def measured_row(per, names, size, chunks):
    """One scenario's figures from each variant's CPU µs per request, round by round."""
    row = {"bytes": size, "chunks": chunks, "cpu_us_per_request": {}, "added_us": {}, "added_us_per_chunk": {},
           "added_us_range": {}, "samples_us": {n: [round(x, 2) for x in per[n]] for n in names}}
    for name in names:
        # Added CPU is taken round by round, against bare Envoy's figure of the same round (the
        # VM's speed drifts between rounds); its median is reported, and the lowest and highest
        # round show how far one run can be trusted.
        added = [us - bare for us, bare in zip(per[name], per["bare"])]
        row["cpu_us_per_request"][name] = round(statistics.median(per[name]), 1)
        row["added_us"][name] = round(statistics.median(added), 1)
        row["added_us_range"][name] = [round(min(added), 1), round(max(added), 1)]
        row["added_us_per_chunk"][name] = round(statistics.median(added) / chunks, 2)
    return row


def ttfb_ms(url, body, case, n):
    host, port = url.split("//")[1].split(":")
    samples = []
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"content-type": "application/json", "authorization": "Bearer sk-test", "x-mock-case": case}
    for _ in range(n):
        start = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        response = conn.getresponse()
        response.read(1)
        samples.append((time.perf_counter() - start) * 1000)
        response.read()
    conn.close()
    return statistics.median(samples)


def main():
    global WRK_CPU
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", default="bare,reference-null,reference-parse,token-counter")
    p.add_argument("--only", default=",".join(SCENARIOS))
    p.add_argument("--ttfb", type=int, default=300, help="sequential TTFB samples (0: skip)")
    p.add_argument("--seconds", type=int, default=6)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "latest.json"))
    p.add_argument("--perf", action="store_true", help="also split each variant's CPU per request by where it is "
                   "spent (module code, Envoy binary, kernel), from one more run under `perf record`")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=FILE.wasm[@VARIANT]",
                   help="another build to compare (a file in target/wasm32-wasip1/release, or a path), with "
                        "VARIANT's plugin configuration (default: token-counter's)")
    p.add_argument("--keep-work", action="store_true",
                   help="keep the work directory (Envoy logs, access logs: about 1 GB per variant and minute)")
    a = p.parse_args()
    for extra in a.extra:
        name, wasm = extra.split("=", 1)
        wasm, _, like = wasm.partition("@")
        VARIANTS[name] = {**VARIANTS.get(like, {}), "wasm": wasm}
        a.variants += "," + name
    # Each variant once (an --extra also named in --variants would start a second Envoy and
    # measure one while the other is driven).
    names = list(dict.fromkeys(a.variants.split(",")))
    if names[0] != "bare":
        names.insert(0, "bare")

    work = tempfile.mkdtemp(prefix="tollgate-bench-")
    envoy_cpu, WRK_CPU = ("1", "0") if (os.cpu_count() or 1) >= 2 else (None, None)
    mock = Mock(work, cpus=WRK_CPU)
    envoys = {name: Envoy(work, mock, name=name, concurrency=1, cpus=envoy_cpu, **VARIANTS[name]) for name in names}
    results = {"variants": names, "scenarios": {}}
    try:
        for group in scenario_groups(a.only.split(",")):
            # A stream and its one-chunk twin are measured in the same rounds, so the cost of
            # one more chunk can be taken round by round too.
            scripts = {s: wrk_script(work, *SCENARIOS[s]) for s in group}
            for script in scripts.values():
                for envoy in envoys.values():
                    run_wrk(envoy.url, script, 1, a.connections)  # warm-up
            per = {s: {n: [] for n in names} for s in group}
            for _ in range(a.rounds):
                for scenario, script in scripts.items():
                    for name, envoy in envoys.items():
                        cpu0 = cpu_seconds(envoy.proc.pid)
                        n = run_wrk(envoy.url, script, a.seconds, a.connections)
                        per[scenario][name].append((cpu_seconds(envoy.proc.pid) - cpu0) / n * 1e6)
            for scenario, script in scripts.items():
                body, _, chunks = SCENARIOS[scenario]
                row = measured_row(per[scenario], names, len(body), chunks)
                if a.perf:
                    row["perf_us"] = {name: perf_split(envoy.proc.pid, envoy.url, script, a.seconds, a.connections, work)
                                      for name, envoy in envoys.items()}
                results["scenarios"][scenario] = row
                print(scenario, row, file=sys.stderr, flush=True)
            many = next((s for s in group if s in PAIRS), None)
            if many is not None and len(group) == 2:
                one = PAIRS[many]
                extra_chunks = SCENARIOS[many][2] - SCENARIOS[one][2]
                rows = results["scenarios"]
                # Round by round: (added with many chunks − added with one) / extra chunks.
                marginal = {n: [((m - mb) - (o - ob)) / extra_chunks
                                for m, mb, o, ob in zip(per[many][n], per[many]["bare"], per[one][n], per[one]["bare"])]
                            for n in names}
                rows[many]["marginal_us_per_chunk"] = {n: round(statistics.median(v), 2) for n, v in marginal.items()}
                rows[many]["marginal_us_per_chunk_range"] = {n: [round(min(v), 2), round(max(v), 2)]
                                                             for n, v in marginal.items()}
        body, case, _ = SCENARIOS["sse-20"]
        if a.ttfb:
            results["ttfb_ms"] = {name: round(ttfb_ms(envoy.url, body, case, a.ttfb), 3) for name, envoy in envoys.items()}
    finally:
        for envoy in envoys.values():
            envoy.stop()
        mock.stop()
        # A failed run keeps its Envoy logs: they say why.
        if a.keep_work or sys.exc_info()[0] is not None:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nTollgate benchmark: Envoy 1.40, 1 worker per variant, wrk -c{a.connections}, "
          f"{a.rounds} rounds × {a.seconds} s. CPU µs added per request over bare Envoy in the same round: "
          f"median [lowest, highest round], and for streams the median per extra chunk; bare Envoy's own CPU µs per "
          f"request (median) in the first column.\n")
    print("| scenario | bare µs/req | " + " | ".join(n for n in names[1:]) + " |")
    print("|---|---:|" + "---:|" * (len(names) - 1))
    for scenario, row in results["scenarios"].items():
        cells = []
        for name in names[1:]:
            added, (low, high) = row["added_us"][name], row["added_us_range"][name]
            ratio = row["cpu_us_per_request"][name] / row["cpu_us_per_request"]["bare"]
            cell = f"{added:+} µs [{low:+}, {high:+}] (×{ratio:.2f})"
            if "marginal_us_per_chunk" in row:
                m_low, m_high = row["marginal_us_per_chunk_range"][name]
                cell += f"; {row['marginal_us_per_chunk'][name]:+} µs per extra chunk [{m_low:+}, {m_high:+}]"
            cells.append(cell)
        print(f"| {scenario} | {row['cpu_us_per_request']['bare']} | " + " | ".join(cells) + " |")
    for scenario, row in results["scenarios"].items():
        if "perf_us" in row:
            groups = list(next(iter(row["perf_us"].values())))
            print(f"\nWhere the CPU goes, {scenario} (µs per request under perf record, one run each):\n")
            print("| variant | " + " | ".join(groups) + " |")
            print("|---|" + "---:|" * len(groups))
            for name, split in row["perf_us"].items():
                print(f"| {name} | " + " | ".join(str(split[g]) for g in groups) + " |")
    t = results.get("ttfb_ms")
    if t:
        print("\nTTFB of sse-20 (sequential, median of 300): " + ", ".join(
            f"{n} {t[n]} ms" + ("" if n == "bare" else f" ({t[n] - t['bare']:+.3f})") for n in names))
    os.makedirs(os.path.dirname(a.json), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
