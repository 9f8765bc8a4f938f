"""``vops cost sync``: fold what the buckets and SkyPilot know into the ledger.

For each run: every segment record in ``<bucket>/<run-id>/segments/`` becomes a ledger
segment row (``start``, ``end`` = last heartbeat, ``data`` = the record); the run's price
table (``prices.json``), when there is one, is kept in the run's data so reports can use it
without the bucket; SkyPilot's managed-jobs queue adds each job's status, recovery count and
start/end. A run whose last training attempt stopped at its budget gets the ledger status
``budget-stopped``.

Idempotent: a row is written only when it differs from what the ledger holds, so running it
twice changes nothing. One run's unreadable bucket or corrupt record is a problem line for
that run, not the end of the sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Mapping

from vicuna_ops.cost.price_table import load_price_table
from vicuna_ops.errors import VopsError
from vicuna_ops.segments import SegmentRecord, read_segments

# job ids -> managed-job records: vicuna_ops.launch.sky_sdk.ManagedJob, or SkyPilot's dicts
# (job_id, status, recovery_count, submitted_at, start_at, end_at, job_duration, ...);
# the times bill provisioning and teardown (cost/billing.py). last_recovered_at is kept
# where the queue rows carry it.
QueueFn = Callable[[list[int]], list[Any]]
JOB_FIELDS = ("status", "recovery_count", "submitted_at", "start_at", "last_recovered_at",
              "end_at", "job_duration")


@dataclass
class SyncResult:
    run_id: str
    segments_seen: int = 0
    segments_changed: int = 0
    run_changed: bool = False
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "segments_seen": self.segments_seen,
                "segments_changed": self.segments_changed, "run_changed": self.run_changed,
                "problems": self.problems}


def sky_queue(job_ids: list[int]) -> list[Any]:
    """SkyPilot's managed-jobs queue, through the launcher's SDK wrapper (the only module
    that calls SkyPilot's SDK)."""
    from vicuna_ops.launch import sky_sdk  # noqa: PLC0415 - needs SkyPilot, imported late

    return list(sky_sdk.queue(job_ids=job_ids))


def sync_runs(ledger, run_ids: list[str] | None = None, *, queue: QueueFn | None = sky_queue,
              open_store: Callable | None = None) -> list[SyncResult]:
    """Sync the named runs (all runs when None). ``queue=None`` skips SkyPilot."""
    if open_store is None:
        from vicuna_ops.storage import open_store
    runs = [ledger.get_run(r) for r in run_ids] if run_ids else ledger.list_runs()
    jobs, queue_problem = _read_queue(queue, [j for run in runs for j in run["job_ids"]])
    results = []
    for run in runs:
        result = SyncResult(run["run_id"])
        records: list[SegmentRecord] = []
        update: dict[str, Any] = {}
        if run.get("bucket"):
            records, table = _read_bucket(open_store, run, result)
            for rec in records:
                result.segments_seen += 1
                if ledger.upsert_segment(run["run_id"], rec.segment_id, rec.start,
                                         rec.heartbeat, rec.model_dump(mode="json")):
                    result.segments_changed += 1
            if table is not None:
                update["price_table"] = table.model_dump(mode="json")
        if run["job_ids"]:
            if queue_problem:
                result.problems.append(queue_problem)
            else:
                found = {str(j): jobs[j] for j in run["job_ids"] if j in jobs}
                if found:
                    update["managed_jobs"] = {**run["data"].get("managed_jobs", {}), **found}
        status = "budget-stopped" if budget_stopped(records) else run["status"]
        changed = {k: v for k, v in update.items() if run["data"].get(k) != v}
        if changed or status != run["status"]:
            ledger.update_run(run["run_id"], data=changed or None,
                              status=status if status != run["status"] else None)
            result.run_changed = True
        results.append(result)
    return results


def _read_bucket(open_store, run: dict, result: SyncResult):
    try:
        store = open_store(run["bucket"]).child(run["run_id"])
        records, problems = read_segments(store)
        result.problems.extend(problems)
    except VopsError as exc:
        result.problems.append(f"{run['bucket']}: {exc.one_line()}")
        return [], None
    try:
        table = load_price_table(store)
    except VopsError as exc:
        result.problems.append(exc.one_line())
        table = None
    return records, table


def _read_queue(queue: QueueFn | None, job_ids: list[int]
                ) -> tuple[dict[int, dict[str, Any]], str | None]:
    if queue is None or not job_ids:
        return {}, None
    try:
        records = queue(sorted(set(job_ids)))
    except ImportError as exc:
        return {}, f"managed-jobs queue not read: {exc}"
    except VopsError as exc:
        return {}, f"managed-jobs queue not read: {exc.one_line()}"
    jobs: dict[int, dict[str, Any]] = {}
    for rec in records:
        try:
            job_id = int(_field(rec, "job_id"))
        except (TypeError, ValueError):
            continue
        fields = {k: _plain(_field(rec, k)) for k in JOB_FIELDS}
        jobs[job_id] = {k: v for k, v in fields.items() if v is not None}
    return jobs, None


def _field(record: Any, name: str) -> Any:
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)


def _plain(value: Any) -> Any:
    """JSON-safe: SkyPilot's ManagedJobStatus is an Enum (its name, as `sky jobs queue` shows)."""
    return value.name if isinstance(value, Enum) else value


def budget_stopped(records: list[SegmentRecord]) -> bool:
    """Whether the run's last training attempt stopped at its --max-cost (``vops status``
    can show this where SkyPilot only sees a job that SUCCEEDED)."""
    train = sorted((r for r in records if r.kind == "train"), key=lambda r: (r.start, r.attempt))
    return bool(train) and train[-1].status == "budget-stopped"


def recoveries(run: dict) -> int | None:
    """The run's total recovery count across its managed jobs, as last synced."""
    jobs = run.get("data", {}).get("managed_jobs") or {}
    counts = [j.get("recovery_count") for j in jobs.values() if j.get("recovery_count") is not None]
    return sum(counts) if counts else None
