"""``vops chat`` against an endpoint that cannot answer: exit 2 and one line, whether stdin
is a terminal or a pipe, before reading anything (it used to exit 0 in silence)."""

from __future__ import annotations

import os
import pty
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.timeout(60)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once it is closed


def _chat(endpoint: str, stdin_kind: str) -> tuple[subprocess.CompletedProcess, float]:
    argv = [sys.executable, "-m", "vicuna_ops", "chat", "--endpoint", endpoint]
    started = time.monotonic()
    if stdin_kind == "terminal":
        main, replica = pty.openpty()
        try:
            result = subprocess.run(argv, stdin=replica, capture_output=True, text=True,
                                    timeout=30)
        finally:
            os.close(main)
            os.close(replica)
    else:
        result = subprocess.run(argv, input="hello\n" if stdin_kind == "pipe" else "",
                                capture_output=True, text=True, timeout=30)
    return result, time.monotonic() - started


@pytest.mark.parametrize("stdin_kind", ["terminal", "pipe", "empty pipe"])
def test_a_dead_endpoint_is_exit_2_and_one_line(stdin_kind):
    port = _closed_port()
    result, seconds = _chat(f"http://127.0.0.1:{port}", stdin_kind)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: cannot reach http://127.0.0.1:{port}")
    assert result.stdout == ""
    assert seconds < 15


class _NotAnApi(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        body = b"<html>hello</html>"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_an_endpoint_that_is_not_an_openai_api_is_exit_2_and_one_line():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotAnApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result, _ = _chat(f"http://127.0.0.1:{server.server_address[1]}", "pipe")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not answer like an OpenAI API" in lines[0], result.stderr
