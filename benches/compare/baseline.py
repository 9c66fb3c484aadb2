"""The PyTorch baseline of the speed comparison: the same model (exported by
`intent-router export-hf`) and the same pipeline stages as intent-router: tokenise (the same
tokenizer.json through the `tokenizers` library), encode (transformers' BertModel, f32, all
cores), mean-pool with the attention mask, L2-normalise, apply the classifier head with its
calibration temperature (and, where the model reads one, its n-gram view: `Ngrams` below is the
same computation as src/model/ngrams.rs).

    python baseline.py offline --model DIR --input tickets.jsonl --batch 32 --out preds.jsonl [--device cuda]
    python baseline.py serve --model DIR --port 8601 [--max-batch 32]
    python baseline.py cut --model DIR --input tickets.jsonl [--tokens N --out cut.jsonl]

`serve` is the pinned "minimal Python HTTP server": one process, a threading HTTP server whose
handlers put tickets on a queue, and one inference thread that takes whatever is queued (up to
--max-batch) as one batch, so concurrency turns into batching exactly as in intent-router.
POST /classify {"text": ...} -> {"intent": ..., "p": ...}.
Run by benches/compare/run.py inside its virtual environment; not part of the Rust build.
"""
import argparse
import collections
import json
import math
import os
import re
import queue
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import BertConfig, BertModel


class Ngrams:
    """The n-gram view of src/model/ngrams.rs: TF-IDF of word 1-2-grams and character 2-5-grams
    inside space-padded words, sublinear tf, each block L2-normalised; weights [labels, terms]."""

    def __init__(self, path, weights, device):
        raw = json.load(open(path, encoding="utf-8"))
        self.index = {t: i for i, t in enumerate(raw["terms"])}
        self.idf = raw["idf"]
        self.w = weights.to(device)

    @staticmethod
    def terms(text):
        lower = text.lower()
        tokens = [t for t in re.split(r"[^\w]", lower) if len(t) >= 2]
        words = collections.Counter("w:" + t for t in tokens)
        words.update("w:" + a + " " + b for a, b in zip(tokens, tokens[1:]))
        chars = collections.Counter()
        for word in lower.split():
            padded = " " + word + " "
            for n in range(2, 6):
                offset = 0
                while True:
                    chars["c:" + padded[offset : offset + n]] += 1
                    if offset + n >= len(padded):
                        break
                    offset += 1
                if n >= len(padded):
                    break
        return words, chars

    def logits(self, text):
        idx, val = [], []
        for block in self.terms(text):
            known = [(self.index[t], (1 + math.log(tf))) for t, tf in block.items() if t in self.index]
            known = [(i, v * self.idf[i]) for i, v in known]
            norm = math.sqrt(sum(v * v for _, v in known)) or 1.0
            idx += [i for i, _ in known]
            val += [v / norm for _, v in known]
        if not idx:
            return torch.zeros(self.w.shape[0], device=self.w.device)
        cols = torch.tensor(idx, dtype=torch.long, device=self.w.device)
        return self.w[:, cols] @ torch.tensor(val, dtype=torch.float32, device=self.w.device)


class Pipeline:
    """Tokenise, encode, pool, head: one batch of texts -> (label, probability) pairs."""

    def __init__(self, model_dir, device="cpu"):
        self.device = torch.device(device)
        meta = json.load(open(f"{model_dir}/encoder.json"))
        head = json.load(open(f"{model_dir}/head.json"))
        self.prefix = meta["prefix"]
        self.tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
        self.tokenizer.enable_truncation(max_length=meta["max_tokens"])
        self.tokenizer.enable_padding(pad_id=1, pad_token="<pad>")
        config = BertConfig.from_pretrained(model_dir)
        self.model = BertModel.from_pretrained(
            model_dir, config=config, add_pooling_layer=False, torch_dtype=torch.float32
        ).eval().to(self.device)
        weights = load_file(f"{model_dir}/head.safetensors")
        if head["head"].get("kind", "linear") != "linear":
            sys.exit("baseline.py supports the linear head only")
        self.w = weights["head.0.weight"].to(self.device)
        self.b = weights["head.0.bias"].to(self.device)
        self.temperature = head["temperature"]
        self.labels = head["labels"]
        self.ngrams = None
        if os.path.exists(f"{model_dir}/ngrams.json"):
            self.ngrams = Ngrams(f"{model_dir}/ngrams.json", weights["ngrams.weight"], self.device)

    @torch.inference_mode()
    def __call__(self, texts):
        enc = self.tokenizer.encode_batch([self.prefix + t for t in texts])
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long).to(self.device)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long).to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        logits = pooled @ self.w.T + self.b
        if self.ngrams is not None:
            logits = logits + torch.stack([self.ngrams.logits(t) for t in texts])
        probs = torch.softmax(logits / self.temperature, dim=-1)
        p, i = probs.max(-1)
        return [(self.labels[k], float(v)) for k, v in zip(i.tolist(), p.tolist())]


