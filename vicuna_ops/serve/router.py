"""Which worker gets the next request: the live one with the fewest requests in flight.

The count is the controller's own (incremented when it sends a request, decremented when the
response is finished), not what workers last reported in a heartbeat: heartbeats are
seconds old, and under a burst every request would pile onto the worker that looked idle.
Load is in-flight divided by the worker's concurrency limit, so a worker that can run 8 at
once takes 8 times the share of one that runs 1; ties are broken at random so equal
workers share evenly.
"""

from __future__ import annotations

import random
import weakref
from typing import Iterable

from vicuna_ops.serve.registry import Worker


def choose(workers: Iterable[Worker], model: str, *, now: float,
           exclude: frozenset[str] | set[str] = frozenset(),
           rng: random.Random | None = None) -> Worker | None:
    """The least-loaded live worker serving ``model`` that is not excluded or suspect."""
    candidates = [w for w in workers
                  if w.state == "live" and model in w.models and w.worker_id not in exclude
                  and w.down_until <= now]
    if not candidates:
        return None
    lightest = min(w.load for w in candidates)
    ties = [w for w in candidates if w.load == lightest]
    return ties[0] if len(ties) == 1 else (rng or random).choice(ties)


class Lease:
    """One request's claim on a worker: counted in flight until released (exactly once).

    ``bind(obj)`` also releases the lease when ``obj`` is garbage-collected, for a streaming
    body that the server may drop without ever starting it (its ``finally`` never runs).
    """

    __slots__ = ("worker", "_released", "__weakref__")

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._released = False
        worker.in_flight += 1

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.worker.in_flight -= 1

    def bind(self, obj: object) -> None:
        weakref.finalize(obj, self.release)

    @property
    def released(self) -> bool:
        return self._released
