"""Checks an author's JSONL file: valid JSON, known intents (or `out_of_scope`), languages, counts per
leaf and language.

    python3 tools/training-data/authors/check.py tools/training-data/authors/NAME.jsonl
"""
import json, sys, collections
LEAVES = """account.access account.profile account.delete billing.payment_failed billing.refund
billing.charge_dispute billing.invoice orders.status orders.delivery_issue orders.cancel tech.bug
tech.outage tech.integration sales.pricing feedback.complaint feedback.praise other.spam
out_of_scope""".split()
path = sys.argv[1]
counts = collections.Counter(); texts = set(); bad = 0
for n, line in enumerate(open(path, encoding="utf-8"), 1):
    if not line.strip():
        continue
    try:
        ex = json.loads(line)
    except Exception as e:
        print(f"{path}:{n}: invalid JSON: {e}"); bad += 1; continue
    if ex.get("intent") not in LEAVES:
        print(f"{path}:{n}: unknown intent {ex.get('intent')!r}"); bad += 1
    if ex.get("lang") not in ("en", "ru"):
        print(f"{path}:{n}: lang must be en or ru"); bad += 1
    t = ex.get("text") or ((ex.get("subject") or "") + "\n" + (ex.get("body") or ""))
    if not t.strip():
        print(f"{path}:{n}: no text"); bad += 1
    if t in texts:
        print(f"{path}:{n}: duplicate text"); bad += 1
    texts.add(t)
    counts[(ex.get("intent"), ex.get("lang"))] += 1
for leaf in LEAVES:
    print(f"{leaf:26} en {counts[(leaf,'en')]:3}  ru {counts[(leaf,'ru')]:3}")
print("total", sum(counts.values()), "errors", bad)
