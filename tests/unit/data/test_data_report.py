"""The report's arithmetic and its listing limits."""

from __future__ import annotations

import json

import pytest

from vicuna_ops.data import report as report_module
from vicuna_ops.data.reader import ReadStats, Where
from vicuna_ops.data.report import REASONS, Report


def make(records: int) -> Report:
    result = Report(output="file:///out", settings={})
    result.inputs.append(ReadStats("file:///in.jsonl", records=records))
    return result


def test_counts_add_up_and_every_reason_is_present():
    report = make(4)
    report.record_kept("train", [10, 30], {"conversations_split": 1})
    report.record_kept("eval", [5], None)
    report.record_left_out("too_short", Where("s", 3, 2), "x", None)
    report.record_left_out("malformed", Where("s", 4, 3), None, "not valid JSON")
    data = report.to_dict()
    assert data["balanced"] and report.balanced
    assert data["records_in"] == 4 == data["kept"] + sum(data["left_out"].values())
    assert list(data["left_out"]) == list(REASONS)
    assert data["splits"]["train"] == {"conversations": 1, "segments": 2, "tokens": 40,
                                       "max_tokens": 30}
    assert data["problems"] == [{"source": "s", "line": 4, "item": 3, "reason": "malformed",
                                 "detail": "not valid JSON", "id": None}]
    assert data["examples"] == {"too_short": ["x (s:3 (item 2))"]}
    json.dumps(data)  # serialisable as is


def test_unbalanced_when_the_reader_saw_more_records_than_were_counted():
    report = make(2)
    report.record_kept("train", [1], None)
    assert not report.balanced


def test_unknown_reason_is_a_bug():
    with pytest.raises(ValueError):
        make(1).record_left_out("bad_vibes", Where("s", 1, 0), None, None)


def test_problem_listing_is_capped_but_counted(monkeypatch):
    monkeypatch.setattr(report_module, "MAX_LISTED", 2)
    report = make(5)
    for i in range(5):
        report.record_left_out("malformed", Where("s", i + 1, i), None, "x")
    assert len(report.problems) == 2 and report.problems_not_listed == 3
    assert report.left_out["malformed"] == 5 and report.balanced
    assert any("3 more" in warning for warning in report.warnings)


def test_examples_are_capped_per_reason():
    report = make(20)
    for i in range(20):
        report.record_left_out("duplicate_id", Where("s", i, i), f"id{i}", None)
    assert len(report.examples["duplicate_id"]) == report_module.EXAMPLES_PER_REASON
