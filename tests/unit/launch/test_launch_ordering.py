"""--order expected: zones ranked by expected $ per useful hour from the ledger's history."""

from __future__ import annotations

import pytest

from vicuna_ops.errors import UserError
from vicuna_ops.launch.candidates import Candidate, _cap
from vicuna_ops.launch.ordering import (
    PRIOR_RATE,
    ZoneHistory,
    choose_order,
    expected_hourly,
    parse_order,
    rank_key,
    zone_history,
)


def seg(zone, hours, status="finished", spot=True, cloud="aws", kind="train"):
    return {"cloud": cloud, "zone": zone, "use_spot": spot, "kind": kind, "status": status,
            "start": 1000.0, "heartbeat": 1000.0 + hours * 3600}


def test_history_counts_preempted_and_lost_spot_train_segments_per_zone():
    history = zone_history([seg("a", 2, "preempted"), seg("a", 1, "lost"), seg("a", 3),
                            seg("b", 5), seg("b", 9, "preempted", spot=False),
                            seg("b", 9, "preempted", kind="serve-worker")])
    assert history[("aws", "a")] == ZoneHistory(6.0, 2)
    assert history[("aws", "b")] == ZoneHistory(5.0, 0)
    # smoothed: no history is the prior; lots of history is the observation
    assert ZoneHistory().rate == PRIOR_RATE
    assert ZoneHistory(1000, 500).rate == pytest.approx(0.5, rel=0.01)
    assert history[("aws", "a")].rate > PRIOR_RATE > history[("aws", "b")].rate


def test_a_cheap_zone_that_is_preempted_often_goes_behind_a_stable_one():
    cheap = Candidate("aws", "r1", "cheap", "p4d", 2.0, 20.0)
    stable = Candidate("aws", "r2", "stable", "p4d", 3.0, 20.0)
    history = {("aws", "cheap"): ZoneHistory(20, 20), ("aws", "stable"): ZoneHistory(50, 0)}
    ranked = sorted([cheap, stable], key=rank_key(history, checkpoint_hours=1.0,
                                                  restart_hours=0.25))
    assert [c.zone for c in ranked] == ["stable", "cheap"]
    assert expected_hourly(2.0, 1.0, 1.0, 0.25) == pytest.approx(2.0 * 1.75)
    # with frequent checkpoints and quick restarts the cheap zone wins again
    ranked = sorted([cheap, stable], key=rank_key(history, checkpoint_hours=0.01,
                                                  restart_hours=0.01))
    assert [c.zone for c in ranked] == ["cheap", "stable"]
    # _cap keeps the ranking it is given
    assert [c.zone for c in _cap([stable, cheap], cap=2, per_region=3)] == ["stable", "cheap"]


def test_the_default_order_is_expected_once_there_is_spot_history():
    assert choose_order(None, True, {}) == "price"
    assert choose_order(None, True, {("aws", "a"): ZoneHistory(1, 0)}) == "expected"
    assert choose_order("price", True, {("aws", "a"): ZoneHistory(1, 0)}) == "price"
    assert choose_order("expected", False, {}) == "price"  # on demand is never preempted
    assert parse_order(" Expected ") == "expected" and parse_order(None) is None
    with pytest.raises(UserError, match="--order 'cheap' is not one of price, expected"):
        parse_order("cheap")
