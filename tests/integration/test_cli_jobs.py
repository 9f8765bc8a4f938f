"""``vops status / logs / cancel`` against a fake SkyPilot queue (the only fake) and real
buckets (local folder, moto S3, GCS emulator) holding checkpoints."""

from __future__ import annotations

import json
import os

import pytest

from fixtures.cli import run_vops
from vicuna_ops.errors import CloudError
from vicuna_ops.launch import sky_sdk
from vicuna_ops.launch.sky_sdk import ManagedJob
from vicuna_ops.ledger import Ledger
from vicuna_ops.storage import open_store


def job(job_id: int, status: str = "RUNNING", recovery_count: int = 0, **kw) -> ManagedJob:
    fields = dict(job_id=job_id, name=f"run-{job_id}", status=status,
                  recovery_count=recovery_count, cloud="aws", region="us-east-1",
                  zone="us-east-1d", resources="1x[A100:8]", submitted_at=1_700_000_000.0,
                  end_at=None, job_duration=3725.0)
    fields.update(kw)
    return ManagedJob(**fields)


class FakeSky:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, jobs: list[ManagedJob]):
        self.jobs = {j.job_id: j for j in jobs}
        self.queue_calls: list[list[int]] = []
        self.cancelled: list[list[int]] = []
        self.tailed: list[tuple[int, bool]] = []
        self.queue_error: Exception | None = None
        monkeypatch.setattr(sky_sdk, "queue", self.queue)
        monkeypatch.setattr(sky_sdk, "cancel", self.cancel)
        monkeypatch.setattr(sky_sdk, "tail_logs", self.tail_logs)

    def queue(self, job_ids=None, *, refresh=False):
        self.queue_calls.append(list(job_ids or []))
        if self.queue_error:
            raise self.queue_error
        return [j for i, j in self.jobs.items() if not job_ids or i in job_ids]

    def cancel(self, job_ids):
        self.cancelled.append(list(job_ids))

    def tail_logs(self, job_id, *, follow=True):
        self.tailed.append((job_id, follow))
        print(f"log line of job {job_id}")
        return 100 if follow else None


vops = run_vops


def add_run(run_id: str, bucket: str | None, job_ids: list[int], status="launched") -> None:
    with Ledger() as ledger:
        ledger.add_run(run_id, "train", status, bucket=bucket, job_ids=job_ids)


def write_checkpoint(bucket: str, run_id: str, step: int, manifest: bool = True) -> None:
    store = open_store(bucket).child(run_id)
    name = f"step_{step:08d}"
    store.put_bytes(f"{name}/model.safetensors", b"weights")
    if manifest:
        store.put_bytes(f"{name}/MANIFEST.json", b"{}")
    store.put_bytes("LATEST", name.encode())


def test_status_joins_queue_ledger_and_bucket(capsys, monkeypatch, any_bucket):
    fake = FakeSky(monkeypatch, [job(7, "RECOVERING", 2), job(8, "SUCCEEDED", zone=None)])
    add_run("run-a", any_bucket, [7])
    add_run("run-b", any_bucket, [8])
    add_run("run-c", any_bucket, [])  # a local run: no SkyPilot job
    write_checkpoint(any_bucket, "run-a", 40)
    write_checkpoint(any_bucket, "run-a", 60, manifest=False)  # LATEST moved, no manifest
    write_checkpoint(any_bucket, "run-b", 120)

    code, out, err = vops(capsys, "status", "--json")
    assert code == 0, err
    rows = {r["run_id"]: r for r in json.loads(out)}
    assert fake.queue_calls == [[7, 8]]  # one queue call for every run
    a, b, c = rows["run-a"], rows["run-b"], rows["run-c"]
    assert (a["job_id"], a["status"], a["recovery_count"]) == (7, "RECOVERING", 2)
    assert a["infra"] == "aws/us-east-1/us-east-1d" and a["job_duration"] == 3725.0
    assert a["checkpoint_step"] is None and "no manifest" in a["problem"]
    assert b["checkpoint_step"] == 120 and b["infra"] == "aws/us-east-1" and b["problem"] is None
    assert c["job_id"] is None and c["status"] is None and c["checkpoint_step"] is None
    with Ledger() as ledger:  # the ledger follows SkyPilot's status
        assert ledger.get_run("run-a")["status"] == "recovering"
        assert ledger.get_run("run-b")["status"] == "succeeded"
        assert ledger.get_run("run-c")["status"] == "launched"


