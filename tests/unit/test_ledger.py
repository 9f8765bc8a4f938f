"""The ledger: schema migrations, run/segment/event round trips, and many writers at once."""

from __future__ import annotations

import multiprocessing
import sqlite3

import pytest

from vicuna_ops.errors import UserError, VopsError
from vicuna_ops.ledger import MIGRATIONS, SCHEMA_VERSION, Ledger


def test_new_ledger_is_wal_and_at_latest_schema(tmp_path):
    with Ledger(tmp_path / "l.db") as ledger:
        assert ledger._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert ledger._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_migrations_run_once_and_upgrade_an_old_file(tmp_path, monkeypatch):
    path = tmp_path / "l.db"
    Ledger(path).close()
    # A later release adds a column: reopening applies exactly the new step.
    monkeypatch.setattr("vicuna_ops.ledger.MIGRATIONS", [*MIGRATIONS,
                        "ALTER TABLE runs ADD COLUMN note TEXT"])
    monkeypatch.setattr("vicuna_ops.ledger.SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with Ledger(path) as ledger:
        ledger.add_run("r1", "train", "launched")
        assert "note" in ledger.get_run("r1")
    with Ledger(path) as ledger:  # idempotent: no "duplicate column" on a second open
        assert ledger._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "l.db"
    Ledger(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    conn.close()
    with pytest.raises(VopsError, match="newer than this vops"):
        Ledger(path)


def test_run_round_trip_and_merge(tmp_path):
    with Ledger(tmp_path / "l.db") as ledger:
        ledger.add_run("r1", "train", "launched", bucket="s3://b/runs", job_ids=[7],
                       data={"recipe": "tiny", "candidates": [{"zone": "us-east-1a"}]})
        ledger.update_run("r1", status="running", data={"recovery_count": 1})
        run = ledger.get_run("r1")
        assert run["status"] == "running"
        assert run["job_ids"] == [7]
        assert run["data"] == {"recipe": "tiny", "candidates": [{"zone": "us-east-1a"}],
                               "recovery_count": 1}
        assert [r["run_id"] for r in ledger.list_runs(kind="train")] == ["r1"]
        assert ledger.list_runs(kind="serve") == []


def test_unknown_and_duplicate_runs_are_user_errors(tmp_path):
    with Ledger(tmp_path / "l.db") as ledger:
        with pytest.raises(UserError, match="unknown run 'nope'") as info:
            ledger.get_run("nope")
        assert "vops runs" in info.value.hint
        ledger.add_run("r1", "train", "launched")
        with pytest.raises(UserError, match="already exists"):
            ledger.add_run("r1", "train", "launched")
        with pytest.raises(UserError):
            ledger.update_run("nope", status="x")


def test_segment_upsert_reports_changes_only(tmp_path):
    with Ledger(tmp_path / "l.db") as ledger:
        ledger.add_run("r1", "train", "launched")
        assert ledger.upsert_segment("r1", "train-1", 10.0, 20.0, {"zone": "a"}) is True
        assert ledger.upsert_segment("r1", "train-1", 10.0, 20.0, {"zone": "a"}) is False
        assert ledger.upsert_segment("r1", "train-1", 10.0, 30.0, {"zone": "a"}) is True
        assert [(s["segment_id"], s["end"]) for s in ledger.segments("r1")] == [("train-1", 30.0)]


def _write_many(path: str, worker: int, count: int) -> None:
    with Ledger(path) as ledger:
        for index in range(count):
            ledger.add_event(f"run-{worker}", "tick", {"i": index})


def test_eight_processes_times_200_writes_lose_nothing(tmp_path):
    path = str(tmp_path / "l.db")
    Ledger(path).close()
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_write_many, args=(path, w, 200)) for w in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(120)
        assert proc.exitcode == 0
    with Ledger(path) as ledger:
        for worker in range(8):
            ticks = [e["data"]["i"] for e in ledger.events(f"run-{worker}")]
            assert ticks == list(range(200))
