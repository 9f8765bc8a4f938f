"""Segment records of a training attempt and the budget guard."""

from __future__ import annotations

import json
import time

import pytest

from vicuna_ops.segments import SegmentRecord, read_segments
from vicuna_ops.storage import open_store
from vicuna_ops.train import heartbeat as hb
from vicuna_ops.train.preemption import StopFlag


@pytest.fixture
def store(tmp_path):
    return open_store(str(tmp_path / "bucket")).child("run-1")


def test_record_is_written_updated_and_finished(store, monkeypatch):
    monkeypatch.setenv("SKYPILOT_CLUSTER_INFO", json.dumps(
        {"cloud": "AWS", "region": "us-east-1", "zone": "us-east-1a"}))
    monkeypatch.setenv("VOPS_INSTANCE_TYPE", "p4d.24xlarge")
    monkeypatch.setenv("VOPS_USE_SPOT", "1")
    attempt, earlier = hb.next_attempt(store)
    assert (attempt, earlier) == (1, [])
    beat = hb.SegmentHeartbeat(store, "run-1", attempt=1, first_step=10, interval_s=0.05)
    beat.start()
    first = read_segments(store)[0][0]
    assert (first.cloud, first.zone, first.instance_type, first.use_spot) == (
        "aws", "us-east-1a", "p4d.24xlarge", True)
    assert first.first_step == 10 and first.status == "running"
    beat.update(steps=17, tokens=4096, epoch=0.25)
    time.sleep(0.3)
    live = read_segments(store)[0][0]
    assert live.heartbeat > first.heartbeat and (live.steps, live.tokens) == (17, 4096)
    done = beat.finish("preempted")
    stored = read_segments(store)[0][0]
    assert stored.status == done.status == "preempted"
    assert hb.next_attempt(store)[0] == 2


AWS = {"cloud": "aws", "region": "us-east-1", "zone": "us-east-1a"}


def on_aws(monkeypatch, per_hour: float = 3600.0):
    """This process looks like a p4d spot node whose run's price table says ``per_hour``."""
    from vicuna_ops.cost.price_table import PRICE_TABLE_ENV

    monkeypatch.setenv("SKYPILOT_CLUSTER_INFO", json.dumps(AWS))
    monkeypatch.setenv("VOPS_INSTANCE_TYPE", "p4d.24xlarge")
    monkeypatch.setenv("VOPS_USE_SPOT", "1")
    monkeypatch.setenv(PRICE_TABLE_ENV, json.dumps({"version": 1, "prices": [
        {**AWS, "instance_type": "p4d.24xlarge", "spot": True, "price_per_hour": per_hour}]}))
    monkeypatch.setenv("VOPS_NODE_STARTED_FILE", "/nonexistent/node-started")


def test_budget_counts_earlier_attempts_and_raises_the_stop_flag(store, monkeypatch):
    on_aws(monkeypatch, per_hour=10.0)
    old = SegmentRecord(run_id="run-1", segment_id="train-001-aaaaaa", start=0, heartbeat=3600,
                        cloud="aws", region="us-east-1", zone="us-east-1a",
                        instance_type="p4d.24xlarge", use_spot=True)
    flag, logs = StopFlag(), []
    beat = hb.SegmentHeartbeat(store, "run-1", attempt=2, first_step=0, interval_s=60,
                               earlier=[old], stop_flag=flag, max_cost=9.0, log=logs.append)
    beat.beat()
    assert beat.cost == pytest.approx(10.0, abs=0.01)  # the earlier hour; this one just began
    assert flag.request_made.reason == "budget" and "$10.00" in flag.request_made.source


def test_unpriced_run_is_logged_once_and_never_stops(store, monkeypatch):
    on_aws(monkeypatch)
    monkeypatch.setenv("SKYPILOT_CLUSTER_INFO", json.dumps({**AWS, "zone": "us-east-1f"}))
    flag, logs = StopFlag(), []
    beat = hb.SegmentHeartbeat(store, "run-1", attempt=1, first_step=0, interval_s=60,
                               stop_flag=flag, max_cost=1.0, log=logs.append)
    beat.beat()
    beat.beat()
    assert not flag.is_set() and beat.stop_deadline is None
    assert len([line for line in logs if "no known price" in line]) == 1


