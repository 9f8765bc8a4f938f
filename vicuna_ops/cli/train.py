"""``vops train``: fine-tune a recipe as a SkyPilot managed spot job (or ``--local``).

Thin: flags -> ``vicuna_ops.launch`` (request, prepare, launch) -> a Rich plan or JSON.
SkyPilot is imported only once the flags have been checked.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer

from vicuna_ops.cli import output

# Flags that only mean something for a cloud run.
_CLOUD_ONLY = ("--gpus", "--clouds", "--regions", "--zones", "--max-candidates",
               "--min-per-cloud", "--order", "--num-nodes",
               "--max-restarts-on-errors", "--env", "--secret", "--spot/--on-demand",
               "--dry-run", "--yes")


def train(
    recipe: str = typer.Option("vicuna-7b", "--recipe", "-r",
                               help="A recipe name (recipes/NAME.yaml) or a path to one."),
    data: Optional[str] = typer.Option(None, "--data",
                                       help="Training conversations (s3://, gs://); "
                                            "overrides the recipe's."),
    bucket: Optional[str] = typer.Option(None, "--bucket",
                                         help="Checkpoints and telemetry: s3://B/PREFIX or "
                                              "gs://B/PREFIX (a folder with --local)."),
    spot: Optional[bool] = typer.Option(None, "--spot/--on-demand",
                                        help="Spot instances (default) or on-demand."),
    gpus: Optional[str] = typer.Option(None, "--gpus",
                                       help="NAME:COUNT per node, e.g. A100:8, or auto: the "
                                            "cheapest that fits (default: the recipe's)."),
    clouds: Optional[str] = typer.Option(None, "--clouds", help="Comma-separated: aws,gcp."),
    regions: Optional[str] = typer.Option(None, "--regions",
                                          help="Only these regions (comma-separated)."),
    zones: Optional[str] = typer.Option(None, "--zones",
                                        help="Only these zones (comma-separated)."),
    max_candidates: Optional[int] = typer.Option(
        None, "--max-candidates",
        help="Zones SkyPilot may try, cheapest first (default 8)."),
    min_per_cloud: Optional[int] = typer.Option(
        None, "--min-per-cloud",
        help="Keep at least this many of each cloud's cheapest zones among them (default 2)."),
    order: Optional[str] = typer.Option(
        None, "--order",
        help="price: cheapest zone first; expected: cheapest per useful hour given each zone's "
             "preemption history (the default once the ledger has some)."),
    num_nodes: Optional[int] = typer.Option(None, "--num-nodes", help="Nodes (default 1)."),
    max_restarts_on_errors: Optional[int] = typer.Option(
        None, "--max-restarts-on-errors",
        help="Restarts after a failure of the training itself (preemptions always recover; "
             "default 0)."),
    name: Optional[str] = typer.Option(None, "--name",
                                       help="Run id (default: RECIPE-YYYYMMDD-HHMMSS)."),
    env: Optional[List[str]] = typer.Option(None, "--env", help="KEY=VALUE for the node "
                                                                "(repeatable)."),
    secret: Optional[List[str]] = typer.Option(
        None, "--secret", help="NAME of an environment variable passed to the node as a "
                               "SkyPilot secret; its value is never written (repeatable)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps",
                                            help="Stop after this many optimizer steps."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost",
                                             help="Budget in USD: training stops, "
                                                  "checkpointed, when it is reached."),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Write and validate the task, show the plan, launch "
                                      "nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Launch without asking."),
    local: bool = typer.Option(False, "--local", help="Train here on this machine's CPU/GPU."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Fine-tune a recipe as a SkyPilot managed spot job that resumes after preemptions.

    Writes $VOPS_HOME/runs/RUN/task.yaml, checks it with SkyPilot, shows zone prices and cost.
    """
    if local:
        _train_local(recipe=recipe, data=data, bucket=bucket, name=name, max_steps=max_steps,
                     max_cost=max_cost, as_json=as_json,
                     cloud_flags={"--gpus": gpus, "--clouds": clouds, "--regions": regions,
                                  "--zones": zones, "--num-nodes": num_nodes,
                                  "--max-candidates": max_candidates,
                                  "--min-per-cloud": min_per_cloud, "--order": order,
                                  "--max-restarts-on-errors": max_restarts_on_errors,
                                  "--env": env, "--secret": secret,
                                  "--spot/--on-demand": spot, "--dry-run": dry_run or None,
                                  "--yes": yes or None})
        return
    from vicuna_ops.config import load_config
    from vicuna_ops.launch.candidates import DEFAULT_CAP, DEFAULT_MIN_PER_CLOUD
    from vicuna_ops.launch.request import build_request

    request = build_request(
        recipe=recipe, bucket=bucket, gpus=gpus, use_spot=True if spot is None else spot,
        clouds=clouds, regions=regions, zones=zones,
        num_nodes=1 if num_nodes is None else num_nodes,
        max_restarts_on_errors=max_restarts_on_errors or 0, name=name, data=data,
        max_steps=max_steps, max_cost=max_cost, envs=env or (), secrets=secret or (),
        default_bucket=load_config().default_bucket,
        max_candidates=DEFAULT_CAP if max_candidates is None else max_candidates,
        min_per_cloud=DEFAULT_MIN_PER_CLOUD if min_per_cloud is None else min_per_cloud,
        order=order)

    from vicuna_ops.launch import trainer

    prepared = trainer.prepare(request)
    summary = prepared.summary()
    if dry_run:
        if as_json:
            output.print_json({**summary, "dry_run": True})
        else:
            _render_plan(prepared)
            output.stdout.print("dry run: nothing launched. Task: "
                                f"{output.escape(str(prepared.task_yaml))}", highlight=False)
        return
    if not as_json:
        _render_plan(prepared)
    if not yes:
        _confirm(prepared.request.run_id)
    job_id = trainer.launch(prepared, os.environ)
    if as_json:
        output.print_json({**summary, "dry_run": False, "job_id": job_id})
    else:
        output.stdout.print(
            f"[green]launched[/] {output.escape(request.run_id)} as managed job {job_id}. "
            f"Follow it: vops logs {output.escape(request.run_id)} --follow; "
            f"vops status {output.escape(request.run_id)}",
            highlight=False)


