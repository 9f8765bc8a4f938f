"""``vops train`` flags -> a checked ``TrainRequest``. Pure apart from reading the recipe file
and the environment (for ``--secret``); no SkyPilot here, so every flag mistake is a one-line
error before the SkyPilot import, and before anything is written.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from vicuna_ops.config import check_run_id
from vicuna_ops.errors import UserError
from vicuna_ops.launch import slurm
from vicuna_ops.launch.accelerators import Gpus, parse_gpus
from vicuna_ops.launch.candidates import DEFAULT_CAP, DEFAULT_MIN_PER_CLOUD, parse_names
from vicuna_ops.launch.infra import Infra, parse_infra
from vicuna_ops.launch.ordering import parse_order
from vicuna_ops.recipe import Recipe, load_recipe

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Set by vops or SkyPilot on the node; a user --env must not shadow them.
_RESERVED_PREFIXES = ("VOPS_", "SKYPILOT_")


@dataclass(frozen=True)
class TrainRequest:
    """Everything a cloud training launch needs, checked."""

    run_id: str
    recipe: Recipe
    recipe_ref: str  # what the user passed to --recipe
    bucket: str  # canonical s3:// or gs:// URI of the bucket root; runs go to <bucket>/<run-id>/
    gpus: Gpus
    use_spot: bool = True
    clouds: tuple[str, ...] = ("aws", "gcp")
    regions: tuple[str, ...] | None = None
    zones: tuple[str, ...] | None = None
    num_nodes: int = 1
    max_restarts_on_errors: int = 0
    data: str | None = None
    max_steps: int | None = None
    max_cost: float | None = None
    envs: Mapping[str, str] = field(default_factory=dict)
    secret_names: tuple[str, ...] = ()
    cpu_node: slurm.NodeSize | None = None  # Slurm without --gpus: a CPU node of this size
    max_candidates: int = DEFAULT_CAP  # zones in the task's ordered list
    min_per_cloud: int = DEFAULT_MIN_PER_CLOUD  # ... at least this many of each cloud
    order: str | None = None  # --order price|expected; None: expected once there is history
    gpus_auto: bool = False  # --gpus auto: prepare() picks the GPUs (gpu_fit)

    @property
    def machine(self) -> str:
        """What one node asks for: ``A100:8``, or a Slurm CPU node's ``1CPU--2GB``."""
        return self.cpu_node.instance_type if self.cpu_node else str(self.gpus)

    @property
    def infra(self) -> Infra:
        """Where the run can go (launch/infra.py)."""
        return Infra(self.clouds)

    @property
    def run_uri(self) -> str:
        return f"{self.bucket.rstrip('/')}/{self.run_id}"


def build_request(*, recipe: str, bucket: str | None, gpus: str | None, use_spot: bool = True,
                  clouds: str | None = None, regions: str | None = None,
                  zones: str | None = None, num_nodes: int = 1,
                  max_restarts_on_errors: int = 0, name: str | None = None,
                  data: str | None = None, max_steps: int | None = None,
                  max_cost: float | None = None, envs: Sequence[str] = (),
                  secrets: Sequence[str] = (), default_bucket: str | None = None,
                  environ: Mapping[str, str] | None = None,
                  max_candidates: int = DEFAULT_CAP,
                  min_per_cloud: int = DEFAULT_MIN_PER_CLOUD,
                  order: str | None = None) -> TrainRequest:
    """Check every flag; raises UserError (exit 2) naming the first bad one."""
    import os

    environ = os.environ if environ is None else environ
    gpus_auto = bool(gpus) and gpus.strip().lower() == "auto"
    gpus_spec = parse_gpus(gpus) if gpus and not gpus_auto else None
    infra = parse_infra(clouds)
    region_list = parse_names(regions, "--regions")
    zone_list = parse_names(zones, "--zones")
    infra.check(regions=region_list, zones=zone_list, gpus_auto=gpus_auto)
    if num_nodes < 1:
        raise UserError(f"--num-nodes must be at least 1, not {num_nodes}")
    if max_restarts_on_errors < 0:
        raise UserError(f"--max-restarts-on-errors must be 0 or more, not "
                        f"{max_restarts_on_errors}")
    check_max_steps(max_steps)
    check_max_cost(max_cost)
    if infra.prices_zones:
        check_candidate_counts(max_candidates, min_per_cloud, infra.clouds)
    # A Slurm cluster's nodes share a filesystem with the login node: a path is a bucket.
    bucket_uri = check_cloud_bucket(bucket or default_bucket,
                                    allow_local=infra.reaches_local_paths)
    data_uri = check_data(data, allow_local=infra.reaches_local_paths)
    user_envs = parse_envs(envs)
    secret_names = parse_secret_names(secrets, environ)
    clash = sorted(set(user_envs) & set(secret_names))
    if clash:
        raise UserError(f"{clash[0]} is both an --env and a --secret", hint="pass it once")
    loaded = load_recipe(recipe)
    if data_uri is None and not loaded.data.path:
        raise UserError(f"recipe {loaded.name!r} names no training data",
                        hint="pass --data s3://BUCKET/conversations.jsonl (or gs://...)")
    run_id = check_run_id(name) if name else default_run_id(loaded.name)
    return TrainRequest(
        run_id=run_id, recipe=loaded, recipe_ref=recipe, bucket=bucket_uri,
        gpus=gpus_spec or parse_gpus(loaded.resources.gpus),
        use_spot=use_spot and infra.has_spot,
        clouds=infra.clouds, regions=region_list, zones=zone_list, num_nodes=num_nodes,
        max_restarts_on_errors=max_restarts_on_errors, data=data_uri, max_steps=max_steps,
        max_cost=max_cost, envs=user_envs, secret_names=secret_names,
        cpu_node=slurm.node_size(environ) if infra.is_slurm and gpus_spec is None else None,
        max_candidates=max_candidates, min_per_cloud=min_per_cloud,
        order=parse_order(order), gpus_auto=gpus_auto)


