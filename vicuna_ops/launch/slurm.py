"""Slurm as a place to run: ``--clouds slurm`` (or ``slurm/<cluster>``) maps a run to
SkyPilot's ``infra: slurm``. Pure apart from reading the launching machine's pip settings.

What differs from a cloud run, and why:

* **Node size.** Without ``--gpus`` the job asks for a CPU node, ``cpus``/``memory`` from
  VOPS_SLURM_CPUS / VOPS_SLURM_MEMORY (default 1 CPU, 2 GB: enough for the tiny recipe);
  with ``--gpus`` it asks for those accelerators. No spot market: preemption on Slurm is the
  scheduler's (``scancel``, a higher-priority job), which SkyPilot recovers all the same.
* **Buckets.** A Slurm cluster's nodes share a filesystem with its login node, so a local
  path (or file://) is a valid bucket here, unlike on a cloud.
* **No root on the node.** A file mount to ``/vops/...`` needs sudo; the recipe goes to
  ``~/.vops/run/recipe.yaml`` instead.
* **A venv that survives a preemption.** SkyPilot gives every Slurm cluster a fresh $HOME
  (``~/.sky_clusters/<cluster>``) and deletes it when the allocation ends, so the node venv
  lives in the user's own home, one per set of extras, and ``$HOME/vops-venv`` (what the
  task templates activate) links to it; a lock serialises tasks installing at once. A
  relaunch then skips the install (``setup_source``'s install-id marker).
* **The launching machine's package sources.** Slurm nodes usually share the launching
  machine's software environment (its mirrors, a wheel folder); its pip settings (index,
  extra indexes, find-links, constraint files) are passed on, for pip and for uv, and torch
  is pinned to the launching machine's version, so every attempt of a run trains on the
  same torch and a local CPU wheel is not swapped for a multi-GB download.
* **Partitions are zones.** SkyPilot treats a cluster's partitions as its zones
  (``infra: slurm/<cluster>/<partition>``): ``--zones p1,p2`` with ``--clouds slurm/CLUSTER``
  becomes an ``ordered`` list, tried in that order at launch and at every recovery.
* **Serving.** Slurm cannot open ports and packs several tasks onto one node: the
  controller listens on ``--port`` and worker ``i`` on ``--port + 1 + i``.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from vicuna_ops.errors import UserError

SLURM = "slurm"
DEFAULT_CPUS = 1.0
DEFAULT_MEMORY_GB = 2.0
NODE_RECIPE_PATH = "~/.vops/run/recipe.yaml"
VENV_ROOT = ".vops/venvs"  # under the Slurm user's own home
# pip setting -> the environment variables pip and uv read it from on the node
_PIP_TO_ENV = {
    "index-url": ("PIP_INDEX_URL", "UV_INDEX_URL"),
    "extra-index-url": ("PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL"),
    "find-links": ("PIP_FIND_LINKS", "UV_FIND_LINKS"),
    "constraint": ("PIP_CONSTRAINT", "UV_CONSTRAINT"),
}
# Later scopes win, as in pip itself.
_SCOPE_ORDER = ("global", "user", "site", ":env:")
_CONFIG_LINE = re.compile(r"^(?P<scope>[^.]+)\.(?P<key>[a-z-]+)='(?P<value>.*)'$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class NodeSize:
    """A CPU node: SkyPilot's Slurm instance types are named ``<cpus>CPU--<memory>GB``."""

    cpus: float
    memory_gb: float

    @property
    def instance_type(self) -> str:
        return f"{_number(self.cpus)}CPU--{_number(self.memory_gb)}GB"


def is_slurm(cloud: str) -> bool:
    """``slurm`` or ``slurm/<cluster>``."""
    return cloud == SLURM or cloud.startswith(SLURM + "/")


def targets(clouds: Sequence[str]) -> bool:
    return any(is_slurm(c) for c in clouds)


def parse(text: str | None) -> tuple[str, ...] | None:
    """``--clouds`` naming Slurm -> ``("slurm",)`` or ``("slurm/<cluster>",)``; None when it
    names no Slurm (the cloud parser takes it from there)."""
    if text is None:
        return None
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not any(is_slurm(item.lower()) for item in items):
        return None
    items = [SLURM + item[len(SLURM):] if is_slurm(item.lower()) else item.lower()
             for item in items]
    check_clouds(items)
    return (items[0],)


def check_clouds(clouds: Sequence[str]) -> None:
    """Slurm stands alone: SkyPilot cannot fail over between a Slurm cluster and a cloud
    zone list in one task, and the bucket rules differ."""
    slurm = [c for c in clouds if is_slurm(c)]
    if not slurm:
        return
    if len(clouds) > 1:
        raise UserError(f"--clouds {','.join(clouds)}: slurm cannot be combined with other "
                        "clouds", hint="pass --clouds slurm (or slurm/CLUSTER) on its own")
    cluster = slurm[0].partition("/")[2]
    if slurm[0] != SLURM and not _NAME.match(cluster):
        raise UserError(f"--clouds {slurm[0]}: {cluster!r} is not a Slurm cluster name",
                        hint="write slurm or slurm/CLUSTER (a Host of ~/.slurm/config)")


