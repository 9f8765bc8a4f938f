"""What the cloud billed beyond what the trainer saw, from SkyPilot's managed-jobs times.

A training record starts when its node's setup began (or, without that record, when the
trainer did) and ends at its last heartbeat. SkyPilot knows two more edges, as ``vops cost
sync`` keeps them per managed job (``start_at``: the job's first launch finished;
``last_recovered_at``: its latest relaunch did; ``end_at``: the job ended):

* a launch or recovery time outside every attempt moves the start of the attempt that
  followed it back to it (the earliest known start wins), never before the previous
  attempt's last heartbeat, and only within ``MAX_STARTUP_S`` (further back, it belongs to an attempt that
  left no record, whose time vops cannot place);
* the job's end moves the last attempt's end forward to it when that attempt exited by
  itself (finished, budget-stopped, failed), within ``MAX_TAIL_S``: the node is billed until
  SkyPilot takes it down. A preempted attempt ends at its last heartbeat.

Pure: records and the ledger's job dicts in, records out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vicuna_ops.segments import SegmentRecord

MAX_STARTUP_S = 3600.0
MAX_TAIL_S = 3600.0
_EXITED = ("finished", "budget-stopped", "failed")


def with_job_times(records: list[SegmentRecord], jobs: Mapping[str, Mapping[str, Any]]
                   ) -> list[SegmentRecord]:
    """``records`` with the training attempts' edges widened by the jobs' times."""
    out = list(records)
    train = sorted((i for i, r in enumerate(out) if r.kind == "train"),
                   key=lambda i: (out[i].start, out[i].segment_id))
    if not train or not jobs:
        return out
    for job in jobs.values():
        for key in ("start_at", "last_recovered_at"):
            _widen_start(out, train, _time(job.get(key)))
        _widen_end(out, train, _time(job.get("end_at")))
    return out


def _widen_start(out: list[SegmentRecord], train: list[int], t: float | None) -> None:
    if t is None or any(out[i].start <= t <= out[i].heartbeat for i in train):
        return  # already inside a billed attempt
    following = [pos for pos, i in enumerate(train) if out[i].start >= t]
    if not following:
        return
    pos = following[0]
    rec = out[train[pos]]
    if pos > 0:
        t = max(t, out[train[pos - 1]].heartbeat)  # billed there already
    if t < rec.start and rec.start - t <= MAX_STARTUP_S:
        out[train[pos]] = rec.model_copy(update={"start": t, "start_source": "skypilot"})


def _widen_end(out: list[SegmentRecord], train: list[int], t: float | None) -> None:
    if t is None:
        return
    before = [i for i in train if out[i].start < t]
    if not before:
        return
    rec = out[before[-1]]
    if rec.status in _EXITED and rec.heartbeat < t <= rec.heartbeat + MAX_TAIL_S:
        out[before[-1]] = rec.model_copy(update={"heartbeat": t})


def _time(value: Any) -> float | None:
    """SkyPilot's times: unix seconds; missing, 0 or negative (its 'not yet') is None."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        return None
    return t if t > 0 else None