def default_run_id(recipe_name: str) -> str:
    """``vicuna-7b-20260101-120000``: readable, sortable, a valid run id."""
    stem = re.sub(r"[^a-z0-9-]+", "-", recipe_name.lower()).strip("-")[:40] or "run"
    return check_run_id(f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}")


def check_cloud_bucket(bucket: str | None, allow_local: bool = False) -> str:
    """An s3:// or gs:// bucket URI, canonical; a node cannot reach a local path."""
    from vicuna_ops.storage import parse_uri

    if not bucket:
        raise UserError("--bucket is required for a cloud run",
                        hint="pass --bucket s3://BUCKET/runs or gs://BUCKET/runs, or set "
                             "default_bucket in $VOPS_HOME/config.yaml")
    parsed = parse_uri(bucket)
    if parsed.is_local and not allow_local:
        raise UserError(f"--bucket {bucket!r} is a local path, which a cloud node cannot reach",
                        hint="use s3://BUCKET/PREFIX or gs://BUCKET/PREFIX (or `vops train "
                             "--local` to train here)")
    return parsed.uri


def check_data(data: str | None, allow_local: bool = False) -> str | None:
    """``--data``: a bucket URI (checked), or a form the node resolves itself (https://,
    hf://, builtin:...). A local path is refused: the node cannot read it."""
    if data is None:
        return None
    text = data.strip()
    if not text:
        raise UserError("--data is empty", hint="leave it out to use the recipe's data")
    if text.startswith(("s3://", "gs://", "file://")) or "://" not in text and ":" not in text:
        from vicuna_ops.storage import parse_uri

        parsed = parse_uri(text)
        if parsed.is_local and not allow_local:
            raise UserError(f"--data {data!r} is a local path, which a cloud node cannot read",
                            hint="copy it to a bucket and pass s3://... or gs://...")
        return parsed.uri
    return text


def check_candidate_counts(max_candidates: int, min_per_cloud: int,
                           clouds: Sequence[str]) -> None:
    """``--max-candidates`` / ``--min-per-cloud``: every cloud's share must fit the cap."""
    if max_candidates < 1:
        raise UserError(f"--max-candidates must be at least 1, not {max_candidates}")
    if min_per_cloud < 0:
        raise UserError(f"--min-per-cloud must be 0 or more, not {min_per_cloud}")
    if min_per_cloud * len(clouds) > max_candidates:
        raise UserError(f"--min-per-cloud {min_per_cloud} x {len(clouds)} clouds is more than "
                        f"--max-candidates {max_candidates}",
                        hint=f"raise --max-candidates to {min_per_cloud * len(clouds)} or "
                             "lower --min-per-cloud")


def check_max_steps(max_steps: int | None) -> None:
    if max_steps is not None and max_steps < 1:
        raise UserError(f"--max-steps must be at least 1, not {max_steps}")


def check_max_cost(max_cost: float | None) -> None:
    if max_cost is not None and not (math.isfinite(max_cost) and max_cost > 0):
        raise UserError(f"--max-cost must be a positive number of dollars, not {max_cost}",
                        hint="e.g. --max-cost 150")


def parse_envs(items: Sequence[str]) -> dict[str, str]:
    """``--env K=V`` (repeatable) -> ``{K: V}``."""
    envs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--env {item!r} is not KEY=VALUE", hint="write --env KEY=VALUE")
        _check_env_name(key, "--env")
        envs[key] = value
    return envs


def parse_secret_names(names: Sequence[str], environ: Mapping[str, str]) -> tuple[str, ...]:
    """``--secret NAME``: the names, each set (non-empty) in the launching environment."""
    out: list[str] = []
    for name in names:
        _check_env_name(name, "--secret")
        if not environ.get(name):
            raise UserError(f"--secret {name}: {name} is not set in this environment",
                            hint=f"export {name}=... before launching; vops passes its value "
                                 "to SkyPilot and writes only the name")
        if name not in out:
            out.append(name)
    return tuple(out)


def _check_env_name(key: str, flag: str) -> None:
    if not _ENV_NAME.match(key):
        raise UserError(f"{flag} {key!r}: not a valid environment variable name",
                        hint="use letters, digits and underscores, not starting with a digit")
    if key.upper().startswith(_RESERVED_PREFIXES):
        raise UserError(f"{flag} {key}: names starting with VOPS_ or SKYPILOT_ are set by vops "
                        "and SkyPilot", hint="use the matching vops flag instead")