def test_status_of_one_run_as_a_table_and_as_json(capsys, monkeypatch, tmp_path):
    FakeSky(monkeypatch, [job(7), job(9)])
    bucket = str(tmp_path / "bucket")
    add_run("run-a", bucket, [7])
    add_run("run-x", bucket, [9])
    write_checkpoint(bucket, "run-a", 40)
    code, out, err = vops(capsys, "status", "run-a", "--json")
    assert code == 0, err
    row = json.loads(out)
    assert row["run_id"] == "run-a" and row["checkpoint_step"] == 40
    code, out, _ = vops(capsys, "status", "run-a")
    assert code == 0 and "run-a" in out and "step 40" in out and "RUNNING" in out
    assert "run-x" not in out and "1h02m" in out


def test_status_survives_an_unreachable_api_server(capsys, monkeypatch, tmp_path):
    fake = FakeSky(monkeypatch, [])
    fake.queue_error = CloudError("SkyPilot could not read the managed-jobs queue: refused")
    bucket = str(tmp_path / "bucket")
    add_run("run-a", bucket, [7])
    write_checkpoint(bucket, "run-a", 10)
    code, out, err = vops(capsys, "status", "run-a", "--json")
    assert code == 0, err
    row = json.loads(out)
    assert row["status"] is None and row["checkpoint_step"] == 10
    assert "refused" in row["problem"]


def test_job_missing_from_the_queue_is_said(capsys, monkeypatch, tmp_path):
    FakeSky(monkeypatch, [])
    add_run("run-a", str(tmp_path / "b"), [7])
    row = json.loads(vops(capsys, "status", "run-a", "--json")[1])
    assert "job 7 is not in SkyPilot's queue" in row["problem"]


def test_unknown_run_is_one_line_exit_2(capsys, monkeypatch):
    FakeSky(monkeypatch, [])
    for args in (["status", "nope"], ["logs", "nope"], ["cancel", "nope"]):
        code, _, err = vops(capsys, *args)
        assert code == 2 and err.strip().splitlines() == [
            "error: unknown run 'nope' (hint: `vops runs` lists the runs this machine knows)"]


def test_logs_and_follow_exit_code(capsys, monkeypatch):
    fake = FakeSky(monkeypatch, [job(7)])
    add_run("run-a", None, [7])
    code, out, _ = vops(capsys, "logs", "run-a")
    assert code == 0 and "log line of job 7" in out
    code, _, _ = vops(capsys, "logs", "run-a", "--follow")
    assert code == 100  # the job failed: `vops logs --follow` says so, like `sky jobs logs`
    assert fake.tailed == [(7, False), (7, True)]
    add_run("local-run", None, [])
    code, _, err = vops(capsys, "logs", "local-run")
    assert code == 2 and "has no SkyPilot job" in err


def test_cancel_cancels_the_job_and_records_it(capsys, monkeypatch):
    fake = FakeSky(monkeypatch, [job(7)])
    add_run("run-a", None, [3, 7])  # relaunched: the newest job is the one that runs
    code, out, err = vops(capsys, "cancel", "run-a", "--json")
    assert code == 0, err
    assert json.loads(out) == {"run_id": "run-a", "job_id": 7, "cancelled": True}
    assert fake.cancelled == [[7]]
    with Ledger() as ledger:
        assert ledger.get_run("run-a")["status"] == "cancelled"
        assert [e["kind"] for e in ledger.events("run-a")] == ["cancelled"]


