"""``vops cost sync`` on real buckets (file, moto S3, GCS emulator): segment records and the
managed-jobs queue fold into the ledger; a second sync changes nothing; a corrupt record is
reported and skipped."""

from __future__ import annotations

import enum

import pytest

from vicuna_ops.cost.price_table import PriceEntry, PriceTable, write_price_table
from vicuna_ops.cost.sync import sync_runs
from vicuna_ops.ledger import Ledger
from vicuna_ops.segments import SegmentRecord, write_segment
from vicuna_ops.storage import open_store

T0 = 1_700_000_000.0
HOUR = 3600.0


class FakeStatus(enum.Enum):  # SkyPilot's ManagedJobStatus is an Enum too
    SUCCEEDED = "SUCCEEDED"


class FakeQueue:
    def __init__(self, records):
        self.records, self.calls = records, []

    def __call__(self, job_ids):
        self.calls.append(job_ids)
        return [r for r in self.records
                if (r["job_id"] if isinstance(r, dict) else r.job_id) in job_ids]


def seg(run_id, segment_id, start_h, end_h, **fields) -> SegmentRecord:
    values = dict(run_id=run_id, segment_id=segment_id, cloud="aws", region="us-east-1",
                  zone="us-east-1d", instance_type="p4d.24xlarge", use_spot=True,
                  start=T0 + start_h * HOUR, heartbeat=T0 + end_h * HOUR, status="finished")
    values.update(fields)
    return SegmentRecord(**values)


def test_sync_folds_buckets_and_queue_and_is_idempotent(any_bucket):
    store = open_store(any_bucket).child("run-a")
    write_segment(store, seg("run-a", "a-1", 0, 2, status="preempted", first_step=0, steps=50))
    write_segment(store, seg("run-a", "a-2", 2.5, 4, attempt=2, first_step=40, steps=90))
    store.put_bytes("segments/broken.json", b'{"run_id": "run-a", "start": ')  # torn write
    table = PriceTable(prices=[PriceEntry(cloud="aws", zone="us-east-1d", region="us-east-1",
                                          instance_type="p4d.24xlarge", spot=True,
                                          price_per_hour=2.4655)])
    write_price_table(store, table)
    queue = FakeQueue([{"job_id": 7, "status": FakeStatus.SUCCEEDED, "recovery_count": 1,
                        "submitted_at": T0, "start_at": T0 + 60, "end_at": T0 + 4 * HOUR,
                        "resources": "8x[A100:8]"}])
    with Ledger() as ledger:
        ledger.add_run("run-a", "train", "running", bucket=any_bucket, job_ids=[7])
        first = sync_runs(ledger, queue=queue)
        (result,) = first
        assert result.segments_seen == 2 and result.segments_changed == 2 and result.run_changed
        assert len(result.problems) == 1 and "broken.json" in result.problems[0]
        assert "corrupt segment record" in result.problems[0]

        rows = {r["segment_id"]: r for r in ledger.segments("run-a")}
        assert set(rows) == {"a-1", "a-2"}
        assert rows["a-1"]["end"] == T0 + 2 * HOUR and rows["a-1"]["data"]["steps"] == 50
        run = ledger.get_run("run-a")
        assert run["data"]["managed_jobs"]["7"] == {
            "status": "SUCCEEDED", "recovery_count": 1, "submitted_at": T0,
            "start_at": T0 + 60, "end_at": T0 + 4 * HOUR}
        assert run["data"]["price_table"]["prices"][0]["price_per_hour"] == 2.4655
        assert queue.calls == [[7]]

        before = (ledger.get_run("run-a"), ledger.segments("run-a"), ledger.events("run-a"))
        (again,) = sync_runs(ledger, queue=queue)
        assert again.segments_changed == 0 and not again.run_changed
        assert (ledger.get_run("run-a"), ledger.segments("run-a"),
                ledger.events("run-a")) == before  # updated_at included: nothing was written

        # the running attempt heartbeats on: exactly that row changes
        write_segment(store, seg("run-a", "a-2", 2.5, 5, attempt=2, first_step=40, steps=120))
        (third,) = sync_runs(ledger, ["run-a"], queue=queue)
        assert third.segments_changed == 1 and not third.run_changed
        assert ledger.segments("run-a")[1]["end"] == T0 + 5 * HOUR


