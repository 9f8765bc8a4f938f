"""The training process for real: ``python -m vicuna_ops.train`` on the tiny model, killed,
signalled, noticed, corrupted and budget-stopped, against moto S3 and local buckets.

The proof of exactness: whatever happens to a run (SIGKILL at random moments, uploads
included; SIGTERM; a metadata-server notice; a corrupt newest checkpoint), once it completes
its final weights are bitwise identical to those of one uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from vicuna_ops.recipe import dump_recipe, load_recipe
from vicuna_ops.storage import open_store
from vicuna_ops.train.args import EXIT_OK, EXIT_PREEMPTED
from vicuna_ops.train.checkpoint import list_candidates
from vicuna_ops.train.progress import parse_event

pytestmark = pytest.mark.slow

MAX_STEPS = 16
EVERY = 4
# 22 conversations in batches of 4: epochs of 6 steps, the last one short (2 samples), so a
# run crosses two epoch boundaries, and resumes land before, on and after them.
CONVERSATIONS = 22


def small_recipe(folder: Path) -> Path:
    """The tiny recipe at half the batch and 16 steps: the same code paths, a quicker run."""
    tiny = load_recipe("tiny")
    train = tiny.train.model_copy(update={
        "global_batch_size": 4, "per_device_batch_size": 4, "max_steps": MAX_STEPS,
        "checkpoint_every_steps": EVERY, "keep_checkpoints": 2})
    path = folder / "tiny-test.yaml"
    path.write_text(dump_recipe(tiny.model_copy(update={"train": train})))
    return path


@dataclass
class Attempt:
    code: int
    events: list[dict[str, Any]]
    stderr: str
    killed_during_upload: bool = False

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]


@dataclass
class Trainer:
    """Runs attempts of one run id; ``until(event, history) -> delay`` SIGKILLs after delay."""

    recipe: Path
    bucket: str
    run_id: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    data: Path | None = None
    attempts: list[Attempt] = field(default_factory=list)

    def run(self, *extra: str, until: Callable[[dict, list], float | None] | None = None,
            kill_after_s: float | None = None,
            on_event: Callable[[dict, subprocess.Popen], None] | None = None,
            timeout: float = 240) -> Attempt:
        log = self.workdir / f"attempt-{len(self.attempts) + 1}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "vicuna_ops.train", "--recipe", str(self.recipe),
                   "--run-id", self.run_id, "--bucket", self.bucket, "--progress",
                   "--workdir", str(self.workdir / "scratch"), *extra]
        if self.data is not None:
            command += ["--data", str(self.data)]
        env = {**os.environ, "VOPS_HEARTBEAT_S": "0.5", **self.env}
        with open(log, "w") as err:
            child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True,
                                     env=env)
            timer = threading.Timer(kill_after_s, child.kill) if kill_after_s else None
            if timer:
                timer.start()
            deadline = threading.Timer(timeout, child.kill)
            deadline.start()
            events: list[dict[str, Any]] = []
            in_upload = killed_in_upload = False
            try:
                for line in child.stdout:  # type: ignore[union-attr]
                    event = parse_event(line)
                    if event is None:
                        continue
                    events.append(event)
                    if event["event"] == "upload-start":
                        in_upload = True
                    elif event["event"] in ("upload-done", "upload-failed"):
                        in_upload = False
                    if on_event:
                        on_event(event, child)
                    delay = until(event, events) if until else None
                    if delay is not None:
                        time.sleep(delay)
                        killed_in_upload = in_upload and not any(
                            e["event"] == "upload-done" and e["step"] == event.get("step")
                            for e in events)
                        child.kill()
                        break
                child.communicate()
            finally:
                deadline.cancel()
                if timer:
                    timer.cancel()
        attempt = Attempt(child.returncode, events, log.read_text(), killed_in_upload)
        self.attempts.append(attempt)
        return attempt


def final_weights(bucket: str, run_id: str) -> bytes:
    return open_store(bucket).child(run_id).get_bytes("final/model.safetensors")


@dataclass(frozen=True)
class Reference:
    recipe: Path
    data: Path
    weights: bytes  # final/model.safetensors of the uninterrupted run


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    """One uninterrupted run of the small recipe on the small data set."""
    from vicuna_ops.train.builtin_data import tiny_chat

    folder = tmp_path_factory.mktemp("reference")
    data = folder / "chat.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in tiny_chat(CONVERSATIONS, seed=99)))
    recipe = small_recipe(folder)
    trainer = Trainer(recipe, str(folder / "bucket"), "ref", folder / "work", data=data)
    attempt = trainer.run()
    assert attempt.code == EXIT_OK, attempt.stderr[-3000:]
    assert attempt.of("end")[-1]["status"] == "finished"
    assert attempt.of("step")[-1]["epoch"] > 2.0  # crossed two epoch boundaries
    # no checkpoint at the last step: final/ is written instead
    assert [e["step"] for e in attempt.of("upload-done")] == [4, 8, 12]
    return Reference(recipe, data, final_weights(str(folder / "bucket"), "ref"))


def test_sigkill_at_random_moments_then_restarts_gives_identical_weights(reference, s3_bucket,
                                                                        tmp_path):
    rng = random.Random(20240605)
    trainer = Trainer(reference.recipe, s3_bucket, "chaos", tmp_path, data=reference.data)
    # The order is fixed (uploads happen before the last checkpoint is passed); the moments
    # within each are drawn from the seeded generator.
    plans = ["startup", "upload", "step", "upload", "final"]
    for plan in plans:
        done = max([0] + [e["step"] for a in trainer.attempts for e in a.of("step")])
        if plan == "upload":  # inside an upload: some files there, the manifest not yet
            delay = rng.uniform(0.0, 0.015)
            # (an attempt that resumes past the last checkpoint has no upload: kill it late)
            trainer.run(until=lambda e, _h, d=delay: d if e["event"] == "upload-start" or (
                e["event"] == "step" and e["step"] >= MAX_STEPS - 1) else None)
        elif plan == "step":
            target, delay = min(done + rng.randint(1, 6), MAX_STEPS - 1), rng.uniform(0, 0.08)
            trainer.run(until=lambda e, _h, t=target, d=delay:
                        d if e["event"] == "step" and e["step"] >= t else None)
        elif plan == "final":  # after the last step: while final/ is saved and uploaded
            delay = rng.uniform(0.0, 0.05)
            trainer.run(until=lambda e, _h, d=delay:
                        d if e["event"] == "step" and e["step"] == MAX_STEPS else None)
        else:  # anywhere early: imports, download, model build
            trainer.run(kill_after_s=rng.uniform(0.5, 3.5))
    last = trainer.run()
    logs = "\n---\n".join(a.stderr[-1500:] for a in trainer.attempts)
    assert last.code == EXIT_OK, logs
    assert [a.code for a in trainer.attempts[:-1]] == [-signal.SIGKILL] * len(plans), logs
    assert any(a.killed_during_upload for a in trainer.attempts), "no kill hit an upload"
    resumed = [e["step"] for a in trainer.attempts for e in a.of("resume")]
    assert resumed and max(resumed) > 0, logs
    assert final_weights(s3_bucket, "chaos") == reference.weights  # bitwise
    run_store = open_store(s3_bucket).child("chaos")
    segments = [info.key for info in run_store.list("segments/")]
    started = [a for a in trainer.attempts if a.of("start")]  # the record precedes "start"
    assert len(started) <= len(segments) <= len(trainer.attempts)
    assert len([c for c in list_candidates(run_store) if c.has_manifest]) == 2  # keep: 2


class FakeMetadata:
    """GCP's preempted endpoint on loopback; ``notice`` flips what it answers."""

    def __init__(self) -> None:
        self.notice = False
        state = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                ok = self.headers.get("Metadata-Flavor") == "Google"
                body = ("TRUE" if state.notice else "FALSE") if ok else ""
                self.send_response(200 if ok else 403)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = (f"http://127.0.0.1:{self.server.server_address[1]}"
                    "/computeMetadata/v1/instance/preempted")
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def fake_gcp() -> Iterator[FakeMetadata]:
    fake = FakeMetadata()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def flip_a_byte(bucket: str, run_id: str, key: str) -> None:
    """Damage an object behind the storage layer's back (as a bad disk or a bad actor would)."""
    import boto3

    name = bucket.removeprefix("s3://")
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    data = bytearray(client.get_object(Bucket=name, Key=f"{run_id}/{key}")["Body"].read())
    data[len(data) // 2] ^= 0x01
    client.put_object(Bucket=name, Key=f"{run_id}/{key}", Body=bytes(data))


def test_notices_stop_at_the_next_step_and_a_corrupt_checkpoint_falls_back(
        reference, s3_bucket, fake_gcp, tmp_path):
    trainer = Trainer(reference.recipe, s3_bucket, "noticed", tmp_path, data=reference.data,
                      env={"VOPS_GCP_NOTICE_URL": fake_gcp.url, "VOPS_NOTICE_POLL_S": "0.05"})
    run_store = open_store(s3_bucket).child("noticed")

    # 1. SIGTERM after step 5: checkpoint at the next step boundary, exit 75 (SkyPilot retries)
    def sigterm(event: dict, child: subprocess.Popen) -> None:
        if event["event"] == "step" and event["step"] == 5:
            child.send_signal(signal.SIGTERM)

    first = trainer.run(on_event=sigterm)
    assert first.code == EXIT_PREEMPTED, first.stderr[-3000:]
    # what a node script behind torchrun (which exits 1 for any failing worker) reads
    assert (tmp_path / "scratch" / "noticed" / "exit_code").read_text() == "75\n"
    stop = first.of("stop")[0]
    assert stop["source"] == "SIGTERM" and stop["step"] >= 5
    assert first.of("step")[-1]["step"] == stop["step"]  # no step after the stop
    assert first.of("upload-done")[-1]["step"] == stop["step"]  # uploaded before exiting
    assert first.of("end")[0]["status"] == "preempted"

    # 2. the metadata server announces preemption: same protocol; 0 steps lost on resume
    def announce(event: dict, _child: subprocess.Popen) -> None:
        if event["event"] == "step" and event["step"] >= stop["step"] + 3:
            fake_gcp.notice = True

    second = trainer.run(on_event=announce)
    assert second.code == EXIT_PREEMPTED, second.stderr[-3000:]
    assert second.of("resume")[0]["step"] == stop["step"]
    notice = second.of("stop")[0]
    assert notice["source"] == "gcp preempted: TRUE" and notice["reason"] == "preempted"
    fake_gcp.notice = False

    # 3. the newest checkpoint is damaged in the bucket: resume falls back to the one before
    newest = f"step_{notice['step']:08d}"
    flip_a_byte(s3_bucket, "noticed", f"{newest}/optimizer.pt")
    complete = [c.step for c in list_candidates(run_store) if c.has_manifest]
    assert complete[0] == notice["step"] and len(complete) == 2
    third = trainer.run()
    assert third.code == EXIT_OK, third.stderr[-3000:]
    resume = third.of("resume")[0]
    assert resume["step"] == complete[1]
    assert resume["skipped"][0].startswith(newest) and "checksum" in resume["skipped"][0]
    assert final_weights(s3_bucket, "noticed") == reference.weights

    records = sorted((json.loads(run_store.get_bytes(i.key)) for i in
                      run_store.list("segments/")), key=lambda r: r["attempt"])
    assert [r["status"] for r in records] == ["preempted", "preempted", "finished"]
    assert [r["first_step"] for r in records] == [0, stop["step"], complete[1]]
    assert records[0]["steps"] == stop["step"] and records[0]["tokens"] > 0
    assert all(r["heartbeat"] > r["start"] for r in records)

    # The cost model reads these very records by the trainer's definition of first_step:
    # attempt 2 continued from attempt 1's last step (nothing redone); attempt 3 fell back
    # to an older checkpoint, so attempt 2's steps after it were done twice.
    from vicuna_ops.cost.model import run_cost
    from vicuna_ops.segments import SegmentRecord

    run = run_cost("noticed", [SegmentRecord.model_validate(r) for r in records],
                   lambda _q: None)  # local segments: never priced
    assert [s.redone_steps for s in run.segments] == [0, notice["step"] - complete[1], None]
    assert run.segments[0].redone_tokens == 0
    assert run.trained_tokens == pytest.approx(
        sum(r["tokens"] for r in records) - run.segments[1].redone_tokens)
    for seg, rec in zip(run.segments, records):
        # start-up (process start to the first step) and training split the billed time
        assert rec["train_start"] is not None and rec["start"] < rec["train_start"]
        assert 0 < seg.startup_hours < seg.hours and seg.training_hours > 0


def test_malformed_records_are_skipped_and_the_heartbeat_moves(tmp_path):
    recipe = small_recipe(tmp_path)
    good = {"conversations": [{"from": "human", "value": "Count from 1 to 3."},
                              {"from": "gpt", "value": "1, 2, 3."}]}
    lines = [json.dumps(good)] * 12 + ["{oops", json.dumps({"conversations": []}),
                                       json.dumps({"conversations": [{"from": "gpt",
                                                                      "value": "x"}]})]
    bucket = open_store(str(tmp_path / "bucket"))
    bucket.put_bytes("data/train.jsonl", "\n".join(lines).encode())
    trainer = Trainer(recipe, str(tmp_path / "bucket"), "baddata", tmp_path / "work",
                      env={"VOPS_HEARTBEAT_S": "0.2"})
    attempt = trainer.run("--data", str(tmp_path / "bucket" / "data" / "train.jsonl"),
                          "--max-steps", "6")
    assert attempt.code == EXIT_OK, attempt.stderr[-3000:]
    data = attempt.of("data")[0]
    assert (data["records"], data["used"]) == (15, 12)
    assert data["skipped"] == {"invalid JSON": 1, "conversation is not a non-empty list": 1,
                               "expected a USER turn, got 'gpt'": 1}
    assert "3 skipped" in attempt.stderr
    record = json.loads(next(iter(
        bucket.get_bytes(i.key) for i in bucket.list("baddata/segments/"))))
    assert record["status"] == "finished" and record["steps"] == 6
    assert record["heartbeat"] > record["start"] and record["cloud"] == "local"


def test_budget_reached_stops_cleanly_with_exit_0(tmp_path):
    """$10 a second against a $1 limit: the heartbeat after start is over budget. The run
    stops (while starting up, so with nothing new to checkpoint), exits 0 so SkyPilot does
    not recover it, and its segment says why. Mid-training stops share the SIGTERM path."""
    pytest.importorskip("vicuna_ops.cost.budget")
    recipe = small_recipe(tmp_path)
    table = {"version": 1, "prices": [{"cloud": "aws", "region": "us-east-1",
                                       "zone": "us-east-1a", "instance_type": "p4d.24xlarge",
                                       "spot": True, "price_per_hour": 36000.0}]}
    env = {"SKYPILOT_CLUSTER_INFO": json.dumps({"cloud": "aws", "region": "us-east-1",
                                                "zone": "us-east-1a"}),
           "VOPS_INSTANCE_TYPE": "p4d.24xlarge", "VOPS_USE_SPOT": "1",
           "VOPS_PRICE_TABLE": json.dumps(table), "VOPS_HEARTBEAT_S": "0.2",
           "VOPS_AWS_NOTICE_URL": ""}  # no 169.254.169.254 from a test
    trainer = Trainer(recipe, str(tmp_path / "bucket"), "capped", tmp_path / "work", env=env)
    attempt = trainer.run("--max-cost", "1")
    assert attempt.code == EXIT_OK, attempt.stderr[-3000:]
    assert attempt.of("end")[0]["status"] == "budget-stopped"
    assert "budget reached ($" in attempt.stderr
    assert not attempt.of("step")  # nothing trained past the limit
    run_store = open_store(str(tmp_path / "bucket")).child("capped")
    assert not run_store.exists("final/MANIFEST.json")
    record = json.loads(run_store.get_bytes(run_store.list("segments/")[0].key))
    assert record["status"] == "budget-stopped" and record["cloud"] == "aws"
    assert record["use_spot"] and record["instance_type"] == "p4d.24xlarge"


def test_budget_stop_leaves_room_for_the_final_checkpoint_and_a_rerun_uploads_nothing(tmp_path):
    """$120/h against a $1 budget: 30 s of money, start-up included (the node's setup began
    2 s before the trainer). The guard must stop early enough that the step in progress,
    the final checkpoint's save and upload and the exit still fit: the billed total stays
    within $1 (the old guard stopped at the first heartbeat past it, then saved)."""
    from vicuna_ops.cost.budget import cost_so_far
    from vicuna_ops.cost.price_table import PriceTable
    from vicuna_ops.segments import SegmentRecord

    recipe = small_recipe(tmp_path)
    table = {"version": 1, "prices": [{"cloud": "aws", "region": "us-east-1",
                                       "zone": "us-east-1a", "instance_type": "p4d.24xlarge",
                                       "spot": True, "price_per_hour": 120.0}]}
    node_started = tmp_path / "node-started"
    node_started.write_text(f"{time.time() - 2.0:.3f}\n")
    env = {"SKYPILOT_CLUSTER_INFO": json.dumps({"cloud": "aws", "region": "us-east-1",
                                                "zone": "us-east-1a"}),
           "VOPS_INSTANCE_TYPE": "p4d.24xlarge", "VOPS_USE_SPOT": "1",
           "VOPS_PRICE_TABLE": json.dumps(table), "VOPS_HEARTBEAT_S": "0.2",
           "VOPS_NODE_STARTED_FILE": str(node_started), "VOPS_AWS_NOTICE_URL": ""}
    trainer = Trainer(recipe, str(tmp_path / "bucket"), "capped", tmp_path / "work", env=env)
    attempt = trainer.run("--max-cost", "1", "--max-steps", "100000")
    assert attempt.code == EXIT_OK, attempt.stderr[-3000:]
    assert attempt.of("end")[0]["status"] == "budget-stopped"
    stop = attempt.of("stop")[0]
    assert stop["reason"] == "budget" and stop["step"] > 0, attempt.stderr[-2000:]
    assert attempt.of("upload-done")[-1]["step"] == stop["step"]  # saved and uploaded
    run_store = open_store(str(tmp_path / "bucket")).child("capped")
    assert run_store.get_bytes("LATEST").decode().strip() == f"step_{stop['step']:08d}"

    def billed() -> tuple[float, list[SegmentRecord]]:
        records = [SegmentRecord.model_validate_json(run_store.get_bytes(i.key))
                   for i in run_store.list("segments/")]
        return cost_so_far(records, PriceTable.model_validate(table)), records

    spent, (record,) = billed()
    assert record.start_source == "setup" and record.train_start > record.start
    assert 0.6 <= spent <= 1.0, f"billed ${spent:.3f} of $1 ({record})"

    # The same command again: the budget is gone. It stops before downloading or training
    # anything, says so, and writes nothing but its own segment record.
    before = {i.key for i in run_store.list()} - {"LEASE"}
    again = trainer.run("--max-cost", "1", "--max-steps", "100000")
    assert again.code == EXIT_OK, again.stderr[-3000:]
    assert again.of("end")[0]["status"] == "budget-stopped"
    assert again.of("end")[0]["uploaded"] is False
    assert not again.of("step") and not again.of("resume") and not again.of("upload-start")
    assert "no step trained in this attempt, nothing uploaded" in again.stderr
    after = {i.key for i in run_store.list()} - {"LEASE"}
    assert len(after - before) == 1 and (after - before).pop().startswith("segments/")
