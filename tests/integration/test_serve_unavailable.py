"""A model the deployment serves but no live worker has is a 503 with Retry-After (come back
shortly), in OpenAI's error shape; only a model never served here is a 404. Real uvicorn
processes on loopback: a controller and a stub worker."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import pytest

from vicuna_ops.serve.local import LocalPlan, LocalServing

pytestmark = pytest.mark.timeout(120)
CHAT = "/v1/chat/completions"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serving(tmp_path, workers: int) -> LocalServing:
    plan = LocalPlan(model=None, backend="stub", port=_port(), workers=workers,
                     heartbeat_interval=0.5, state_dir=tmp_path, stub_tokens=4,
                     start_timeout=60, grace=5,
                     controller_args=("--wait-for-worker", "0.5"))
    serving = LocalServing(plan)
    serving.start()
    return serving


def _ask(serving, model: str, stream: bool = False) -> httpx.Response:
    return httpx.post(serving.url + CHAT, timeout=30, json={
        "model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]})


def _assert_unavailable(response: httpx.Response, model: str) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) > 0
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "no_worker" and error["type"] == "server_error"
    assert repr(model) in error["message"]


def _assert_unknown(response: httpx.Response, model: str) -> None:
    assert response.status_code == 404, response.text
    assert "retry-after" not in response.headers
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert repr(model) in error["message"] and "served: stub" in error["message"]


def test_a_known_model_whose_workers_died_is_503_with_retry_after(tmp_path):
    serving = _serving(tmp_path, workers=1)
    try:
        assert _ask(serving, "stub").status_code == 200
        worker = serving.workers[0].process
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        deadline = time.monotonic() + 15  # the controller drops it after missed heartbeats
        while httpx.get(serving.url + "/healthz").json()["workers"]["live"]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        _assert_unavailable(_ask(serving, "stub"), "stub")
        _assert_unavailable(_ask(serving, "stub", stream=True), "stub")
        _assert_unknown(_ask(serving, "never-served"), "never-served")
        models = httpx.get(serving.url + "/v1/models").json()
        assert [m["id"] for m in models["data"]] == ["stub"]
    finally:
        serving.stop()


def test_before_any_worker_registers_the_deployments_model_is_503(tmp_path):
    serving = _serving(tmp_path, workers=0)
    try:
        _assert_unavailable(_ask(serving, "stub"), "stub")
        _assert_unknown(_ask(serving, "other"), "other")
        serving.add_worker()  # once one registers, the same request is answered
        deadline = time.monotonic() + 30
        while (reply := _ask(serving, "stub")).status_code != 200:
            _assert_unavailable(reply, "stub")
            assert time.monotonic() < deadline
        assert reply.json()["choices"][0]["message"]["content"] == " t0 t1 t2 t3"
    finally:
        serving.stop()