def _render_plan(prepared) -> None:  # prepared: trainer.PreparedRun
    req, est, place = prepared.request, prepared.estimate, prepared.placement
    mode = "spot" if req.use_spot else "on-demand"
    expected = prepared.order is not None and prepared.order.order == "expected"
    rows = []
    for i, cand in enumerate(prepared.candidates, 1):
        first = (cand.cloud, cand.region, cand.zone) == (place.cloud, place.region, place.zone)
        row = (f"{i}{'*' if first else ''}", cand.cloud, cand.zone, cand.instance_type,
               _usd(cand.spot_price), _usd(cand.ondemand_price))
        if expected:
            row += (f"{cand.preemption_rate:.3f}" if cand.preemption_rate is not None else "-",
                    _usd(cand.expected_hourly))
        rows.append(row)
    columns = ["#", "cloud", "zone", "instance", "spot $/h", "on-demand $/h"]
    if expected:
        columns += ["preemptions/h", "$/useful h"]
    table = output.table(f"{req.run_id}: {req.num_nodes} x {req.machine} {mode}", columns, rows)
    table.caption = "zones in the order SkyPilot tries them; * = the optimizer's first pick"
    table.caption_justify = "left"
    output.stdout.print(table)
    per_cloud = {c.cloud: 0 for c in prepared.candidates}
    for cand in prepared.candidates:
        per_cloud[cand.cloud] += 1
    lines = []
    if prepared.candidates and not req.cpu_node:
        lines.append(f"candidates: {len(prepared.candidates)} zones ("
                     + ", ".join(f"{cloud} {n}" for cloud, n in per_cloud.items())
                     + f"; --max-candidates {req.max_candidates}, --min-per-cloud "
                     f"{req.min_per_cloud})")
    lines += [f"recipe {req.recipe.name}: ~{est.hours:g} h ({est.gpu_hours:g} GPU-hours) on "
             f"{req.num_nodes} x {req.machine}"]
    if est.cost is not None:
        lines.append(f"estimate: {_usd(est.cost)} {mode} at {_usd(est.hourly)}/h "
                     f"(up to {_usd(est.cost_high)} if failovers land in the dearest zone)")
    if est.ondemand_cost is not None and req.use_spot:
        saving = f", saving {est.saving:.0%}" if est.saving is not None else ""
        where = f" in {est.ondemand_zone}" if est.ondemand_zone else ""
        lines.append(f"on demand: {_usd(est.ondemand_cost)} at {_usd(est.ondemand_hourly)}/h"
                     f"{where} (the cheapest on-demand zone of {', '.join(req.clouds)})"
                     f"{saving}")
    if prepared.gpu_choice is not None:
        auto = prepared.gpu_choice
        runner = (f"; runner-up {auto.runner_up['gpus']} at {_usd(auto.runner_up['spot_price'])}"
                  f"/h" if auto.runner_up else "")
        lines.append(f"--gpus auto: {auto.gpus} at {_usd(auto.choice['spot_price'])}/h, the "
                     f"cheapest per trained token whose memory holds {auto.need}{runner}")
    if prepared.order is not None and req.use_spot:
        lines.append(f"order: {prepared.order.describe()}")
    lines.append(f"hours from: {est.basis}")
    if req.max_cost is not None:
        lines.append(f"budget: stops at {_usd(req.max_cost)} (--max-cost)")
    lines.append(f"checkpoints: {req.run_uri}/  task: {prepared.task_yaml}")
    for line in lines:
        output.stdout.print(output.escape(line), highlight=False)


