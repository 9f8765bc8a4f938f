"""The ledger: a SQLite (WAL) record of runs, their segments and events, under VOPS_HOME.

Several vops processes write at once (a launch, a ``cost sync``, a local training run), so
every write is its own short ``BEGIN IMMEDIATE`` transaction with a generous busy timeout.
The schema is versioned through ``PRAGMA user_version``; ``MIGRATIONS[i]`` moves version i
to i+1 and runs once, inside the same exclusive transaction that checks the version.

A dead run never reads as ``running``: every reader (``vops runs``, ``status``, ``cost``) gets
rows through ``settle_run`` / ``settle_segment``, without a sync:

    local run 'running' whose ``vops`` process (host + pid in its data) is gone -> 'lost'
    segment 'running' whose heartbeats stopped (``segments.settle``)           -> 'lost', ended
                                                                                  at its last
                                                                                  heartbeat
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from vicuna_ops.config import vops_home
from vicuna_ops.errors import UserError, VopsError
from vicuna_ops.lifeline import process_alive

MIGRATIONS: list[str] = [
    # v1: runs, segments, events
    """
    CREATE TABLE runs (
        run_id      TEXT PRIMARY KEY,
        kind        TEXT NOT NULL,             -- train | serve
        status      TEXT NOT NULL,
        created_at  REAL NOT NULL,
        updated_at  REAL NOT NULL,
        bucket      TEXT,
        task_yaml   TEXT,
        job_ids     TEXT NOT NULL DEFAULT '[]',  -- SkyPilot managed job ids (JSON list)
        data        TEXT NOT NULL DEFAULT '{}'   -- resources, candidates, prices, recipe (JSON)
    );
    CREATE TABLE segments (
        run_id      TEXT NOT NULL REFERENCES runs(run_id),
        segment_id  TEXT NOT NULL,
        start       REAL,
        end         REAL,
        data        TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (run_id, segment_id)
    );
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id      TEXT NOT NULL,
        ts          REAL NOT NULL,
        kind        TEXT NOT NULL,
        data        TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_by_run ON events(run_id, ts);
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
_JSON_COLUMNS = ("job_ids", "data")


class Ledger:
    """Open with ``Ledger()`` (``$VOPS_HOME/ledger.db``) or ``Ledger(path)``."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else vops_home() / "ledger.db"
        self._conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA busy_timeout = 60000")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL
        self._migrate()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock up front, so two writers never deadlock upgrading.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _migrate(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise VopsError(f"{self.path} has schema v{version}, newer than this vops "
                            f"(v{SCHEMA_VERSION})", hint="upgrade vicuna-ops")
        with self._write() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # re-read under lock
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {step + 1}")

    # ---------------------------------------------------------------- runs
    def add_run(self, run_id: str, kind: str, status: str, *, bucket: str | None = None,
                task_yaml: str | None = None, job_ids: list[int] | None = None,
                data: dict[str, Any] | None = None) -> None:
        now = time.time()
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                raise UserError(f"run {run_id!r} already exists",
                                hint="pick another --name, or see `vops runs`")
            conn.execute(
                "INSERT INTO runs (run_id, kind, status, created_at, updated_at, bucket,"
                " task_yaml, job_ids, data) VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, kind, status, now, now, bucket, task_yaml,
                 json.dumps(job_ids or []), json.dumps(data or {})),
            )

    def update_run(self, run_id: str, *, status: str | None = None,
                   task_yaml: str | None = None, job_ids: list[int] | None = None,
                   data: dict[str, Any] | None = None) -> None:
        """Set the given fields; ``data`` is merged into the stored dict, not replaced."""
        with self._write() as conn:
            row = conn.execute("SELECT data FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise _unknown_run(run_id)
            merged = {**json.loads(row["data"]), **(data or {})}
            conn.execute(
                "UPDATE runs SET status = COALESCE(?, status), task_yaml = COALESCE(?, task_yaml),"
                " job_ids = COALESCE(?, job_ids), data = ?, updated_at = ? WHERE run_id = ?",
                (status, task_yaml, json.dumps(job_ids) if job_ids is not None else None,
                 json.dumps(merged), time.time(), run_id),
            )

    def has_run(self, run_id: str) -> bool:
        return self._conn.execute("SELECT 1 FROM runs WHERE run_id = ?",
                                  (run_id,)).fetchone() is not None

    def get_run(self, run_id: str) -> dict[str, Any]:
        row = self._conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise _unknown_run(run_id)
        return settle_run(_decode(row))

    def list_runs(self, kind: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM runs WHERE 1=1", []
        if kind:
            query += " AND kind = ?"
            args.append(kind)
        if since is not None:
            query += " AND created_at >= ?"
            args.append(since)
        rows = self._conn.execute(query + " ORDER BY created_at", args).fetchall()
        return [settle_run(_decode(row)) for row in rows]

    # ---------------------------------------------------------------- segments
    def upsert_segment(self, run_id: str, segment_id: str, start: float | None,
                       end: float | None, data: dict[str, Any]) -> bool:
        """Insert or replace one segment; True when the stored row changed."""
        encoded = json.dumps(data, sort_keys=True)
        with self._write() as conn:
            old = conn.execute("SELECT start, end, data FROM segments WHERE run_id = ? AND"
                               " segment_id = ?", (run_id, segment_id)).fetchone()
            if old is not None and (old["start"], old["end"], old["data"]) == (start, end, encoded):
                return False
            conn.execute("INSERT OR REPLACE INTO segments (run_id, segment_id, start, end, data)"
                         " VALUES (?,?,?,?,?)", (run_id, segment_id, start, end, encoded))
            return True

    def segments(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT * FROM segments WHERE run_id = ? ORDER BY start,"
                                  " segment_id", (run_id,)).fetchall()
        now = time.time()
        return [settle_segment(_decode(row), now) for row in rows]

    # ---------------------------------------------------------------- events
    def add_event(self, run_id: str, kind: str, data: dict[str, Any] | None = None) -> None:
        with self._write() as conn:
            conn.execute("INSERT INTO events (run_id, ts, kind, data) VALUES (?,?,?,?)",
                         (run_id, time.time(), kind, json.dumps(data or {})))

    def events(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT * FROM events WHERE run_id = ? ORDER BY id",
                                  (run_id,)).fetchall()
        return [_decode(row) for row in rows]


def settle_run(row: dict[str, Any]) -> dict[str, Any]:
    """A local run recorded as running whose ``vops`` process is gone reads as 'lost'."""
    data = row.get("data") or {}
    if (row.get("status") == "running" and data.get("local") and isinstance(data.get("pid"), int)
            and data.get("host") == socket.gethostname() and not process_alive(data["pid"])):
        return {**row, "status": "lost"}
    return row


def settle_segment(row: dict[str, Any], now: float) -> dict[str, Any]:
    """A running segment whose heartbeats stopped reads as 'lost', ended at its last one."""
    from vicuna_ops.segments import SegmentRecord, settle

    data = row.get("data") or {}
    if data.get("status") != "running":
        return row
    try:
        record = SegmentRecord.model_validate(data)
    except ValueError:
        return row  # the cost report names a corrupt record
    settled = settle(record, now)
    if settled.status == "running":
        return row
    return {**row, "end": settled.heartbeat, "data": {**data, "status": settled.status}}




def _decode(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for column in _JSON_COLUMNS:
        if column in out:
            out[column] = json.loads(out[column])
    return out


def _unknown_run(run_id: str) -> UserError:
    return UserError(f"unknown run {run_id!r}", hint="`vops runs` lists the runs this machine knows")