def test_sync_reads_the_launchers_queue_records(tmp_path):
    from vicuna_ops.launch.sky_sdk import ManagedJob

    job = ManagedJob(job_id=11, name="run-c", status="RECOVERING", recovery_count=2,
                     cloud="aws", region="us-east-1", zone="us-east-1a", resources="1x[A100:8]",
                     submitted_at=T0, end_at=None, job_duration=7200.0)
    with Ledger() as ledger:
        ledger.add_run("run-c", "train", "running", job_ids=[11, 12])
        (result,) = sync_runs(ledger, queue=FakeQueue([job]))
        assert result.run_changed and result.problems == []
        assert ledger.get_run("run-c")["data"]["managed_jobs"] == {"11": {
            "status": "RECOVERING", "recovery_count": 2, "submitted_at": T0,
            "job_duration": 7200.0}}
        (again,) = sync_runs(ledger, queue=FakeQueue([job]))
        assert not again.run_changed


def test_budget_stopped_run_gets_that_status(tmp_path):
    bucket = f"file://{tmp_path}/b"
    store = open_store(bucket).child("run-b")
    write_segment(store, seg("run-b", "b-1", 0, 1, status="budget-stopped", first_step=0,
                             steps=10))
    with Ledger() as ledger:
        ledger.add_run("run-b", "train", "running", bucket=bucket)
        (result,) = sync_runs(ledger, queue=None)
        assert result.run_changed and ledger.get_run("run-b")["status"] == "budget-stopped"
        (again,) = sync_runs(ledger, queue=None)
        assert not again.run_changed


def test_one_bad_bucket_does_not_stop_the_others(tmp_path):
    good = f"file://{tmp_path}/good"
    write_segment(open_store(good).child("run-ok"), seg("run-ok", "s", 0, 1))

    def failing_queue(job_ids):
        from vicuna_ops.errors import CloudError

        raise CloudError("jobs controller is not up")

    with Ledger() as ledger:
        ledger.add_run("run-bad", "train", "running", bucket="s3://", job_ids=[3])
        ledger.add_run("run-ok", "train", "running", bucket=good)
        bad, ok = sync_runs(ledger, queue=failing_queue)
        assert bad.segments_seen == 0 and len(bad.problems) == 2
        assert any("s3://" in p for p in bad.problems)
        assert any("jobs controller is not up" in p for p in bad.problems)
        assert ok.segments_seen == 1 and ok.problems == []


def test_unknown_run_is_a_user_error():
    from vicuna_ops.errors import UserError

    with Ledger() as ledger, pytest.raises(UserError, match="unknown run"):
        sync_runs(ledger, ["nope"], queue=None)


def test_the_report_bills_what_skypilot_saw_around_the_attempts(tmp_path):
    """Synced job times widen the attempts: attempt 1 from SkyPilot's launch (the trainer
    started 5 min later), attempt 2 from its recovery, and to the job's end."""
    from vicuna_ops.cost.collect import RunPrices, run_costs

    bucket = str(tmp_path / "bucket")
    store = open_store(bucket).child("run-w")
    write_segment(store, seg("run-w", "w-1", 0.1, 1, status="preempted", first_step=0,
                             steps=10, train_start=T0 + 0.2 * HOUR))
    write_segment(store, seg("run-w", "w-2", 1.5, 2, attempt=2, first_step=10, steps=20,
                             start_source="setup", train_start=T0 + 1.6 * HOUR))
    queue = FakeQueue([{"job_id": 9, "status": FakeStatus.SUCCEEDED, "recovery_count": 1,
                        "submitted_at": T0 - 600, "start_at": T0,
                        "last_recovered_at": T0 + 1.4 * HOUR, "end_at": T0 + 2.01 * HOUR}])
    table = PriceTable(prices=[PriceEntry(cloud="aws", zone="us-east-1d", region="us-east-1",
                                          instance_type="p4d.24xlarge", spot=True,
                                          price_per_hour=2.0)])
    with Ledger() as ledger:
        ledger.add_run("run-w", "train", "running", bucket=bucket, job_ids=[9])
        sync_runs(ledger, queue=queue)
        assert ledger.get_run("run-w")["data"]["managed_jobs"]["9"]["last_recovered_at"] == \
            T0 + 1.4 * HOUR
        (run,), problems = run_costs(ledger, ["run-w"],
                                     prices=RunPrices(catalog=lambda q: table(q)))
    assert not problems
    first, second = run.segments
    assert first.start == T0 and first.start_source == "skypilot"
    assert first.startup_hours == pytest.approx(0.2)
    assert second.start == pytest.approx(T0 + 1.4 * HOUR)
    assert second.end == pytest.approx(T0 + 2.01 * HOUR)
    assert second.startup_hours == pytest.approx(0.2)
    assert first.redone_steps == 0
    assert run.node_hours == pytest.approx(1.0 + 0.61)
    assert run.cost == pytest.approx(2.0 * 1.61)
