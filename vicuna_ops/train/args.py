"""The training entry point's flags: each one also read from a ``VOPS_*`` environment variable,
so a SkyPilot task can pass everything as ``envs:`` and the node command stays one line.

    python -m vicuna_ops.train --recipe vicuna-7b --run-id r1 --bucket s3://b/runs
    VOPS_RECIPE=vicuna-7b VOPS_RUN_ID=r1 VOPS_BUCKET=s3://b/runs python -m vicuna_ops.train

A flag on the command line wins over its variable. Parsing is pure (argv and env in, a frozen
``TrainArgs`` out) and never imports torch, so ``--help`` is instant and SkyPilot-free.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vicuna_ops.config import check_run_id
from vicuna_ops.errors import UserError

# Exit codes of `python -m vicuna_ops.train`.
EXIT_OK = 0  # finished, already finished, or stopped at the budget (SkyPilot must not retry)
EXIT_FAILED = 1  # a bug or an unexpected failure
EXIT_USAGE = 2  # bad flags, recipe, data or bucket: retrying cannot help
# Stopped on a preemption notice after checkpointing. The launcher's task YAML lists it in
# `job_recovery.recover_on_exit_codes`, so SkyPilot relaunches even if the VM survives.
EXIT_PREEMPTED = 75  # EX_TEMPFAIL

AWS_NOTICE_URL = "http://169.254.169.254/latest/meta-data/spot/instance-action"
AWS_TOKEN_URL = "http://169.254.169.254/latest/api/token"
GCP_NOTICE_URL = "http://metadata.google.internal/computeMetadata/v1/instance/preempted"

PROGRESS_PREFIX = "@vops "  # progress events on stdout: this prefix, then one JSON object


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun job (RANK, LOCAL_RANK, WORLD_SIZE); one plain
    process is rank 0 of 1."""

    rank: int
    local_rank: int
    size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> World:
        env = os.environ if env is None else env
        return World(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)),
                     int(env.get("WORLD_SIZE", 1)))


@dataclass(frozen=True)
class TrainArgs:
    recipe: str
    run_id: str
    bucket: str
    data: str | None = None
    max_steps: int | None = None
    max_cost: float | None = None
    workdir: str = ""
    progress: bool = False  # emit PROGRESS_PREFIX JSON lines on stdout (for `vops train --local`)
    heartbeat_s: float = 30.0
    notice_poll_s: float = 5.0
    # None: poll the endpoint of the cloud this node runs on; "" disables a watcher.
    aws_notice_url: str | None = None
    aws_token_url: str | None = None
    gcp_notice_url: str | None = None


# flag -> (env var, type, help)
_FLAGS: dict[str, tuple[str, type, str]] = {
    "recipe": ("VOPS_RECIPE", str, "recipe name (recipes/<name>.yaml) or path to a recipe YAML"),
    "run_id": ("VOPS_RUN_ID", str, "run name; everything lives under <bucket>/<run-id>/"),
    "bucket": ("VOPS_BUCKET", str, "bucket URI (s3://, gs://, file:// or a path) for the run"),
    "data": ("VOPS_DATA", str, "conversations JSON/JSONL URI; overrides the recipe's data.path"),
    "max_steps": ("VOPS_MAX_STEPS", int, "stop after this many optimizer steps"),
    "max_cost": ("VOPS_MAX_COST", float, "stop cleanly (checkpoint, exit 0) once the run's "
                                         "segments have cost this many USD"),
    "workdir": ("VOPS_TRAIN_WORKDIR", str, "local scratch folder for checkpoints in flight "
                                           "(default: a folder under the system temp dir)"),
    "heartbeat_s": ("VOPS_HEARTBEAT_S", float, "seconds between segment-record heartbeats"),
    "notice_poll_s": ("VOPS_NOTICE_POLL_S", float, "seconds between preemption-notice polls"),
    "aws_notice_url": ("VOPS_AWS_NOTICE_URL", str, "AWS spot instance-action URL "
                                                   "('' disables; default on AWS nodes)"),
    "aws_token_url": ("VOPS_AWS_TOKEN_URL", str, "AWS IMDSv2 token URL (default: "
                                                 "/latest/api/token on the notice URL's host)"),
    "gcp_notice_url": ("VOPS_GCP_NOTICE_URL", str, "GCP preempted URL "
                                                   "('' disables; default on GCP nodes)"),
}
_REQUIRED = ("recipe", "run_id", "bucket")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m vicuna_ops.train",
        description="Fine-tune a Vicuna recipe, checkpointing to a bucket and resuming exactly "
                    "after preemption. Every flag can also come from the VOPS_* variable shown.",
        epilog=f"exit codes: {EXIT_OK} done / budget-stopped, {EXIT_USAGE} bad input, "
               f"{EXIT_PREEMPTED} preempted after a checkpoint (retry), {EXIT_FAILED} failure",
    )
    for name, (env, kind, text) in _FLAGS.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, dest=name, type=kind, default=None, metavar=name.upper(),
                            help=f"{text} [env {env}]")
    parser.add_argument("--progress", action="store_true",
                        help=f"print progress as '{PROGRESS_PREFIX.strip()} <json>' lines on "
                             "stdout [env VOPS_PROGRESS=1]")
    return parser


def parse_args(argv: Sequence[str] | None = None,
               env: Mapping[str, str] | None = None) -> TrainArgs:
    """Flags, then environment; UserError naming the flag and its variable when one is bad."""
    env = os.environ if env is None else env
    parsed = vars(build_parser().parse_args(argv))
    values: dict[str, object] = {}
    for name, (var, kind, _text) in _FLAGS.items():
        value = parsed[name]
        if value is None and env.get(var) not in (None, ""):
            value = _convert(env[var], kind, name, var)
        elif value is None and name.endswith("_url") and var in env:
            value = ""  # set but empty: the watcher is off
        values[name] = value
    missing = [name for name in _REQUIRED if not values[name]]
    if missing:
        shown = ", ".join(f"--{m.replace('_', '-')} (or {_FLAGS[m][0]})" for m in missing)
        raise UserError(f"missing {shown}", hint="see python -m vicuna_ops.train --help")
    check_run_id(str(values["run_id"]))
    _check_positive(values, "max_steps", allow_zero=False)
    _check_positive(values, "max_cost", allow_zero=False)
    for name in ("heartbeat_s", "notice_poll_s"):
        _check_positive(values, name, allow_zero=False)
        if values[name] is None:
            values.pop(name)
    if not values["workdir"]:
        values["workdir"] = os.path.join(tempfile.gettempdir(), "vops-train")
    progress = parsed["progress"] or env.get("VOPS_PROGRESS", "").lower() in ("1", "true", "yes")
    return TrainArgs(progress=progress, **values)  # type: ignore[arg-type]


def _convert(raw: str, kind: type, name: str, var: str) -> object:
    try:
        return kind(raw)
    except ValueError as exc:
        raise UserError(f"{var}={raw!r} is not a valid {kind.__name__}",
                        hint=f"set {var} (or --{name.replace('_', '-')}) to a number") from exc


def _check_positive(values: dict[str, object], name: str, *, allow_zero: bool) -> None:
    value = values.get(name)
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]
        raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}",
                        hint=f"pass a number above zero or leave {_FLAGS[name][0]} unset")