def test_deadline_leaves_room_for_the_step_the_checkpoint_and_the_exit(store, monkeypatch):
    """$1/s, $100: 100 s of money. A checkpoint took 20 s and a step 1 s, so the stop must be
    asked for at 100 - (2 x 1 + 20 + 5) = 73 s after the start, not at 100 s."""
    on_aws(monkeypatch, per_hour=3600.0)
    clock = {"now": 1000.0}
    flag = StopFlag()
    beat = hb.SegmentHeartbeat(store, "run-1", attempt=1, first_step=0, interval_s=30,
                               stop_flag=flag, max_cost=100.0, clock=lambda: clock["now"])
    beat.expect_checkpoint_s(20.0, measured=True)
    beat.expect_checkpoint_s(500.0, measured=False)  # a guess never replaces a measurement
    for step in (1, 2):
        beat.update(steps=step, tokens=step * 10, epoch=0.0)
        clock["now"] += 1.0
    beat.beat()
    assert beat.stop_deadline == pytest.approx(1000.0 + 100 - 27)
    clock["now"] = 1072.0
    assert not beat.budget_due() and not flag.is_set()
    clock["now"] = 1073.5
    assert beat.budget_due() and flag.request_made.reason == "budget"
    assert beat.cost < 100.0 - 20.0  # stopped with the checkpoint's money still unspent


def test_before_any_checkpoint_the_guess_or_one_interval_stands_in(store, monkeypatch):
    on_aws(monkeypatch, per_hour=3600.0)
    clock = {"now": 0.0}
    beat = hb.SegmentHeartbeat(store, "run-1", attempt=1, first_step=0, interval_s=30,
                               stop_flag=StopFlag(), max_cost=100.0, clock=lambda: clock["now"])
    beat.beat()
    assert beat.stop_deadline == pytest.approx(100 - 30 - 5)  # one interval, then the exit
    beat.expect_checkpoint_s(50.0, measured=False)
    beat.beat()
    assert beat.stop_deadline == pytest.approx(100 - 50 - 5)


def test_a_local_run_says_once_that_it_is_not_priced(store, monkeypatch):
    monkeypatch.delenv("SKYPILOT_CLUSTER_INFO", raising=False)
    flag, logs = StopFlag(), []
    beat = hb.SegmentHeartbeat(store, "run-1", attempt=1, first_step=0, interval_s=60,
                               stop_flag=flag, max_cost=0.01, log=logs.append)
    beat.beat()
    beat.beat()
    assert [line for line in logs if "not priced" in line] == [
        "--max-cost: local runs are not priced ($0), so the budget never runs out"]
    assert not flag.is_set()


def test_the_segment_starts_when_the_node_did(store, monkeypatch, tmp_path):
    started = tmp_path / "node-started"
    monkeypatch.setenv("VOPS_NODE_STARTED_FILE", str(started))
    clock = {"now": 5000.0}
    started.write_text("4900.25\n")  # what the setup step writes: `date +%s.%N`
    beat = hb.SegmentHeartbeat(store, "run-1", attempt=1, first_step=0, interval_s=60,
                               clock=lambda: clock["now"])
    assert (beat.record.start, beat.record.start_source) == (4900.25, "setup")
    clock["now"] = 5030.0
    beat.training_started()
    clock["now"] = 5040.0
    beat.training_started()  # only the first step counts
    assert beat.record.train_start == 5030.0

    # a record left by an earlier attempt on this machine (before its last heartbeat) is not
    # this attempt's: billing starts with the trainer then
    earlier = SegmentRecord(run_id="run-1", segment_id="train-001-aaaaaa", start=4000,
                            heartbeat=4950)
    again = hb.SegmentHeartbeat(store, "run-1", attempt=2, first_step=0, interval_s=60,
                                earlier=[earlier], clock=lambda: clock["now"])
    assert (again.record.start, again.record.start_source) == (5040.0, "trainer")
    started.write_text("garbage")
    assert hb.SegmentHeartbeat(store, "run-1", attempt=1, first_step=0, interval_s=60,
                               clock=lambda: clock["now"]).record.start == 5040.0


