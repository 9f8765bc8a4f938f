"""The only module that talks to SkyPilot's API server: launch, queue, logs, cancel.

Kept thin on purpose: tests replace these functions with a recording fake, and everything in
front of them (template, parser, optimizer, plan, ledger) runs SkyPilot's real code.
SkyPilot errors are translated to CloudError here, at the boundary.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from vicuna_ops import adaptors
from vicuna_ops.errors import CloudError


# What `vops status` shows; asking for these only keeps the reply small (no task YAMLs).
QUEUE_FIELDS = ("job_id", "task_id", "job_name", "task_name", "status", "recovery_count",
                "cloud", "region", "zone", "resources", "cluster_resources", "submitted_at",
                "start_at", "last_recovered_at", "end_at", "job_duration", "failure_reason")


@dataclass(frozen=True)
class ManagedJob:
    """One row of SkyPilot's managed-jobs queue, in the fields vops shows."""

    job_id: int
    name: str | None
    status: str  # ManagedJobStatus name: PENDING, RUNNING, RECOVERING, SUCCEEDED, ...
    recovery_count: int
    cloud: str | None
    region: str | None
    zone: str | None
    resources: str | None
    submitted_at: float | None
    end_at: float | None
    job_duration: float | None  # seconds the job has run (excludes recovery gaps)
    failure_reason: str | None = None
    start_at: float | None = None  # when the job first started running
    last_recovered_at: float | None = None  # when its latest relaunch started (billing)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def launch_managed_job(yaml_path: str | Path, name: str,
                       secrets: Mapping[str, str] | None = None) -> int:
    """``sky.jobs.launch`` the task in ``yaml_path`` as managed job ``name``; its job id.

    ``secrets`` fill the task's ``secrets:`` (written to disk by name only) in memory.
    """
    sky = adaptors.sky()
    import yaml

    config = yaml.safe_load(Path(yaml_path).read_text())
    config = copy.deepcopy(config)
    if secrets:
        config["secrets"] = {**(config.get("secrets") or {}), **dict(secrets)}
    with _sky_errors("launch"):
        task = sky.Task.from_yaml_config(config)
        job_ids, _handle = sky.get(sky.jobs.launch(task, name=name))
    if not job_ids:
        raise CloudError(f"SkyPilot launched no managed job for {name!r}",
                         hint="see `sky jobs queue` and `sky api logs`")
    return int(job_ids[0])


def queue(job_ids: Sequence[int] | None = None, *, refresh: bool = False) -> list[ManagedJob]:
    """The managed-jobs queue (``sky.jobs.queue_v2``), only ``job_ids`` when given."""
    sky = adaptors.sky()
    with _sky_errors("read the managed-jobs queue"):
        result = sky.get(sky.jobs.queue_v2(refresh=refresh, skip_finished=False,
                                           job_ids=list(job_ids) if job_ids else None,
                                           fields=list(QUEUE_FIELDS)))
    records = result[0] if isinstance(result, tuple) else result
    return [_to_job(record) for record in records]


def tail_logs(job_id: int, *, follow: bool = True) -> int | None:
    """Stream a managed job's logs to stdout (``sky.jobs.tail_logs``); the job's exit code
    when following to the end."""
    sky = adaptors.sky()
    with _sky_errors("fetch logs"):
        return sky.jobs.tail_logs(job_id=job_id, follow=follow)


def cancel(job_ids: Sequence[int]) -> None:
    """``sky.jobs.cancel`` these managed jobs and wait for SkyPilot to accept it."""
    sky = adaptors.sky()
    with _sky_errors("cancel"):
        sky.get(sky.jobs.cancel(job_ids=list(job_ids)))


def _to_job(record: Any) -> ManagedJob:
    get = record.get if isinstance(record, Mapping) else (lambda k, d=None: getattr(record, k, d))
    status = get("status")
    status_name = getattr(status, "name", None) or str(status or "UNKNOWN")
    return ManagedJob(
        job_id=int(get("job_id")), name=get("job_name") or get("task_name"),
        status=status_name.split(".")[-1], recovery_count=int(get("recovery_count") or 0),
        cloud=get("cloud"), region=get("region"), zone=get("zone"),
        resources=get("cluster_resources") or get("resources"),
        submitted_at=get("submitted_at"), end_at=get("end_at") or None,
        job_duration=get("job_duration"), failure_reason=get("failure_reason"),
        start_at=get("start_at") or None,
        last_recovered_at=get("last_recovered_at") or None)


@contextmanager
def _sky_errors(action: str) -> Iterator[None]:
    try:
        yield
    except CloudError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CloudError(f"SkyPilot could not {action}: {first}",
                         hint="check `sky api info` and `sky check`; --debug shows the "
                              "SkyPilot error") from exc
