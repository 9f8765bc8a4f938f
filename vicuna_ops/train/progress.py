"""What the training process tells the outside: human lines on stderr, and (with
``--progress``) one JSON event per line on stdout for ``vops train --local``'s progress bar.

Events: start, data, resume, step, checkpoint, upload-start, upload-done, upload-skipped,
upload-failed, stop, final, end. Only global rank 0 reports; the writes are locked because
the uploader and heartbeat threads report too.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

from vicuna_ops.train.args import PROGRESS_PREFIX


class Reporter:
    def __init__(self, *, enabled: bool, json_events: bool, out: TextIO | None = None,
                 err: TextIO | None = None) -> None:
        self.enabled, self.json_events = enabled, json_events
        self._out, self._err = out or sys.stdout, err or sys.stderr
        self._lock = threading.Lock()

    def log(self, message: str) -> None:
        if not self.enabled:
            return
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            self._write(self._err, f"[vops {stamp}] {message}\n")

    def event(self, payload: dict[str, Any]) -> None:
        if not (self.enabled and self.json_events):
            return
        line = PROGRESS_PREFIX + json.dumps({"ts": round(time.time(), 3), **payload},
                                            default=str)
        with self._lock:
            if not self._write(self._out, line + "\n"):
                self.json_events = False  # nobody reads them any more

    @staticmethod
    def _write(stream: TextIO, text: str) -> bool:
        # A reader that went away (the CLI killed, a closed pipe) must not stop the training.
        try:
            stream.write(text)
            stream.flush()
        except (BrokenPipeError, OSError, ValueError):
            return False
        return True


def parse_event(line: str) -> dict[str, Any] | None:
    """The event on a stdout line of the training process, or None for any other line."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    try:
        event = json.loads(line[len(PROGRESS_PREFIX):])
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None
