#!/usr/bin/env python3
"""Side-by-side speed comparison: intent-router vs PyTorch (and, optionally, Hugging Face
text-embeddings-inference) on the same model, the same inputs and the same machine.

    python3 benches/compare/run.py [--tei PATH/TO/text-embeddings-router] [--rounds 2] [--seconds 10]
    python3 benches/compare/run.py --device cuda      # GPU machine: offline at batch 64 and 256

What it does, in order:
1. Sets up the Python baseline: a virtual environment outside the repository
   (~/.cache/intent-router/compare-venv, or --venv) with the pinned requirements.txt.
2. Builds intent-router (release) and exports the default model with `intent-router export-hf`,
   so PyTorch (and TEI) load exactly the weights we run.
3. Picks 1,000 Russian and English tickets (500 each) from training-data/, single-line ones so
   that our ticket cleaning leaves them unchanged and both sides encode the same text.
4. Offline: `intent-router classify --file` (whole process, model loading included) against
   baseline.py's batch loop (compute only, model loading excluded), both at batch 32,
   alternately, best of --rounds. Reports the agreement of their top-1 intents.
5. HTTP: our `serve` (POST /v1/classify), baseline.py's server (one process, batching queue)
   and TEI's /embed if given, with 1 and 32 concurrent keep-alive clients for --seconds each,
   alternately, the median round of --rounds (3); throughput and p50 / p99 latency; our server's peak RSS.
6. Prints the table of ratios against the targets and writes results.json in the work folder.
The figures are reported, not gated. Takes about 5 minutes on 2 cores after the first setup.

With --lengths it compares offline speed by ticket length instead (about 18 minutes on 2
cores): three sets of 300 tickets made by joining 1, 4 or 12 messages of one language (about 26,
90 and 240 tokens), and the 12-message set cut to 16, 32, 64, 128 and 256 tokens for the cost
of length; ours `classify --timings` against baseline.py's batch loop at batch 32, both without
model loading, alternately, median of --rounds (at least 3); ours also with the near-tie
re-check off (`--recheck-margin 0`), for its cost. Token counts are the encoder's (prefix, [CLS]
and [SEP] included, truncated at the model's 256).

With --mixed it compares over HTTP on a realistic mix instead (about 5 minutes): 300 tickets, a
third single chat lines, a third 3-4 messages, a third long e-mails (a greeting, 8-12 messages
in paragraphs, a signature and an earlier reply quoted under an "On ... wrote:" header). Our
binary cleans them once (`classify --show-text`) and both servers get the same cleaned text,
with 1 and 32 clients, alternately, median of --rounds; it reports our `serve`'s peak RSS too.

With --device cuda (a GPU machine with the CUDA toolkit) it builds `--features cuda` instead and
runs only the offline comparison, on the 1,000 tickets repeated 10 times, at batch 64 and 256,
both sides on the GPU in f32 and both timed without model loading (ours: `classify --timings`).
"""
import argparse
import hashlib
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BIN = os.path.join(ROOT, "target", "release", "intent-router")


def log(msg):
    print(f"[compare] {msg}", file=sys.stderr, flush=True)


def setup_venv(venv):
    req = os.path.join(HERE, "requirements.txt")
    digest = hashlib.sha256(open(req, "rb").read()).hexdigest()
    marker = os.path.join(venv, ".requirements-sha256")
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(marker) and open(marker).read() == digest:
        return py
    log(f"creating the baseline's virtual environment in {venv} (torch is large: a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "-r", req], check=True)
    open(marker, "w").write(digest)
    return py


def pick_tickets(n_per_lang=500, seed=7):
    rows = {"en": [], "ru": []}
    for name in ["train.jsonl", "dev.jsonl"]:
        for line in open(os.path.join(ROOT, "training-data", name), encoding="utf-8"):
            ex = json.loads(line)
            text = ex.get("text")
            if not text or "\n" in text or ">" in text or "<" in text or ex.get("lang") not in rows:
                continue
            if len(text.split()) < 3:
                continue
            # Russian in Latin letters is transliterated back before encoding on our side, a
            # step the baseline lacks: keep each language in its own script.
            cyrillic = any("а" <= ch.lower() <= "я" for ch in text)
            if cyrillic != (ex["lang"] == "ru"):
                continue
            rows[ex["lang"]].append({"text": " ".join(text.split()), "intent": ex["intent"]})
    rng = random.Random(seed)
    out = []
    for lang in ("en", "ru"):
        rng.shuffle(rows[lang])
        out += [dict(r, lang=lang) for r in rows[lang][:n_per_lang]]
    rng.shuffle(out)
    for i, r in enumerate(out):
        r["id"] = f"t{i:04d}"
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, path, proc, timeout=180):
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            if c.getresponse().status < 500:
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"server on port {port} did not answer {path} in {timeout}s")


