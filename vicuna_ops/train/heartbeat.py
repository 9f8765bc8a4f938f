"""This attempt's segment record (``segments/<id>.json``), rewritten as the run goes, and the
budget guard that reads the run's records at each heartbeat.

The record says where the attempt runs (SkyPilot's env on a node, "local" here), when it
started, when it was last seen alive, and the steps and tokens it has done: what cost reports
bill. The training callback updates the counters (no I/O on the training thread); a
background thread writes the record every ``interval_s`` and at start and end (a write the
bucket refuses waits in a spool on the node: ``spool.py``). Each beat first renews the run
lease (``lease.py``); a lease lost to another trainer calls ``on_lease_lost`` before anything
more is written.

The budget guard prices the run at each beat and turns the money left into a deadline: the
time at which a stop must be requested so that the step in progress, the final checkpoint's
save and upload (as long as the last one took) and the exit still fit in ``--max-cost``.
The training callback compares the clock with it at every step.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vicuna_ops import segments
from vicuna_ops.errors import VopsError
from vicuna_ops.segments import SegmentRecord
from vicuna_ops.train.preemption import StopFlag
from vicuna_ops.train.spool import SegmentSpool, SegmentWriter

Log = Callable[[str], None]


def next_attempt(store: Any) -> tuple[int, list[SegmentRecord]]:
    """This attempt's number (1 + earlier train segments) and the earlier records."""
    records, _problems = segments.read_segments(store)
    earlier = [r for r in records if r.kind == "train"]
    return len(earlier) + 1, records


PriceFn = Callable[[Any], Any]  # vicuna_ops.cost.prices.PriceFn (not imported here)


def load_budget_prices(store: Any, log: Log) -> PriceFn | None:
    """The prices the budget guard uses: the run's table (``$VOPS_PRICE_TABLE``, else
    ``prices.json`` in the run's bucket prefix, which the launcher writes), else the node's
    defaults (``cost.budget.node_prices``); None if the cost module is absent."""
    try:
        from vicuna_ops.cost.budget import node_prices
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
    return table if table is not None else node_prices()


