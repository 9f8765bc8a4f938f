"""Segment records that could not reach the bucket, kept on the node until it is back.

A record is the whole state of its segment, so only its newest version matters: the spool
holds one file per segment id (``<folder>/<segment-id>.json``, replaced atomically by a newer
version, never by an older one). Every write goes through ``SegmentWriter.write``: it first
sends whatever the spool holds (an earlier attempt's records included, when the folder
survived on this machine), then the record itself; a failure puts the record in the spool.
Nothing is dropped: a spooled record leaves the spool only once the bucket has it, or once
the bucket has a newer version of it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vicuna_ops import segments
from vicuna_ops.errors import VopsError
from vicuna_ops.segments import SegmentRecord

Log = Callable[[str], None]


class SegmentSpool:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _path(self, segment_id: str) -> Path:
        return self.folder / f"{segment_id}.json"

    def put(self, record: SegmentRecord) -> None:
        """Keep ``record`` unless the spool already holds a newer version of it."""
        held = self._read(self._path(record.segment_id))
        if held is not None and held.heartbeat > record.heartbeat:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{record.segment_id}.{os.getpid()}.tmp"
        tmp.write_text(record.model_dump_json(indent=1))
        os.replace(tmp, self._path(record.segment_id))  # a reader never sees half a record

    def drop(self, record: SegmentRecord) -> None:
        """The bucket now has ``record``: forget any version of it that is not newer."""
        path = self._path(record.segment_id)
        held = self._read(path)
        if held is not None and held.heartbeat <= record.heartbeat:
            path.unlink(missing_ok=True)

    def pending(self) -> list[SegmentRecord]:
        if not self.folder.is_dir():
            return []
        found = (self._read(p) for p in sorted(self.folder.glob("*.json")))
        return [r for r in found if r is not None]

    @staticmethod
    def _read(path: Path) -> SegmentRecord | None:
        try:
            return SegmentRecord.model_validate_json(path.read_bytes())
        except (OSError, ValidationError, ValueError):
            return None


class SegmentWriter:
    """Writes a run's segment records to its bucket, spooling what does not get through."""

    def __init__(self, store: Any, spool: SegmentSpool | None, log: Log = lambda _m: None
                 ) -> None:
        self._store, self._spool, self._log = store, spool, log
        self.failures = 0  # writes that did not reach the bucket (each one spooled)
        self.resent = 0  # spooled records written once the bucket was back

    @property
    def spooled(self) -> int:
        return len(self._spool.pending()) if self._spool is not None else 0

    def write(self, record: SegmentRecord) -> bool:
        """True when the bucket has ``record`` now; False when it waits in the spool."""
        if not self.flush():
            self._keep(record)
            return False
        try:
            segments.write_segment(self._store, record)
        except VopsError as exc:
            self._keep(record)
            self._log(f"cannot write segment record ({exc.message}): kept on this node, "
                      "written when the bucket is back")
            return False
        if self._spool is not None:
            self._spool.drop(record)
        return True

    def flush(self) -> bool:
        """Send the spooled records; True when the spool is empty afterwards."""
        if self._spool is None:
            return True
        for held in self._spool.pending():
            try:
                segments.write_segment(self._store, held)
            except VopsError:
                return False
            self._spool.drop(held)
            self.resent += 1
            self._log(f"segment record {held.segment_id} written (it waited on this node)")
        return True

    def drain(self, timeout_s: float, poll_s: float = 1.0,
              clock: Callable[[], float] = time.monotonic) -> bool:
        """Retry the spool until it is empty or ``timeout_s`` passed (the end of an attempt:
        once the process is gone, only a later attempt on this machine could send them)."""
        deadline = clock() + timeout_s
        while not self.flush():
            if clock() >= deadline:
                return False
            time.sleep(poll_s)
        return True

    def _keep(self, record: SegmentRecord) -> None:
        self.failures += 1
        if self._spool is not None:
            try:
                self._spool.put(record)
            except OSError as exc:
                self._log(f"cannot spool segment record {record.segment_id}: {exc}")