def connect(port):
    """A keep-alive connection with Nagle off (no 40 ms stalls from delayed ACKs)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def load(port, path, make_body, texts, clients, seconds):
    """`clients` threads, each with one keep-alive connection, POST one text at a time."""
    lat, errors = [], [0]
    stop = time.time() + seconds
    lock = threading.Lock()

    def client(k):
        conn = connect(port)
        i = k * 7919
        mine = []
        while time.time() < stop:
            body = json.dumps(make_body(texts[i % len(texts)])).encode()
            i += 1
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except OSError:
                ok = False
                conn = connect(port)
            dt = time.perf_counter() - t0
            if ok:
                mine.append(dt)
            else:
                with lock:
                    errors[0] += 1
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * (len(lat) - 1)))] * 1000 if lat else float("nan")
    return {"rps": len(lat) / wall, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "errors": errors[0]}


def peak_rss_mb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tei", help="path of a text-embeddings-router binary (CPU build); skipped if absent")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--venv", default=os.path.expanduser("~/.cache/intent-router/compare-venv"))
    p.add_argument("--work", default=os.path.expanduser("~/.cache/intent-router/compare"))
    p.add_argument("--device", default="cpu", help="cpu (default), or cuda for the GPU comparison")
    p.add_argument("--lengths", action="store_true", help="compare offline speed by ticket length")
    p.add_argument("--mixed", action="store_true",
                   help="compare over HTTP on a mix of chat lines, mid-length tickets and long e-mails")
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    py = setup_venv(a.venv)
    gpu = a.device != "cpu"
    log("building intent-router (release%s)" % (", --features cuda" if gpu else ""))
    features = ["--features", "cuda"] if gpu else []
    subprocess.run(["cargo", "build", "--release", "--quiet", *features], cwd=ROOT, check=True)
    hf = os.path.join(a.work, "hf")
    subprocess.run([BIN, "export-hf", "--model", os.path.join(ROOT, "models", "helpdesk"), "--out", hf], check=True)

    tickets = pick_tickets()
    inp = os.path.join(a.work, "tickets.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        for t in tickets:
            f.write(json.dumps({"id": t["id"], "text": t["text"]}, ensure_ascii=False) + "\n")
    results = {"machine": machine(), "n": len(tickets)}
    if gpu:
        return gpu_offline(a, py, hf, tickets, results)
    if a.lengths:
        return by_length(a, py, hf, tickets, results)
    if a.mixed:
        return mixed(a, py, hf, tickets, results)

    # Offline throughput.
    ours_s, py_s = [], []
    for r in range(a.rounds):
        log(f"offline round {r + 1}/{a.rounds}")
        t0 = time.perf_counter()
        with open(os.path.join(a.work, "ours.jsonl"), "w") as out:
            subprocess.run([BIN, "classify", "--file", inp, "--batch-size", "32"], stdout=out, check=True)
        ours_s.append(time.perf_counter() - t0)
        py_s.append(baseline_offline(py, hf, inp, 32, os.path.join(a.work, "py.jsonl")))
    ours = [json.loads(l) for l in open(os.path.join(a.work, "ours.jsonl"))]
    pyo = [json.loads(l) for l in open(os.path.join(a.work, "py.jsonl"))]
    agree = sum(o["top_k"][0]["intent"] == q["intent"] for o, q in zip(ours, pyo)) / len(tickets)
    results["offline"] = {
        "ours_s": min(ours_s), "pytorch_s": min(py_s),
        "ours_per_s": len(tickets) / min(ours_s), "pytorch_per_s": len(tickets) / min(py_s),
        "ratio": min(py_s) / min(ours_s), "top1_agreement": agree,
    }

    # HTTP.
    http_res, rss = http_compare(a, py, hf, [t["text"] for t in tickets], (1, 32))
    results["http"] = {f"{n}@{c}": m for (n, c), m in http_res.items()}
    results["ours_serve_peak_rss_mb"] = rss
    json.dump(results, open(os.path.join(a.work, "results.json"), "w"), indent=2)
    report(results)


def http_compare(a, py, hf, texts, levels):
    """Our `serve`, baseline.py's server and TEI (if given) under `levels` concurrent clients
    each, alternately, the median round of --rounds: {(name, clients): measures}, and our peak RSS (MB)."""
    servers = {}
    procs = []
    try:
        port = free_port()
        db = os.path.join(a.work, "compare.db")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(db + suffix):
                os.remove(db + suffix)
        ours_p = subprocess.Popen(
            [BIN, "serve", "--dev-no-auth", "--listen", f"127.0.0.1:{port}", "--database", db],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(ours_p)
        wait_http(port, "/healthz", ours_p)
        servers["intent-router"] = (port, "/v1/classify", lambda t: {"text": t})
        port = free_port()
        py_p = subprocess.Popen(
            [py, os.path.join(HERE, "baseline.py"), "serve", "--model", hf, "--port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(py_p)
        wait_http(port, "/", py_p)
        servers["pytorch"] = (port, "/classify", lambda t: {"text": t})
        if a.tei:
            port = free_port()
            tei_p = subprocess.Popen(
                [a.tei, "--model-id", hf, "--port", str(port), "--hostname", "127.0.0.1",
                 "--pooling", "mean", "--max-client-batch-size", "32"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(tei_p)
            wait_http(port, "/health", tei_p, timeout=600)
            servers["tei"] = (port, "/embed", lambda t: {"inputs": "query: " + t})
        rounds = {}
        for clients in levels:
            for name, (port, path, body) in servers.items():
                load(port, path, body, texts, clients, 2)  # warm-up
            for r in range(a.rounds):
                for name, (port, path, body) in servers.items():
                    log(f"http: {clients} clients, {name}, round {r + 1}/{a.rounds}")
                    m = load(port, path, body, texts, clients, a.seconds)
                    rounds.setdefault((name, clients), []).append(m)
        # The round of median throughput (with its latencies), as every comparison here.
        http_res = {key: sorted(ms, key=lambda m: m["rps"])[(len(ms) - 1) // 2] for key, ms in rounds.items()}
        return http_res, peak_rss_mb(ours_p.pid)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def baseline_offline(py, hf, inp, batch, out, device="cpu"):
    """Runs baseline.py's batch loop; returns its compute seconds (model loading excluded)."""
    res = subprocess.run(
        [py, os.path.join(HERE, "baseline.py"), "offline", "--model", hf, "--input", inp,
         "--batch", str(batch), "--device", device, "--out", out],
        check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])["seconds"]