def test_records_the_bucket_refuses_wait_on_the_node_until_it_is_back(tmp_path):
    """The bucket is a folder; while a file stands in its place every write fails. Nothing
    is lost: the newest record waits in the spool and is written once the folder is back."""
    root = tmp_path / "bucket"
    store = open_store(str(root)).child("run-1")
    spool = tmp_path / "spool"
    logs: list[str] = []
    beat = hb.SegmentHeartbeat(store, "run-1", attempt=1, first_step=0, interval_s=60,
                               log=logs.append, spool_dir=spool, drain_s=0.0)
    beat.beat()
    (root / "run-1" / "segments").rename(tmp_path / "aside")
    (root / "run-1" / "segments").write_text("not a folder")  # the bucket is "down"
    for step in (3, 7):
        beat.update(steps=step, tokens=step, epoch=0.0)
        beat.beat()
    assert beat.write_failures == 2 and beat.spooled == 1
    assert json.loads(next(spool.glob("*.json")).read_text())["steps"] == 7
    assert any("kept on this node" in line for line in logs)
    (root / "run-1" / "segments").unlink()  # back
    beat.update(steps=9, tokens=9, epoch=0.0)
    done = beat.finish("finished")
    assert beat.spooled == 0 and not list(spool.glob("*.json"))
    (stored,), _ = read_segments(store)
    assert (stored.steps, stored.status) == (9, "finished") == (done.steps, done.status)


def test_a_spooled_record_of_an_earlier_attempt_is_sent_by_the_next_one(tmp_path):
    from vicuna_ops.train.spool import SegmentSpool

    store = open_store(str(tmp_path / "bucket")).child("run-1")
    left = SegmentRecord(run_id="run-1", segment_id="train-001-aaaaaa", start=1, heartbeat=50,
                         status="preempted", first_step=0, steps=12)
    SegmentSpool(tmp_path / "spool").put(left)
    SegmentSpool(tmp_path / "spool").put(left.model_copy(update={"heartbeat": 40, "steps": 9}))
    beat = hb.SegmentHeartbeat(store, "run-1", attempt=2, first_step=12, interval_s=60,
                               spool_dir=tmp_path / "spool")
    beat.beat()
    records, _ = read_segments(store)
    assert [(r.segment_id, r.steps) for r in records] == [
        ("train-001-aaaaaa", 12), (beat.record.segment_id, 12)]  # the newer version won


def test_price_table_from_the_bucket_prices_the_node(store, monkeypatch):
    pytest.importorskip("vicuna_ops.cost.budget")
    store.put_bytes("prices.json", json.dumps({"version": 1, "prices": [
        {"cloud": "aws", "region": "us-east-1", "zone": "us-east-1a",
         "instance_type": "p4d.24xlarge", "spot": True, "price_per_hour": 3600.0}]}).encode())
    monkeypatch.setenv("SKYPILOT_CLUSTER_INFO", json.dumps(
        {"cloud": "aws", "region": "us-east-1", "zone": "us-east-1a"}))
    monkeypatch.setenv("VOPS_INSTANCE_TYPE", "p4d.24xlarge")
    monkeypatch.setenv("VOPS_USE_SPOT", "true")
    monkeypatch.delenv("VOPS_PRICE_TABLE", raising=False)
    monkeypatch.setenv("VOPS_NODE_STARTED_FILE", "/nonexistent/node-started")
    clock = {"now": 1000.0}
    flag = StopFlag()
    beat = hb.SegmentHeartbeat(store, "run-1", attempt=1, first_step=0, interval_s=60,
                               stop_flag=flag, max_cost=100.0, clock=lambda: clock["now"])
    beat.beat()
    assert not flag.is_set() and beat.cost == 0.0
    clock["now"] += 40.0  # $1/s: $40 spent, and 60 s of checkpoint + 5 s of exit would cross $100
    beat.beat()
    assert flag.request_made.reason == "budget" and beat.cost == pytest.approx(40.0)
