"""Workers find the controller through the address it publishes in the bucket, and follow
it when a relaunched controller comes up at a new address (with an empty registry)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from vicuna_ops.serve import discovery

pytestmark = pytest.mark.timeout(120)
TOKEN = "discovery-token"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(args, log):
    env = {**os.environ, "VOPS_WORKER_TOKEN": TOKEN}
    return subprocess.Popen([sys.executable, "-m", "vicuna_ops", "serve", *args], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _controller(bucket, port, tmp_path, tag):
    return _spawn(["controller", "--port", str(port), "--bucket", bucket, "--name", "demo",
                   "--advertise-url", f"http://127.0.0.1:{port}", "--heartbeat-interval", "0.5",
                   "--registry", str(tmp_path / f"{tag}.db")], tmp_path / f"{tag}.log")


def _live(port) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()["workers"]["live"]
    except (httpx.HTTPError, ValueError, KeyError):
        return -1


def _wait(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_publish_and_lookup(tmp_path):
    bucket = (tmp_path / "bucket").as_uri()
    assert discovery.lookup(bucket, "demo") is None
    discovery.publish(bucket, "demo", "http://10.1.2.3:8000")
    assert discovery.lookup(bucket, "demo") == "http://10.1.2.3:8000"
    record = json.loads((tmp_path / "bucket" / "demo" / "serve" / "controller.json").read_text())
    assert set(record) == {"url", "started_at", "host"}  # an address, never a secret
    (tmp_path / "bucket" / "demo" / "serve" / "controller.json").write_text("{not json")
    assert discovery.lookup(bucket, "demo") is None


def test_a_worker_follows_a_relaunched_controller(tmp_path):
    bucket = (tmp_path / "bucket").as_uri()
    first, second = _port(), _port()
    processes = []
    try:
        # the worker starts first: nothing is published yet
        processes.append(_spawn(["worker", "--backend", "stub", "--port", str(_port()),
                                 "--bucket", bucket, "--name", "demo"], tmp_path / "w.log"))
        time.sleep(0.5)
        processes.append(_controller(bucket, first, tmp_path, "first"))
        _wait(lambda: _live(first) == 1, 30, "the worker to find the first controller")

        processes[1].send_signal(signal.SIGKILL)  # the controller's node is gone
        processes.append(_controller(bucket, second, tmp_path, "second"))
        _wait(lambda: _live(second) >= 0, 30, "the second controller")
        started = time.monotonic()
        _wait(lambda: _live(second) == 1, 30, "the worker to follow the new address")
        assert time.monotonic() - started < 10
        reply = httpx.post(f"http://127.0.0.1:{second}/v1/completions",
                           json={"model": "stub", "prompt": "x", "max_tokens": 3}, timeout=10)
        assert reply.json()["choices"][0]["text"] == " t0 t1 t2"
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    # both kinds of serving process left a segment record for `vops cost`
    from vicuna_ops.segments import read_segments
    from vicuna_ops.storage import open_store

    records, problems = read_segments(open_store(bucket).child("demo"))
    assert problems == []
    kinds = {r.kind for r in records}
    assert kinds == {"serve-worker", "serve-controller"}
    worker = next(r for r in records if r.kind == "serve-worker")
    assert worker.status == "finished" and worker.tokens >= 3 and worker.run_id == "demo"