def infra(clouds: Sequence[str]) -> str:
    """SkyPilot's ``infra:`` value for the run."""
    return next(c for c in clouds if is_slurm(c))


def check_partitions(clouds: Sequence[str], partitions: Sequence[str]) -> None:
    """``--zones`` on Slurm names partitions of one named cluster."""
    if infra(clouds) == SLURM:
        raise UserError("--zones on Slurm names partitions of one cluster",
                        hint="name the cluster: --clouds slurm/CLUSTER --zones P1,P2")
    bad = [p for p in partitions if not _NAME.match(p)]
    if bad:
        raise UserError(f"--zones: {bad[0]!r} is not a Slurm partition name")


def node_size(environ: Mapping[str, str] | None = None) -> NodeSize:
    """The CPU node a run without ``--gpus`` asks for."""
    environ = os.environ if environ is None else environ
    return NodeSize(_positive(environ, "VOPS_SLURM_CPUS", DEFAULT_CPUS),
                    _positive(environ, "VOPS_SLURM_MEMORY", DEFAULT_MEMORY_GB))


def resources(base: Mapping[str, Any], clouds: Sequence[str], node: NodeSize | None,
              gpus: str | None, partitions: Sequence[str] | None = None) -> dict[str, Any]:
    """The task's ``resources`` for Slurm, keeping the template's ``job_recovery``; with
    ``partitions``, an ``ordered`` list of them (SkyPilot's zones of the cluster)."""
    out: dict[str, Any] = {"infra": infra(clouds)}
    if partitions:
        out = {"ordered": [{"infra": f"{infra(clouds)}/{p}"} for p in partitions]}
    if node is not None:
        out.update(cpus=_number(node.cpus), memory=_number(node.memory_gb))
    elif gpus:
        out["accelerators"] = gpus
    out["use_spot"] = False
    if base.get("job_recovery"):
        out["job_recovery"] = dict(base["job_recovery"])
    return out


def read_pip_settings(python: str = sys.executable) -> dict[str, str]:
    """The launching machine's pip settings that decide where packages come from
    (``pip config list``, which includes the PIP_* environment)."""
    try:
        out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_pip_config(out)


def parse_pip_config(text: str) -> dict[str, str]:
    found: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        match = _CONFIG_LINE.match(line.strip())
        if not match or match["key"] not in _PIP_TO_ENV:
            continue
        scope = match["scope"]
        rank = _SCOPE_ORDER.index(scope) if scope in _SCOPE_ORDER else len(_SCOPE_ORDER)
        if match["key"] not in found or rank >= found[match["key"]][0]:
            found[match["key"]] = (rank, match["value"])
    return {key: value for key, (_, value) in found.items()}


def pip_envs(settings: Mapping[str, str], torch_version: str | None) -> dict[str, str]:
    """Task envs that give the node's pip and uv the launching machine's package sources,
    and the torch pin the setup turns into a constraints file (VOPS_NODE_CONSTRAINTS)."""
    envs: dict[str, str] = {}
    for key, value in settings.items():
        value = " ".join(value.split())
        if value:
            for name in _PIP_TO_ENV[key]:
                envs[name] = value
    if torch_version:
        envs["VOPS_NODE_CONSTRAINTS"] = f"torch=={torch_version.split('+')[0]}"
    return envs


@functools.lru_cache(maxsize=1)
def _launching_machine_envs() -> tuple[tuple[str, str], ...]:
    return tuple(pip_envs(read_pip_settings(), local_torch_version()).items())


def launching_machine_envs() -> dict[str, str]:
    """``pip_envs`` of this machine, read once per process: a deployment adapts a controller
    and every worker task, and each read runs ``pip config list`` (a subprocess)."""
    return dict(_launching_machine_envs())


def local_torch_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def setup_script(inner: str) -> str:
    """``inner`` (setup_source's script) behind the persistent-venv and constraints preamble."""
    return _PREAMBLE.replace("@ROOT@", VENV_ROOT) + inner


