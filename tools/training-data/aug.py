import json, random, re
R = random.Random(20261122)
TR = {'а':'a','б':'b','в':'v','г':'g','д':'d','е':'e','ё':'e','ж':'zh','з':'z','и':'i','й':'i','к':'k','л':'l','м':'m','н':'n','о':'o','п':'p','р':'r','с':'s','т':'t','у':'u','ф':'f','х':'h','ц':'ts','ч':'ch','ш':'sh','щ':'sch','ъ':'','ы':'y','ь':'','э':'e','ю':'yu','я':'ya'}
def translit(s):
    out=[]
    for c in s:
        l=c.lower()
        if l in TR:
            t=TR[l]; out.append(t if c==l else t.capitalize())
        else: out.append(c)
    return ''.join(out).lower()
GREET_EN=["Hi,","Hello,","Hello team,","Dear support,","Hi there,","Good morning,","Hey,"]
GREET_RU=["Здравствуйте!","Добрый день.","Добрый вечер,","Привет.","Здравствуйте, служба поддержки.","Доброе утро!"]
SIG_EN=["\n\n--\nMark Evans\nOps lead, Brightline Ltd\n+44 20 7946 0011","\n\nBest regards,\nAnna K.","\n\nThanks,\nTom\nSent from my iPhone","\n\nKind regards,\nPriya Sharma\nFinance, Nordwind GmbH","\n\nCheers,\nJ.","\n\nRegards,\nDavid\n\nThis email and any attachments are confidential and intended solely for the addressee."]
SIG_RU=["\n\nС уважением,\nИван Петров\nООО «Ромашка»\n+7 495 123-45-67","\n\nС уважением, Мария","\n\n--\nАлексей\nОтправлено с iPhone","\n\nСпасибо,\nОльга Смирнова, бухгалтер","\n\nС уважением,\nДмитрий\n\nДанное сообщение является конфиденциальным и предназначено только для адресата."]
QUOTE_EN=["\n\nOn Tue, 4 Mar 2025 at 09:12, Support <support@shop.example> wrote:\n> Thank you for contacting us.\n> Your request number is 55120.","\n\n-----Original Message-----\nFrom: support@service.example\nSent: Monday\nSubject: Ticket 8812\nWe have received your request."]
QUOTE_RU=["\n\nпн, 3 мар. 2025 г. в 10:12, Поддержка <help@shop.example>: написал(а):\n> Здравствуйте! Ваше обращение зарегистрировано.\n> Номер 44812.","\n\n-----Исходное сообщение-----\nОт: help@service.example\nТема: Обращение 7712\nМы получили ваш запрос."]
def typo(s):
    w=list(s)
    if len(w)>20:
        i=R.randrange(5,len(w)-5)
        if w[i].isalpha() and w[i+1].isalpha(): w[i],w[i+1]=w[i+1],w[i]
    return ''.join(w)
def variant(text, lang, k):
    """k-th stylistic variant of a hand-written message (k=0 keeps it as written)."""
    if k==0: return {"text":text}
    style=R.choice(["email","email_quote","chat","typo","translit"] if lang=="ru" else ["email","email_quote","chat","typo"])
    if style=="translit" and lang=="ru":
        return {"text":translit(text)}
    if style=="chat":
        t=re.sub(r"[.!]+$","",text.strip())
        t=t[0].lower()+t[1:] if t else t
        return {"text":t}
    if style=="typo": return {"text":typo(text)}
    g=R.choice(GREET_RU if lang=="ru" else GREET_EN)
    s=R.choice(SIG_RU if lang=="ru" else SIG_EN)
    body=f"{g}\n\n{text}{s}"
    if style=="email_quote": body+=R.choice(QUOTE_RU if lang=="ru" else QUOTE_EN)
    return {"body":body}
def emit(path, prefix, data, variants):
    """data: {intent: {lang: [texts]}}; writes JSONL with `variants` versions per text (ids
    `<prefix>-<intent>-<lang>-<nnn>/<k>`: the part before `/` names the message, so `train`
    keeps its variants in one fold)."""
    n=0
    with open(path,"w") as f:
        for intent, langs in data.items():
            for lang, texts in langs.items():
                seen=set()
                for i,t in enumerate(texts):
                    for k in range(variants):
                        for _ in range(8):
                            ex=variant(t,lang,k)
                            key=json.dumps(ex,ensure_ascii=False)
                            if key not in seen: break
                        if key in seen: continue
                        seen.add(key)
                        ex.update({"id":f"{prefix}-{intent}-{lang}-{i:03d}/{k}","intent":intent,"lang":lang})
                        f.write(json.dumps(ex,ensure_ascii=False)+"\n"); n+=1
    return n
