"""Segment records: one JSON object per training attempt or serving process, in the run's
bucket under ``segments/<segment-id>.json``.

The process that owns a segment rewrites its record as it runs (``heartbeat`` moves forward,
``steps``/``tokens`` grow); cost reporting reads them after the fact. A record is the unit
of billing: ``heartbeat - start`` hours on ``num_nodes`` nodes of ``instance_type`` in
``zone``, spot or not.

What the cloud bills starts when the node starts, not when the trainer does: the task's
setup writes the time into ``~/.vops/node-started`` before it installs anything (see
``sky/train.yaml``), and the trainer, which starts later in the same attempt, uses it as
the record's ``start`` (``node_start``). ``train_start`` is when the first training step
began: ``start .. train_start`` is start-up (provisioning, setup, downloads, model build).

Steps, one definition for the writer and the cost model: ``first_step`` is the global step
an attempt *started from* (its checkpoint's step, 0 on a fresh start); it trains steps
``first_step + 1 .. steps``. See ``steps_trained`` and ``redone_steps``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vicuna_ops import layout

SegmentKind = Literal["train", "serve-worker", "serve-controller"]
SegmentStatus = Literal["running", "finished", "preempted", "budget-stopped", "failed", "lost"]
# A record whose writer says nothing for this long after its last heartbeat is dead: the
# run lease expires after the same time (``train/lease.py``).
MIN_EXPIRY_S = 15.0
DEFAULT_HEARTBEAT_S = 300.0  # records written before they carried their interval


class SegmentRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")  # newer writers may add fields

    run_id: str
    segment_id: str
    kind: SegmentKind = "train"
    attempt: int = Field(1, ge=1)
    cloud: str = "local"
    region: str | None = None
    zone: str | None = None
    instance_type: str | None = None
    accelerators: str | None = None  # e.g. "A100:8"
    use_spot: bool = False
    num_nodes: int = Field(1, ge=1)
    start: float  # unix seconds
    heartbeat: float  # unix seconds, last time the process was seen alive
    status: SegmentStatus = "running"
    first_step: int | None = None  # the step it started from (checkpoint's; 0 fresh)
    steps: int = 0  # global step reached
    tokens: int = 0  # trained tokens (train) or generated tokens (serve) in this segment
    epoch: float = 0.0
    heartbeat_s: float | None = None  # the writer's interval: when silence means death
    train_start: float | None = None  # unix seconds: the first training step began
    start_source: str | None = None  # what ``start`` is: setup | trainer | skypilot

    @property
    def hours(self) -> float:
        return max(0.0, self.heartbeat - self.start) / 3600


def steps_trained(record: SegmentRecord) -> int | None:
    """Optimizer steps this attempt ran: ``steps - first_step`` (None if first_step unknown)."""
    if record.first_step is None:
        return None
    return max(0, record.steps - record.first_step)


def redone_steps(interrupted: SegmentRecord, following: SegmentRecord) -> int | None:
    """Steps the interrupted attempt ran that the following attempt ran again: the following
    one started from its checkpoint at ``following.first_step``, so every step the
    interrupted attempt reached beyond it is done twice. A resume from the checkpoint at the
    interrupted attempt's last step redoes nothing."""
    if interrupted.first_step is None or following.first_step is None:
        return None
    return max(0, interrupted.steps - max(following.first_step, interrupted.first_step))


NODE_STARTED_ENV = "VOPS_NODE_STARTED_FILE"


def node_started_path() -> Path | None:
    """Where this node's setup wrote its start time: ``$VOPS_NODE_STARTED_FILE``, else
    ``~/.vops/node-started`` on a SkyPilot node (None elsewhere: a laptop has no setup)."""
    if os.environ.get(NODE_STARTED_ENV):
        return Path(os.environ[NODE_STARTED_ENV]).expanduser()
    if os.environ.get("SKYPILOT_TASK_ID") or os.environ.get("SKYPILOT_CLUSTER_INFO"):
        return Path.home() / ".vops" / "node-started"
    return None


def node_start(now: float, not_before: float | None = None) -> float | None:
    """The node's start time as its setup recorded it, when it is plausible for this
    attempt: not in the future, and not before ``not_before`` (the run's previous attempt's
    last heartbeat: a leftover from an earlier attempt on the same machine is not ours)."""
    path = node_started_path()
    if path is None:
        return None
    try:
        value = float(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if value > now or (not_before is not None and value < not_before):
        return None
    return value


def expiry_s(heartbeat_s: float | None) -> float:
    """How long after its last heartbeat a 'running' record is given up: a few intervals."""
    return max(3 * (heartbeat_s or DEFAULT_HEARTBEAT_S), MIN_EXPIRY_S)


def settle(record: SegmentRecord, now: float) -> SegmentRecord:
    """A 'running' record whose heartbeats stopped (its process was killed without a word)
    is 'lost', ended at its last heartbeat; any other record is returned as it is."""
    if record.status == "running" and now - record.heartbeat > expiry_s(record.heartbeat_s):
        return record.model_copy(update={"status": "lost"})
    return record


def node_identity() -> dict[str, object]:
    """Where this process runs, from SkyPilot's task environment, or "local".

    SkyPilot exports SKYPILOT_CLUSTER_INFO (JSON with cloud, region, zone) on task nodes; the
    instance type and spot flag come from the env vars vops' task YAMLs set.
    """
    info: dict[str, object] = {"cloud": "local"}
    raw = os.environ.get("SKYPILOT_CLUSTER_INFO")
    if raw:
        try:
            cluster = json.loads(raw)
            info.update(cloud=str(cluster.get("cloud") or "unknown").lower(),
                        region=cluster.get("region"), zone=cluster.get("zone"))
        except (ValueError, AttributeError):
            pass
    for key, env in (("instance_type", "VOPS_INSTANCE_TYPE"), ("accelerators", "VOPS_GPUS")):
        if os.environ.get(env):
            info[key] = os.environ[env]
    if os.environ.get("VOPS_USE_SPOT"):
        info["use_spot"] = os.environ["VOPS_USE_SPOT"].lower() in ("1", "true", "yes")
    if os.environ.get("SKYPILOT_NUM_NODES"):
        info["num_nodes"] = int(os.environ["SKYPILOT_NUM_NODES"])
    return info


def write_segment(store, record: SegmentRecord) -> None:  # store: vicuna_ops.storage.Store
    store.put_bytes(layout.segment_key(record.segment_id),
                    record.model_dump_json(indent=1).encode())


def read_segments(store) -> tuple[list[SegmentRecord], list[str]]:
    """All segment records of a run, and one problem line per record that could not be read."""
    records: list[SegmentRecord] = []
    problems: list[str] = []
    for info in store.list(layout.SEGMENTS + "/"):
        if not info.key.endswith(".json"):
            continue
        try:
            records.append(SegmentRecord.model_validate_json(store.get_bytes(info.key)))
        except (ValidationError, ValueError) as exc:
            first = str(exc).splitlines()[0]
            problems.append(f"{store.url_for(info.key)}: corrupt segment record ({first})")
    records.sort(key=lambda r: (r.start, r.segment_id))
    return records, problems


def now() -> float:
    return time.time()
