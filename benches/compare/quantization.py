#!/usr/bin/env python3
"""What the int8 linears cost in quality: the default kernels against the exact f32 model
(`INTENT_ROUTER_GENERIC_KERNELS=1`), same binary, same model, on the held-out sets.

    python3 benches/compare/quantization.py [--model models/helpdesk] [--bin target/release/intent-router]

For the dev split, the two independent sets and all three together it prints macro-F1 both
ways (`intent-router eval --json`) and, from `intent-router classify --file` run both ways on
the same tickets, how many tickets get a different answer (`intent`, which includes the
confidence fallbacks to the parent or `unknown`), how many a different top-1 intent, and the
largest change of any listed probability. On a CPU without AVX-512 VNNI both runs are the exact
model and it says so. Builds the release binary first unless --bin is given.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
DATA = os.path.join(ROOT, "training-data")
SETS = [
    ("dev split", ["dev.jsonl"]),
    ("independent sets", ["dev-independent-a.jsonl", "dev-independent-b.jsonl"]),
    ("all three", ["dev.jsonl", "dev-independent-a.jsonl", "dev-independent-b.jsonl"]),
]
EXACT = {"INTENT_ROUTER_GENERIC_KERNELS": "1"}


def run(cmd, env=None):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    return out.stdout


def int8_available(binary, model):
    """Whether the default kernels differ from the exact ones (the binary says which it runs)."""
    out = subprocess.run([binary, "--log", "intent_router=info", "classify", "--model", model, "ping"],
                         check=True, capture_output=True, text=True)
    return "int8" in out.stderr.lower()


def labelled(files, work):
    """One labelled file holding `files` (the file itself when there is one)."""
    if len(files) == 1:
        return os.path.join(DATA, files[0])
    path = os.path.join(work, "+".join(files))
    with open(path, "w", encoding="utf-8") as out:
        for name in files:
            out.write(open(os.path.join(DATA, name), encoding="utf-8").read())
    return path


def unlabelled(name, work):
    """The examples of `name` as tickets for `classify`, without their labels."""
    path = os.path.join(work, "tickets-" + name)
    with open(path, "w", encoding="utf-8") as out:
        for line in open(os.path.join(DATA, name), encoding="utf-8"):
            ex = json.loads(line)
            out.write(json.dumps({k: v for k, v in ex.items() if k not in ("intent", "lang")},
                                 ensure_ascii=False) + "\n")
    return path


def compare(binary, model, files, work, answers_of):
    """One table row; `answers_of` caches each file's classify output per side."""
    data = labelled(files, work)
    row = {}
    outs = {}
    for side, env in [("int8", None), ("exact", EXACT)]:
        report = json.loads(run([binary, "eval", "--model", model, "--data", data, "--json"], env))
        row[side] = report["macro_f1"]
        outs[side] = []
        for name in files:
            if (name, side) not in answers_of:
                tickets = unlabelled(name, work)
                answers_of[name, side] = [
                    json.loads(l)
                    for l in run([binary, "classify", "--model", model, "--file", tickets],
                                 env).splitlines()
                ]
            outs[side] += answers_of[name, side]
    answers = top1 = 0
    worst = 0.0
    for a, b in zip(outs["int8"], outs["exact"]):
        answers += a["intent"] != b["intent"]
        top1 += a["top_k"][0]["intent"] != b["top_k"][0]["intent"]
        pa = {x["intent"]: x["p"] for x in a["top_k"]}
        pb = {x["intent"]: x["p"] for x in b["top_k"]}
        worst = max([worst] + [abs(pa[k] - pb[k]) for k in pa.keys() & pb.keys()])
    row.update(n=len(outs["int8"]), answers=answers, top1=top1, worst=worst)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "helpdesk"))
    ap.add_argument("--bin", help="intent-router binary (default: build the release one)")
    a = ap.parse_args()
    binary = a.bin
    if not binary:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = os.path.join(ROOT, "target", "release", "intent-router")
    if not int8_available(binary, a.model):
        print("this CPU runs the exact f32 linears (no AVX-512 VNNI): nothing to compare")
        return
    print("| held-out set | tickets | int8 macro-F1 | exact macro-F1 | difference "
          "| answers that differ | top-1 that differs | largest probability change |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    answers_of = {}
    with tempfile.TemporaryDirectory() as work:
        for name, files in SETS:
            r = compare(binary, a.model, files, work, answers_of)
            diff = (r["int8"] - r["exact"]) * 100
            print(f"| {name} | {r['n']:,} | {r['int8']:.3f} | {r['exact']:.3f} | {diff:+.2f} point "
                  f"| {r['answers']} | {r['top1']} | {r['worst']:.3f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
