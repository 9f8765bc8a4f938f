"""The pure cost model: costs, savings, dedup, interruption losses, per-token figures."""

from __future__ import annotations

import pytest
from cost_helpers import HOUR, T0, seg

from vicuna_ops.cost.model import cost_at, cumulative_cost, merge_duplicates, run_cost


def test_segment_cost_is_hours_times_nodes_times_price(prices):
    run = run_cost("run-1", [seg("a", 0, 2.5, num_nodes=2)], prices)
    (row,) = run.segments
    assert row.hours == pytest.approx(2.5)
    assert row.cost == pytest.approx(2.5 * 2 * 2.4655)
    assert row.ondemand_cost == pytest.approx(2.5 * 2 * 21.957642)
    assert row.saving == pytest.approx(row.ondemand_cost - row.cost)
    assert run.cost == pytest.approx(row.cost)
    assert run.saving_pct == pytest.approx(100 * (21.957642 - 2.4655) / 21.957642)
    assert run.node_hours == pytest.approx(5.0)


def test_on_demand_segment_saves_nothing_and_is_priced_once(prices):
    run = run_cost("run-1", [seg("a", 0, 1, use_spot=False)], prices)
    assert run.cost == pytest.approx(21.957642)
    assert run.saving == pytest.approx(0.0)
    assert len(prices.calls) == 1  # the on-demand price is the price


def test_unpriced_zone_is_never_counted_as_zero(prices):
    records = [seg("a", 0, 1), seg("b", 1.5, 3, attempt=2, zone="us-east-1e", first_step=0)]
    run = run_cost("run-1", records, prices)
    priced, missing = run.segments
    assert missing.cost is None and missing.price_source == "unpriced"
    assert missing.notes and "no price" in missing.notes[0]
    assert run.cost is None and run.ondemand_cost is None and run.saving is None
    assert run.priced_cost == pytest.approx(priced.cost)
    assert run.unpriced_segments == 1
    assert run.cost_per_1m_trained_tokens is None


def test_local_segments_cost_zero_and_say_local(prices):
    run = run_cost("run-1", [seg("a", 0, 1, cloud="local", zone=None, instance_type=None)],
                   prices)
    assert run.cost == 0.0 and run.unpriced_segments == 0 and run.local_segments == 1
    assert run.segments[0].price_source == "local"
    assert prices.calls == []


def test_the_same_segment_read_twice_counts_once(prices):
    a = seg("a", 0, 2, tokens=1000)
    merged, notes = merge_duplicates([a, a.model_copy()])
    assert len(merged) == 1 and "read twice" in notes[0]
    assert run_cost("run-1", [a, a], prices).cost == pytest.approx(2 * 2.4655)


def test_two_versions_of_a_segment_keep_the_newest_state(prices):
    old = seg("a", 0, 1, status="running", steps=10, tokens=100)
    new = seg("a", 0, 3, status="preempted", steps=30, tokens=300)
    run = run_cost("run-1", [new, old], prices)
    (row,) = run.segments
    assert row.hours == pytest.approx(3) and row.status == "preempted" and row.tokens == 300


def test_overlapping_records_of_one_attempt_count_once(prices):
    # one attempt, two writers: 0-2h and 1-3h overlap -> the machines ran 0-3h, not 4h
    records = [seg("a", 0, 2, tokens=200), seg("b", 1, 3, tokens=300)]
    run = run_cost("run-1", records, prices)
    (row,) = run.segments
    assert row.hours == pytest.approx(3.0)
    assert row.cost == pytest.approx(3 * 2.4655)
    assert row.merged == ("b",) and row.tokens == 300
    assert any("overlap" in n for n in run.notes)


def test_non_overlapping_records_of_one_attempt_both_count(prices):
    run = run_cost("run-1", [seg("a", 0, 1), seg("b", 2, 3)], prices)
    assert len(run.segments) == 2 and run.cost == pytest.approx(2 * 2.4655)


def test_serving_workers_side_by_side_are_not_merged(prices):
    workers = [seg(f"w{i}", 0, 2, kind="serve-worker", tokens=1_000_000) for i in range(3)]
    run = run_cost("run-1", workers, prices)
    assert len(run.segments) == 3
    assert run.cost == pytest.approx(3 * 2 * 2.4655)
    assert run.generated_tokens == 3_000_000
    assert run.cost_per_1m_generated_tokens == pytest.approx(2 * 2.4655)
    assert run.train_cost is None and run.cost_per_1m_trained_tokens is None


