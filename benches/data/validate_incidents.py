#!/usr/bin/env python3
"""Validate benches/data/incidents.jsonl (incident-wave benchmark tickets)."""
import collections, json, re, sys, pathlib

PATH = pathlib.Path(__file__).with_name("incidents.jsonl")
INTENTS = {
    "account.access", "account.profile", "billing.payment_failed", "billing.refund",
    "billing.charge_dispute", "billing.invoice", "orders.status", "orders.delivery_issue",
    "orders.cancel", "tech.bug", "tech.outage", "tech.integration",
}
# scenario -> (intent, {lang: count})
EXPECTED = {
    "s01_payquanta_checkout": ("billing.payment_failed", {"en": 20, "ru": 20}),
    "s02_sms_codes_gateway": ("account.access", {"en": 20, "ru": 20}),
    "s03_app_5120_orders_crash": ("tech.bug", {"en": 20, "ru": 20}),
    "s04_kurierpuls_ekb_lost": ("orders.delivery_issue", {"ru": 30}),
    "s05_plus_renewal_double_charge": ("billing.charge_dispute", {"en": 20, "ru": 20}),
    "s06_site_502_outage": ("tech.outage", {"en": 20, "ru": 20}),
    "s07_webhooks_stopped_may12": ("tech.integration", {"en": 30}),
    "s08_aurora_festival_refund": ("billing.refund", {"en": 20, "ru": 20}),
    "s09_october_docs_wrong_vat": ("billing.invoice", {"ru": 30}),
    "s10_tracking_status_unknown": ("orders.status", {"en": 20, "ru": 20}),
    "s11_reset_link_expired": ("account.access", {"en": 30}),
    "s12_cancel_button_error": ("orders.cancel", {"en": 20, "ru": 20}),
    "s13_kz_phone_validation": ("account.profile", {"en": 10, "ru": 20}),
    "s14_wallet_token_wlt17": ("billing.payment_failed", {"en": 25}),
}

errors = []
counts = collections.Counter()
seen = {}
cyr = re.compile(r"[А-Яа-яЁё]")
for n, line in enumerate(PATH.read_text(encoding="utf-8").splitlines(), 1):
    try:
        r = json.loads(line)
    except json.JSONDecodeError as e:
        errors.append(f"line {n}: invalid JSON ({e})"); continue
    if set(r) != {"scenario", "intent", "lang", "text"}:
        errors.append(f"line {n}: fields {sorted(r)}"); continue
    if not all(isinstance(r[k], str) and r[k].strip() for k in r):
        errors.append(f"line {n}: empty or non-string field")
    if r["intent"] not in INTENTS:
        errors.append(f"line {n}: unknown intent {r['intent']}")
    if r["lang"] not in ("en", "ru"):
        errors.append(f"line {n}: bad lang {r['lang']}")
    exp = EXPECTED.get(r["scenario"])
    if exp is None:
        errors.append(f"line {n}: unknown scenario {r['scenario']}")
    elif exp[0] != r["intent"]:
        errors.append(f"line {n}: intent {r['intent']} != {exp[0]}")
    has_cyr = bool(cyr.search(r["text"]))
    if has_cyr != (r["lang"] == "ru"):
        errors.append(f"line {n}: script does not match lang {r['lang']}")
    if "PayQuanta" in r["text"] and r["scenario"] == "s14_wallet_token_wlt17":
        errors.append(f"line {n}: s14 mentions s01's provider")
    key = " ".join(r["text"].lower().split())
    if key in seen:
        errors.append(f"line {n}: duplicate text of line {seen[key]}")
    seen[key] = n
    counts[(r["scenario"], r["lang"])] += 1

print(f"{'scenario':34} {'intent':24} {'en':>4} {'ru':>4} {'total':>6}")
total = 0
for sc, (intent, langs) in EXPECTED.items():
    en, ru = counts[(sc, "en")], counts[(sc, "ru")]
    total += en + ru
    flag = ""
    for lang in ("en", "ru"):
        if counts[(sc, lang)] != langs.get(lang, 0):
            errors.append(f"{sc}/{lang}: {counts[(sc, lang)]} tickets, expected {langs.get(lang, 0)}")
            flag = "  <-- MISMATCH"
    print(f"{sc:34} {intent:24} {en:>4} {ru:>4} {en + ru:>6}{flag}")
print(f"{'TOTAL':34} {'':24} {sum(v for (s, l), v in counts.items() if l == 'en'):>4} "
      f"{sum(v for (s, l), v in counts.items() if l == 'ru'):>4} {total:>6}")
if errors:
    print("\nERRORS:"); print("\n".join(errors)); sys.exit(1)
print("\nOK: all lines valid")