def adapt_task(task: dict[str, Any], clouds: Sequence[str], *, node: NodeSize | None,
               gpus: str | None, envs: Mapping[str, str], recipe_mount: str | None = None,
               partitions: Sequence[str] | None = None) -> dict[str, Any]:
    """A cloud task dict (as the launcher builds it) turned into its Slurm form."""
    out = dict(task)
    out["resources"] = resources(task.get("resources") or {}, clouds, node, gpus, partitions)
    task_envs = dict(task.get("envs") or {})
    task_envs.update(envs)
    if node is not None:
        # The node's segment records: no GPUs, and the instance type SkyPilot bills it as
        # (the template's metadata probes would find nothing on Slurm).
        task_envs.update(VOPS_GPUS="", VOPS_INSTANCE_TYPE=node.instance_type)
    task_envs["VOPS_USE_SPOT"] = "false"
    mounts = dict(task.get("file_mounts") or {})
    if recipe_mount is not None:
        source = mounts.pop(recipe_mount, None)
        if source is not None:
            mounts[NODE_RECIPE_PATH] = source
            task_envs["VOPS_RECIPE"] = NODE_RECIPE_PATH
    if mounts:
        out["file_mounts"] = mounts
    out["envs"] = task_envs
    if out.get("setup"):
        out["setup"] = setup_script(out["setup"])
    return out


def train_task(task: dict[str, Any], request: Any) -> dict[str, Any]:
    """``vops train``'s task (launch.task.build_train_task) in its Slurm form.
    ``request`` is a launch.request.TrainRequest."""
    from vicuna_ops.launch.task import NODE_RECIPE_PATH as CLOUD_RECIPE_PATH  # no cycle

    return adapt_task(task, request.clouds, node=request.cpu_node,
                      gpus=None if request.cpu_node else str(request.gpus),
                      envs=launching_machine_envs(), recipe_mount=CLOUD_RECIPE_PATH,
                      partitions=request.zones)


def serve_task(task: dict[str, Any], clouds: Sequence[str], *, port: int) -> dict[str, Any]:
    """A ``vops serve`` controller or worker task (serve.skytasks) in its Slurm form: a CPU
    node, and its own port, since Slurm packs several tasks onto one node and cannot open
    ports (the task's ``ports`` goes; the cluster's network is reachable as it is)."""
    port_env = "VOPS_WORKER_PORT" if "VOPS_WORKER_PORT" in (task.get("envs") or {}) \
        else "VOPS_API_PORT"
    return adapt_task(task, clouds, node=node_size(), gpus=None,
                      envs={**launching_machine_envs(), port_env: str(port)})


def worker_port(api_port: int, index: int) -> int:
    """Worker ``index``'s port on Slurm: after the controller's (``--port``)."""
    return api_port + 1 + index


def candidates(placement: Any, partitions: Sequence[str] | None = None) -> list[Any]:
    """The places of a Slurm run as launch Candidates, priced by the ``slurm.pricing`` of
    ~/.sky/config.yaml: the cluster and partition SkyPilot's optimizer picked, or each of
    ``partitions`` in order (same cluster, same node size, same price)."""
    from vicuna_ops.launch.candidates import Candidate

    zones = list(partitions) if partitions else [placement.zone or ""]
    return [Candidate(cloud=SLURM, region=placement.region or "", zone=zone,
                      instance_type=placement.instance_type or "", spot_price=None,
                      ondemand_price=placement.hourly_price) for zone in zones]


def _positive(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UserError(f"{name}={raw!r} is not a positive number",
                        hint=f"unset it for the default ({_number(default)})")
    return value


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


_PREAMBLE = r"""# vops on Slurm: this cluster's $HOME is deleted with its allocation, so the venv lives in
# the user's own home (one per set of extras) and $HOME/vops-venv links to it.
set -euo pipefail
VOPS_USER_HOME="$(getent passwd "$(id -un)" | cut -d: -f6)"
VOPS_EXTRAS="$(printf '%s' "$VOPS_INSTALL" | sed -n 's/.*\[\(.*\)\].*/\1/p' | tr -c 'A-Za-z0-9\n' '-')"
VOPS_VENV_DIR="$VOPS_USER_HOME/@ROOT@/venv-${VOPS_EXTRAS:-base}"
mkdir -p "$(dirname "$VOPS_VENV_DIR")" "$HOME/.vops"
exec 9>"$VOPS_VENV_DIR.lock"
flock 9  # tasks of this user starting together install one at a time
# Installed through its real path (scripts' shebangs name it); the task's run finds it at
# $HOME/vops-venv as on a cloud node.
export VOPS_NODE_VENV="$VOPS_VENV_DIR"
ln -sfn "$VOPS_VENV_DIR" "$HOME/vops-venv"
if [ -n "${VOPS_NODE_CONSTRAINTS:-}" ]; then
  printf '%s\n' $VOPS_NODE_CONSTRAINTS > "$HOME/.vops/constraints.txt"
  export UV_CONSTRAINT="$HOME/.vops/constraints.txt${UV_CONSTRAINT:+ $UV_CONSTRAINT}"
  export PIP_CONSTRAINT="$HOME/.vops/constraints.txt${PIP_CONSTRAINT:+ $PIP_CONSTRAINT}"
fi
"""