def test_status_counts_attempts_and_shows_a_budget_stop(capsys, monkeypatch, tmp_path):
    from vicuna_ops.segments import SegmentRecord, write_segment

    FakeSky(monkeypatch, [job(5, "SUCCEEDED", 1)])
    bucket = str(tmp_path / "bucket")
    add_run("run-b", bucket, [5])
    store = open_store(bucket).child("run-b")
    for attempt, state in ((1, "preempted"), (2, "budget-stopped")):
        write_segment(store, SegmentRecord(run_id="run-b", segment_id=f"train-{attempt}",
                                           attempt=attempt, start=100.0 * attempt,
                                           heartbeat=100.0 * attempt + 50, status=state))
    code, out, err = vops(capsys, "status", "run-b", "--json")
    assert code == 0, err
    row = json.loads(out)
    assert row["attempts"] == 2 and row["budget_stopped"] is True
    assert row["status"] == "SUCCEEDED"  # what SkyPilot says; the ledger knows better
    with Ledger() as ledger:
        assert ledger.get_run("run-b")["status"] == "budget-stopped"
    code, out, _ = vops(capsys, "status", "run-b")
    assert code == 0 and "BUDGET-STOPPED" in out


def test_a_finished_run_shows_its_final_step(capsys, monkeypatch, tmp_path):
    from vicuna_ops.train.manifest import FileEntry, Manifest

    FakeSky(monkeypatch, [job(7, "SUCCEEDED")])
    bucket = str(tmp_path / "bucket")
    add_run("run-a", bucket, [7])
    write_checkpoint(bucket, "run-a", 30)  # the last checkpoint kept is older than the end
    final = Manifest(step=None, files={"model.safetensors": FileEntry(7, "0" * 64)},
                     created=0.0, meta={"steps": 40})
    open_store(bucket).child("run-a").put_bytes("final/MANIFEST.json", final.to_json())
    code, out, err = vops(capsys, "status", "run-a", "--json")
    assert code == 0, err
    row = json.loads(out)
    assert (row["final_step"], row["checkpoint_step"]) == (40, 30)
    code, out, _ = vops(capsys, "status", "run-a")
    assert "final, step 40" in out and "step 30" not in out


def test_a_dead_local_run_reads_as_lost_everywhere_without_a_sync(capsys, monkeypatch,
                                                                   tmp_path):
    import socket
    import subprocess
    import sys
    import time

    FakeSky(monkeypatch, [])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer exists: the killed `vops train --local`
    now = time.time()
    with Ledger() as ledger:
        ledger.add_run("dead", "train", "running", bucket=str(tmp_path),
                       data={"local": True, "host": socket.gethostname(), "pid": gone.pid})
        ledger.add_run("alive", "train", "running", bucket=str(tmp_path),
                       data={"local": True, "host": socket.gethostname(), "pid": os.getpid()})
        record = {"run_id": "dead", "segment_id": "train-001-a", "kind": "train",
                  "start": now - 3600, "heartbeat": now - 1800, "status": "running",
                  "heartbeat_s": 5.0}
        ledger.upsert_segment("dead", "train-001-a", now - 3600, None, record)
        fresh = {**record, "segment_id": "train-001-b", "heartbeat": now - 1}
        ledger.upsert_segment("alive", "train-001-b", now - 3600, None, fresh)
        [seg] = ledger.segments("dead")
        assert seg["data"]["status"] == "lost" and seg["end"] == now - 1800
        assert ledger.segments("alive")[0]["data"]["status"] == "running"

    code, out, err = vops(capsys, "runs", "--json")
    assert code == 0, err
    assert {r["run_id"]: r["status"] for r in json.loads(out)} == {"dead": "lost",
                                                                   "alive": "running"}
    code, out, err = vops(capsys, "status", "dead", "--json")
    assert code == 0 and json.loads(out)["ledger_status"] == "lost", err
    code, out, err = vops(capsys, "cost", "dead", "--json")
    assert code == 0, err
    assert '"lost"' in out and '"running"' not in out
