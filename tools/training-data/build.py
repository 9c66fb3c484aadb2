"""Builds training-data/train.jsonl and dev.jsonl from the hand-written messages in this folder.

Every message was written by hand; train.jsonl holds each training message as written plus one
stylistic variant (an e-mail with greeting, signature and sometimes quoted history, a lowercase chat
line, a typo, or, for Russian, Latin transliteration), seeded. dev.jsonl holds separately written
messages (other wording and scenarios), every other one in a stylistic variant. Run from the repo root:

    python3 tools/training-data/build.py
"""
import json, os, re, sys
HERE=os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0,HERE)
os.chdir(HERE)
import aug
def load(f):
    g={}; exec(open(f).read(),g); return g['D']
train={}
for f in ['train_account.py','train_billing.py','train_orders.py','train_tech.py']:
    train.update(load(f))
for intent,langs in load('train_more.py').items():
    for lang,texts in langs.items():
        train[intent][lang]=train[intent][lang]+texts
dev=load('dev_all.py')
DATA=os.path.join(HERE,'..','..','training-data')
# Messages once labelled other.spam that are no request to this business at all (misdirected,
# job applications, tests, gibberish) carry the label out_of_scope since 2026-12-07; spam keeps
# ads, phishing, mass mailings and auto-replies. relabel_out_of_scope.tsv lists them by file and
# id (decided by a separate reader from the two labels' definitions alone).
RELABEL={}
for l in open(os.path.join(HERE,'relabel_out_of_scope.tsv'),encoding='utf-8'):
    if l.strip() and not l.startswith('#'):
        f,i=l.split('\t')[:2]; RELABEL.setdefault(f,set()).add(i)
def relabel(name,dropped=()):
    path=os.path.join(DATA,name); rows=[json.loads(l) for l in open(path,encoding='utf-8') if l.strip()]
    ids={r["id"] for r in rows}; missing=RELABEL.get(name,set())-ids-set(dropped)
    assert not missing, f"{name}: relabel ids not found: {sorted(missing)[:5]}"
    with open(path,'w',encoding='utf-8') as f:
        for r in rows:
            if r["id"] in RELABEL.get(name,()): r["intent"]="out_of_scope"
            f.write(json.dumps(r,ensure_ascii=False)+"\n")
n=aug.emit(os.path.join(DATA,'train.jsonl'),'tr',train,2)
# Messages written by six further authors (authors/*.jsonl, each in its own style: B2B e-mails,
# chat, phone/voice and web forms, stories from non-technical customers, near-miss cases, many
# industries; see authors/README.md). Appended as written, minus any that nearly duplicate a
# dev or independent evaluation message (word Jaccard >= 0.6).
def words(s): return set(re.findall(r"\w+",s.lower()))
def text_of(ex): return ex.get("text") or ((ex.get("subject") or "")+"\n"+(ex.get("body") or ""))
held=[]
for f in ['dev.jsonl','dev-independent-a.jsonl','dev-independent-b.jsonl','out-of-scope-a.jsonl',
          'out-of-scope-b.jsonl','multi-intent-a.jsonl']:
    for l in open(os.path.join(HERE,'..','..','training-data',f),encoding='utf-8'):
        held.append(words(text_of(json.loads(l))))
dropped=0; dropped_ids=[]
with open(os.path.join(HERE,'..','..','training-data','train.jsonl'),'a',encoding='utf-8') as out:
    for name in sorted(os.listdir(os.path.join(HERE,'authors'))):
        if not name.endswith('.jsonl'): continue
        for i,l in enumerate(open(os.path.join(HERE,'authors',name),encoding='utf-8')):
            if not l.strip(): continue
            ex=json.loads(l); a=words(text_of(ex))
            row={"id":f"au-{name[:-6]}-{i:04d}"}
            if any(len(a&b)/max(1,len(a|b))>=0.6 for b in held):
                dropped+=1; dropped_ids.append(row["id"]); continue
            row.update({k:ex[k] for k in ("text","subject","body") if k in ex})
            row.update({"intent":ex["intent"],"lang":ex["lang"]})
            out.write(json.dumps(row,ensure_ascii=False)+"\n"); n+=1
print("author messages dropped as near-duplicates of evaluation data:",dropped)
relabel('train.jsonl',dropped_ids)
# dev: one version per message; every other one in a stylised variant
aug.R.seed(7)
with open(os.path.join(HERE,'..','..','training-data','dev.jsonl'),'w') as f:
    m=0
    for intent,langs in dev.items():
        for lang,texts in langs.items():
            for i,t in enumerate(texts):
                ex=aug.variant(t,lang,i%2)
                if 'translit' in ex.get('text','') : pass
                ex.update({"id":f"dev-{intent}-{lang}-{i:03d}","intent":intent,"lang":lang})
                f.write(json.dumps(ex,ensure_ascii=False)+"\n"); m+=1
print("train",n,"dev",m)
relabel('dev.jsonl'); relabel('dev-independent-a.jsonl')
def toks(s): return set(re.findall(r"\w+",s.lower()))
tr=[toks(t) for langs in train.values() for ts in langs.values() for t in ts]
worst=[]
for intent,langs in dev.items():
    for lang,ts in langs.items():
        for t in ts:
            a=toks(t); j=max(len(a&b)/max(1,len(a|b)) for b in tr)
            if j>=0.6: worst.append((round(j,2),t))
print("near-duplicates dev vs train (jaccard>=0.6):",len(worst)); [print(w) for w in sorted(worst)[-10:]]
