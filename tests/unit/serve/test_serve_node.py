"""The node processes' entry (``python -m vicuna_ops.serve.node``, ``vops serve worker``):
one-line errors, and a worker start that imports only what a worker needs."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from vicuna_ops.serve.membership import JsonClient

NODE = [sys.executable, "-m", "vicuna_ops.serve.node"]
VOPS = [sys.executable, "-m", "vicuna_ops", "serve"]


@pytest.mark.parametrize("argv, needle", [
    ([*NODE, "worker", "--port", "0", "--controller-url", "http://x"], "--port must be between"),
    ([*VOPS, "worker", "--port", "0", "--controller-url", "http://x"], "--port must be between"),
    ([*NODE, "worker", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ([*VOPS, "controller", "--port", "many"], "argument --port: invalid int value: 'many'"),
    ([*NODE, "worker", "--backend", "stub"], "a worker needs to find its controller"),
    ([*NODE, "controller"], "the worker token is not set"),
    ([*NODE, "gardener"], "usage: python -m vicuna_ops.serve.node controller|worker"),
])
def test_mistakes_are_one_line_and_exit_2(argv, needle):
    env = {k: v for k, v in __import__("os").environ.items() if k != "VOPS_WORKER_TOKEN"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], lines


def test_a_worker_start_imports_nothing_a_worker_does_not_need():
    code = textwrap.dedent("""
        import sys
        from vicuna_ops.serve import node, server, membership  # noqa: F401
        from vicuna_ops.serve.worker import WorkerSettings, create_app
        import uvicorn  # noqa: F401
        node._worker_parser().parse_args(["--backend", "stub", "--controller-url", "http://x"])
        create_app(WorkerSettings(worker_token="t", backend="stub", controller_url="http://x"))
        heavy = ("typer", "rich", "fastapi", "httpx", "aiohttp", "yaml", "torch", "sky")
        print([m for m in heavy if m in sys.modules])
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"


async def _serve_once(response: bytes) -> tuple[asyncio.Server, list[bytes]]:
    seen: list[bytes] = []

    async def handle(reader, writer):
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(response)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, seen


@pytest.mark.parametrize("response, body", [
    (b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"ok\": 1}\r\n", b'{"ok": 1}\r\n'),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
     b'{"a":1}'),
    (b"HTTP/1.1 401 Unauthorized\r\n\r\nno", b"no"),
])
def test_json_client_reads_each_kind_of_answer(response, body):
    async def scenario():
        server, seen = await _serve_once(response)
        port = server.sockets[0].getsockname()[1]
        async with server:
            status, got = await JsonClient().post(f"http://127.0.0.1:{port}/vops/x?y=1",
                                                  b'{"m": 1}', {"authorization": "Bearer t"})
        return status, got, seen[0].decode()

    status, got, request = asyncio.run(scenario())
    assert got == body and status == int(response.split()[1])
    assert request.startswith("POST /vops/x?y=1 HTTP/1.1\r\n")
    assert "authorization: Bearer t" in request and "content-length: 8" in request


def test_json_client_fails_fast_on_a_closed_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(OSError):
        asyncio.run(JsonClient().post(f"http://127.0.0.1:{port}/", b"{}", {}))