class SegmentHeartbeat:
    def __init__(self, store: Any, run_id: str, *, attempt: int, first_step: int | None,
                 interval_s: float, earlier: list[SegmentRecord] | None = None,
                 stop_flag: StopFlag | None = None, max_cost: float | None = None,
                 log: Log = lambda _m: None, identity: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.time, lease: Any = None,
                 on_lease_lost: Callable[[], None] | None = None,
                 spool_dir: Path | None = None, drain_s: float = 30.0) -> None:
        self._store, self._interval, self._log, self._clock = store, interval_s, log, clock
        self._flag, self._max_cost = stop_flag, max_cost
        self._lease, self._on_lease_lost = lease, on_lease_lost
        self._earlier = list(earlier or [])
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._prices: PriceFn | None = None
        self._unpriced_logged = False
        self._writer = SegmentWriter(store, SegmentSpool(spool_dir) if spool_dir else None, log)
        self._drain_s = drain_s
        self._progress: tuple[int, int, float] | None = None  # (steps, tokens, epoch)
        self.cost: float | None = None
        # the budget guard's clock: request a stop at or after this unix time
        self.stop_deadline: float | None = None
        self.checkpoint_s: float | None = None  # last checkpoint's save + upload, or a guess
        self._checkpoint_measured = False
        self.step_s = 0.0
        self._last_step_at: float | None = None
        now = clock()
        fields = {**segments.node_identity(), **(identity or {})}
        # Billing starts when the node did (its setup's record), not when this process did;
        # never before the previous attempt's last heartbeat (that time is billed there).
        not_before = max((r.heartbeat for r in self._earlier if r.kind == "train"), default=None)
        started = segments.node_start(now, not_before)
        self.record = SegmentRecord(
            run_id=run_id, segment_id=f"train-{attempt:03d}-{secrets.token_hex(3)}",
            kind="train", attempt=attempt, start=started if started is not None else now,
            start_source="setup" if started is not None else "trainer", heartbeat=now,
            status="running", first_step=first_step, steps=first_step or 0, tokens=0,
            heartbeat_s=interval_s, **fields)
        if max_cost is not None:
            if self.record.cloud == "local":
                log("--max-cost: local runs are not priced ($0), so the budget never runs out")
            else:
                self._prices = load_budget_prices(store, log)

    @property
    def write_failures(self) -> int:
        return self._writer.failures

    @property
    def spooled(self) -> int:
        return self._writer.spooled

    # -- called by the training runtime and callback -----------------------------------------

    def resumed_at(self, step: int) -> None:
        """The step this attempt starts from (its checkpoint's; 0 fresh), once known."""
        with self._lock:
            self.record = self.record.model_copy(update={"first_step": step, "steps": step})
            self._progress = None

    def training_started(self) -> None:
        """The first training step begins: everything billed before it is start-up."""
        with self._lock:
            if self.record.train_start is None:
                self.record = self.record.model_copy(update={"train_start": self._clock()})

    def expect_checkpoint_s(self, seconds: float, measured: bool) -> None:
        """How long a checkpoint's save and upload take: a guess until one is measured."""
        if measured or not self._checkpoint_measured:
            self.checkpoint_s = max(0.0, seconds)
            self._checkpoint_measured = self._checkpoint_measured or measured

    def update(self, *, steps: int, tokens: int, epoch: float) -> None:
        """Called at every optimizer step: only remembers the numbers (the record is rebuilt
        at the next beat), so the training thread pays nothing measurable for it."""
        now = self._clock()
        if self._last_step_at is not None:
            self.step_s = now - self._last_step_at
        self._last_step_at = now
        self._progress = (steps, tokens, round(epoch, 4))

    def budget_due(self) -> bool:
        """At a step boundary: True (and a stop requested) once the budget's deadline passed.
        A clock comparison: the pricing happens at the beats."""
        deadline = self.stop_deadline
        if deadline is None or self._clock() < deadline:
            return False
        self._request_stop()
        return True

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="vops-heartbeat", daemon=True)
        self._thread.start()

    def finish(self, status: str) -> SegmentRecord:
        """Stop the thread and write the record a last time with its final ``status``; what
        the bucket did not take is retried for ``drain_s``, then left in the spool."""
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            self.record = self.record.model_copy(update={"status": status})
        self.beat(check_budget=False)
        if self._writer.spooled and not self._writer.drain(self._drain_s):
            self._log(f"{self._writer.spooled} segment record(s) could not be written; they "
                      "stay on this node and the next attempt here writes them")
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
        self._writer.write(record)
        if check_budget:
            self._check_budget(record)

    def _run(self) -> None:
        while not self._wake.wait(self._interval):
            self.beat()

    def _check_budget(self, record: SegmentRecord) -> None:
        if self._prices is None or self._max_cost is None or self._flag is None:
            return
        from vicuna_ops.cost.budget import (
            burn_rate,
            cost_so_far,
            stop_deadline,
            stop_reserve_s,
        )

        others = [r for r in self._earlier if r.segment_id != record.segment_id]
        try:
            cost = cost_so_far([*others, record], self._prices)
            rate = burn_rate(record, self._prices)
        except VopsError as exc:
            self._log(f"budget guard: cannot price the run ({exc.message})")
            return
        if cost is None or rate is None:
            if not self._unpriced_logged:
                self._log("budget guard: the run's instances have no known price; "
                          "--max-cost cannot be enforced")
                self._unpriced_logged = True
            return
        self.cost = cost
        # Before any checkpoint is timed, one interval of heartbeats stands in for it.
        checkpoint_s = self.checkpoint_s if self.checkpoint_s is not None else self._interval
        self.stop_deadline = stop_deadline(cost, rate, self._max_cost, record.heartbeat,
                                           stop_reserve_s(checkpoint_s, self.step_s))
        if cost >= self._max_cost or record.heartbeat >= self.stop_deadline:
            self._request_stop()

    def _request_stop(self) -> None:
        if self._flag is None or self._max_cost is None:
            return
        spent = f"${self.cost:.2f}" if self.cost is not None else "the budget"
        if self._flag.request("budget", f"budget: {spent} spent of --max-cost "
                                        f"${self._max_cost:.2f}, stopping with room for the "
                                        "final checkpoint"):
            self._log(f"budget reached ({spent} of ${self._max_cost:.2f}, keeping "
                      f"{self.checkpoint_s or self._interval:.0f} s for the final checkpoint): "
                      "stopping at the next step with a checkpoint")
