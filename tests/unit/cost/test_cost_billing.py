"""Billed time: one definition of steps for writer and model, start-up split, and SkyPilot's
job times widening the attempts."""

from __future__ import annotations

import pytest
from cost_helpers import HOUR, T0, seg

from vicuna_ops.cost.billing import with_job_times
from vicuna_ops.cost.model import run_cost
from vicuna_ops.segments import redone_steps, steps_trained


def test_a_resume_from_the_last_step_redoes_nothing():
    # what the trainer writes: attempt 1 stopped with a checkpoint at step 10 (its last),
    # attempt 2 started from that checkpoint and trained 11..150
    first = seg("a1", 0, 1, status="preempted", first_step=0, steps=10)
    second = seg("a2", 1.2, 2, attempt=2, first_step=10, steps=150)
    assert steps_trained(first) == 10 and steps_trained(second) == 140
    assert redone_steps(first, second) == 0
    # a fallback to the checkpoint at 8 repeats steps 9 and 10
    assert redone_steps(first, seg("a2", 1.2, 2, attempt=2, first_step=8, steps=150)) == 2
    # a resume from before this attempt's own start only repeats what this attempt ran
    later = seg("a3", 2, 3, attempt=3, first_step=150, steps=170, status="preempted")
    assert redone_steps(later, seg("a4", 3, 4, attempt=4, first_step=120, steps=200)) == 20
    assert redone_steps(seg("x", 0, 1, first_step=None, steps=5), second) is None


def test_tokens_are_not_reduced_by_a_redone_step_that_never_happened(prices):
    first = seg("a1", 0, 1, status="preempted", first_step=0, steps=10, tokens=18_000)
    second = seg("a2", 1.2, 2, attempt=2, first_step=10, steps=150, tokens=253_828)
    run = run_cost("run-1", [first, second], prices)
    assert run.segments[0].redone_steps == 0 and run.trained_tokens == 271_828


def test_an_attempt_splits_into_start_up_training_and_redone_work(prices):
    # node up at 0, first step at 0.25h, preempted at 2h after step 100; the next attempt
    # resumed from the checkpoint at step 80: 20 of 100 steps in 1.75h of training redone
    first = seg("a1", 0, 2, status="preempted", first_step=0, steps=100,
                train_start=T0 + 0.25 * HOUR)
    second = seg("a2", 2.5, 4, attempt=2, first_step=80, steps=200,
                 train_start=T0 + 2.75 * HOUR)
    run = run_cost("run-1", [first, second], prices)
    a1, a2 = run.segments
    assert a1.startup_hours == pytest.approx(0.25) and a2.startup_hours == pytest.approx(0.25)
    assert a1.redone_hours == pytest.approx(20 * 1.75 / 100)
    assert a1.training_hours == pytest.approx(2 - 0.25 - 0.35)
    assert a1.startup_cost == pytest.approx(0.25 * 2.4655)
    assert run.startup_hours + run.training_hours + run.redone_hours == pytest.approx(
        run.node_hours)
    assert run.startup_cost == pytest.approx(0.5 * 2.4655)
    data = a1.to_dict()
    assert data["training_hours"] == pytest.approx(1.4) and data["startup_hours"] == 0.25


def test_an_attempt_that_never_trained_is_all_start_up(prices):
    stopped = seg("a1", 0, 0.1, status="budget-stopped", first_step=40, steps=40)
    row = run_cost("run-1", [stopped], prices).segments[0]
    assert row.startup_hours == pytest.approx(0.1) and row.training_hours == 0.0
    # an old record (no train_start) that trained: its start-up is unknown, not zero-cost
    assert run_cost("run-1", [seg("a", 0, 1, first_step=0, steps=5)], prices
                    ).segments[0].startup_hours is None


def test_skypilot_launch_and_recovery_times_move_starts_back():
    first = seg("a1", 0.1, 1, status="preempted", first_step=0, steps=10)
    second = seg("a2", 1.5, 2, attempt=2, first_step=10, steps=20)
    jobs = {"7": {"start_at": T0, "last_recovered_at": T0 + 1.3 * HOUR,
                  "end_at": T0 + 2.05 * HOUR, "status": "SUCCEEDED"}}
    a1, a2 = with_job_times([first, second], jobs)
    assert (a1.start, a1.start_source) == (T0, "skypilot")
    assert a2.start == pytest.approx(T0 + 1.3 * HOUR)
    assert a2.heartbeat == pytest.approx(T0 + 2.05 * HOUR)  # billed until the job ended
    assert a1.heartbeat == first.heartbeat  # a preempted attempt ends at its last beat


def test_job_times_never_overlap_an_attempt_or_reach_far_back():
    first = seg("a1", 0, 1, status="preempted", first_step=0, steps=10)
    second = seg("a2", 1.5, 2, attempt=2, first_step=10, steps=20, status="preempted")
    jobs = {"7": {"start_at": T0 + 0.5 * HOUR,  # inside attempt 1: already billed
                  "last_recovered_at": T0 + 0.9 * HOUR,  # inside too
                  "end_at": T0 + 2.5 * HOUR}}
    assert with_job_times([first, second], jobs) == [first, second]
    late = seg("a2", 3, 4, attempt=2, first_step=10, steps=20)
    moved = with_job_times([first, late], {"7": {"last_recovered_at": T0 + 0.99 * HOUR}})
    assert moved[1].start == late.start  # 2h before it: an attempt that left no record
    clamp = with_job_times([first, seg("a2", 1.5, 2, attempt=2)],
                           {"7": {"last_recovered_at": T0 + 1.2 * HOUR, "end_at": 0}})
    assert clamp[1].start == pytest.approx(T0 + 1.2 * HOUR)
    assert with_job_times([first], {}) == [first]
