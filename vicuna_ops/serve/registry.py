"""The controller's registry of workers: in memory for routing, persisted in SQLite (WAL).

FastChat's controller keeps its workers in a dict, so a restarted controller knows nobody
until each worker's next heartbeat finds it has been forgotten. Here every register,
heartbeat and drain is written through to SQLite; a restarted controller reloads the table
and routes to the known workers at once. It gives each reloaded worker a fresh expiry
window (the controller, not the worker, was away), and a worker that died meanwhile is
dropped after the usual missed heartbeats, or at once when a request finds its port closed.

Liveness uses the monotonic clock (a wall-clock jump must not drop every worker); the
persisted ``last_heartbeat`` column is wall-clock time, for people reading the table.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vicuna_ops.errors import ServeError
from vicuna_ops.serve.protocol import WorkerInfo

WorkerStateName = Literal["live", "draining"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workers (
    worker_id       TEXT PRIMARY KEY,
    url             TEXT NOT NULL,
    models          TEXT NOT NULL,      -- JSON list
    context_length  INTEGER,
    max_concurrency INTEGER NOT NULL,
    identity        TEXT NOT NULL,      -- JSON object: cloud, region, zone, ...
    state           TEXT NOT NULL,      -- live | draining
    registered_at   REAL NOT NULL,
    last_heartbeat  REAL NOT NULL
);
-- every model a worker ever registered with: asked for while no worker serves it, it is a
-- 503 (come back shortly), not a 404 (no such model)
CREATE TABLE IF NOT EXISTS known_models (
    name            TEXT PRIMARY KEY,
    first_seen      REAL NOT NULL
);
"""


@dataclass(eq=False)
class Worker:
    """One worker as the controller sees it. ``in_flight`` is the controller's own count."""

    worker_id: str
    url: str
    models: frozenset[str]
    max_concurrency: int
    context_length: int | None = None
    identity: dict = field(default_factory=dict)
    state: WorkerStateName = "live"
    registered_at: float = 0.0
    last_seen: float = 0.0  # monotonic
    reported_in_flight: int = 0  # what the worker says, for /metrics and status
    in_flight: int = 0  # requests the controller has sent and not finished
    down_until: float = 0.0  # monotonic; after a connection failure, skip it until then

    @property
    def load(self) -> float:
        return self.in_flight / self.max_concurrency

    def as_dict(self, now: float) -> dict:
        return {"worker_id": self.worker_id, "url": self.url, "models": sorted(self.models),
                "state": self.state, "in_flight": self.in_flight,
                "reported_in_flight": self.reported_in_flight,
                "max_concurrency": self.max_concurrency, "context_length": self.context_length,
                "seconds_since_heartbeat": round(now - self.last_seen, 3),
                "suspect": self.down_until > now, "identity": self.identity}