def _confirm(run_id: str) -> None:
    from vicuna_ops.errors import UserError

    if not sys.stdin.isatty():
        raise UserError("not launching without confirmation",
                        hint="pass --yes to launch from a script, or --dry-run to only plan")
    if not typer.confirm(f"Launch {run_id}?", default=True, err=True):
        raise typer.Exit(1)


def _train_local(*, recipe: str, data: str | None, bucket: str | None, name: str | None,
                 max_steps: int | None, max_cost: float | None, as_json: bool,
                 cloud_flags: dict) -> None:
    from vicuna_ops.config import check_run_id
    from vicuna_ops.errors import UserError
    from vicuna_ops.launch.request import check_max_cost, check_max_steps, default_run_id
    from vicuna_ops.recipe import load_recipe
    from vicuna_ops.storage import parse_uri

    given = [flag for flag, value in cloud_flags.items() if value not in (None, [], ())]
    if given:
        raise UserError(f"{given[0]} does not apply to --local", hint="drop it, or drop --local")
    if not bucket:
        raise UserError("--bucket is required", hint="with --local it can be a folder, "
                                                      "e.g. --bucket /tmp/vops-bucket")
    parse_uri(bucket)
    if data is not None and not data.strip():
        raise UserError("--data is empty", hint="leave it out to use the recipe's data")
    check_max_steps(max_steps)
    check_max_cost(max_cost)
    loaded = load_recipe(recipe)
    run_id = check_run_id(name) if name else default_run_id(loaded.name)
    from vicuna_ops.train.local import run_local

    result = run_local(loaded, bucket, run_id, data=data, max_steps=max_steps,
                       max_cost=max_cost, json_output=as_json)
    if as_json:
        output.print_json(result)
    if result.get("interrupted"):
        # stopped by Ctrl-C/SIGTERM with a checkpoint, and already said so: exit 128 + signal
        # without a second "error: interrupted" line
        sys.exit(result["exit_code_cli"])


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def register(app: typer.Typer) -> None:
    app.command("train")(train)
