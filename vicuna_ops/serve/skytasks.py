"""The SkyPilot tasks of a cloud deployment, as dicts. Pure: request + candidates in, tasks out.

The bases are ``sky/serve-controller.yaml`` and ``sky/serve-worker.yaml`` (loaded as data by
the launcher's ``load_template``); the deployment's values are overlaid on copies, never
templated into strings. Secrets appear by name only (``{NAME: None}``); their values travel
in memory to ``sky_sdk.launch_managed_job(secrets=...)``.

Spreading: every worker is its own managed job with its own ``resources.ordered`` list. The
first entries differ: replica after replica takes the cheapest zone whose zone, then cloud,
then region is least used so far, so with ``--clouds aws,gcp`` the replicas alternate clouds
and never share a zone while there are zones to spare. The rest of each list is every other
candidate, cheapest first, for SkyPilot to fail over along.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from vicuna_ops.launch import Candidate, Gpus, NodeInstall, ordered_resources, setup_script

CONTROLLER_TEMPLATE = "serve-controller"
WORKER_TEMPLATE = "serve-worker"
WORKER_TOKEN = "VOPS_WORKER_TOKEN"
API_KEYS = "VOPS_API_KEYS"
SERVE_EXTRAS = ("serve", "train", "s3", "gcs")  # a worker runs transformers
CONTROLLER_EXTRAS = ("serve", "s3", "gcs")
WORKER_PORT = 8001


@dataclass(frozen=True)
class ServeRequest:
    """A validated ``vops serve --clouds ...`` request."""

    name: str
    model: str  # bucket URI of an HF model folder
    model_name: str
    bucket: str
    clouds: tuple[str, ...]
    replicas: int
    gpus: Gpus
    use_spot: bool
    ondemand_fallback: int  # of the replicas, this many on demand
    port: int = 8000
    backend: str = "transformers"
    max_concurrency: int = 4
    heartbeat_interval: float = 2.0
    with_api_keys: bool = False
    envs: dict[str, str] = field(default_factory=dict)
    gpus_auto: bool = False  # --gpus auto: deploy.prepare picks ``gpus`` (launch.gpu_fit)
    max_model_len: int | None = None  # the context a worker plans its KV cache for

    @property
    def ondemand_replicas(self) -> int:
        return self.replicas if not self.use_spot else self.ondemand_fallback

    def replica_uses_spot(self, index: int) -> bool:
        return index >= self.ondemand_replicas


def spread_replicas(candidates: Sequence[Candidate], replicas: int) -> list[list[Candidate]]:
    """One ordered zone list per replica, first choices spread over zones, clouds, regions."""
    if not candidates:
        return [[] for _ in range(replicas)]
    rank = {id(c): i for i, c in enumerate(candidates)}
    zones: Counter = Counter()
    clouds: Counter = Counter()
    regions: Counter = Counter()
    lists = []
    for _ in range(replicas):
        first = min(candidates, key=lambda c: (
            zones[c.infra], clouds[c.cloud], regions[(c.cloud, c.region)], rank[id(c)]))
        zones[first.infra] += 1
        clouds[first.cloud] += 1
        regions[(first.cloud, first.region)] += 1
        lists.append([first, *(c for c in candidates if c is not first)])
    return lists


def controller_task(base: dict[str, Any], request: ServeRequest,
                    install: NodeInstall) -> dict[str, Any]:
    task = copy.deepcopy(base)
    task["name"] = f"{request.name}-controller"
    resources = dict(task.get("resources") or {})
    resources["ports"] = request.port
    resources["use_spot"] = False
    resources["any_of"] = [{"infra": cloud} for cloud in request.clouds]
    task["resources"] = resources
    envs = _envs(task, request, install)
    envs.update(VOPS_API_PORT=str(request.port),
                VOPS_HEARTBEAT_INTERVAL=f"{request.heartbeat_interval:g}",
                VOPS_MODEL_NAME=request.model_name)  # known before a worker registers
    task["envs"] = envs
    names = [WORKER_TOKEN, *([API_KEYS] if request.with_api_keys else [])]
    task["secrets"] = {name: None for name in names}
    return _finish(task, install)


def worker_task(base: dict[str, Any], request: ServeRequest, index: int,
                candidates: Sequence[Candidate], install: NodeInstall) -> dict[str, Any]:
    task = copy.deepcopy(base)
    task["name"] = f"{request.name}-worker-{index}"
    use_spot = request.replica_uses_spot(index)
    resources = dict(task.get("resources") or {})
    resources["accelerators"] = str(request.gpus)
    resources["use_spot"] = use_spot
    resources["ports"] = WORKER_PORT
    resources.pop("any_of", None)
    resources["ordered"] = ordered_resources(candidates)
    task["resources"] = resources
    envs = _envs(task, request, install)
    envs.update(VOPS_MODEL=request.model, VOPS_MODEL_NAME=request.model_name,
                VOPS_BACKEND=request.backend, VOPS_MAX_CONCURRENCY=str(request.max_concurrency),
                VOPS_WORKER_PORT=str(WORKER_PORT), VOPS_GPUS=str(request.gpus),
                VOPS_USE_SPOT="true" if use_spot else "false")
    if request.max_model_len:
        envs["VOPS_MAX_MODEL_LEN"] = str(request.max_model_len)  # the vLLM backend reads it
    task["envs"] = envs
    task["secrets"] = {WORKER_TOKEN: None}
    return _finish(task, install)


def _envs(task: dict[str, Any], request: ServeRequest, install: NodeInstall) -> dict[str, str]:
    envs = {str(k): str(v) for k, v in (task.get("envs") or {}).items()}
    envs.update(request.envs)
    envs.update(install.envs())
    envs.update(VOPS_SERVE_NAME=request.name, VOPS_BUCKET=request.bucket)
    return envs


_KEY_ORDER = ("name", "workdir", "resources", "envs", "secrets", "setup", "run")


def _finish(task: dict[str, Any], install: NodeInstall) -> dict[str, Any]:
    if install.workdir:
        task["workdir"] = install.workdir
    else:
        task.pop("workdir", None)
    task["setup"] = setup_script()
    ordered = {key: task[key] for key in _KEY_ORDER if key in task}
    ordered.update((key, value) for key, value in task.items() if key not in ordered)
    return ordered
