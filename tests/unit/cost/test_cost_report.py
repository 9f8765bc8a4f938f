"""Rendering: JSON, CSV and the Rich tables never show an unpriced cost as $0."""

from __future__ import annotations

import csv
import io
import json

import pytest
from cost_helpers import HOUR, T0, seg
from rich.console import Console

from vicuna_ops.cli.cost import parse_since
from vicuna_ops.cost.model import run_cost
from vicuna_ops.cost.report import render, to_csv, to_json
from vicuna_ops.errors import UserError


@pytest.fixture
def runs(prices):
    priced = run_cost("run-1", [
        seg("a1", 0, 2, status="preempted", first_step=0, steps=100, tokens=50_000,
            train_start=T0 + 0.5 * HOUR),
        seg("a2", 2.5, 3, attempt=2, first_step=80, steps=120, tokens=20_000, epoch=1.0),
    ], prices, status="succeeded")
    partial = run_cost("run-2", [seg("b", 0, 1, run_id="run-2", zone="us-east-1e")], prices,
                       status="running")
    return [priced, partial]


def test_json_has_runs_segments_and_problems(runs):
    data = json.loads(json.dumps(to_json(runs, ["one problem"])))
    assert [r["run_id"] for r in data["runs"]] == ["run-1", "run-2"]
    assert data["runs"][0]["cost"] == pytest.approx(2.5 * 2.4655, abs=1e-6)
    assert data["runs"][0]["segments"][0]["redone_steps"] == 20
    assert data["runs"][1]["cost"] is None and data["runs"][1]["unpriced_segments"] == 1
    assert data["problems"] == ["one problem"]


def test_csv_has_a_row_per_segment_and_a_total_per_run(runs):
    rows = list(csv.DictReader(io.StringIO(to_csv(runs))))
    assert [(r["run_id"], r["row"]) for r in rows] == [
        ("run-1", "segment"), ("run-1", "segment"), ("run-1", "total"),
        ("run-2", "segment"), ("run-2", "total")]
    assert float(rows[2]["cost"]) == pytest.approx(2.5 * 2.4655, abs=1e-6)
    assert rows[3]["cost"] == "" and rows[3]["price_source"] == "unpriced"  # not "0"
    assert rows[4]["cost"] == ""
    assert rows[0]["start"].startswith("2023-11-14T22:13:20")
    assert float(rows[0]["startup_hours"]) == 0.5 and float(rows[0]["training_hours"]) == 1.2


def test_table_says_unpriced_and_lower_bound(runs):
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(render(runs))
    text = console.export_text()
    assert "unpriced" in text and ">= $0.00" in text
    assert "$6.16" in text  # 2.5h x 2.4655
    assert "20 steps redone" in text.replace("\n", " ")
    # attempt 1: 30 min of start-up, 1.5h of which 20 of 100 steps (18 min) were redone
    assert "start-up 30m, training 1.20h, redone 18m" in text
    assert "start-up 30m ($1.23), training" in text.replace("\n", " ")
    assert "all runs" in text  # the totals table for several runs


def test_parse_since():
    assert parse_since("2024-05-01") == 1714521600.0
    assert parse_since("2024-05-01T12:00+02:00") == 1714557600.0
    assert parse_since("2d", now=1_000_000.0) == 1_000_000.0 - 2 * 86400
    with pytest.raises(UserError, match="not a date"):
        parse_since("last tuesday")
