"""Recipe + flags + zone candidates -> the SkyPilot task dict of a training run. Pure.

The base is ``sky/train.yaml``, loaded as data; this module overlays the run's values on a
copy of it, never by string templating, so the result is plain SkyPilot YAML.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import yaml

from vicuna_ops.bundled import bundled_file
from vicuna_ops.errors import ConfigError, VopsError
from vicuna_ops.launch.candidates import Candidate
from vicuna_ops.launch.setup_source import NodeInstall, setup_script

if TYPE_CHECKING:  # for annotations only: request.py -> infra -> slurm stays a tree
    from vicuna_ops.launch.request import TrainRequest

# Where the resolved recipe lands on the node (a file mount of runs/<run-id>/recipe.yaml).
NODE_RECIPE_PATH = "/vops/run/recipe.yaml"


def template_path(name: str) -> Path:
    """``sky/<name>.yaml`` from a checkout, else the copy packaged in vicuna_ops/assets/sky."""
    try:
        path = bundled_file("sky", f"{name}.yaml")
    except FileNotFoundError as exc:
        raise VopsError(str(exc), hint="reinstall vicuna-ops") from exc
    if not path.is_file():
        raise VopsError(f"task template {path} not found", hint="reinstall vicuna-ops")
    return path


def load_template(name: str = "train") -> dict[str, Any]:
    """A base task YAML from sky/, as a dict."""
    path = template_path(name)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}".splitlines()[0]) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must be a YAML mapping")
    return data


def ordered_resources(candidates: Sequence[Candidate]) -> list[dict[str, str]]:
    """``resources.ordered``: one entry per zone, tried in this order at launch and failover."""
    return [{"infra": cand.infra} for cand in candidates]


def build_train_task(base: dict[str, Any], request: TrainRequest,
                     candidates: Sequence[Candidate], install: NodeInstall,
                     recipe_file: str) -> dict[str, Any]:
    """The run's task: ``base`` overlaid with the request. ``recipe_file`` is the local
    resolved recipe (mounted at NODE_RECIPE_PATH). Secrets appear by name only (null
    values: SkyPilot reads them as references filled at launch)."""
    task = copy.deepcopy(base)
    task["name"] = request.run_id
    task["num_nodes"] = request.num_nodes

    resources = dict(task.get("resources") or {})
    resources["accelerators"] = str(request.gpus)
    resources["use_spot"] = request.use_spot
    resources["disk_size"] = request.recipe.resources.disk_size_gb
    recovery = dict(resources.get("job_recovery") or {})
    recovery.setdefault("strategy", "EAGER_NEXT_REGION")
    recovery["max_restarts_on_errors"] = request.max_restarts_on_errors
    resources["job_recovery"] = recovery
    resources.pop("any_of", None)
    resources["ordered"] = ordered_resources(candidates)
    task["resources"] = resources

    envs = {str(k): str(v) for k, v in (task.get("envs") or {}).items()}
    envs.update(request.envs)
    envs.update(install.envs())
    envs.update(_run_envs(request))
    task["envs"] = envs
    if request.secret_names:
        task["secrets"] = {name: None for name in request.secret_names}
    else:
        task.pop("secrets", None)

    mounts = dict(task.get("file_mounts") or {})
    mounts[NODE_RECIPE_PATH] = recipe_file
    task["file_mounts"] = mounts
    if install.workdir:
        task["workdir"] = install.workdir
    else:
        task.pop("workdir", None)
    # the template's own setup (the node-start record) runs first, then the install
    task["setup"] = str(task.get("setup") or "") + setup_script()
    return _in_reading_order(task)


# The order a reader expects in the written YAML; unknown template keys keep their place after.
_KEY_ORDER = ("name", "workdir", "resources", "num_nodes", "envs", "secrets", "file_mounts",
              "setup", "run")


def _in_reading_order(task: dict[str, Any]) -> dict[str, Any]:
    ordered = {key: task[key] for key in _KEY_ORDER if key in task}
    ordered.update((key, value) for key, value in task.items() if key not in ordered)
    return ordered


def _run_envs(request: TrainRequest) -> dict[str, str]:
    """The VOPS_* envs the node's entry point and segment records read."""
    envs = {
        "VOPS_RUN_ID": request.run_id,
        "VOPS_BUCKET": request.bucket,
        "VOPS_RECIPE": NODE_RECIPE_PATH,
        "VOPS_GPUS": str(request.gpus),
        "VOPS_USE_SPOT": "true" if request.use_spot else "false",
    }
    # Optional ones only when set: an empty string would read as a value on the node.
    if request.data:
        envs["VOPS_DATA"] = request.data
    if request.max_steps is not None:
        envs["VOPS_MAX_STEPS"] = str(request.max_steps)
    if request.max_cost is not None:
        envs["VOPS_MAX_COST"] = f"{request.max_cost:g}"
    return envs


def dump_task(task: dict[str, Any]) -> str:
    """YAML text with the keys in the template's order, long scripts as blocks."""
    return yaml.dump(task, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=100)


def write_task_yaml(run_dir: str | Path, name: str, task: dict[str, Any]) -> Path:
    """Write ``<run_dir>/<name>.yaml`` atomically and return its path."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(dump_task(task))
    tmp.replace(path)
    return path


class _BlockDumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_BlockDumper.add_representer(str, _str_presenter)