def offline(a):
    pipe = Pipeline(a.model, a.device)
    tickets = [json.loads(l) for l in open(a.input, encoding="utf-8") if l.strip()]
    if pipe.device.type == "cuda":
        pipe([t["text"] for t in tickets[: a.batch]])  # CUDA context and kernels, not timed
    # Same order of work as `intent-router classify --file`: batches sorted by length.
    order = sorted(range(len(tickets)), key=lambda i: len(tickets[i]["text"]))
    out = [None] * len(tickets)
    start = time.perf_counter()
    for s in range(0, len(order), a.batch):
        idx = order[s : s + a.batch]
        for i, r in zip(idx, pipe([tickets[i]["text"] for i in idx])):
            out[i] = r
    seconds = time.perf_counter() - start
    with open(a.out, "w", encoding="utf-8") as f:
        for t, (label, p) in zip(tickets, out):
            f.write(json.dumps({"id": t.get("id"), "intent": label, "p": p}) + "\n")
    print(json.dumps({"seconds": seconds, "n": len(tickets), "threads": torch.get_num_threads()}))


def cut(a):
    """Writes each ticket of --input cut to at most --tokens tokens as the encoder counts them
    (prefix, [CLS] and [SEP] included, the model's truncation applied), and prints the mean
    count of the written texts. --tokens 0 only counts."""
    meta = json.load(open(f"{a.model}/encoder.json"))
    tok = Tokenizer.from_file(f"{a.model}/tokenizer.json")
    tok.enable_truncation(max_length=meta["max_tokens"])
    tickets = [json.loads(l) for l in open(a.input, encoding="utf-8") if l.strip()]
    counts = []
    with open(a.out, "w", encoding="utf-8") if a.out else open("/dev/null", "w") as f:
        for t in tickets:
            text = t["text"]
            if a.tokens:
                # Keep whole words: cut the word list until the encoding fits.
                words = text.split()
                hi = len(words)
                while hi > 1 and len(tok.encode(meta["prefix"] + " ".join(words[:hi])).ids) > a.tokens:
                    hi = max(1, hi - max(1, (hi // 16)))
                text = " ".join(words[:hi])
            counts.append(len(tok.encode(meta["prefix"] + text).ids))
            f.write(json.dumps(dict(t, text=text), ensure_ascii=False) + "\n")
    print(json.dumps({"mean_tokens": sum(counts) / len(counts), "n": len(counts)}))


def serve(a):
    pipe = Pipeline(a.model)
    jobs = queue.Queue()

    def worker():
        while True:
            batch = [jobs.get()]
            while len(batch) < a.max_batch:
                try:
                    batch.append(jobs.get_nowait())
                except queue.Empty:
                    break
            try:
                results = pipe([text for text, _ in batch])
            except Exception as e:  # answer every waiting request, keep serving
                results = [("error: " + str(e), 0.0)] * len(batch)
            for (_, slot), r in zip(batch, results):
                slot["result"] = r
                slot["done"].set()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def do_GET(self):
            body = b'{"status":"ok"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", 0))
            text = json.loads(self.rfile.read(n))["text"]
            slot = {"done": threading.Event()}
            jobs.put((text, slot))
            slot["done"].wait()
            label, p = slot["result"]
            body = json.dumps({"intent": label, "p": p}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    threading.Thread(target=worker, daemon=True).start()
    ThreadingHTTPServer.daemon_threads = True
    # socketserver's default listen backlog is 5: 32 clients connecting at once would be reset.
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(f"listening on 127.0.0.1:{a.port}", flush=True)
    server.serve_forever()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("offline")
    o.add_argument("--model", required=True)
    o.add_argument("--input", required=True)
    o.add_argument("--batch", type=int, default=32)
    o.add_argument("--out", required=True)
    o.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU comparison")
    s = sub.add_parser("serve")
    s.add_argument("--model", required=True)
    s.add_argument("--port", type=int, default=8601)
    s.add_argument("--max-batch", type=int, default=32)
    c = sub.add_parser("cut")
    c.add_argument("--model", required=True)
    c.add_argument("--input", required=True)
    c.add_argument("--tokens", type=int, default=0)
    c.add_argument("--out")
    a = p.parse_args()
    {"offline": offline, "serve": serve, "cut": cut}[a.cmd](a)


if __name__ == "__main__":
    main()
