"""``vops status / logs / cancel``: the ledger's training runs joined with SkyPilot's
managed-jobs queue and the newest complete checkpoint in each run's bucket.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from vicuna_ops import layout
from vicuna_ops.errors import UserError, VopsError
from vicuna_ops.launch import sky_sdk
from vicuna_ops.ledger import Ledger

# SkyPilot statuses after which a job never changes again.
TERMINAL = {"SUCCEEDED", "FAILED", "FAILED_SETUP", "FAILED_PRECHECKS", "FAILED_NO_RESOURCE",
            "FAILED_CONTROLLER", "CANCELLED"}


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    ledger_status: str
    job_id: int | None
    status: str | None  # SkyPilot's managed-job status, None when unknown
    recovery_count: int | None
    infra: str | None  # cloud/region/zone of the current (or last) cluster
    resources: str | None
    submitted_at: float | None
    job_duration: float | None
    checkpoint_step: int | None  # newest step whose MANIFEST.json exists in the bucket
    bucket: str | None
    attempts: int | None = None  # training attempts with a segment record in the bucket
    budget_stopped: bool = False  # the last attempt stopped at --max-cost
    problem: str | None = None  # why a part is missing (queue or bucket unreadable)
    final_step: int | None = None  # the step final/ was written at, once its manifest is there

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def status(run_id: str | None = None) -> list[RunStatus]:
    """One row per training run (or just ``run_id``), newest SkyPilot data where it exists."""
    with Ledger() as ledger:
        rows = [ledger.get_run(run_id)] if run_id else ledger.list_runs(kind="train")
    job_ids = [row["job_ids"][-1] for row in rows if row["job_ids"]]
    jobs: dict[int, sky_sdk.ManagedJob] = {}
    queue_problem = None
    if job_ids:
        try:
            for job in sky_sdk.queue(job_ids):
                jobs.setdefault(job.job_id, job)
        except VopsError as exc:
            queue_problem = exc.message
    out = []
    for row in rows:
        job_id = row["job_ids"][-1] if row["job_ids"] else None
        job = jobs.get(job_id) if job_id is not None else None
        step, bucket_problem = checkpoint_step(row["bucket"], row["run_id"])
        attempts, stopped = _attempts(row["bucket"], row["run_id"]) if not bucket_problem else (
            None, False)
        problem = "; ".join(p for p in (queue_problem if job_id is not None else None,
                                        bucket_problem) if p) or None
        if job_id is not None and job is None and queue_problem is None:
            problem = "; ".join(p for p in (problem, f"job {job_id} is not in SkyPilot's queue")
                                if p)
        out.append(RunStatus(
            run_id=row["run_id"], ledger_status=row["status"], job_id=job_id,
            status=job.status if job else None,
            recovery_count=job.recovery_count if job else None,
            infra=_infra(job),
            resources=job.resources if job else None,
            submitted_at=job.submitted_at if job else None,
            job_duration=job.job_duration if job else None,
            checkpoint_step=step, bucket=row["bucket"], problem=problem,
            attempts=attempts, budget_stopped=stopped,
            final_step=None if bucket_problem else final_step(row["bucket"], row["run_id"])))
        if job is not None:
            _record_status(row, job, stopped)
    return out


def checkpoint_step(bucket: str | None, run_id: str) -> tuple[int | None, str | None]:
    """``<bucket>/<run-id>/LATEST``'s step when that checkpoint's MANIFEST.json exists;
    (None, problem) when the bucket cannot be read."""
    if not bucket:
        return None, None
    from vicuna_ops.errors import ObjectNotFound
    from vicuna_ops.storage import open_store

    try:
        store = open_store(bucket).child(run_id)
        try:
            latest = store.get_bytes(layout.LATEST).decode().strip()
        except ObjectNotFound:
            return None, None
        step = layout.step_of(latest)
        if step is None:
            return None, f"LATEST holds {latest[:40]!r}, not a checkpoint name"
        if not store.exists(f"{layout.checkpoint_dir(step)}/{layout.MANIFEST}"):
            return None, f"LATEST names {layout.checkpoint_dir(step)}, which has no manifest"
        return step, None
    except VopsError as exc:
        return None, f"bucket unreadable: {exc.message}"


def final_step(bucket: str | None, run_id: str) -> int | None:
    """The step recorded in ``final/MANIFEST.json`` (a finished run), else None."""
    if not bucket:
        return None
    from vicuna_ops.storage import open_store
    from vicuna_ops.train.manifest import Manifest, ManifestError

    try:
        raw = open_store(bucket).child(run_id).get_bytes(f"{layout.FINAL}/{layout.MANIFEST}")
        steps = Manifest.from_json(raw).meta.get("steps")
    except (VopsError, ManifestError):
        return None
    return steps if isinstance(steps, int) else None


def _attempts(bucket: str | None, run_id: str) -> tuple[int | None, bool]:
    """How many training attempts wrote a segment record, and whether the last one stopped
    at its budget (SkyPilot reports such a job as SUCCEEDED)."""
    if not bucket:
        return None, False
    from vicuna_ops.cost.sync import budget_stopped
    from vicuna_ops.segments import read_segments
    from vicuna_ops.storage import open_store

    try:
        records, _ = read_segments(open_store(bucket).child(run_id))
    except VopsError:
        return None, False
    training = [r for r in records if r.kind == "train"]
    return len({r.attempt for r in training}), budget_stopped(training)


def job_id_of(run_id: str) -> int:
    """The managed job of a launched run; UserError for runs SkyPilot never got."""
    with Ledger() as ledger:
        row = ledger.get_run(run_id)
    if not row["job_ids"]:
        raise UserError(f"run {run_id!r} has no SkyPilot job ({row['status']})",
                        hint="only runs launched with `vops train` (not --local) have one")
    return int(row["job_ids"][-1])


def logs(run_id: str, follow: bool) -> int | None:
    return sky_sdk.tail_logs(job_id_of(run_id), follow=follow)


def cancel(run_id: str) -> int:
    job_id = job_id_of(run_id)
    sky_sdk.cancel([job_id])
    with Ledger() as ledger:
        ledger.update_run(run_id, status="cancelled", data={"cancelled_at": time.time()})
        ledger.add_event(run_id, "cancelled", {"job_id": job_id})
    return job_id


def _infra(job: sky_sdk.ManagedJob | None) -> str | None:
    if job is None:
        return None
    return "/".join(p for p in (job.cloud, job.region, job.zone) if p) or None


def _record_status(row: dict[str, Any], job: sky_sdk.ManagedJob, budget_stopped: bool) -> None:
    """Keep the ledger's status in step with SkyPilot's, so `vops runs` is current too."""
    new = "budget-stopped" if budget_stopped and job.status == "SUCCEEDED" else job.status.lower()
    if row["status"] == new:
        return
    with Ledger() as ledger:
        ledger.update_run(row["run_id"], status=new,
                          data={"recovery_count": job.recovery_count})
        ledger.add_event(row["run_id"], "status", {"from": row["status"], "to": new,
                                                   "job_id": job.job_id})
