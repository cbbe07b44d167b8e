#!/usr/bin/env python3
"""User-space instructions per proxied request, counted by callgrind: a figure that does not move with
machine noise, unlike requests/s on a shared 2-core machine. Use it to compare a change before and after.

    cargo bench --bench gateway --no-run && cargo build --release
    python3 benches/instructions.py gateway   # APIProxy (target/release/apiproxy)
    python3 benches/instructions.py floor     # the bare Pingora proxy of benches/gateway.rs

Each run starts the proxy under valgrind in front of a small mock (this script), warms it up, then
counts N (default 500) keep-alive 1 KiB chat requests (STREAM=1: streamed, 50 SSE events per answer;
BODY_KIB=64: a larger prompt; TRANSLATED=1: an OpenAI client routed to an Anthropic-style upstream,
gateway only; BENCH_LOG_LEVEL=info: with the request line a deployed gateway logs; BUILD=<profile>:
the binaries of another cargo profile, under target/<profile>/).
Needs valgrind (callgrind_control).
"""

import glob
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(ROOT, "target", os.environ.get("BUILD", "release"))
KEY = "bench-client-key-0123456789"
REPLY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18},
}).encode()
ANTHROPIC_REPLY = json.dumps({
    "id": "msg_bench", "type": "message", "role": "assistant", "model": "m",
    "content": [{"type": "text", "text": "Hello! How can I help you today?"}],
    "stop_reason": "end_turn", "stop_sequence": None, "usage": {"input_tokens": 9, "output_tokens": 9},
}).encode()
STREAM = os.environ.get("STREAM") == "1"
TRANSLATED = os.environ.get("TRANSLATED") == "1"


def stream_reply():
    chunks = []
    for i in range(50):
        data = "data: %s\n\n" % json.dumps({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": "tok%d " % i}, "finish_reason": None}]})
        chunks.append("%x\r\n%s\r\n" % (len(data), data))
    chunks.append("%x\r\n%s\r\n0\r\n\r\n" % (len("data: [DONE]\n\n"), "data: [DONE]\n\n"))
    return ("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            + "".join(chunks)).encode()


STREAM_REPLY = stream_reply()


class Mock(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if b'"stream": true' in body or b'"stream":true' in body:
            self.wfile.write(STREAM_REPLY)
            return
        reply = ANTHROPIC_REPLY if self.path.startswith("/v1/messages") else REPLY
        self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                         % (len(reply), reply))

    def log_message(self, *_):
        pass


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(which, upstream, port, workdir):
    env = dict(os.environ, LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "warn"))
    if which == "gateway":
        config = os.path.join(workdir, "bench.yaml")
        with open(config, "w") as f:
            f.write('server: {threads: 2}\nclients:\n  - {name: bench, key: "%s"}\n'
                    'providers:\n  - {id: mock, base_url: "http://%s", models: [m], api_keys: ["sk-bench"]%s}\n'
                    % (KEY, upstream, ", api_style: anthropic" if TRANSLATED else ""))
        env.update(APIPROXY_LISTEN="127.0.0.1:%d" % port, APIPROXY_ADMIN_LISTEN="127.0.0.1:%d" % free_port(),
                   APIPROXY_DATA_DIR=workdir)
        cmd = [os.path.join(TARGET, "apiproxy"), "--config", config]
    else:
        benches = [p for p in glob.glob(os.path.join(TARGET, "deps/gateway-*"))
                   if not p.endswith(".d")]
        env["APIPROXY_BENCH_PINGORA_FLOOR"] = "127.0.0.1:%d %s" % (port, upstream)
        cmd = [max(benches, key=os.path.getmtime)]
    out = os.path.join(workdir, "callgrind.out")
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out] + cmd,
                            env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, out


class Client:
    def __init__(self, port):
        body = json.dumps({"model": "m", "stream": STREAM, "messages": [{"role": "user", "content": "x" * (int(os.environ.get("BODY_KIB", "1")) * 1024 - 124)}]})
        self.raw = ("POST /v1/chat/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
                    "authorization: Bearer %s\r\ncontent-length: %d\r\n\r\n%s" % (KEY, len(body), body)).encode()
        deadline = time.time() + 120
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port))
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.buf = b""
                self.run(1)
                return
            except (OSError, AssertionError):
                if time.time() > deadline:
                    raise
                time.sleep(0.5)

    def run(self, n):
        for _ in range(n):
            self.sock.sendall(self.raw)
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end >= 0:
                    head = self.buf[:end].decode().lower()
                    assert head.startswith("http/1.1 200"), head
                    length = re.search(r"content-length: (\d+)", head)
                    if length and len(self.buf) >= end + 4 + int(length.group(1)):
                        self.buf = self.buf[end + 4 + int(length.group(1)):]
                        break
                    last = self.buf.find(b"\r\n0\r\n\r\n", end)
                    if not length and last >= 0:
                        self.buf = self.buf[last + 7:]
                        break
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise OSError("connection closed")
                self.buf += chunk


def main():
    which = sys.argv[1] if len(sys.argv) > 1 else "gateway"
    n = int(os.environ.get("N", "500"))
    mock = ThreadingHTTPServer(("127.0.0.1", 0), Mock)
    threading.Thread(target=mock.serve_forever, daemon=True).start()
    workdir = tempfile.mkdtemp()
    port = free_port()
    proc, out = start(which, "127.0.0.1:%d" % mock.server_address[1], port, workdir)
    try:
        client = Client(port)
        client.run(100)
        subprocess.run(["callgrind_control", "-z", str(proc.pid)], capture_output=True, check=True)
        client.run(n)
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], capture_output=True, check=True)
        time.sleep(1)
    finally:
        proc.kill()
        proc.wait()
    # The dump taken after zeroing is the numbered file.
    dumps = [p for p in glob.glob(out + ".*") if p.rsplit(".", 1)[-1].isdigit()]
    total = 0
    for dump in dumps:
        with open(dump) as f:
            total += sum(int(line.split()[1]) for line in f if line.startswith("summary:"))
    print("%s: %.0f instructions per request (%d requests; profile: %s)" % (which, total / n, n, " ".join(dumps)))


if __name__ == "__main__":
    main()
