#!/usr/bin/env python3
"""test_server_api.py — `copse serve` with real clients.

curl --unix-socket and the official openai package (through an httpx
transport bound to the socket) ask for completions and chat completions,
streamed and not, at temperature 0: the text must equal `copse run`'s for
the same prompt. Also: logprobs, stop strings (trimmed, also across
tokens), seeds, the per-request speculative object (lossless with the
drafters on), /v1/models, /health, /metrics, the socket's mode, stale and
live socket files, a too-long socket path, and SIGTERM with a request in
flight (finished within the grace period, socket removed, exit 0).
Exit 0 pass, 1 fail, 77 skip (no model, no curl, no openai).
"""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serverlib as sl  # noqa: E402
from serverlib import check  # noqa: E402

PROMPTS = ["The three primary colors are", "def fibonacci(n):"]
CHAT = "What is the capital of France?"
N = 12


def curl(sock, path, obj):
    r = subprocess.run(["curl", "-sS", "--unix-socket", sock, "-H", "Content-Type: application/json",
                        "-d", json.dumps(obj), f"http://localhost{path}"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def main():
    sl.need_model()
    if not shutil.which("curl"):
        print("skip: curl not found")
        return 77
    try:
        import httpx
        import openai
    except ImportError:
        print("skip: the openai and httpx packages are not installed (scripts/setup.sh)")
        return 77

    ref = {p: sl.copse_run(p, N) for p in PROMPTS}
    ref_chat = sl.copse_run(CHAT, N, chat=True)
    srv = sl.Server("--draft", "ngram", "--draft", "suffix")
    try:
        mode = stat.S_IMODE(os.stat(srv.sock).st_mode)
        check(mode == 0o600, f"socket mode is 0600 ({oct(mode)})")

        st, _, body = sl.raw_request(srv.sock, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        check(st == 200 and json.loads(body)["status"] == "ok", "GET /health")
        models = json.loads(curl_get(srv.sock, "/v1/models"))
        check(models["object"] == "list" and models["data"][0]["id"].startswith("SmolLM2-135M-Instruct"),
              "GET /v1/models names the model")

        # ---- curl: completions, plain and streamed, equal to copse run
        for p in PROMPTS:
            r = json.loads(curl(srv.sock, "/v1/completions", {"prompt": p, "max_tokens": N, "temperature": 0}))
            text = r["choices"][0]["text"]
            check(text == ref[p], f"curl completion == copse run for {p!r}: {text!r} vs {ref[p]!r}")
            check(r["usage"]["completion_tokens"] == N and r["usage"]["prompt_tokens"] > 0
                  and r["choices"][0]["finish_reason"] == "length", f"usage and finish_reason: {r['usage']}")
        out = curl(srv.sock, "/v1/completions", {"prompt": PROMPTS[0], "max_tokens": N, "temperature": 0,
                                                  "stream": True})
        evs = sl.sse_events(out)
        check(evs[-1] == "[DONE]", "stream ends with data: [DONE]")
        chunks = [json.loads(e) for e in evs[:-1]]
        text = "".join(c["choices"][0]["text"] for c in chunks)
        check(text == ref[PROMPTS[0]], f"curl streamed completion == copse run: {text!r}")
        check(chunks[-1]["choices"][0]["finish_reason"] == "length" and chunks[-1]["usage"]["completion_tokens"] == N,
              "the final chunk has finish_reason and usage")
        check(len(chunks) >= 3, f"tokens are streamed as they come ({len(chunks)} chunks)")

        # ---- openai package over the socket
        client = openai.OpenAI(base_url="http://localhost/v1", api_key="none", max_retries=0,
                               http_client=httpx.Client(transport=httpx.HTTPTransport(uds=srv.sock)))
        c = client.completions.create(model="m", prompt=PROMPTS[1], max_tokens=N, temperature=0)
        check(c.choices[0].text == ref[PROMPTS[1]], f"openai completion == copse run: {c.choices[0].text!r}")
        s = client.completions.create(model="m", prompt=PROMPTS[1], max_tokens=N, temperature=0, stream=True)
        text = "".join(ch.choices[0].text for ch in s if ch.choices)
        check(text == ref[PROMPTS[1]], f"openai streamed completion == copse run: {text!r}")
        msgs = [{"role": "user", "content": CHAT}]
        cc = client.chat.completions.create(model="m", messages=msgs, max_tokens=N, temperature=0)
        check(cc.choices[0].message.content == ref_chat and cc.choices[0].message.role == "assistant",
              f"openai chat == copse run --chat: {cc.choices[0].message.content!r} vs {ref_chat!r}")
        s = client.chat.completions.create(model="m", messages=msgs, max_tokens=N, temperature=0, stream=True)
        parts, finish = [], None
        for ch in s:
            if ch.choices:
                parts.append(ch.choices[0].delta.content or "")
                finish = ch.choices[0].finish_reason or finish
        check("".join(parts) == ref_chat and finish in ("stop", "length"),
              f"openai streamed chat == copse run --chat ({finish})")

        # ---- speculation off gives the same text; drafters were used when on
        r = json.loads(curl(srv.sock, "/v1/completions", {"prompt": PROMPTS[0], "max_tokens": N, "temperature": 0,
                                                           "speculative": {"enabled": False}}))
        check(r["choices"][0]["text"] == ref[PROMPTS[0]], "speculative.enabled=false: same text")
        rep = "red green blue red green blue red green blue red green blue red"
        plain = json.loads(curl(srv.sock, "/v1/completions", {"prompt": rep, "max_tokens": 16, "temperature": 0,
                                                               "speculative": {"enabled": False}}))
        spec = json.loads(curl(srv.sock, "/v1/completions", {"prompt": rep, "max_tokens": 16, "temperature": 0,
                                                              "speculative": {"drafters": ["ngram"], "max_nodes": 8}}))
        check(plain["choices"][0]["text"] == spec["choices"][0]["text"],
              "ngram-drafted greedy output equals plain output")
        m = srv.metrics()
        check(m.get('copse_drafter_proposed_tokens_total{drafter="ngram"}', 0) > 0
              and m.get('copse_drafter_accepted_tokens_total{drafter="ngram"}', 0) > 0,
              "metrics: the ngram drafter proposed and had tokens accepted")

        # ---- stop strings: cut before the stop string, also streamed
        full = ref[PROMPTS[0]]
        stop = full[len(full) // 2: len(full) // 2 + 4]
        want = full[:full.index(stop)]
        for stream in (False, True):
            req = {"prompt": PROMPTS[0], "max_tokens": N, "temperature": 0, "stop": ["zzzz", stop], "stream": stream}
            out = curl(srv.sock, "/v1/completions", req)
            if stream:
                chunks = [json.loads(e) for e in sl.sse_events(out)[:-1]]
                text = "".join(c["choices"][0]["text"] for c in chunks)
                finish = chunks[-1]["choices"][0]["finish_reason"]
            else:
                r = json.loads(out)
                text, finish = r["choices"][0]["text"], r["choices"][0]["finish_reason"]
            check(text == want and finish == "stop", f"stop {stop!r} (stream={stream}): {text!r}, {finish}")

        # ---- logprobs
        r = json.loads(curl(srv.sock, "/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 4, "temperature": 0,
                                                           "logprobs": 2}))
        lp = r["choices"][0]["logprobs"]
        check(len(lp["tokens"]) == 4 and len(lp["token_logprobs"]) == 4 and all(len(t) <= 2 for t in lp["top_logprobs"])
              and all(x <= 0 for x in lp["token_logprobs"]) and "".join(lp["tokens"]) == r["choices"][0]["text"],
              f"completion logprobs: {lp['tokens']}")
        greedy_top = all(max(t.values()) <= lp["token_logprobs"][i] + 1e-5 for i, t in enumerate(lp["top_logprobs"]))
        check(greedy_top, "greedy tokens have the top logprob")
        cc = client.chat.completions.create(model="m", messages=msgs, max_tokens=3, temperature=0, logprobs=True,
                                            top_logprobs=3)
        items = cc.choices[0].logprobs.content
        check(len(items) >= 1 and all(len(i.top_logprobs) == 3 for i in items), "chat logprobs with top_logprobs=3")

        # ---- seeds: same seed, same text (without speculation: the suffix
        # drafter learns across requests, and MSS draws depend on the tree)
        req = {"prompt": PROMPTS[1], "max_tokens": 8, "temperature": 0.9, "seed": 1234,
               "speculative": {"enabled": False}}
        a = json.loads(curl(srv.sock, "/v1/completions", req))
        b = json.loads(curl(srv.sock, "/v1/completions", req))
        check(a["choices"][0]["text"] == b["choices"][0]["text"], "the same seed gives the same sampled text")

        # ---- errors through the openai package
        try:
            client.completions.create(model="m", prompt="x", max_tokens=-3)
            check(False, "max_tokens=-3 is refused")
        except openai.BadRequestError as e:
            check(e.status_code == 400 and "max_tokens" in str(e), f"400 names max_tokens: {e}")

        # ---- metrics
        m = srv.metrics()
        check(m.get('copse_requests_total{route="completions",status="200"}', 0) >= 8, "metrics: completions by status")
        check(m.get("copse_time_to_first_token_seconds_count", 0) >= 8 and
              m.get("copse_inter_token_latency_seconds_count", 0) > 0, "metrics: latency histograms")
        check(m.get("copse_completion_tokens_total", 0) > 0 and m.get("copse_kv_blocks_free", 0) > 0
              and "copse_queue_depth" in m, "metrics: tokens, KV blocks, queue depth")

        # ---- a live socket is not replaced
        r = subprocess.run([sl.COPSE, "serve", "-m", sl.MODEL, "--socket", srv.sock], capture_output=True, timeout=120)
        check(r.returncode != 0 and b"another server is listening" in r.stderr,
              f"a second server on a live socket refuses: {r.stderr.decode().strip().splitlines()[-1:]}")

        # ---- SIGTERM with a request in flight: it finishes, then exit 0
        result = {}

        def long_request():
            try:
                result["r"] = json.loads(curl(srv.sock, "/v1/completions",
                                              {"prompt": PROMPTS[0], "max_tokens": 24, "temperature": 0}))
            except Exception as e:  # noqa: BLE001
                result["e"] = e

        t = threading.Thread(target=long_request)
        t.start()
        time.sleep(0.4)
        rc = srv.stop(signal.SIGTERM)
        t.join(60)
        check(rc == 0, f"SIGTERM: exit status 0 ({rc})")
        check("r" in result and result["r"]["usage"]["completion_tokens"] == 24,
              f"the request in flight finished within the grace period ({result.get('e')})")
        check(not os.path.exists(srv.sock), "the socket file is removed")
        out = srv.output()
        check("copse serve: cmpl-" in out and "tokens/s" in out, "one log line per request")
    finally:
        if srv.alive():
            srv.stop(signal.SIGKILL)

    # ---- a stale socket file is replaced; the mode option is honoured
    d = tempfile.mkdtemp(prefix="copse-srv-")
    path = os.path.join(d, "s.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # the file stays, nobody listens
    p = subprocess.Popen([sl.COPSE, "serve", "-m", sl.MODEL, "--socket", path, "--socket-mode", "0660"],
                         stderr=subprocess.PIPE)
    ok = False
    for _ in range(400):
        try:
            ok = sl.raw_request(path, b"GET /health HTTP/1.1\r\n\r\n", timeout=5)[0] == 200
            break
        except OSError:
            time.sleep(0.05)
    check(ok, "a stale socket file is replaced")
    check(stat.S_IMODE(os.stat(path).st_mode) == 0o660, "--socket-mode 0660")
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    check(p.returncode == 0 and b"replaced the stale socket" in err, "SIGINT: exit 0")
    # ---- a regular file is not replaced; a too-long path is refused clearly
    with open(path, "w") as f:
        f.write("x")
    r = subprocess.run([sl.COPSE, "serve", "-m", sl.MODEL, "--socket", path], capture_output=True, timeout=120)
    check(r.returncode != 0 and b"is not a socket" in r.stderr, "a regular file at the socket path is kept")
    longp = os.path.join(d, "x" * 120 + ".sock")
    r = subprocess.run([sl.COPSE, "serve", "-m", sl.MODEL, "--socket", longp], capture_output=True, timeout=120)
    check(r.returncode != 0 and b"a Unix socket path must have 1 to 107 bytes" in r.stderr,
          "a socket path over 107 bytes is refused with a clear error")
    shutil.rmtree(d, ignore_errors=True)

    print(f"{sl.failures} failures")
    return 1 if sl.failures else 0


def curl_get(sock, path):
    r = subprocess.run(["curl", "-sS", "--unix-socket", sock, f"http://localhost{path}"], capture_output=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


if __name__ == "__main__":
    sys.exit(main())
