"""Segment records for serving processes, so ``vops cost`` can bill them like training.

A worker or controller started with ``--bucket`` and ``--name`` keeps
``<bucket>/<name>/segments/<kind>-<id>.json`` up to date: where it runs (cloud, zone,
instance, spot), when it started, its last heartbeat and the tokens it generated; at exit the
status becomes ``finished`` (or ``preempted`` after a spot notice).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from vicuna_ops.errors import VopsError

log = logging.getLogger("vops.serve.accounting")

WRITE_EVERY = 60.0


async def keep_segment(bucket: str, name: str, kind: str, process_id: str,
                       progress: Callable[[], tuple[int, bool]],
                       every: float = WRITE_EVERY) -> None:
    """Rewrite the record every ``every`` seconds until cancelled, then once more."""
    from vicuna_ops.segments import SegmentRecord, node_identity, write_segment
    from vicuna_ops.storage import open_store

    store = open_store(bucket).child(name)
    identity = {k: v for k, v in node_identity().items() if v is not None}
    start = time.time()

    def write(final: bool) -> None:
        tokens, preempted = progress()
        status = ("preempted" if preempted else "finished") if final else "running"
        record = SegmentRecord(run_id=name, segment_id=f"{kind}-{process_id}", kind=kind,
                               start=start, heartbeat=time.time(), status=status,
                               tokens=tokens, **identity)
        write_segment(store, record)

    try:
        while True:
            try:
                await asyncio.to_thread(write, False)
            except VopsError as exc:
                log.warning("cannot write the segment record: %s", exc.one_line())
            await asyncio.sleep(every)
    finally:
        try:
            write(True)
        except VopsError as exc:
            log.warning("cannot write the final segment record: %s", exc.one_line())