def test_preemption_loss_is_redone_work_plus_the_gap(prices):
    # attempt 1: steps 1..100 in 2h on spot (50 steps/h), preempted; the last checkpoint was
    # step 80, so attempt 2 starts from it (trains 81..) after a 30 min gap -> 20 steps
    # redone = 0.4h
    first = seg("a1", 0, 2, status="preempted", first_step=0, steps=100, tokens=100_000,
                epoch=0.5)
    second = seg("a2", 2.5, 4.5, attempt=2, zone="us-east-1a", first_step=80, steps=180,
                 tokens=100_000, epoch=0.9)
    run = run_cost("run-1", [second, first], prices)
    interrupted, resumed = run.segments
    assert interrupted.redone_steps == 20
    assert interrupted.redone_hours == pytest.approx(0.4)
    assert interrupted.gap_hours == pytest.approx(0.5)
    assert interrupted.redone_cost == pytest.approx(0.4 * 2.4655)
    assert resumed.redone_steps is None and resumed.gap_hours is None
    assert run.preemptions == 1
    assert run.lost_hours == pytest.approx(0.9)
    assert run.lost_cost == pytest.approx(0.4 * 2.4655)
    # the 20 redone steps' tokens (20% of attempt 1's) are counted once
    assert run.trained_tokens == pytest.approx(200_000 - 20_000)
    train_cost = 2 * 2.4655 + 2 * 8.1915
    assert run.cost == pytest.approx(train_cost)
    assert run.cost_per_1m_trained_tokens == pytest.approx(train_cost * 1e6 / 180_000)
    assert run.epochs == pytest.approx(0.9)
    assert run.cost_per_epoch == pytest.approx(train_cost / 0.9)


def test_no_redone_work_when_the_checkpoint_was_the_last_step(prices):
    first = seg("a1", 0, 1, status="preempted", first_step=0, steps=50)
    second = seg("a2", 1, 2, attempt=2, first_step=50, steps=90)
    interrupted = run_cost("run-1", [first, second], prices).segments[0]
    assert interrupted.redone_steps == 0 and interrupted.redone_hours == 0.0
    assert interrupted.gap_hours == pytest.approx(0.0)


def test_unknown_first_step_leaves_redone_work_unknown_but_keeps_the_gap(prices):
    first = seg("a1", 0, 1, status="preempted", first_step=None, steps=50)
    second = seg("a2", 2, 3, attempt=2, first_step=40, steps=90)
    interrupted = run_cost("run-1", [first, second], prices).segments[0]
    assert interrupted.redone_steps is None and interrupted.gap_hours == pytest.approx(1.0)


def test_a_finished_or_budget_stopped_attempt_loses_nothing(prices):
    first = seg("a1", 0, 1, status="budget-stopped", first_step=0, steps=50)
    second = seg("a2", 5, 6, attempt=2, first_step=40, steps=90)
    run = run_cost("run-1", [first, second], prices)
    assert run.lost_hours == 0.0 and run.segments[0].redone_steps is None


def test_budget_stopped_last_attempt_sets_the_run_status(prices):
    records = [seg("a1", 0, 1, status="preempted", first_step=0, steps=10),
               seg("a2", 1, 2, attempt=2, status="budget-stopped", first_step=10, steps=20)]
    assert run_cost("run-1", records, prices, status="running").status == "budget-stopped"
    assert run_cost("run-1", records[:1], prices, status="running").status == "running"


def test_heartbeat_before_start_counts_zero_hours(prices):
    run = run_cost("run-1", [seg("a", 2, 1)], prices)
    assert run.cost == 0.0 and "heartbeat before start" in run.segments[0].notes[0]


def test_cumulative_cost_adds_segments_running_side_by_side(prices):
    rows = run_cost("run-1", [seg("w1", 0, 2, kind="serve-worker"),
                              seg("w2", 1, 3, kind="serve-worker")], prices).segments
    points = cumulative_cost(rows)
    assert [round((p.t - T0) / HOUR, 6) for p in points] == [0, 1, 2, 3]
    assert [round(p.cost, 6) for p in points] == [round(x * 2.4655, 6) for x in (0, 1, 3, 4)]
    assert points[-1].ondemand == pytest.approx(4 * 21.957642)
    assert cost_at(points, T0 + 1.5 * HOUR) == pytest.approx(2 * 2.4655)


def test_to_dict_is_json_ready(prices):
    import json

    run = run_cost("run-1", [seg("a", 0, 1, zone="nowhere")], prices)
    data = json.loads(json.dumps(run.to_dict()))
    assert data["cost"] is None and data["segments"][0]["cost"] is None
    assert data["unpriced_segments"] == 1


def test_cumulative_cost_matches_a_brute_force_integral(prices):
    import random

    rng = random.Random(7)
    records = []
    for i in range(40):
        start = rng.uniform(0, 20)
        end = start + rng.choice([0.0, rng.uniform(0.1, 6)])
        records.append(seg(f"w{i}", start, end, kind="serve-worker",
                           zone=rng.choice(["us-east-1d", "us-east-1a", "nowhere"])))
    rows = run_cost("run-1", records, prices).segments
    for point in cumulative_cost(rows):
        expected = sum((r.cost or 0.0) * (1.0 if point.t >= r.end else 0.0 if point.t <= r.start
                                          else (point.t - r.start) / (r.end - r.start))
                       for r in rows)
        assert point.cost == pytest.approx(expected, abs=1e-9)
    total = sum(r.cost or 0.0 for r in rows)
    assert cumulative_cost(rows)[-1].cost == pytest.approx(total)
