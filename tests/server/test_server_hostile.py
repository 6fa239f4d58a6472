#!/usr/bin/env python3
"""test_server_hostile.py — nothing a client sends crashes `copse serve` or
stops it serving others.

A corpus of bad requests (invalid JSON, wrong types, huge numbers, negative
max_tokens, invalid UTF-8, missing/oversized/conflicting Content-Length,
chunked bodies, pipelined requests, headers over the limits, ...), each
on its own connection, must get its expected status (an OpenAI-shaped JSON
error naming the field where there is one) or a closed connection, and a
well-behaved request must succeed after each. Then: slowloris headers and
bodies get 408 and a close, a client that never reads its responses is cut
off, a full queue answers 429, idle connections are closed, and the server
still exits 0 on SIGTERM with nothing reported by a sanitizer (run it with
COPSE_BIN pointing at an ASan build to check for leaks).
Exit 0 pass, 1 fail, 77 skip (no model).
"""

import json
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import serverlib as sl  # noqa: E402
from serverlib import check, post  # noqa: E402

C = "/v1/completions"
CH = "/v1/chat/completions"
OK_BODY = {"prompt": "Hi", "max_tokens": 1, "temperature": 0}


def raw(body_bytes, path=C, extra=b""):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body_bytes)}\r\n").encode() + extra + \
        b"\r\n" + body_bytes


def j(obj):
    return json.dumps(obj).encode()


def chunked(body, size=5):
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    return out + b"0\r\n\r\n"


