#!/usr/bin/env bash
# Runs every fuzz target for a fixed time (default 60 s each) with cargo-fuzz (nightly), seeded
# from the golden fixtures, and writes fuzz/results.json: executions, coverage, crashes.
#   fuzz/run.sh [seconds] [target…]   needs: rustup toolchain nightly, cargo +nightly install cargo-fuzz
# With targets named, only those run and their rows in fuzz/results.json are replaced.
# A crash leaves its input in fuzz/artifacts/<target>/; make it a regression test.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-60}
ROOT=..
TARGETS=(sse eventstream request_parse stream_translate request_translate response_translate guard_scan guard_stream config json_scan quota_stream pipeline)
ALL=("${TARGETS[@]}")
[ $# -gt 1 ] && TARGETS=("${@:2}")

seed() { # target, files...
  local dir=corpus/$1; shift
  mkdir -p "$dir"
  for f in "$@"; do [ -f "$f" ] && cp "$f" "$dir/$(basename "$f")"; done
  return 0
}
seed sse $ROOT/tests/fixtures/responses/*/*.sse
seed stream_translate $ROOT/tests/fixtures/responses/*/*.sse
seed guard_stream $ROOT/tests/fixtures/responses/*/*.sse
seed quota_stream $ROOT/tests/fixtures/responses/*/*.sse
seed config $ROOT/examples/*/*.json
seed json_scan $ROOT/tests/fixtures/responses/*/*.json
mkdir -p corpus/request_parse corpus/request_translate corpus/response_translate corpus/guard_scan corpus/eventstream corpus/pipeline
seed response_translate $ROOT/tests/fixtures/responses/*/*.json
python3 - <<'PY'
import json, os, struct, zlib
m = json.load(open("../tests/fixtures/manifest.json"))["cases"]


def frames(events_json):
    """A Bedrock fixture's `{event, payload}` list as the event-stream bytes the provider sends."""
    out = b""
    for e in json.loads(events_json):
        headers = b""
        for name, value in ((":event-type", e["event"]), (":content-type", "application/json"), (":message-type", "event")):
            headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
        body = json.dumps(e["payload"], separators=(",", ":")).encode()
        prelude = struct.pack(">II", 12 + len(headers) + len(body) + 4, len(headers))
        message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + body
        out += message + struct.pack(">I", zlib.crc32(message))
        if e["event"] == "chunk":
            open(f"corpus/eventstream/chunk-{len(os.listdir('corpus/eventstream'))}", "wb").write(body)
    return out


for c in m:
    for target in ("request_parse", "request_translate"):
        with open(f"corpus/{target}/{c['name']}.json", "w") as f:
            json.dump(c["request"], f)
# pipeline: [selector, configuration, cut, request length (u16 LE)] + request + answer, per
# fixture case and configuration (see fuzz_targets/pipeline.rs for the selector's layout).
PATHS = ["/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/completions", "/v1/embeddings",
         "/v1beta/models/", "/model/", "/openai/deployments/"]
TYPES = {"application/json": 0, "text/event-stream": 1, "application/vnd.amazon.eventstream": 2}
for c in m:
    path = next((i for i, p in reversed(list(enumerate(PATHS))) if c["path"].startswith(p)), 0)
    content_type = TYPES.get(c["content_type"].split(";")[0], 3)
    status = {200: 0, 400: 1, 429: 2}.get(c["status"], 3)
    if "/invoke" in c["path"]:
        path = 13  # the InvokeModel path: bits 0-2 = 5 with bit 7 of the configuration byte
    if "/publishers/anthropic/" in c["path"]:
        path = 14  # Claude on Vertex AI
    request = json.dumps(c["request"]).encode()
    answer = open("../tests/fixtures/responses/" + c["response"], "rb").read()
    if c["response"].endswith(".events.json"):
        answer = frames(answer)
        open(f"corpus/eventstream/{c['name']}", "wb").write(answer)
        open(f"corpus/guard_stream/{c['name']}", "wb").write(answer)
    for config in range(4):
        head = bytes([(path & 7) | content_type << 3 | status << 5, config | (path >> 3) << 7, 128,
                      len(request) & 255, len(request) >> 8 & 255])
        with open(f"corpus/pipeline/{c['name']}-{config}", "wb") as f:
            f.write(head + request + answer)
# An Anthropic Message Batch (path 9: selector bits 0-2 = 1 with bit 7 of the configuration byte).
batch = json.dumps({"requests": [{"custom_id": f"r{i}", "params": {"model": "claude-sonnet-4-20250514", "max_tokens": 64,
                    "system": "Be brief.", "messages": [{"role": "user", "content": f"Question {i}: 529.982.247-25?"}]}}
                   for i in range(3)]}).encode()
created = b'{"id":"msgbatch_01","type":"message_batch","processing_status":"in_progress","request_counts":{"processing":3}}'
open("corpus/request_parse/anthropic-batch.json", "wb").write(batch)
for config in range(4):
    head = bytes([1, config | 128, 128, len(batch) & 255, len(batch) >> 8 & 255])
    open(f"corpus/pipeline/anthropic-batch-{config}", "wb").write(head + batch + created)
# A Gemini batch (path 12: selector bits 0-2 = 4 with bit 7 of the configuration byte).
gbatch = json.dumps({"batch": {"display_name": "b", "input_config": {"requests": {"requests": [
    {"request": {"contents": [{"parts": [{"text": f"Question {i}"}]}], "generationConfig": {"maxOutputTokens": 64}},
     "metadata": {"key": str(i)}} for i in range(3)]}}}}).encode()
pending = b'{"name":"batches/1","metadata":{"name":"batches/1","state":"BATCH_STATE_PENDING"}}'
open("corpus/request_parse/gemini-batch.json", "wb").write(gbatch)
for config in range(4):
    head = bytes([4, config | 128, 128, len(gbatch) & 255, len(gbatch) >> 8 & 255])
    open(f"corpus/pipeline/gemini-batch-{config}", "wb").write(head + gbatch + pending)
for i, line in enumerate(open("../tests/fixtures/guardrails/pii-eval.jsonl")):
    if i >= 300:
        break
    with open(f"corpus/guard_scan/{i}.txt", "w") as f:
        f.write(json.loads(line)["text"])
PY

echo "[" > results.json.tmp
first=1
for t in "${TARGETS[@]}"; do
  log=$(mktemp)
  status=ok
  cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -print_final_stats=1 -rss_limit_mb=2048 -max_len=65536 \
    >"$log" 2>&1 || status=crash
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || echo 0)
  printf '%-18s %-6s %12s executions  coverage %s\n' "$t" "$status" "$execs" "$cov"
  [ $first = 1 ] || echo "," >> results.json.tmp
  first=0
  printf '{"target":"%s","status":"%s","seconds":%s,"executions":%s,"coverage_edges":%s}' \
    "$t" "$status" "$SECONDS_EACH" "${execs:-0}" "${cov:-0}" >> results.json.tmp
  [ "$status" = ok ] || tail -40 "$log"
  rm -f "$log"
done
echo "]" >> results.json.tmp
# Rows of targets not run this time are kept from the previous results, in the usual order.
python3 - "${ALL[@]}" <<'PY'
import json, os, sys
new = {r["target"]: r for r in json.load(open("results.json.tmp"))}
old = {r["target"]: r for r in json.load(open("results.json"))} if os.path.exists("results.json") else {}
rows = [new.get(t) or old.get(t) for t in sys.argv[1:]]
json.dump([r for r in rows if r], open("results.json", "w"), indent=1)
os.remove("results.json.tmp")
PY