def gpu_offline(a, py, hf, tickets, results):
    """Offline throughput on the GPU at batch 64 and 256, model loading excluded on both sides."""
    inp = os.path.join(a.work, "tickets-x10.jsonl")
    with open(inp, "w", encoding="utf-8") as f:
        for rep in range(10):
            for t in tickets:
                f.write(json.dumps({"id": f"{t['id']}-{rep}", "text": t["text"]}, ensure_ascii=False) + "\n")
    n = len(tickets) * 10
    rows = {}
    for batch in (64, 256):
        ours_s, py_s = [], []
        for r in range(a.rounds):
            log(f"gpu offline, batch {batch}, round {r + 1}/{a.rounds}")
            res = subprocess.run(
                [BIN, "classify", "--file", inp, "--device", a.device, "--batch-size", str(batch),
                 "--max-batch-tokens", str(batch * 512), "--timings"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=True)
            ours_s.append(timed_seconds(res.stderr))
            py_s.append(baseline_offline(py, hf, inp, batch, os.path.join(a.work, "py-gpu.jsonl"), a.device))
        rows[batch] = {"ours_per_s": n / min(ours_s), "pytorch_per_s": n / min(py_s),
                       "ratio": min(py_s) / min(ours_s)}
    results["gpu_offline"] = rows
    json.dump(results, open(os.path.join(a.work, "results-gpu.json"), "w"), indent=2)
    print(f"\nMachine: {results['machine']}; device {a.device}; {n} tickets (ru/en)\n")
    print("| batch | intent-router (tickets/s) | PyTorch f32 (tickets/s) | ratio |")
    print("|---:|---:|---:|---:|")
    for batch, r in rows.items():
        print(f"| {batch} | {r['ours_per_s']:.0f} | {r['pytorch_per_s']:.0f} | {r['ratio']:.2f}× |")


def texts_by_language(tickets):
    """The tickets' texts, grouped by language."""
    by_lang = {}
    for t in tickets:
        by_lang.setdefault(t["lang"], []).append(t["text"])
    return by_lang


def joined(tickets, k, n=300, seed=11):
    """`n` tickets, each `k` messages of one language joined with spaces (one line, so that
    cleaning leaves it as it is and both sides encode the same text)."""
    rng = random.Random(seed + k)
    by_lang = texts_by_language(tickets)
    langs = sorted(by_lang)
    return [{"id": f"j{k}-{i}", "text": " ".join(rng.sample(by_lang[langs[i % len(langs)]], k))}
            for i in range(n)]


def ours_seconds(inp, out, extra=()):
    """`classify --timings` at batch 32 (plus `extra` flags): seconds without model loading,
    and how many near ties it re-checked."""
    with open(out, "w") as f:
        res = subprocess.run([BIN, "classify", "--file", inp, "--batch-size", "32", "--timings",
                              *extra], stdout=f, stderr=subprocess.PIPE, text=True, check=True)
    line = next(l for l in res.stderr.splitlines() if l.startswith("timings:"))
    return timed_seconds(res.stderr), int(line.rsplit("; ", 1)[1].split()[0])


def timed_seconds(stderr):
    """The classifying seconds (model loading excluded) from `classify --timings`' stderr."""
    line = next(l for l in stderr.splitlines() if l.startswith("timings:"))
    return float(line.split(" classified in ")[1].split()[0])


def by_length(a, py, hf, tickets, results):
    """Offline speed against length: joined messages, then one long set cut to fixed lengths."""
    sets = []
    for k in (1, 4, 12):
        path = os.path.join(a.work, f"joined-{k}.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for t in joined(tickets, k):
                f.write(json.dumps(t, ensure_ascii=False) + "\n")
        sets.append((f"{k} message{'s' if k > 1 else ''}", path))
    for n in (16, 32, 64, 128, 256):
        sets.append((f"cut to {n}", os.path.join(a.work, f"cut-{n}.jsonl")))
    rows = {}
    for name, path in sets:
        src, tokens = (sets[2][1], int(name.split()[-1])) if name.startswith("cut") else (path, 0)
        res = subprocess.run([py, os.path.join(HERE, "baseline.py"), "cut", "--model", hf, "--input", src,
                              "--tokens", str(tokens), "--out", path + ".tmp"],
                             check=True, capture_output=True, text=True)
        os.replace(path + ".tmp", path)
        mean = json.loads(res.stdout.strip().splitlines()[-1])["mean_tokens"]
        # Ours as shipped, ours with the near-tie re-check off, PyTorch; in turn.
        ours_s, off_s, py_s = [], [], []
        for r in range(max(3, a.rounds)):
            log(f"{name}: round {r + 1}")
            seconds, rechecked = ours_seconds(path, os.path.join(a.work, "ours-len.jsonl"))
            ours_s.append(seconds)
            off_s.append(ours_seconds(path, os.path.join(a.work, "off-len.jsonl"),
                                      ("--recheck-margin", "0"))[0])
            py_s.append(baseline_offline(py, hf, path, 32, os.path.join(a.work, "py-len.jsonl")))
        pyo = [json.loads(l) for l in open(os.path.join(a.work, "py-len.jsonl"))]

        def agreement(out):
            ours = [json.loads(l) for l in open(os.path.join(a.work, out))]
            return sum(o["top_k"][0]["intent"] == q["intent"] for o, q in zip(ours, pyo)) / len(pyo)
        o, off, q = statistics.median(ours_s), statistics.median(off_s), statistics.median(py_s)
        rows[name] = {"tokens": mean, "n": len(pyo), "ours_s": ours_s, "no_recheck_s": off_s,
                      "pytorch_s": py_s, "ours_ms": 1000 * o / len(pyo),
                      "pytorch_ms": 1000 * q / len(pyo), "ratio": q / o,
                      "ratio_no_recheck": q / off, "rechecked": rechecked,
                      "top1_agreement": agreement("ours-len.jsonl"),
                      "top1_agreement_no_recheck": agreement("off-len.jsonl")}
    results["lengths"] = rows
    json.dump(results, open(os.path.join(a.work, "results-lengths.json"), "w"), indent=2)
    print(f"\nMachine: {results['machine']}; batch 32, median of {max(3, a.rounds)} alternated rounds\n")
    print("| tickets | mean tokens | intent-router (tickets/s) | PyTorch f32 (tickets/s) | ratio "
          "| ms/ticket ours / PyTorch | top-1 agreement | re-checked | without re-check: ratio, "
          "agreement |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['tokens']:.0f} | {1000 / r['ours_ms']:.1f} | {1000 / r['pytorch_ms']:.1f} | "
              f"{r['ratio']:.2f}× | {r['ours_ms']:.2f} / {r['pytorch_ms']:.2f} | "
              f"{r['top1_agreement'] * 100:.1f}% | {r['rechecked']} | {r['ratio_no_recheck']:.2f}×, "
              f"{r['top1_agreement_no_recheck'] * 100:.1f}% |")


GREETINGS = {"en": ["Hello,", "Hi team,", "Good morning,"], "ru": ["Здравствуйте!", "Добрый день,", "Привет,"]}
SIGNATURES = {
    "en": ["Best regards,\nJohn Smith\nHead of Operations | Acme Ltd\n+1 555 0100",
           "Thanks,\nMaria\n--\nSent from my phone"],
    "ru": ["С уважением,\nИван Петров\nООО «Альфа», отдел закупок\n+7 495 000-00-00",
           "Спасибо,\nАнна\n--\nОтправлено с телефона"],
}
QUOTE_HEADERS = {"en": "On Mon, 3 Nov 2026 at 10:12, Support <support@example.com> wrote:",
                 "ru": "пн, 3 нояб. 2026 г. в 10:12, Поддержка <support@example.ru>: написал(а):"}


def mixed_tickets(tickets, n=300, seed=5):
    """A third chat lines, a third 3-4 messages, a third long e-mails with quoted history."""
    rng = random.Random(seed)
    by_lang = texts_by_language(tickets)
    langs = sorted(by_lang)
    out = []
    for i in range(n):
        lang = langs[(i // 3) % len(langs)]
        pool = by_lang[lang]
        if i % 3 == 0:
            body = rng.choice(pool)
        elif i % 3 == 1:
            body = " ".join(rng.sample(pool, rng.randint(3, 4)))
        else:
            parts = rng.sample(pool, rng.randint(8, 12))
            paragraphs = [" ".join(parts[j:j + 2]) for j in range(0, len(parts), 2)]
            quoted = "\n".join("> " + q for q in rng.sample(pool, 4))
            body = "\n\n".join([rng.choice(GREETINGS[lang]), *paragraphs, rng.choice(SIGNATURES[lang]),
                                 QUOTE_HEADERS[lang] + "\n" + quoted])
        out.append({"id": f"m{i:03d}", "body": body})
    return out


def cleaned(path, out):
    """The text our encoder reads for each ticket of `path` (`classify --show-text`)."""
    res = subprocess.run([BIN, "classify", "--file", path, "--show-text"],
                         check=True, capture_output=True, text=True)
    rows = [json.loads(l) for l in res.stdout.splitlines()]
    with open(out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"id": r["id"], "text": r["model_text"]}, ensure_ascii=False) + "\n")
    return [r["model_text"] for r in rows]


def mixed(a, py, hf, tickets, results):
    """HTTP with 1 and 32 clients on the mix, both sides fed the same cleaned text."""
    raw = os.path.join(a.work, "mixed-raw.jsonl")
    with open(raw, "w", encoding="utf-8") as f:
        for t in mixed_tickets(tickets):
            f.write(json.dumps(t, ensure_ascii=False) + "\n")
    path = os.path.join(a.work, "mixed.jsonl")
    texts = cleaned(raw, path)
    again = cleaned(path, path + ".again")
    changed = sum(x != y for x, y in zip(texts, again))
    res = subprocess.run([py, os.path.join(HERE, "baseline.py"), "cut", "--model", hf, "--input", path],
                         check=True, capture_output=True, text=True)
    mean = json.loads(res.stdout.strip().splitlines()[-1])["mean_tokens"]
    http_res, rss = http_compare(a, py, hf, texts, (1, 32))
    results["mixed"] = {"mean_tokens": mean, "recleaned_changed": changed, "ours_serve_peak_rss_mb": rss,
                        "http": {f"{n}@{c}": m for (n, c), m in http_res.items()}}
    json.dump(results, open(os.path.join(a.work, "results-mixed.json"), "w"), indent=2)
    print(f"\nMachine: {results['machine']}; {len(texts)} mixed tickets, mean {mean:.0f} tokens after "
          f"cleaning ({changed} changed when cleaned again)\n")
    print("| clients | intent-router (requests/s) | PyTorch (requests/s) | ratio | p50 ours / PyTorch (ms) |")
    print("|---:|---:|---:|---:|---:|")
    for c in (1, 32):
        o, q = http_res[("intent-router", c)], http_res[("pytorch", c)]
        print(f"| {c} | {o['rps']:.1f} | {q['rps']:.1f} | {o['rps'] / q['rps']:.2f}× | "
              f"{o['p50_ms']:.1f} / {q['p50_ms']:.1f} |")
    print(f"\n`serve` peak RSS: {rss:.0f} MB")


def machine():
    model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"{os.cpu_count()} × {model}"


def report(r):
    o, h = r["offline"], r["http"]
    print(f"\nMachine: {r['machine']}; {r['n']} tickets (ru/en)\n")
    print("| measure | intent-router | PyTorch | ratio | target |")
    print("|---|---:|---:|---:|---|")
    print(f"| offline, batch 32 (tickets/s) | {o['ours_per_s']:.1f} | {o['pytorch_per_s']:.1f} | "
          f"{o['ratio']:.2f}× | ≥ 1.5× |")
    a1, b1 = h["intent-router@1"], h["pytorch@1"]
    print(f"| HTTP, 1 client, p50 latency (ms) | {a1['p50_ms']:.1f} | {b1['p50_ms']:.1f} | "
          f"{a1['p50_ms'] / b1['p50_ms']:.2f}× | ≤ 0.7× |")
    a32, b32 = h["intent-router@32"], h["pytorch@32"]
    print(f"| HTTP, 32 clients (requests/s) | {a32['rps']:.1f} | {b32['rps']:.1f} | "
          f"{a32['rps'] / b32['rps']:.2f}× | ≥ 1.5× |")
    if "tei@1" in h:
        t = h["tei@1"]
        print(f"| HTTP, 1 client, p50 latency vs TEI (ms) | {a1['p50_ms']:.1f} | TEI {t['p50_ms']:.1f} | "
              f"{a1['p50_ms'] / t['p50_ms']:.2f}× | |")
    if "tei@32" in h:
        t = h["tei@32"]
        print(f"| HTTP, 32 clients vs TEI (requests/s) | {a32['rps']:.1f} | TEI {t['rps']:.1f} | "
              f"{a32['rps'] / t['rps']:.2f}× | ≥ 1.0× |")
    print(f"| `serve` peak RSS (MB) | {r['ours_serve_peak_rss_mb']:.0f} | | | ≤ 400 |")
    print(f"\nTop-1 agreement, ours (default kernels) vs PyTorch f32: {o['top1_agreement'] * 100:.1f}%")
    for k, m in sorted(h.items()):
        print(f"  {k:20} {m['rps']:7.1f} req/s  p50 {m['p50_ms']:7.1f} ms  p99 {m['p99_ms']:7.1f} ms  errors {m['errors']}")


if __name__ == "__main__":
    main()
