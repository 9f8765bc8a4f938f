"""This attempt's segment record (``segments/<id>.json``), rewritten as the run goes, and the
budget guard that reads the run's records at each heartbeat.

The record says where the attempt runs (SkyPilot's env on a node, "local" here), when it
started, when it was last seen alive, and the steps and tokens it has done: what cost reports
bill. The training callback updates the counters (no I/O on the training thread); a
background thread writes the record every ``interval_s`` and at start and end. Each beat
first renews the run lease (``lease.py``); a lease lost to another trainer calls
``on_lease_lost`` before anything more is written.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from vicuna_ops import segments
from vicuna_ops.errors import VopsError
from vicuna_ops.segments import SegmentRecord
from vicuna_ops.train.preemption import StopFlag

Log = Callable[[str], None]


def next_attempt(store: Any) -> tuple[int, list[SegmentRecord]]:
    """This attempt's number (1 + earlier train segments) and the earlier records."""
    records, _problems = segments.read_segments(store)
    earlier = [r for r in records if r.kind == "train"]
    return len(earlier) + 1, records


CostFn = Callable[[list[SegmentRecord]], "float | None"]


def load_cost_function(store: Any, log: Log) -> CostFn | None:
    """``cost_so_far`` priced by the run's table (``$VOPS_PRICE_TABLE``, else ``prices.json``
    in the run's bucket prefix, which the launcher writes); None if the cost module is absent.
    """
    try:
        from vicuna_ops.cost.budget import cost_so_far
        from vicuna_ops.cost.price_table import price_table_for_node
    except ImportError:
        log("budget guard off: vicuna_ops.cost is not installed, so the run is unpriced")
        return None
    try:
        table = price_table_for_node(store)
    except VopsError as exc:
        log(f"budget guard: the run's price table is unusable ({exc.message}); "
            "using the default prices")
        table = None
    if table is None:
        return cost_so_far
    return lambda records: cost_so_far(records, table)


class SegmentHeartbeat:
    def __init__(self, store: Any, run_id: str, *, attempt: int, first_step: int | None,
                 interval_s: float, earlier: list[SegmentRecord] | None = None,
                 stop_flag: StopFlag | None = None, max_cost: float | None = None,
                 log: Log = lambda _m: None, identity: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.time, lease: Any = None,
                 on_lease_lost: Callable[[], None] | None = None) -> None:
        self._store, self._interval, self._log, self._clock = store, interval_s, log, clock
        self._flag, self._max_cost = stop_flag, max_cost
        self._lease, self._on_lease_lost = lease, on_lease_lost
        self._earlier = list(earlier or [])
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._cost_fn: CostFn | None = None
        self._unpriced_logged = False
        self.write_failures = 0
        self._progress: tuple[int, int, float] | None = None  # (steps, tokens, epoch)
        self.cost: float | None = None
        now = clock()
        fields = {**segments.node_identity(), **(identity or {})}
        self.record = SegmentRecord(
            run_id=run_id, segment_id=f"train-{attempt:03d}-{secrets.token_hex(3)}",
            kind="train", attempt=attempt, start=now, heartbeat=now, status="running",
            first_step=first_step, steps=first_step or 0, tokens=0, heartbeat_s=interval_s,
            **fields)
        if max_cost is not None:
            self._cost_fn = load_cost_function(store, log)

    # -- called by the training callback -----------------------------------------------------

    def resumed_at(self, step: int) -> None:
        """The step this attempt starts from, once the checkpoint is known."""
        with self._lock:
            self.record = self.record.model_copy(update={"first_step": step, "steps": step})
            self._progress = None

    def update(self, *, steps: int, tokens: int, epoch: float) -> None:
        """Called at every optimizer step: only remembers the numbers (the record is rebuilt
        at the next beat), so the training thread pays nothing measurable for it."""
        self._progress = (steps, tokens, round(epoch, 4))

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="vops-heartbeat", daemon=True)
        self._thread.start()

    def finish(self, status: str) -> SegmentRecord:
        """Stop the thread and write the record a last time with its final ``status``."""
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            self.record = self.record.model_copy(update={"status": status})
        self.beat(check_budget=False)
        return self.record

    def beat(self, check_budget: bool = True) -> None:
        if self._lease is not None and not self._lease.renew():
            if self._on_lease_lost is not None:
                self._on_lease_lost()
            return  # another trainer owns the run now: write nothing more
        with self._lock:
            update: dict[str, Any] = {"heartbeat": self._clock()}
            if self._progress is not None:
                steps, tokens, epoch = self._progress
                update.update(steps=steps, tokens=tokens, epoch=epoch)
            self.record = self.record.model_copy(update=update)
            record = self.record
        try:
            segments.write_segment(self._store, record)
        except VopsError as exc:
            self.write_failures += 1
            self._log(f"cannot write segment record: {exc.message}")
        if check_budget:
            self._check_budget(record)

    def _run(self) -> None:
        while not self._wake.wait(self._interval):
            self.beat()

    def _check_budget(self, record: SegmentRecord) -> None:
        if self._cost_fn is None or self._max_cost is None or self._flag is None:
            return
        others = [r for r in self._earlier if r.segment_id != record.segment_id]
        try:
            cost = self._cost_fn([*others, record])
        except VopsError as exc:
            self._log(f"budget guard: cannot price the run ({exc.message})")
            return
        if cost is None:
            if not self._unpriced_logged:
                self._log("budget guard: the run's instances have no known price; "
                          "--max-cost cannot be enforced")
                self._unpriced_logged = True
            return
        self.cost = cost
        if cost >= self._max_cost and self._flag.request(
                "budget", f"budget: ${cost:.2f} spent >= --max-cost ${self._max_cost:.2f}"):
            self._log(f"budget reached (${cost:.2f} of ${self._max_cost:.2f}): stopping at the "
                      "next step with a checkpoint")
