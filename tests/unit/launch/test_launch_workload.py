"""The plan's hours come from the work: tokens over throughput, each with its source."""

from __future__ import annotations

import json

import pytest

from vicuna_ops.launch.accelerators import parse_gpus
from vicuna_ops.launch.workload import (
    ASSUMED_TOKENS_PER_S,
    TOKENS_PER_CONVERSATION,
    measured_segments,
    read_data_report,
    workload,
)
from vicuna_ops.ledger import Ledger
from vicuna_ops.recipe import load_recipe

A100 = parse_gpus("A100:8")


def report(train_tokens: int) -> dict:
    return {"splits": {"train": {"conversations": 10, "segments": 12, "tokens": train_tokens,
                                 "max_tokens": 2048}}}


def test_without_a_report_the_recipes_conversations_size_the_work():
    recipe = load_recipe("vicuna-7b")
    work = workload(recipe, A100, 1)
    tokens = recipe.data.expected_conversations * TOKENS_PER_CONVERSATION * recipe.train.epochs
    rate = ASSUMED_TOKENS_PER_S["A100"] * 7.0 / recipe.model.params_b
    assert work.tokens == tokens
    assert work.hours == pytest.approx(tokens / (rate * 8) / 3600)
    assert "assumed" in work.describe() and "70,000 conversations" in work.describe()
    # twice the nodes, half the hours; a bigger model, more hours
    assert workload(recipe, A100, 2).hours == pytest.approx(work.hours / 2)
    assert workload(load_recipe("vicuna-13b"), A100, 1).hours > work.hours


def test_the_data_report_wins_and_max_steps_shrinks_it():
    recipe = load_recipe("vicuna-7b")
    work = workload(recipe, A100, 1, report=report(50_000_000))
    assert work.tokens == 50_000_000 * recipe.train.epochs
    assert "report.json" in work.tokens_source
    small = workload(recipe, A100, 1, max_steps=10, report=report(50_000_000))
    assert small.tokens == 10 * recipe.train.global_batch_size * recipe.data.max_length
    assert small.hours == pytest.approx(work.hours * small.tokens / work.tokens) and "10 steps" in small.tokens_source
    # max_steps beyond the data's size does not grow the work
    assert workload(recipe, A100, 1, max_steps=10**9, report=report(1000)).tokens == 3000


def test_measured_segments_replace_the_assumed_rate():
    recipe = load_recipe("vicuna-7b")
    seg = {"accelerators": "A100:8", "num_nodes": 1, "start": 0.0, "heartbeat": 3600.0,
           "tokens": 8 * 3600 * 1000}  # 1,000 tokens/s per GPU
    work = workload(recipe, A100, 1, measured=[seg, {"accelerators": "H100:8", "start": 0,
                                                     "heartbeat": 10, "tokens": 10**9}])
    assert work.tokens_per_s_per_gpu == pytest.approx(1000)
    assert "measured" in work.rate_source


def test_unsized_work_falls_back_to_expected_hours():
    recipe = load_recipe("tiny")  # no params_b, no conversation count
    work = workload(recipe, parse_gpus("A100:1"), 1)
    assert work.tokens is None and work.hours == pytest.approx(
        recipe.resources.expected_hours * int(recipe.resources.gpus.split(":")[1]))


def test_report_is_read_beside_the_data_and_a_missing_one_is_none(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(report(1234)))
    data = tmp_path / "train.jsonl"
    assert read_data_report(str(data))["splits"]["train"]["tokens"] == 1234
    assert read_data_report(str(tmp_path / "elsewhere" / "train.jsonl")) is None
    assert read_data_report("builtin:tiny") is None and read_data_report(None) is None


def test_measured_segments_come_from_earlier_runs_of_the_same_recipe():
    with Ledger() as ledger:
        ledger.add_run("r1", "train", "succeeded", data={"recipe": "vicuna-7b"})
        ledger.upsert_segment("r1", "s1", 0, 10, {"accelerators": "A100:8", "tokens": 5})
        ledger.upsert_segment("r1", "s2", 0, 10, {"accelerators": "L4:1", "tokens": 5})
        ledger.add_run("r2", "train", "succeeded", data={"recipe": "vicuna-13b"})
        ledger.upsert_segment("r2", "s1", 0, 10, {"accelerators": "A100:8", "tokens": 7})
    found = measured_segments("vicuna-7b", "A100")
    assert [s["tokens"] for s in found] == [5]


def test_longer_sequences_train_fewer_tokens_per_second_and_v15_counts_its_own_tokens():
    from vicuna_ops.launch.workload import context_factor

    assert context_factor(6.7, 2048) == pytest.approx(1.0)
    assert 0.85 < context_factor(6.7, 4096) < 0.95 and 0.55 < context_factor(6.7, 16384) < 0.75
    assert context_factor(13.0, 16384) > context_factor(6.7, 16384)  # bigger model, smaller share
    v1, v15 = load_recipe("vicuna-7b"), load_recipe("vicuna-7b-v1.5")
    assert workload(v15, A100, 1).tokens_per_s_per_gpu < workload(v1, A100, 1).tokens_per_s_per_gpu
    long = workload(load_recipe("vicuna-7b-v1.5-16k"), A100, 1)
    assert long.tokens == 125_000 * 3000 * 3 and "16,384-token" in long.rate_source