def corpus():
    """(name, bytes, expected status or "close", param the error must name or None)."""
    P = dict(OK_BODY)
    items = [
        ("invalid JSON", raw(b"{"), 400, None),
        ("trailing comma", raw(b'{"prompt": "a",}'), 400, None),
        ("JSON null", raw(b"null"), 400, None),
        ("JSON array", raw(b"[]"), 400, None),
        ("JSON string", raw(b'"prompt"'), 400, None),
        ("empty body", raw(b""), 400, None),
        ("data after the JSON", raw(b'{"prompt": "a"} {"x": 1}'), 400, None),
        ("prompt is a number", raw(j({"prompt": 7})), 400, "prompt"),
        ("prompt missing", raw(j({"max_tokens": 3})), 400, "prompt"),
        ("negative max_tokens", raw(j({**P, "max_tokens": -5})), 400, "max_tokens"),
        ("zero max_tokens", raw(j({**P, "max_tokens": 0})), 400, "max_tokens"),
        ("huge max_tokens", raw(b'{"prompt": "a", "max_tokens": 1e308}'), 400, "max_tokens"),
        ("overflowing max_tokens", raw(b'{"prompt": "a", "max_tokens": 1e999}'), 400, "max_tokens"),
        ("20-digit max_tokens", raw(b'{"prompt": "a", "max_tokens": 99999999999999999999}'), 400, "max_tokens"),
        ("string max_tokens", raw(j({**P, "max_tokens": "10"})), 400, "max_tokens"),
        ("fractional max_tokens", raw(j({**P, "max_tokens": 1.5})), 400, "max_tokens"),
        ("NaN temperature", raw(b'{"prompt": "a", "temperature": NaN}'), 400, None),
        ("negative temperature", raw(j({**P, "temperature": -1})), 400, "temperature"),
        ("top_p over 1", raw(j({**P, "top_p": 5})), 400, "top_p"),
        ("top_k fractional", raw(j({**P, "top_k": 2.5})), 400, "top_k"),
        ("huge seed", raw(b'{"prompt": "a", "seed": 1e40}'), 400, "seed"),
        ("five stop strings", raw(j({**P, "stop": ["a", "b", "c", "d", "e"]})), 400, "stop"),
        ("n = 3", raw(j({**P, "n": 3})), 400, "n"),
        ("stream not a bool", raw(j({**P, "stream": "yes"})), 400, "stream"),
        ("logprobs 99", raw(j({**P, "logprobs": 99})), 400, "logprobs"),
        ("invalid UTF-8", raw(b'{"prompt": "caf\xe9"}'), 400, None),
        ("overlong UTF-8", raw(b'{"prompt": "\xc0\xaf"}'), 400, None),
        ("UTF-8 surrogate", raw(b'{"prompt": "\xed\xa0\x80"}'), 400, None),
        ("lone surrogate escape", raw(b'{"prompt": "\\udc00"}'), 400, None),
        ("NUL byte", raw(b'{"prompt": "a\x00b"}'), 400, None),
        ("deep nesting", raw(b"[" * 50000), 400, None),
        ("token id out of range", raw(j({**P, "prompt": [1, 2, 10 ** 9]})), 400, "prompt"),
        ("negative token id", raw(j({**P, "prompt": [-1]})), 400, "prompt"),
        ("unknown drafter", raw(j({**P, "speculative": {"drafters": ["eagle3"]}})), 400, "speculative.drafters"),
        ("speculative not an object", raw(j({**P, "speculative": [1]})), 400, "speculative"),
        ("max_nodes negative", raw(j({**P, "speculative": {"max_nodes": -1}})), 400, "speculative.max_nodes"),
        ("chat without messages", raw(j({"prompt": "x"}), CH), 400, "messages"),
        ("chat role tool", raw(j({"messages": [{"role": "tool", "content": "x"}]}), CH), 400, "messages[0].role"),
        ("chat content object", raw(j({"messages": [{"role": "user", "content": {"a": 1}}]}), CH), 400,
         "messages[0].content"),
        ("chat image part", raw(j({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}), CH), 400,
         "messages[0].content"),
        ("prompt over the context", raw(j({**P, "prompt": "hello " * 3000})), 400, "prompt"),
        ("token prompt over the context", raw(j({**P, "prompt": [1] * 3000})), 400, "prompt"),
        ("GET on completions", b"GET /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n", 405, None),
        ("DELETE on health", b"DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n", 405, None),
        ("unknown path", b"GET /v2/nothing HTTP/1.1\r\nHost: x\r\n\r\n", 404, None),
        ("POST without Content-Length", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n\r\n{}", 411, None),
        ("Content-Length over the limit", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413,
         None),
        ("Content-Length 2^64", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 18446744073709551617\r\n\r\n", 400,
         None),
        ("negative Content-Length", b"POST /v1/completions HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, None),
        ("two Content-Lengths", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 4\r\n\r\n{}",
         400, None),
        ("Content-Length with chunked", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 5\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, None),
        ("chunked body", b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(j(P)), 200,
         None),
        ("chunked body over the limit", b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" +
         chunked(b"x" * 70000, 4096), 413, None),
        ("bad chunk size", b"POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n", 400,
         None),
        ("header over the limit", b"GET /health HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431, None),
        ("too many headers", b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(100)) + b"\r\n",
         431, None),
        ("URL over the limit", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", 431, None),
        ("TLS hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64), 400, None),
        ("unknown method", b"FROB /health HTTP/1.1\r\n\r\n", 400, None),
        ("control byte in a header name", b"GET /health HTTP/1.1\r\nBad\x01Header: x\r\n\r\n", 400, None),
        ("WebSocket upgrade", b"GET /health HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 400, None),
        ("Expect: 100-continue", raw(j(P), extra=b"Expect: 100-continue\r\n"), 200, None),
        ("unsupported Expect", raw(j(P), extra=b"Expect: 102-processing\r\n"), 417, None),
        ("query string", b"GET /health?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n", 200, None),
        ("HTTP/1.0", b"GET /health HTTP/1.0\r\n\r\n", 200, None),
        ("unknown fields ignored", raw(j({**P, "frobnicate": {"x": [1, 2]}, "user": "u"})), 200, None),
        ("body cut short, then close", b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"prompt\"",
         "close", None),
        ("headers cut short, then close", b"GET /health HTTP/1.1\r\nHost:", "close", None),
    ]
    return items


def send_one(sock_path, data, expect):
    s = sl.connect(sock_path, timeout=30)
    try:
        if expect == "close":
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            try:
                got = s.recv(100)
            except ConnectionResetError:
                got = b""
            return ("close" if got == b"" else f"data {got[:40]!r}"), None, None
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking everything
        st, h, body, _ = sl.read_response(s)
        return st, h, body
    finally:
        s.close()


def good(sock_path):
    st, _, body = sl.raw_request(sock_path, post(C, OK_BODY))
    return st == 200 and json.loads(body)["usage"]["completion_tokens"] == 1


def main():
    sl.need_model()
    srv = sl.Server("--max-body", "64K", "--header-timeout", "1", "--request-timeout", "2", "--idle-timeout", "3",
                    "--write-timeout", "2", "--max-batch", "2", "--max-queue", "2", "-q")
    try:
        # ---- the corpus
        items = corpus()
        check(len(items) >= 40, f"{len(items)} hostile requests in the corpus")
        for name, data, want, param in items:
            st, h, body = send_one(srv.sock, data, want)
            ok = st == want
            detail = f"{st}"
            if ok and isinstance(want, int) and want >= 400:
                try:
                    err = json.loads(body)["error"]
                    ok = isinstance(err["message"], str) and err["message"] and "type" in err
                    if param:
                        ok = ok and err.get("param") == param
                    detail += f" {err.get('param')}: {err['message'][:70]}"
                except (ValueError, KeyError, TypeError) as e:
                    ok, detail = False, f"{st} not an OpenAI error: {body[:80]!r} ({e})"
            check(ok, f"{name}: want {want}, got {detail}")
            check(good(srv.sock) and srv.alive(), f"  a good request is served after '{name}'")

        # ---- pipelined requests are answered in order on one connection
        s = sl.connect(srv.sock)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" + raw(b"{bad") + post(C, {**OK_BODY, "max_tokens": 2}) +
                  b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        got, rest = [], b""
        for _ in range(4):
            st, _, body, rest = sl.read_response(s, rest)
            got.append(st)
        s.close()
        check(got == [200, 400, 200, 200], f"4 pipelined requests answered in order: {got}")

        # ---- slowloris: headers one byte at a time never finish in time
        t0 = time.time()
        s = sl.connect(srv.sock, timeout=10)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\n")
        closed_at, status = None, None
        try:
            for ch in b"X-Slow: " + b"a" * 100:
                s.sendall(bytes([ch]))
                check_alive = good(srv.sock) if ch == ord("a") and status is None and time.time() - t0 < 0.5 else True
                if not check_alive:
                    check(False, "a good request is served during a slowloris")
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            st, _, _, _ = sl.read_response(s)
            status = st
        except (ConnectionError, OSError):
            pass
        closed_at = time.time() - t0
        s.close()
        check(status == 408 and closed_at < 4, f"slowloris headers: 408 and closed after {closed_at:.1f}s")
        # slow body
        t0 = time.time()
        s = sl.connect(srv.sock, timeout=10)
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 500\r\n\r\n{")
        status = None
        try:
            for _ in range(60):
                s.sendall(b" ")
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            status = sl.read_response(s)[0]
        except (ConnectionError, OSError):
            pass
        s.close()
        check(status == 408 and time.time() - t0 < 5, f"slow body: 408 after {time.time() - t0:.1f}s")

        # ---- a client that never reads: pipelined requests pile up, it is cut off
        hog = sl.connect(srv.sock, timeout=10)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        burst = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
        sent = 0
        hog.settimeout(0.5)
        try:
            while sent < len(burst):
                sent += hog.send(burst[sent:sent + 65536])
        except (socket.timeout, BrokenPipeError, ConnectionResetError):
            pass
        check(good(srv.sock), "a good request is served while a client does not read")
        deadline = time.time() + 10
        conns = None
        while time.time() < deadline:
            conns = srv.metrics().get("copse_connections")
            if conns == 1:  # only the metrics request itself
                break
            time.sleep(0.25)
        check(conns == 1, f"the non-reading client was disconnected (open connections {conns})")
        hog.close()

        # ---- a full queue: 429 in OpenAI's shape, with Retry-After
        results = []

        def fire():
            try:
                st, h, body = sl.raw_request(srv.sock, post(C, {"prompt": "Count: 1, 2, 3,", "max_tokens": 24,
                                                                "temperature": 0}))
                results.append((st, h, body))
            except Exception as e:  # noqa: BLE001
                results.append((str(e), {}, b""))

        ts = [threading.Thread(target=fire) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        codes = sorted(r[0] for r in results if isinstance(r[0], int))
        busy = [r for r in results if r[0] == 429]
        check(len(codes) == 8 and set(codes) <= {200, 429} and busy and codes.count(200) >= 4,
              f"8 requests on a batch of 2 + queue of 2: {codes}")
        if busy:
            err = json.loads(busy[0][2])["error"]
            check(err["type"] == "rate_limit_error" and busy[0][1].get("retry-after") == "1",
                  "429 is a rate_limit_error with Retry-After")

        # ---- idle connections are closed after the idle timeout
        idle = [sl.connect(srv.sock) for _ in range(20)]
        time.sleep(0.2)
        n_open = srv.metrics().get("copse_connections")
        check(n_open >= 21, f"20 idle connections held ({n_open})")
        time.sleep(3.5)
        n_open = srv.metrics().get("copse_connections")
        closed = sum(1 for s in idle if s.recv(1) == b"")
        check(closed == 20 and n_open == 1, f"idle connections closed after the idle timeout ({closed}, {n_open})")
        for s in idle:
            s.close()

        check(good(srv.sock) and srv.alive(), "the server still serves")
        m = srv.metrics()
        check(m.get('copse_requests_total{route="other",status="431"}', 0) >= 3, "metrics count the 431s")
    finally:
        rc = srv.stop(signal.SIGTERM)
    out = srv.output()
    check(rc == 0, f"SIGTERM: exit status 0 ({rc})")
    bad_words = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "Segmentation", "Assertion")
    check(not any(w in out for w in bad_words), "no sanitizer report or crash in the server's output")
    if failures_present():
        print(out[-3000:])
    print(f"{sl.failures} failures")
    return 1 if sl.failures else 0


def failures_present():
    return sl.failures > 0


if __name__ == "__main__":
    sys.exit(main())
