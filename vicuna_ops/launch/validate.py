"""Check a task with SkyPilot itself: its YAML parser and schema, then its optimizer.

The optimizer is asked where the task would go *on the catalog*, as if the clouds the task
names were enabled: whether this machine holds credentials (or talks to a remote API
server that does) is settled at launch, and probing credentials here would make a dry run
slow, or hang without network. Nothing here needs an API server.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from vicuna_ops import adaptors
from vicuna_ops.errors import CloudError
from vicuna_ops.launch.sky_calls import first_line, silent


@dataclass(frozen=True)
class Placement:
    """Where SkyPilot's optimizer puts the task first."""

    cloud: str
    region: str | None
    zone: str | None
    instance_type: str | None
    use_spot: bool
    hourly_price: float | None  # per node, $/h

    @property
    def infra(self) -> str:
        return "/".join(p for p in (self.cloud, self.region, self.zone) if p)


@dataclass(frozen=True)
class ValidatedTask:
    task: Any  # sky.Task, with best_resources set
    placement: Placement


def parse_task(task_dict: dict[str, Any]) -> Any:
    """``sky.Task.from_yaml_config`` on a copy (it pops keys): schema and field checks."""
    sky = adaptors.sky()
    try:
        with silent():
            return sky.Task.from_yaml_config(copy.deepcopy(task_dict))
    except Exception as exc:
        raise CloudError(f"SkyPilot rejects the task: {first_line(exc)}",
                         hint="rerun with --debug for the full SkyPilot error") from exc


def parse_task_file(path: str | Path) -> Any:
    """``sky.Task.from_yaml`` on a written task YAML: what ``sky jobs launch`` would read."""
    sky = adaptors.sky()
    try:
        with silent():
            return sky.Task.from_yaml(str(path))
    except Exception as exc:
        raise CloudError(f"SkyPilot rejects {path}: {first_line(exc)}",
                         hint="rerun with --debug for the full SkyPilot error") from exc


def validate_task(task_dict: dict[str, Any]) -> ValidatedTask:
    """Parse ``task_dict`` with SkyPilot and run its optimizer on it."""
    return optimize(parse_task(task_dict))


def validate_task_file(path: str | Path) -> ValidatedTask:
    """Read a written task YAML back with SkyPilot and run its optimizer on it."""
    return optimize(parse_task_file(path))


def optimize(task: Any) -> ValidatedTask:
    """Run ``sky.optimizer.Optimizer.optimize`` on a one-task DAG, quietly."""
    adaptors.sky()
    from sky import dag as dag_lib
    from sky import exceptions, optimizer

    clouds = _clouds_named(task)
    with dag_lib.Dag() as dag:
        dag.add(task)
    try:
        with silent(), _clouds_as_enabled(clouds):
            optimizer.Optimizer.optimize(dag, quiet=True)
    except exceptions.ResourcesUnavailableError as exc:
        raise CloudError(f"SkyPilot finds nowhere to run the task: {first_line(exc)}",
                         hint="relax --gpus, --regions or --zones, or add --clouds") from exc
    except Exception as exc:
        raise CloudError(f"SkyPilot's optimizer failed: {first_line(exc)}",
                         hint="rerun with --debug for the full SkyPilot error") from exc
    best = task.best_resources
    price = None
    try:
        price = float(best.get_cost(3600))
    except (AssertionError, ValueError):
        pass
    return ValidatedTask(task=task, placement=Placement(
        cloud=str(best.cloud).lower(), region=best.region, zone=best.zone,
        instance_type=best.instance_type, use_spot=bool(best.use_spot),
        hourly_price=None if price is None or math.isnan(price) else round(price, 6)))


def _clouds_named(task: Any) -> list[str]:
    from vicuna_ops.launch.candidates import SUPPORTED_CLOUDS

    named = {str(r.cloud).lower() for r in task.resources if r.cloud is not None}
    return sorted(named) or list(SUPPORTED_CLOUDS)


@contextmanager
def _clouds_as_enabled(names: list[str]) -> Iterator[None]:
    """Let the optimizer see ``names`` as the enabled clouds, for this call only."""
    import sky.check as sky_check
    from sky.utils import registry

    enabled = [registry.CLOUD_REGISTRY.from_str(name) for name in names]
    saved = (sky_check.get_cached_enabled_clouds_or_refresh, sky_check.check_capability)
    sky_check.get_cached_enabled_clouds_or_refresh = lambda *a, **k: list(enabled)
    sky_check.check_capability = lambda *a, **k: None
    try:
        yield
    finally:
        sky_check.get_cached_enabled_clouds_or_refresh, sky_check.check_capability = saved
