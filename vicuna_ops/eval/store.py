"""A resumable record file: JSONL, one record per line, each with a ``key``.

Every record is appended with ``flush`` + ``fsync`` as soon as its work is done, so a run
killed at any moment keeps everything it finished. A kill during a write leaves a torn last
line (no newline, or not JSON): opening the store drops it (the file is cut back to the
last whole line) and that work is simply done again. A bad line anywhere else is not the
signature of a kill: it is an error naming the line. The same key written twice (two runs
side by side) keeps the first.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from vicuna_ops.errors import DataError


class RecordStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        self.dropped_torn_line = False
        self._load()

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records.values())

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        # whatever follows the last newline is a write that never finished
        complete, tail = lines[:-1], lines[-1]
        good_end = len(data) - len(tail)
        for number, raw in enumerate(complete, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
                key = record["key"]
            except (ValueError, KeyError, TypeError) as exc:
                if number == len(complete) and not tail:
                    # a torn write whose newline made it (a partial page flushed): drop it
                    good_end -= len(raw) + 1
                    break
                raise DataError(f"{self.path}:{number}: not a record ({exc})",
                                hint="fix or delete that line; the rest is kept") from exc
            self.records.setdefault(key, record)
        if good_end < len(data):
            self.dropped_torn_line = True
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)
                os.fsync(handle.fileno())

    def append(self, record: dict[str, Any]) -> None:
        """Write one record durably; its ``key`` must be set."""
        key = record["key"]
        if key in self.records:
            return
        line = json.dumps(record, ensure_ascii=False, sort_keys=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.records[key] = record


def make_key(*parts: object) -> str:
    """A record key from its parts, stable across runs and Python versions."""
    return json.dumps([str(p) for p in parts], ensure_ascii=False, separators=(",", ":"))
