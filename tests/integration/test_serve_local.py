"""``vops serve --local`` and ``vops chat`` as a user runs them: real processes, Ctrl-C and
SIGTERM stop everything, and no child outlives the supervisor even when it is killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from vicuna_ops.lifeline import die_with_parent

pytestmark = pytest.mark.timeout(120)
VOPS = [sys.executable, "-m", "vicuna_ops"]
EXPECTED = "".join(f" t{i}" for i in range(32))


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_leftovers():
    """Whatever a test does, no supervisor it started outlives it (they stop their
    children)."""
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _start_local(port: int, workers: int = 2) -> tuple[subprocess.Popen, dict]:
    process = subprocess.Popen(
        [*VOPS, "serve", "--local", "--backend", "stub", "--workers", str(workers),
         "--port", str(port), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=die_with_parent())  # even if pytest itself is killed
    _started.append(process)
    line = process.stdout.readline()  # the --json summary, once every worker registered
    if not line:
        process.wait(timeout=10)
        pytest.fail(f"vops serve --local exited: {process.stderr.read()}")
    return process, json.loads(line)


def _gone(pids, timeout=15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if psutil.pid_exists(pid)
                 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_local_chat_and_a_clean_stop(stop_signal):
    port = _port()
    process, summary = _start_local(port)
    try:
        assert summary["endpoint"] == f"http://127.0.0.1:{port}"
        assert set(summary["pids"]) == {"controller", "worker-0", "worker-1"}
        chat = subprocess.run([*VOPS, "chat", "--endpoint", summary["endpoint"]],
                              input="hello\nhow are you?\n", capture_output=True, text=True,
                              timeout=30)
        assert chat.returncode == 0, chat.stderr
        assert chat.stdout.count(EXPECTED) == 2
        started = time.monotonic()
        process.send_signal(stop_signal)
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - started < 15
        assert _gone(summary["pids"].values())
        assert "stopping" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()


def test_children_die_with_a_killed_supervisor():
    process, summary = _start_local(_port(), workers=2)
    descendants = psutil.Process(process.pid).children(recursive=True)
    assert set(summary["pids"].values()) <= {p.pid for p in descendants}
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=5)
    killed = time.monotonic()
    assert _gone([p.pid for p in descendants], timeout=5.0), "orphans outlived the supervisor"
    assert time.monotonic() - killed < 5


def test_a_taken_api_port_is_one_line_and_exit_2_before_serving():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run([*VOPS, "serve", "--local", "--backend", "stub", "--port",
                                 str(port)], capture_output=True, text=True, timeout=30)
        assert time.monotonic() - started < 10
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in lines[0] and "in use" in lines[0]
    assert "serving" not in result.stdout + result.stderr


def test_a_taken_worker_port_is_a_user_error_before_serving(tmp_path):
    from vicuna_ops.errors import UserError
    from vicuna_ops.serve.local import LocalPlan, LocalServing

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        plan = LocalPlan(model=None, backend="stub", port=_port(), workers=1,
                         state_dir=tmp_path, start_timeout=60, grace=5,
                         worker_args=("--port", str(port)))  # the last --port wins
        serving = LocalServing(plan)
        started = time.monotonic()
        try:
            with pytest.raises(UserError, match=f"^the worker-0: cannot listen on "
                                                f"127.0.0.1:{port}"):
                serving.start()
        finally:
            serving.stop()
        assert time.monotonic() - started < 10


def test_a_worker_failing_the_same_way_at_start_up_is_given_up():
    """The worker's port is taken while it is down: every restart fails at once with the
    same line, and the supervisor stops after a few tries instead of looping forever."""
    process, summary = _start_local(_port(), workers=1)
    worker = psutil.Process(summary["pids"]["worker-0"])
    port = next(c.laddr.port for c in worker.net_connections() if c.status == "LISTEN")
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        worker.kill()
        worker.wait(5)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        code = process.wait(timeout=30)
    stderr = process.stderr.read()
    assert code == 2, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: the worker-0 failed 3 times in a row"), stderr
    assert f"cannot listen on 127.0.0.1:{port}" in last and "giving up" in last
    assert _gone(summary["pids"].values(), timeout=5.0)


def test_a_crashed_worker_is_restarted():
    process, summary = _start_local(_port(), workers=1)
    try:
        os.kill(summary["pids"]["worker-0"], signal.SIGKILL)
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                reply = httpx.post(summary["endpoint"] + "/v1/completions", timeout=5,
                                   json={"model": "stub", "prompt": "x", "max_tokens": 2})
                if reply.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the worker never came back"
            time.sleep(0.2)
        log = Path(summary["logs"]) / "worker-0.log"
        assert log.exists()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_bad_flags_are_one_line_errors(tmp_path):
    for args, needle in ((["serve", "--local"], "--model is required"),
                         (["serve", "--local", "--model", str(tmp_path)], "no config.json"),
                         (["serve", "--local", "--backend", "stub", "--workers", "0"],
                          "--workers must be between"),
                         (["serve", "--local", "--backend", "onnx", "--model", "x"],
                          "unknown --backend"),
                         (["serve", "--model", "x"], "say where to serve")):
        result = subprocess.run([*VOPS, *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, result.stderr)


def test_status_of_a_local_deployment_lists_its_workers():
    process, summary = _start_local(_port(), workers=2)
    try:
        result = subprocess.run([*VOPS, "serve", "status", "--endpoint", summary["endpoint"],
                                 "--json"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        view = json.loads(result.stdout)
        assert {w["state"] for w in view["workers"]} == {"live"}
        assert len(view["workers"]) == 2
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
