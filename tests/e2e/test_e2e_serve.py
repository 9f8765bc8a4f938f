"""``vops serve --clouds slurm --replicas 2`` on a real SkyPilot backend, one worker preempted
under load.

The controller and two workers are managed jobs on the local Slurm cluster; a tiny LLaMA
(built here, saved the way training saves ``final/``) is the model. A client keeps sending
chat completions through the controller while one worker's allocation is cancelled: no
request may fail, and SkyPilot's relaunch of that worker must register with the controller
again.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from e2e_cluster import LocalSlurm
from e2e_sky import JobWatch, Timings, Vops, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

MODEL_NAME = "tiny"


def _build_tiny_model(folder: Path) -> None:
    """A tiny LLaMA and the builtin tokenizer, as training writes ``final/``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from vicuna_ops.tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                         pad_token_id=3, use_cache=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _free_ports(count: int) -> int:
    """A port P with P .. P+count-1 all free on this machine (controller, then workers)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("0.0.0.0", 0))
            base = sock.getsockname()[1]
        if base + count > 65000:
            continue
        try:
            socks = []
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("0.0.0.0", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no run of free ports")


@dataclass
class Load:
    """Sequential chat completions through the controller, from a thread, every answer kept."""

    url: str
    ok: list[float] = field(default_factory=list)
    failed: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="e2e-load", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)

    def _run(self) -> None:
        import httpx

        body = {"model": MODEL_NAME, "max_tokens": 8,
                "messages": [{"role": "user", "content": "Hello, who are you?"}]}
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                t = time.time()
                try:
                    reply = client.post(self.url + "/v1/chat/completions", json=body)
                    if reply.status_code == 200 and reply.json()["choices"]:
                        self.ok.append(t)
                    else:
                        self.failed.append((t, f"{reply.status_code} {reply.text[:200]}"))
                except Exception as exc:  # noqa: BLE001 - every failure is the finding
                    self.failed.append((t, f"{type(exc).__name__}: {exc}"))
                time.sleep(0.2)


@dataclass
class PreemptedDeployment:
    name: str
    jobs: dict[str, int]
    load: Load
    t_cancel: float
    t_back: float
    killed_url: str
    workers_before: list[dict[str, Any]]
    workers_after: list[dict[str, Any]]
    worker_watch: JobWatch


def _workers(vops: Vops, name: str) -> list[dict[str, Any]]:
    report = vops.json("serve", "status", name, timeout=300)
    controller = report.get("controller") or {}
    return [w for w in (controller.get("workers") or []) if w.get("state") == "live"]


@pytest.fixture(scope="module")
def preempted_deployment(slurm_cluster: LocalSlurm, e2e_timings: Timings,
                         tmp_path_factory: pytest.TempPathFactory):
    cluster = slurm_cluster
    work = tmp_path_factory.mktemp("e2e-serve")
    name = f"e2e-serve-{secrets.token_hex(3)}"
    model = cluster.shared_dir("models", name)
    _build_tiny_model(model)
    bucket = cluster.shared_dir("buckets", name)
    vops = Vops(cluster, vops_home=work / "vops-home", log_dir=work)
    port = _free_ports(3)

    t_launch = time.time()
    launched = vops.json("serve", "--clouds", "slurm", "--replicas", "2", "--model",
                         f"file://{model}", "--model-name", MODEL_NAME, "--bucket",
                         f"file://{bucket}", "--name", name, "--port", str(port), "--yes")
    jobs = {str(k): int(v) for k, v in (launched.get("jobs") or launched).items()}
    assert len(jobs) == 3, launched
    load = None
    try:
        workers = wait_for("two live workers behind the controller",
                           lambda: (lambda w: w if len(w) == 2 else None)(_workers(vops, name)),
                           timeout=1200, interval=5)
        e2e_timings.add("serve: launch -> 2 workers registered", time.time() - t_launch)
        url = vops.json("serve", "status", name)["controller"]["url"]

        load = Load(url)
        load.start()
        wait_for("answers through the controller", lambda: len(load.ok) >= 5, timeout=120,
                 interval=0.5)
        victim_job = jobs[f"{name}-worker-0"]
        watch = JobWatch(cluster, victim_job)
        allocation = wait_for("worker 0's Slurm allocation", lambda: cluster.allocation_named(
            f"{name}-worker-0-{victim_job}-"), timeout=60, interval=0.5)
        killed = next(w for w in workers if w["url"].endswith(f":{port + 1}"))
        t_cancel = cluster.preempt(allocation)

        watch.until({"RECOVERING"}, timeout=300,
                    forbidden={"SUCCEEDED", "FAILED", "CANCELLED"})
        e2e_timings.add("serve: scancel -> worker RECOVERING", time.time() - t_cancel)
        watch.until({"RUNNING"}, timeout=900, forbidden={"SUCCEEDED", "FAILED", "CANCELLED"})
        e2e_timings.add("serve: scancel -> worker RUNNING again", time.time() - t_cancel)

        def back() -> list[dict[str, Any]] | None:
            now = _workers(vops, name)
            fresh = [w for w in now if w["url"] == killed["url"]
                     and w["worker_id"] != killed["worker_id"]]
            return now if fresh and len(now) == 2 else None

        after = wait_for("the relaunched worker to register again", back, timeout=600,
                         interval=3)
        t_back = time.time()
        e2e_timings.add("serve: scancel -> worker registered again", t_back - t_cancel)
        wait_for("answers after the worker came back",
                 lambda: len([t for t in load.ok if t > t_back]) >= 5, timeout=120,
                 interval=0.5)
        load.stop()
        e2e_timings.note("serve: requests during the test (ok / failed)",
                         f"{len(load.ok)} / {len(load.failed)}")
        yield PreemptedDeployment(name=name, jobs=jobs, load=load, t_cancel=t_cancel,
                                  t_back=t_back, killed_url=killed["url"],
                                  workers_before=workers, workers_after=after,
                                  worker_watch=watch)
    finally:
        if load is not None:
            load.stop()
        vops.run("serve", "down", name, "--yes", check=False, timeout=300)


def test_no_request_fails_while_a_worker_is_preempted(
        preempted_deployment: PreemptedDeployment) -> None:
    d = preempted_deployment
    assert not d.load.failed, d.load.failed[:5]
    during = [t for t in d.load.ok if d.t_cancel <= t <= d.t_back]
    assert len(during) >= 5, "the load did not run through the outage"


def test_the_preempted_worker_is_relaunched_and_registers_again(
        preempted_deployment: PreemptedDeployment) -> None:
    d = preempted_deployment
    statuses = [s for _, s, _ in d.worker_watch.seen]
    assert "RECOVERING" in statuses and statuses[-1] == "RUNNING", d.worker_watch.history()
    assert d.worker_watch.seen[-1][2] == 1
    before = {w["worker_id"] for w in d.workers_before}
    after = {w["worker_id"] for w in d.workers_after}
    assert len(before & after) == 1 and len(after) == 2  # one kept, one new at the old URL
    assert d.killed_url in {w["url"] for w in d.workers_after}
