#!/usr/bin/env python3
"""bench-server.py — aggregate throughput of `copse serve` against the number
of concurrent streaming clients.

    python3 scripts/bench-server.py [--copse build/copse] [--model FILE]
        [--clients 1,4,16,32] [--tokens 64] [--threads N] [-- extra serve options]

Starts `copse serve` on a temporary socket (--max-batch = the largest client
count), then for each client count C runs C streaming greedy completions at
once (distinct prompts, --tokens new tokens each, ignoring nothing: a request
may end early at end of text) and prints a Markdown table: wall time,
tokens generated, aggregate tokens/s, mean time to first token and mean
per-client decode speed.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

TOPICS = ["the sea", "a city at night", "an old library", "the first snow", "a robot", "a long train journey",
          "bees", "a market", "the desert", "a lighthouse", "chess", "a forest", "the moon", "a bakery",
          "a storm", "a garden"]


def request(sock, prompt, tokens):
    body = json.dumps({"prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}).encode()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    t0 = time.perf_counter()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    buf, first, n = b"", None, 0
    while True:
        d = s.recv(65536)
        if not d:
            break
        if first is None and b'"text":"' in d and b'"text":""' not in d:
            first = time.perf_counter()
        buf += d
        if buf.endswith(b"0\r\n\r\n"):
            break
    s.close()
    t1 = time.perf_counter()
    for line in buf.split(b"\n"):
        if line.startswith(b"data: {") and b'"usage"' in line:
            n = json.loads(line[6:])["usage"]["completion_tokens"]
    return {"tokens": n, "ttft": (first or t1) - t0, "total": t1 - t0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--copse", default="build/copse")
    ap.add_argument("--model", default=os.path.join(os.environ.get("COPSE_MODEL_DIR") or
                                                    os.path.expanduser("~/.cache/copse"),
                                                    "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--clients", default="1,4,16,32")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("extra", nargs="*")
    a = ap.parse_args()
    counts = [int(x) for x in a.clients.split(",")]
    d = tempfile.mkdtemp(prefix="copse-bench-")
    sock = os.path.join(d, "copse.sock")
    cmd = [a.copse, "serve", "-m", a.model, "--socket", sock, "--max-batch", str(max(counts)), "-q",
           "-t", str(a.threads), *a.extra]
    srv = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        request(sock, "Warm-up:", 4)
        print(f"`{' '.join(cmd[1:2] + cmd[3:4])}` ... {a.tokens} new tokens per request, greedy, streamed\n")
        print("| clients | wall s | tokens | aggregate tokens/s | mean TTFT s | mean per-client tokens/s |")
        print("|--:|--:|--:|--:|--:|--:|")
        for c in counts:
            res = [None] * c

            def run(i):
                res[i] = request(sock, f"Write a story about {TOPICS[i % len(TOPICS)]} (#{i}):", a.tokens)

            t0 = time.perf_counter()
            ts = [threading.Thread(target=run, args=(i,)) for i in range(c)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            wall = time.perf_counter() - t0
            toks = sum(r["tokens"] for r in res)
            ttft = sum(r["ttft"] for r in res) / c
            per = sum(r["tokens"] / max(r["total"] - r["ttft"], 1e-9) for r in res) / c
            print(f"| {c} | {wall:.2f} | {toks} | {toks / wall:.1f} | {ttft:.3f} | {per:.1f} |", flush=True)
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
