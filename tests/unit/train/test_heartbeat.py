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


class FakeCost:
    def __init__(self, value):
        self.value, self.calls = value, []

    def __call__(self, records: list[SegmentRecord]):
        self.calls.append(records)
        return self.value


def test_budget_reached_raises_the_stop_flag(store, monkeypatch):
    cost = FakeCost(12.5)
    monkeypatch.setattr(hb, "load_cost_function", lambda _store, _log: cost)
    old = SegmentRecord(run_id="run-1", segment_id="train-001-aaaaaa", start=0, heartbeat=3600)
    flag, logs = StopFlag(), []
    beat = hb.SegmentHeartbeat(store, "run-1", attempt=2, first_step=0, interval_s=60,
                               earlier=[old], stop_flag=flag, max_cost=10.0, log=logs.append)
    beat.beat()
    assert flag.request_made.reason == "budget" and "$12.50" in flag.request_made.source
    # it priced the earlier attempt and itself, each once
    assert [r.segment_id for r in cost.calls[0]] == ["train-001-aaaaaa", beat.record.segment_id]


def test_unpriced_run_is_logged_once_and_never_stops(store, monkeypatch):
    monkeypatch.setattr(hb, "load_cost_function", lambda _store, _log: FakeCost(None))
    flag, logs = StopFlag(), []
    beat = hb.SegmentHeartbeat(store, "run-1", attempt=1, first_step=0, interval_s=60,
                               stop_flag=flag, max_cost=1.0, log=logs.append)
    beat.beat()
    beat.beat()
    assert not flag.is_set()
    assert len([line for line in logs if "no known price" in line]) == 1


def test_price_table_from_the_bucket_prices_the_node(store, monkeypatch):
    pytest.importorskip("vicuna_ops.cost.budget")
    store.put_bytes("prices.json", json.dumps({"version": 1, "prices": [
        {"cloud": "aws", "region": "us-east-1", "zone": "us-east-1a",
         "instance_type": "p4d.24xlarge", "spot": True, "price_per_hour": 3600.0}]}).encode())
    monkeypatch.setenv("SKYPILOT_CLUSTER_INFO", json.dumps(
        {"cloud": "aws", "region": "us-east-1", "zone": "us-east-1a"}))
    monkeypatch.setenv("VOPS_INSTANCE_TYPE", "p4d.24xlarge")
    monkeypatch.setenv("VOPS_USE_SPOT", "true")
    clock = {"now": 1000.0}
    flag = StopFlag()
    beat = hb.SegmentHeartbeat(store, "run-1", attempt=1, first_step=0, interval_s=60,
                               stop_flag=flag, max_cost=5.0, clock=lambda: clock["now"])
    beat.beat()
    assert not flag.is_set() and beat.cost == 0.0
    clock["now"] += 6.0  # $1/s: six seconds is $6 > $5
    beat.beat()
    assert flag.request_made.reason == "budget" and beat.cost == pytest.approx(6.0)
