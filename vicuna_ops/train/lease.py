"""The run lease: ``<bucket>/<run>/LEASE`` names the one trainer allowed to write the run.

    take      conditional create (only if there is no LEASE)          -> ours
    held      live holder on this host (its pid is alive)             -> LeaseHeld at once (exit 2)
              live holder elsewhere                                   -> wait for it to expire,
                                                                         at most ttl + a margin
              expired, unreadable, or its pid on this host is gone    -> conditional replace of
                                                                         the version we read
    renew     every heartbeat, a conditional replace of our version   -> False once someone else
                                                                         holds it (stop writing)
    release   on a clean exit, a conditional delete of our version

Every write is a compare-and-swap on the store (``Store.put_if_absent`` / ``put_if_version``),
so two trainers racing for the same run never both win, including two taking over the same
expired lease. A write whose answer was lost (a retried request that gets "precondition
failed" for our own write) is recognised by the holder id we wrote.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from vicuna_ops.errors import UserError, VopsError
from vicuna_ops.segments import expiry_s

LEASE_KEY = "LEASE"
WAIT_MARGIN_S = 10.0

Log = Callable[[str], None]


def lease_ttl(heartbeat_s: float) -> float:
    """A few heartbeats (one slow write must not cost the lease); a segment record silent for
    as long is given up as 'lost' by the same rule."""
    return expiry_s(heartbeat_s)


@dataclass(frozen=True)
class LeaseRecord:
    holder: str  # unique per attempt
    host: str
    pid: int
    attempt: int
    since: float  # when this holder took the lease
    expires: float

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @staticmethod
    def parse(raw: bytes) -> LeaseRecord | None:
        try:
            fields = json.loads(raw)
            return LeaseRecord(holder=str(fields["holder"]), host=str(fields["host"]),
                               pid=int(fields["pid"]), attempt=int(fields["attempt"]),
                               since=float(fields["since"]), expires=float(fields["expires"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return f"host {self.host} pid {self.pid} (attempt {self.attempt}, since {since})"


class LeaseHeld(UserError):
    """Another trainer holds the run (exit 2: retrying at once cannot help)."""


def read_lease(store: Any) -> LeaseRecord | None:
    """The run's lease as it stands (None: none, or unreadable)."""
    current = store.read_versioned(LEASE_KEY)
    return LeaseRecord.parse(current.data) if current is not None else None


def is_live(record: LeaseRecord, now: float | None = None) -> bool:
    """Unexpired, and on this host only while its process exists."""
    now = time.time() if now is None else now
    if record.expires <= now:
        return False
    return not (record.host == socket.gethostname() and not _pid_alive(record.pid))


def held_error(record: LeaseRecord, run_uri: str, now: float) -> LeaseHeld:
    return LeaseHeld(
        f"{run_uri} is being trained by {record.describe()}; its lease expires in "
        f"{max(0, record.expires - now):.0f}s unless renewed",
        hint="wait for that trainer to finish or stop it; a second trainer would overwrite "
             "its checkpoints")


class RunLease:
    def __init__(self, store: Any, *, attempt: int, ttl_s: float, log: Log = lambda _m: None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._store, self._ttl, self._log = store, ttl_s, log
        self._clock, self._sleep = clock, sleep
        self._host = socket.gethostname()
        self._holder = f"{self._host}-{os.getpid()}-{secrets.token_hex(4)}"
        self._attempt = attempt
        self.record: LeaseRecord | None = None
        self._version: str | None = None

    @property
    def held(self) -> bool:
        return self._version is not None

    def acquire(self, wait_s: float | None = None) -> LeaseRecord:
        """Take the lease, waiting (bounded) for a holder elsewhere to let it expire."""
        wait_s = self._ttl + WAIT_MARGIN_S if wait_s is None else wait_s
        deadline = self._clock() + wait_s
        announced = False
        while True:
            now = self._clock()
            mine = LeaseRecord(self._holder, self._host, os.getpid(), self._attempt, now,
                               now + self._ttl)
            version = self._store.put_if_absent(LEASE_KEY, mine.to_json())
            if version is not None:
                return self._hold(mine, version)
            current = self._store.read_versioned(LEASE_KEY)
            if current is None:
                continue  # released between our two calls: try again
            other = LeaseRecord.parse(current.data)
            if other is not None and other.holder == self._holder:
                return self._hold(other, current.version)  # our create landed; its answer did not
            reason = self._takeover_reason(other, now)
            if reason is not None:
                version = self._store.put_if_version(LEASE_KEY, mine.to_json(), current.version)
                if version is not None:
                    held_by = other.describe() if other else "an unreadable lease"
                    self._log(f"took over the run lease from {held_by}: {reason}")
                    return self._hold(mine, version)
                continue  # someone else replaced it first: look again
            assert other is not None  # an unreadable lease is always taken over
            if other.host == self._host or now >= deadline:
                raise held_error(other, self._store.uri, now)
            if not announced:
                self._log(f"waiting for the run lease held by {other.describe()} to expire "
                          f"(up to {deadline - now:.0f}s)")
                announced = True
            self._sleep(max(0.05, min(1.0, other.expires - now, deadline - now)))

    def renew(self) -> bool:
        """Push the expiry forward; False once the lease is someone else's. A store error is
        logged and counts as still held (the lease lasts ``ttl`` beyond the last renewal)."""
        if self.record is None or self._version is None:
            return False
        now = self._clock()
        renewed = replace(self.record, expires=now + self._ttl)
        try:
            version = self._store.put_if_version(LEASE_KEY, renewed.to_json(), self._version)
            if version is None:
                current = self._store.read_versioned(LEASE_KEY)
                other = LeaseRecord.parse(current.data) if current is not None else None
                if other is None or other.holder != self._holder:
                    self._version = None
                    return False
                version = current.version  # our renewal landed; its answer did not
                renewed = other
        except VopsError as exc:
            self._log(f"cannot renew the run lease: {exc.one_line()}")
            return True
        self.record, self._version = renewed, version
        return True

    def release(self) -> None:
        if self._version is None:
            return
        version, self._version = self._version, None
        try:
            self._store.delete_if_version(LEASE_KEY, version)
        except VopsError as exc:  # it expires by itself
            self._log(f"cannot release the run lease: {exc.one_line()}")

    def _hold(self, record: LeaseRecord, version: str) -> LeaseRecord:
        self.record, self._version = record, version
        return record

    def _takeover_reason(self, other: LeaseRecord | None, now: float) -> str | None:
        if other is None:
            return "it was unreadable"
        if other.expires <= now:
            return f"it expired {now - other.expires:.0f}s ago"
        if other.host == self._host and not _pid_alive(other.pid):
            return f"process {other.pid} is gone"
        return None


def _pid_alive(pid: int) -> bool:
    from vicuna_ops.lifeline import process_alive

    return pid > 0 and process_alive(pid)
