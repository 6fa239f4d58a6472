"""serverlib.py — start and stop `copse serve` for the server tests, and talk
to it over its Unix socket with raw HTTP/1.1.

Environment: COPSE_BIN (the copse executable), COPSE_MODEL_DIR (default
~/.cache/copse). Tests exit 77 (skip) when the model is missing.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

COPSE = os.environ.get("COPSE_BIN", "copse")
MODEL_DIR = os.environ.get("COPSE_MODEL_DIR") or os.path.expanduser("~/.cache/copse")
MODEL = os.path.join(MODEL_DIR, "SmolLM2-135M-Instruct.Q4_1.gguf")

failures = 0


def check(cond, what):
    global failures
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures += 1
    return cond


def need_model():
    if not os.path.exists(MODEL):
        print(f"skip: {MODEL} not found (set COPSE_MODEL_DIR)")
        sys.exit(77)


class Server:
    """A `copse serve` process on a socket in a fresh temporary folder."""

    def __init__(self, *args, model=MODEL, env=None):
        self.dir = tempfile.mkdtemp(prefix="copse-srv-")
        self.sock = os.path.join(self.dir, "copse.sock")
        self.log_path = os.path.join(self.dir, "serve.log")
        self.log = open(self.log_path, "wb")
        cmd = [COPSE, "serve", "-m", model, "--socket", self.sock, "-t", "2", *map(str, args)]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, **(env or {})))
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"copse serve exited with {self.proc.returncode}:\n{self.output()}")
            if os.path.exists(self.sock):
                try:
                    if raw_request(self.sock, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError("copse serve did not start:\n" + self.output())

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Signal the server; return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return "timeout"
        self.log.close()
        return self.proc.returncode

    def metrics(self):
        st, _, body = raw_request(self.sock, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert st == 200, st
        out = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                k, v = line.rsplit(" ", 1)
                out[k] = float(v)
        return out


def connect(sock_path, timeout=60):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    return s


def read_response(s, buf=b""):
    """Read one HTTP/1.1 response from s. Returns (status, headers, body, rest)."""
    while b"\r\n\r\n" not in buf:
        d = s.recv(65536)
        if not d:
            raise ConnectionError("closed before the response headers")
        buf += d
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for ln in lines[1:]:
        k, v = ln.split(":", 1)
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                d = s.recv(65536)
                if not d:
                    raise ConnectionError("closed inside a chunked body")
                buf += d
            size_line, buf = buf.split(b"\r\n", 1)
            n = int(size_line, 16)
            while len(buf) < n + 2:
                d = s.recv(65536)
                if not d:
                    raise ConnectionError("closed inside a chunk")
                buf += d
            body += buf[:n]
            buf = buf[n + 2:]
            if n == 0:
                break
    else:
        n = int(headers.get("content-length", "0"))
        while len(buf) < n:
            d = s.recv(65536)
            if not d:
                raise ConnectionError("closed inside the body")
            buf += d
        body, buf = buf[:n], buf[n:]
    return status, headers, body, buf


def raw_request(sock_path, data, timeout=60):
    """Send raw bytes, read one response. Returns (status, headers, body)."""
    with connect(sock_path, timeout) as s:
        s.sendall(data)
        st, h, b, _ = read_response(s)
        return st, h, b


def post(path, obj):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def sse_events(body):
    """The data payloads of an SSE body, in order."""
    out = []
    for block in body.decode().split("\n\n"):
        if block.startswith("data: "):
            out.append(block[6:])
    return out


def copse_run(prompt, n, chat=False):
    """`copse run` greedy output for a prompt (the reference)."""
    args = [COPSE, "run", "-m", MODEL, "-t", "2", "--temp", "0", "-n", str(n), "-p", prompt]
    if chat:
        args.append("--chat")
    r = subprocess.run(args, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    return out[:-1] if chat and out.endswith("\n") else out
