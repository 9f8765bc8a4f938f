"""The controller app in process (Starlette's TestClient runs its lifespan): the worker
protocol, authentication and request validation, with no worker process behind it."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from vicuna_ops.serve.controller import ControllerSettings, create_app
from vicuna_ops.serve.proxy import ProxySettings

TOKEN = "worker-secret"
WORKER = {"worker_id": "w1", "url": "http://127.0.0.1:9", "models": ["m"],
          "max_concurrency": 2}


@pytest.fixture()
def make(tmp_path):
    def make(**kw):
        settings = ControllerSettings(
            registry_path=tmp_path / "registry.db", worker_token=TOKEN,
            proxy=ProxySettings(wait_for_worker=0.2, connect_timeout=0.5), **kw)
        return TestClient(create_app(settings))
    return make


def _as_worker(client, path, body):
    return client.post(path, json=body, headers={"authorization": f"Bearer {TOKEN}"})


def test_register_heartbeat_drain(make):
    with make(heartbeat_interval=3.0) as client:
        reply = _as_worker(client, "/vops/workers/register", WORKER)
        assert reply.json() == {"status": "ok", "heartbeat_interval": 3.0}
        assert _as_worker(client, "/vops/workers/heartbeat",
                          {"worker_id": "w1", "in_flight": 2}).json()["status"] == "ok"
        assert _as_worker(client, "/vops/workers/heartbeat",
                          {"worker_id": "nobody"}).json()["status"] == "unknown"
        assert client.get("/v1/models").json()["data"][0]["id"] == "m"
        assert _as_worker(client, "/vops/workers/drain", {"worker_id": "w1"}).status_code == 200
        assert client.get("/healthz").json()["workers"] == {"live": 0, "draining": 1}


def test_the_registry_survives_a_restart(make):
    with make() as client:
        _as_worker(client, "/vops/workers/register", WORKER)
    with make() as client:
        listed = client.get("/vops/workers", headers={"authorization": f"Bearer {TOKEN}"})
        assert [w["worker_id"] for w in listed.json()["workers"]] == ["w1"]


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic " + TOKEN, "Bearer"])
def test_worker_endpoints_refuse_a_wrong_token(make, header):
    with make() as client:
        headers = {"authorization": header} if header else {}
        for path in ("/vops/workers/register", "/vops/workers/heartbeat", "/vops/workers/drain"):
            response = client.post(path, json=WORKER, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "invalid_worker_token"


def test_bad_worker_messages_are_422(make):
    with make() as client:
        response = _as_worker(client, "/vops/workers/register", {**WORKER, "url": "nope"})
        assert response.status_code == 422
        assert response.json()["error"]["param"] == "url"


def test_a_known_model_without_a_live_worker_is_503_not_500(make):
    with make() as client:
        _as_worker(client, "/vops/workers/register", WORKER)  # its port is closed
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for stream in (False, True):
            response = client.post("/v1/chat/completions", json={**body, "stream": stream})
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "no_worker"
        metrics = client.get("/metrics").text
        assert 'vops_retries_total{reason="connect"}' in metrics
        assert 'vops_workers{state="suspect"} 1.0' in metrics


def test_api_keys_guard_the_public_api_only(make):
    with make(api_keys=frozenset({"k1"})) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"authorization": "Bearer k1"}).status_code == 200
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 200


def test_unknown_routes_and_methods_answer_in_openai_shape(make):
    with make() as client:
        assert client.get("/v1/nothing").json()["error"]["message"] == "Not Found"
        assert client.get("/v1/chat/completions").status_code == 405


def test_a_body_over_the_limit_is_413_even_without_content_length(make):
    with make(max_body_bytes=1000) as client:
        def chunks():
            yield b'{"model": "m", "prompt": "'
            yield b"x" * 2000
            yield b'"}'
        response = client.post("/v1/completions", content=chunks())
        assert response.status_code == 413
        response = client.post("/v1/completions", content=b"{}",
                               headers={"content-length": "nonsense"})
        assert response.status_code in (400, 413)
