"""The controller's OpenAI-compatible API, end to end: real uvicorn processes on loopback (a
controller and two stub workers), the official ``openai`` client, and malformed requests."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from vicuna_ops.serve.local import LocalPlan, LocalServing

pytestmark = pytest.mark.timeout(120)

STUB_TOKENS = 12
EXPECTED = "".join(f" t{i}" for i in range(STUB_TOKENS))
API_KEY = "sk-test-key"


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    import os

    os.environ["VOPS_TEST_API_KEYS"] = f"{API_KEY},second-key"
    plan = LocalPlan(model=None, backend="stub", port=_port(), workers=2,
                     heartbeat_interval=0.5, api_key_env="VOPS_TEST_API_KEYS",
                     state_dir=tmp_path_factory.mktemp("serve"), stub_tokens=STUB_TOKENS,
                     stub_rate=400.0, start_timeout=60, grace=5,
                     controller_args=("--max-body-bytes", "65536"))
    local = LocalServing(plan)
    try:
        local.start()
        yield local
    finally:
        local.stop()
        os.environ.pop("VOPS_TEST_API_KEYS", None)


def _port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def client(serving):
    return openai.OpenAI(base_url=serving.url + "/v1", api_key=API_KEY, max_retries=0)


def _post(serving, path, body, *, key=API_KEY, **kwargs):
    headers = {"authorization": f"Bearer {key}"} if key else {}
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    return httpx.post(serving.url + path, content=body, headers=headers, timeout=30, **kwargs)


def test_openai_client_lists_the_model(client):
    assert [m.id for m in client.models.list()] == ["stub"]


def test_openai_client_chat_plain(client):
    reply = client.chat.completions.create(
        model="stub", messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content == EXPECTED
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == STUB_TOKENS


def test_openai_client_chat_streaming(client):
    stream = client.chat.completions.create(
        model="stub", messages=[{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "hello"}],
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    ids = {chunk.id for chunk in chunks}
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == EXPECTED
    assert len(ids) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == STUB_TOKENS


def test_openai_client_completions_plain_and_streaming(client):
    reply = client.completions.create(model="stub", prompt="once upon", max_tokens=5)
    assert reply.choices[0].text == EXPECTED[:len(" t0 t1 t2 t3 t4")]
    assert reply.choices[0].finish_reason == "length"
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="stub", prompt="once upon", max_tokens=100, stream=True))
    assert streamed == EXPECTED


def test_api_key_is_required(serving):
    body = {"model": "stub", "messages": [{"role": "user", "content": "hi"}]}
    assert _post(serving, "/v1/chat/completions", body, key=None).status_code == 401
    wrong = _post(serving, "/v1/chat/completions", body, key="sk-wrong")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert _post(serving, "/v1/chat/completions", body, key="second-key").status_code == 200
    bad_client = openai.OpenAI(base_url=serving.url + "/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_client.models.list()


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4",
                                       messages=[{"role": "user", "content": "hi"}])
    assert "gpt-4" in str(caught.value)


@pytest.mark.parametrize("body, field", [
    ({"model": "stub", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
     "temperature"),
    ({"model": "stub", "messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"model": "stub", "messages": [{"role": "user", "content": "hi"}], "n": 3}, "n"),
    ({"model": "stub", "messages": [{"role": "user", "content": "hi"}], "frobnicate": 1},
     "frobnicate"),
    ({"model": "stub", "messages": [{"role": "user", "content": "hi"}], "max_tokens": -1},
     "max_tokens"),
    ({"model": "stub", "messages": [{"role": "user", "content": "hi"}],
      "vops_resume": {"text": "x"}}, "vops_resume"),  # the worker-only extension
    ({"model": "stub", "messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ([1, 2, 3], "body"),
])
def test_bad_fields_are_422_naming_the_field(serving, body, field):
    response = _post(serving, "/v1/chat/completions", body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == field
    assert field in error["message"]


def test_conversation_shape_errors_are_422(serving):
    # two user turns in a row: valid JSON and fields, invalid conversation (worker says so)
    body = {"model": "stub", "messages": [{"role": "assistant", "content": "hi"}]}
    response = _post(serving, "/v1/chat/completions", body)
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "messages"


@pytest.mark.parametrize("raw", [
    b"garbage", b"", b"{", b"\xff\xfe\x00", b"[" * 30_000 + b"]" * 30_000,
    b'{"model": "stub", "max_tokens": ' + b"9" * 5000 + b"}", b"null", b'"text"',
])
def test_malformed_bodies_never_make_a_500(serving, raw):
    response = _post(serving, "/v1/chat/completions", raw)
    assert 400 <= response.status_code < 500, response.text
    assert "error" in response.json()


def test_oversized_body_is_413(serving):
    huge = {"model": "stub", "messages": [{"role": "user", "content": "x" * 100_000}]}
    response = _post(serving, "/v1/chat/completions", huge)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_prompt_longer_than_the_context_is_413(serving):
    # the stub's context is 4096 words; the body is under the 64 KiB limit
    body = {"model": "stub", "prompt": "w " * 5000}
    response = _post(serving, "/v1/completions", body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "context_length_exceeded"


def test_health_and_metrics(serving, client):
    client.chat.completions.create(model="stub", messages=[{"role": "user", "content": "x"}])
    health = httpx.get(serving.url + "/healthz").json()
    assert health["workers"] == {"live": 2, "draining": 0}
    metrics = httpx.get(serving.url + "/metrics").text
    assert 'vops_requests_total{endpoint="/v1/chat/completions",status="200"}' in metrics
    assert 'vops_workers{state="live"} 2.0' in metrics
    for name in ("vops_request_seconds_bucket", "vops_in_flight", "vops_retries_total",
                 "vops_errors_total"):
        assert name in metrics


def test_worker_endpoints_need_the_worker_token(serving):
    info = {"worker_id": "intruder", "url": "http://127.0.0.1:9", "models": ["stub"]}
    for key in (None, API_KEY, "guess"):
        response = _post(serving, "/vops/workers/register", info, key=key)
        assert response.status_code == 401
    assert httpx.get(serving.url + "/vops/workers").status_code == 401
    listed = httpx.get(serving.url + "/vops/workers",
                       headers={"authorization": f"Bearer {serving.token}"}).json()
    assert len(listed["workers"]) == 2
    assert all(w["worker_id"] != "intruder" for w in listed["workers"])


def test_workers_refuse_callers_without_the_token(serving):
    worker_url = serving.worker_url(serving.workers[0])
    body = {"model": "stub", "messages": [{"role": "user", "content": "hi"}]}
    assert _post(serving, "/v1/chat/completions", body).status_code == 200
    direct = httpx.post(worker_url + "/v1/chat/completions", json=body)
    assert direct.status_code == 401
    authorized = httpx.post(worker_url + "/v1/chat/completions", json=body,
                            headers={"authorization": f"Bearer {serving.token}"})
    assert authorized.json()["choices"][0]["message"]["content"] == EXPECTED


def test_concurrent_requests_all_complete_and_leave_no_lease(serving, client):
    import concurrent.futures

    def one(_):
        return client.chat.completions.create(
            model="stub", messages=[{"role": "user", "content": "x"}]).choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert set(pool.map(one, range(16))) == {EXPECTED}
    listed = httpx.get(serving.url + "/vops/workers",
                       headers={"authorization": f"Bearer {serving.token}"}).json()
    assert all(w["in_flight"] == 0 for w in listed["workers"])


def test_no_secret_in_logs(serving):
    text = "".join(p.read_text(errors="replace")
                   for p in (serving.plan.state_dir / "logs").glob("*.log"))
    assert serving.token not in text
    assert API_KEY not in text


@pytest.mark.parametrize("raw", [b"garbage", b"[" * 30_000 + b"]" * 30_000, b"{}",
                                 b'{"model": "stub", "prompt": 5}'])
def test_workers_answer_malformed_bodies_with_4xx_too(serving, raw):
    worker_url = serving.worker_url(serving.workers[1])
    response = httpx.post(worker_url + "/v1/completions", content=raw,
                          headers={"authorization": f"Bearer {serving.token}"})
    assert 400 <= response.status_code < 500
    assert "error" in response.json()
