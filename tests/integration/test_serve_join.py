"""Workers from anywhere, several models on one controller: ``vops serve worker`` started by
hand joins a running controller, is routed to, and leaves on SIGTERM without failing a
request; a wrong token is refused in one line; ``vops serve --local --model`` given twice
serves both models, queried with the official ``openai`` client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

from vicuna_ops.lifeline import die_with_parent
from vicuna_ops.serve.local import LocalPlan, LocalServing

pytestmark = pytest.mark.timeout(120)
VOPS = [sys.executable, "-m", "vicuna_ops"]


def _answer(tokens: int) -> str:
    return "".join(f" t{i}" for i in range(tokens))


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _workers(url: str, token: str) -> list[dict]:
    reply = httpx.get(url + "/vops/workers", headers={"authorization": f"Bearer {token}"})
    reply.raise_for_status()
    return reply.json()["workers"]


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def controller(tmp_path):
    """A local controller with one stub worker (32 tokens at 40/s: ~0.8 s a request). The
    heartbeat is slow (expiry 15 s) so that a worker gone sooner has deregistered itself."""
    plan = LocalPlan(model=None, backend="stub", port=_port(), workers=1, stub_rate=40.0,
                     heartbeat_interval=5.0, state_dir=tmp_path / "state", grace=10)
    serving = LocalServing(plan)
    try:
        serving.start()
        yield serving
    finally:
        serving.stop()


def _hand_worker(serving: LocalServing, token: str, *args: str) -> tuple[subprocess.Popen, int]:
    """``vops serve worker`` as a user types it on another machine (here: another port)."""
    port = _port()
    env = {**os.environ, "VOPS_WORKER_TOKEN": token}
    process = subprocess.Popen(
        [*VOPS, "serve", "worker", "--controller-url", serving.url, "--backend", "stub",
         "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=die_with_parent())
    return process, port


def test_a_hand_started_worker_joins_is_routed_to_and_drains_without_a_failed_request(
        controller):
    # 8 tokens instead of 32: its answers are told apart from the supervisor's worker's
    worker, port = _hand_worker(controller, controller.token, "--stub-tokens", "8",
                                "--stub-rate", "40", "--drain-grace", "20")
    try:
        mine = f"http://127.0.0.1:{port}"  # on loopback, since the controller is
        _until(lambda: any(w["url"] == mine and w["state"] == "live"
                           for w in _workers(controller.url, controller.token)),
               30, "the hand-started worker to register")

        client = openai.OpenAI(base_url=controller.url + "/v1", api_key="x", max_retries=0)
        answers: list[str] = []
        failures: list[str] = []
        stop = threading.Event()

        def load(stream: bool) -> None:
            while not stop.is_set():
                try:
                    if stream:
                        chunks = client.chat.completions.create(
                            model="stub", stream=True,
                            messages=[{"role": "user", "content": "hi"}])
                        text = "".join(c.choices[0].delta.content or "" for c in chunks
                                       if c.choices)
                    else:
                        text = client.completions.create(  # its default is 16 tokens
                            model="stub", prompt="hi", max_tokens=64).choices[0].text
                    answers.append(text)
                except Exception as exc:  # noqa: BLE001 - every failure is the finding
                    failures.append(repr(exc))

        threads = [threading.Thread(target=load, args=(i % 2 == 0,), daemon=True)
                   for i in range(6)]
        for thread in threads:
            thread.start()
        _until(lambda: _answer(8) in answers, 30, "a request routed to the hand-started worker")

        def busy() -> bool:
            return httpx.get(mine + "/healthz").json()["in_flight"] > 0

        _until(busy, 10, "the hand-started worker to hold a request")
        worker.send_signal(signal.SIGTERM)  # mid-request: it must finish what it holds
        assert worker.wait(timeout=30) == 0, worker.stderr.read()
        # gone from the registry at once (its heartbeat would only expire after 15 s)
        assert [w["url"] for w in _workers(controller.url, controller.token)] \
            == [controller.worker_url(controller.workers[0])]
        served_before = len(answers)
        _until(lambda: len(answers) >= served_before + 6, 20, "more answers after the drain")
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        assert failures == []
        assert set(answers) == {_answer(8), _answer(32)}  # nothing cut short
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_a_worker_with_a_wrong_token_is_refused_in_one_line(controller):
    worker, port = _hand_worker(controller, "not-the-token")
    try:
        assert worker.wait(timeout=30) == 2
    finally:
        if worker.poll() is None:
            worker.kill()
    lines = worker.stderr.read().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "refused the worker token" in lines[0], lines
    assert all(w["url"] != f"http://127.0.0.1:{port}"
               for w in _workers(controller.url, controller.token))


def test_two_models_on_one_local_controller_through_the_openai_client(tmp_path):
    port = _port()
    env = {**os.environ, "VOPS_HOME": str(tmp_path / "home")}
    env.pop("VOPS_API_KEYS", None)
    process = subprocess.Popen(
        [*VOPS, "serve", "--local", "--backend", "stub", "--model", "alpha=unused",
         "--model", "beta=unused", "--workers", "1", "--port", str(port), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=die_with_parent())
    try:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        summary = json.loads(line)
        assert summary["models"] == ["alpha", "beta"] and summary["workers"] == 2
        client = openai.OpenAI(base_url=summary["endpoint"] + "/v1", api_key="x",
                               max_retries=0)
        assert sorted(m.id for m in client.models.list()) == ["alpha", "beta"]
        for name in ("alpha", "beta", "beta", "alpha"):
            # a worker answers only its own model (any other is its 404): routed by name
            reply = client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
            assert reply.model == name and reply.choices[0].message.content == _answer(4)
        chunks = list(client.chat.completions.create(
            model="beta", stream=True, messages=[{"role": "user", "content": "hi"}]))
        assert {c.model for c in chunks} == {"beta"}
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) \
            == _answer(32)
        with pytest.raises(openai.NotFoundError, match="served: alpha, beta"):
            client.chat.completions.create(model="gamma",
                                           messages=[{"role": "user", "content": "hi"}])
        token = (tmp_path / "home" / "serve" / f"local-{port}" / "worker.token").read_text()
        models = sorted(tuple(w["models"]) for w in _workers(summary["endpoint"], token))
        assert models == [("alpha",), ("beta",)]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def _tiny_model(folder, seed: int) -> None:
    """A tiny LLaMA and the builtin tokenizer, saved as training saves ``final/``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from vicuna_ops.tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                         pad_token_id=3)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.mark.timeout(240)
def test_two_real_models_are_named_after_their_folders(tmp_path):
    alpha, beta = tmp_path / "runs" / "alpha" / "final", tmp_path / "beta"
    _tiny_model(alpha, 0)
    _tiny_model(beta, 1)
    port = _port()
    env = {**os.environ, "VOPS_HOME": str(tmp_path / "home")}
    env.pop("VOPS_API_KEYS", None)
    process = subprocess.Popen(
        [*VOPS, "serve", "--local", "--model", str(alpha), "--model", str(beta),
         "--port", str(port), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        preexec_fn=die_with_parent())
    try:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        client = openai.OpenAI(base_url=json.loads(line)["endpoint"] + "/v1", api_key="x",
                               max_retries=0)
        assert sorted(m.id for m in client.models.list()) == ["alpha", "beta"]
        replies = {}
        for name in ("alpha", "beta"):
            reply = client.chat.completions.create(
                model=name, messages=[{"role": "user", "content": "Hello"}], max_tokens=8,
                temperature=0)
            assert reply.model == name and reply.usage.completion_tokens >= 1
            replies[name] = reply.choices[0].message.content
        assert replies["alpha"] != replies["beta"]  # two different weights answered
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