class Registry:
    """Workers by id; every change is written to ``path`` before it is visible."""

    def __init__(self, path: str | Path, *, heartbeat_interval: float,
                 clock=time.monotonic) -> None:
        self.path = Path(path)
        self.heartbeat_interval = heartbeat_interval
        # dropped once this long without a heartbeat; the reaper runs every interval / 4,
        # so a dead worker is gone within 3 intervals of its last heartbeat
        self.expiry = 2.5 * heartbeat_interval
        self._clock = clock
        self._workers: dict[str, Worker] = {}
        self._known: set[str] = set()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(_SCHEMA)
            self._load()
        except (sqlite3.Error, OSError) as exc:
            raise ServeError(f"cannot open the worker registry {self.path}: {exc}",
                             hint="check the --registry path is writable") from exc

    def close(self) -> None:
        self._db.close()

    def _load(self) -> None:
        self._known = {row[0] for row in self._db.execute("SELECT name FROM known_models")}
        now = self._clock()
        for row in self._db.execute(
                "SELECT worker_id, url, models, context_length, max_concurrency, identity,"
                " state, registered_at FROM workers"):
            worker_id, url, models, context, concurrency, identity, state, registered = row
            self._workers[worker_id] = Worker(
                worker_id=worker_id, url=url, models=frozenset(json.loads(models)),
                max_concurrency=concurrency, context_length=context,
                identity=json.loads(identity), state=state, registered_at=registered,
                last_seen=now)

    # --- changes (write-through) -----------------------------------------------------------

    def register(self, info: WorkerInfo) -> Worker:
        now_wall = time.time()
        previous = self._workers.get(info.worker_id)
        for other in [w for w in self._workers.values()
                      if w.url == info.url and w.worker_id != info.worker_id]:
            self.remove(other.worker_id)  # a restarted process on the same address
        worker = Worker(
            worker_id=info.worker_id, url=info.url, models=frozenset(info.models),
            max_concurrency=info.max_concurrency, context_length=info.context_length,
            identity=dict(info.identity), state="live", registered_at=now_wall,
            last_seen=self._clock(), reported_in_flight=info.in_flight,
            # requests already running through this controller keep being counted
            in_flight=previous.in_flight if previous else 0)
        self._db.execute(
            "INSERT OR REPLACE INTO workers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (worker.worker_id, worker.url, json.dumps(sorted(worker.models)),
             worker.context_length, worker.max_concurrency, json.dumps(worker.identity),
             worker.state, now_wall, now_wall))
        self.remember(worker.models, now_wall)
        self._workers[worker.worker_id] = worker
        return worker

    def remember(self, models: frozenset[str] | set[str], when: float | None = None) -> None:
        """Models this deployment serves, whether or not a worker serves them right now."""
        new = set(models) - self._known
        if new:
            when = time.time() if when is None else when
            self._db.executemany("INSERT OR IGNORE INTO known_models VALUES (?, ?)",
                                 [(name, when) for name in sorted(new)])
            self._known |= new

    def heartbeat(self, worker_id: str, in_flight: int) -> bool:
        """Record a heartbeat; False if the worker is unknown (it must register again)."""
        worker = self._workers.get(worker_id)
        if worker is None:
            return False
        worker.last_seen = self._clock()
        worker.reported_in_flight = in_flight
        worker.down_until = 0.0  # it is evidently reachable again
        self._db.execute("UPDATE workers SET last_heartbeat = ? WHERE worker_id = ?",
                         (time.time(), worker_id))
        return True

    def drain(self, worker_id: str) -> bool:
        """Stop routing new requests to a worker; it finishes what it has, then leaves."""
        worker = self._workers.get(worker_id)
        if worker is None:
            return False
        worker.state = "draining"
        self._db.execute("UPDATE workers SET state = 'draining' WHERE worker_id = ?",
                         (worker_id,))
        return True

    def remove(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)
        self._db.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

    def expire(self) -> list[str]:
        """Drop every worker whose last heartbeat is older than the expiry; their ids."""
        now = self._clock()
        dead = [w.worker_id for w in self._workers.values() if now - w.last_seen > self.expiry]
        for worker_id in dead:
            self.remove(worker_id)
        return dead

    def mark_down(self, worker_id: str, seconds: float) -> None:
        """A request could not reach the worker: route around it until its next heartbeat."""
        worker = self._workers.get(worker_id)
        if worker is not None:
            worker.down_until = self._clock() + seconds

    # --- reads -----------------------------------------------------------------------------

    def get(self, worker_id: str) -> Worker | None:
        return self._workers.get(worker_id)

    def workers(self) -> list[Worker]:
        return list(self._workers.values())

    def models(self) -> list[str]:
        """Every model some registered worker serves (live or draining)."""
        return sorted({name for w in self._workers.values() for name in w.models})

    def known_models(self) -> list[str]:
        """Every model ever registered or remembered, served right now or not."""
        return sorted(self._known | set(self.models()))

    def now(self) -> float:
        return self._clock()
