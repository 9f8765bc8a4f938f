"""``vops serve``: an OpenAI-compatible endpoint for a trained model, locally or on spot GPUs.

    vops serve --local --model PATH [--model NAME=PATH ...] [--port 8000] [--workers 2]
    vops serve --model s3://b/runs/r1/final --clouds aws,gcp --replicas 3 --gpus L4:1 \\
               --bucket s3://b/runs --name chat [--spot | --on-demand] [--dry-run] [--yes]
    vops serve status [NAME] [--json]          vops serve down NAME [--yes]

    vops serve worker --controller-url URL --model PATH [--port 8001] [--advertise-url URL]

``vops serve worker`` joins any running controller from any machine (the SkyPilot tasks and
the local supervisor run it too); ``vops serve controller`` is hidden (only they run it).
Secrets come from the environment only: the worker token from ``VOPS_WORKER_TOKEN``, API
keys from ``VOPS_API_KEYS`` (or the variable ``--api-key-env`` names), never from a flag
(flags show up in ``ps``).
"""

from __future__ import annotations

import os

from typing import Optional

import typer

from vicuna_ops.cli import output
from vicuna_ops.errors import UserError, VopsError

WORKER_TOKEN_ENV = "VOPS_WORKER_TOKEN"
API_KEYS_ENV = "VOPS_API_KEYS"

serve_app = typer.Typer(help="Serve a model behind an OpenAI-compatible API (local or spot).",
                        invoke_without_command=True)


@serve_app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    model: list[str] = typer.Option(None, "--model", help="HF model folder or bucket URI "
                                    "(e.g. s3://b/runs/r1/final); with --local, repeat it to "
                                    "serve several models, each as NAME=PATH or named after "
                                    "its run or folder."),
    local: bool = typer.Option(False, "--local", help="Run controller and workers as "
                               "processes on this machine."),
    port: int = typer.Option(8000, "--port", help="The API port."),
    workers: int = typer.Option(1, "--workers", help="Local workers per model (--local)."),
    backend: str = typer.Option("transformers", "--backend",
                                help="transformers, vllm, or stub (fixed tokens, no model)."),
    model_name: str = typer.Option(None, "--model-name", help="The model name clients use "
                                   "(default: the run or folder name)."),
    max_concurrency: int = typer.Option(4, "--max-concurrency",
                                        help="Generations one worker runs at once."),
    api_key_env: str = typer.Option(None, "--api-key-env", metavar="VAR",
                                    help=f"Env var with comma-separated API keys "
                                    f"(default {API_KEYS_ENV}, if set)."),
    clouds: str = typer.Option(None, "--clouds", help="Comma-separated clouds, e.g. aws,gcp."),
    replicas: int = typer.Option(2, "--replicas", help="Workers to launch (cloud)."),
    gpus: str = typer.Option("L4:1", "--gpus", help="Accelerator per worker, e.g. L4:1, or "
                             "auto: the cheapest spot GPU that holds the model."),
    max_model_len: Optional[int] = typer.Option(
        None, "--max-model-len", help="Context a worker plans its KV cache for (cloud; "
                                      "default: the model's)."),
    spot: bool = typer.Option(True, "--spot/--on-demand", help="Spot workers (default)."),
    ondemand_fallback: int = typer.Option(0, "--ondemand-fallback", metavar="K",
                                          help="Of the replicas, K run on demand."),
    name: str = typer.Option(None, "--name", help="Deployment name (ledger run id)."),
    bucket: str = typer.Option(None, "--bucket", help="Bucket prefix for the controller "
                               "address and segment records."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Build and validate; launch nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Launch without asking."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Serve a model: --local on this machine, or --clouds on spot GPUs via SkyPilot."""
    if ctx.invoked_subcommand is not None:
        return
    if not model and backend != "stub":
        if local or clouds:
            raise UserError("--model is required", hint="a model folder or bucket URI, "
                            "e.g. --model s3://b/runs/r1/final")
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    _check_range("--port", port, 1, 65535)
    _check_range("--max-concurrency", max_concurrency, 1, 4096)
    if backend not in ("transformers", "vllm", "stub"):
        raise UserError(f"unknown --backend {backend!r}", hint="use transformers, vllm or stub")
    if local:
        if clouds:
            raise UserError("--local and --clouds cannot be combined", hint="pick one")
        if max_model_len is not None:
            raise UserError("--max-model-len plans cloud GPUs", hint="drop it with --local")
        _check_range("--workers", workers, 1, 64)
        _serve_local(list(model or ()), backend, port, workers, model_name, max_concurrency,
                     api_key_env, as_json)
        return
    if not clouds:
        raise UserError("say where to serve", hint="--local for this machine, or --clouds "
                        "aws,gcp for spot GPUs")
    if model and len(model) > 1:
        raise UserError("a cloud deployment serves one --model",
                        hint="add another model's workers with `vops serve worker "
                        "--controller-url URL --model PATH`, or use --local")
    _launch_cloud(model=model[0] if model else None, clouds=clouds, replicas=replicas, gpus=gpus, spot=spot,
                  ondemand_fallback=ondemand_fallback, name=name, bucket=bucket, port=port,
                  model_name=model_name, max_concurrency=max_concurrency, backend=backend,
                  api_key_env=api_key_env, dry_run=dry_run, yes=yes, as_json=as_json,
                  max_model_len=max_model_len)


def _check_range(flag: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise UserError(f"{flag} must be between {low} and {high}, not {value}")


def _serve_local(models: list[str], backend: str, port: int, workers: int,
                 model_name: str | None, max_concurrency: int, api_key_env: str | None,
                 as_json: bool) -> None:
    from vicuna_ops.config import vops_home
    from vicuna_ops.serve.local import LocalPlan, parse_models, run_local

    served = parse_models(models, model_name=model_name, backend=backend)
    if api_key_env is None and os.environ.get(API_KEYS_ENV):
        api_key_env = API_KEYS_ENV
    plan = LocalPlan(model=served[0].model, backend=backend, port=port, workers=workers,
                     model_name=served[0].name, max_concurrency=max_concurrency,
                     api_key_env=api_key_env, state_dir=vops_home() / "serve" / f"local-{port}",
                     models=served)
    total = workers * len(served)
    names = [m.name for m in served]

    def ready(serving) -> None:
        if as_json:  # one line: a script reads it while the command keeps running
            import json
            import sys

            sys.stdout.write(json.dumps({"endpoint": serving.url, "workers": total,
                                         "models": names, "pids": serving.pids(),
                                         "logs": str(plan.state_dir / "logs")}) + "\n")
            sys.stdout.flush()
        else:
            output.info(f"[green]serving[/] {output.escape(', '.join(names))} at "
                        f"{output.escape(serving.url)}/v1 with {total} "
                        f"worker(s); logs in {output.escape(str(plan.state_dir / 'logs'))}; "
                        "Ctrl-C stops everything")
            output.info(f"try: vops chat --endpoint {serving.url}", markup=False)

    # the supervisor's lines quote the children's logs: printed as they are
    run_local(plan, say=lambda line: output.info(line, markup=False), ready=ready)


# --- status / down ---------------------------------------------------------------------------


@serve_app.command("status")
def status(
    name: str = typer.Argument(None, help="Deployment name (default: all deployments)."),
    endpoint: str = typer.Option(None, "--endpoint", help="Ask this controller URL directly "
                                 "(e.g. a --local one)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Deployments, their managed jobs, and the workers their controller sees."""
    from vicuna_ops.serve import deploy

    if endpoint:
        view = deploy.controller_view(endpoint, os.environ.get(WORKER_TOKEN_ENV)
                                      or _local_token(endpoint))
        if as_json:
            output.print_json(view)
        else:
            _render_controller(view)
        return
    if name is None:
        rows = deploy.deployments()
        if as_json:
            output.print_json(rows)
            return
        output.stdout.print(output.table(
            "serve deployments", ["name", "status", "model", "replicas", "gpus", "created"],
            [(r["run_id"], r["status"], r["data"].get("model_name"), r["data"].get("replicas"),
              r["data"].get("gpus"), output.when(r["created_at"])) for r in rows]))
        return
    row = deploy.deployment(name)
    report: dict = {"name": name, "status": row["status"], "bucket": row["bucket"]}
    try:
        report["jobs"] = deploy.jobs_of(row)
    except VopsError as exc:
        report["jobs"], report["jobs_error"] = None, exc.one_line()
    url = deploy.controller_url(row)
    token = deploy.worker_token(name, os.environ, create=False)
    report["controller"] = deploy.controller_view(url, token) if url else None
    if as_json:
        output.print_json(report)
        return
    output.stdout.print(f"[bold]{output.escape(name)}[/]: {row['status']}, model "
                        f"{output.escape(str(row['data'].get('model')))}")
    if report["jobs"] is None:
        output.info(f"[yellow]managed jobs unknown:[/] {output.escape(report['jobs_error'])}")
    else:
        output.stdout.print(output.table(
            "managed jobs", ["task", "job", "status", "recoveries", "where"],
            [(j["task"], j["job_id"], j.get("status"), j.get("recovery_count"),
              "/".join(x for x in (j.get("cloud"), j.get("region"), j.get("zone")) if x) or None)
             for j in report["jobs"]]))
    if report["controller"] is None:
        output.info("no controller address published yet")
    else:
        _render_controller(report["controller"])


def _local_token(endpoint: str) -> str | None:
    """The token of a `vops serve --local` deployment on this machine, by its port."""
    from urllib.parse import urlparse

    from vicuna_ops.config import vops_home

    try:
        port = urlparse(endpoint).port
    except ValueError:
        return None
    path = vops_home() / "serve" / f"local-{port}" / "worker.token"
    return path.read_text().strip() if port and path.is_file() else None


def _render_controller(view: dict) -> None:
    if "error" in view:
        output.info(f"controller {view['url']}: {view['error']}", markup=False)
        return
    health = view["health"]
    output.stdout.print(f"controller {view['url']}: {health['workers']['live']} live, "
                        f"{health['workers']['draining']} draining; models "
                        f"{', '.join(health.get('models') or []) or '-'}", markup=False,
                        highlight=False)
    if view["workers"] is None:
        output.info(f"(set {WORKER_TOKEN_ENV} to list the workers)")
        return
    output.stdout.print(output.table(
        "workers", ["worker", "url", "where", "state", "in flight", "last heartbeat"],
        [(w["worker_id"], w["url"],
          "/".join(str(x) for x in (w["identity"].get("cloud"), w["identity"].get("zone")) if x),
          "suspect" if w["suspect"] else w["state"], w["in_flight"],
          f"{w['seconds_since_heartbeat']:.1f}s ago") for w in view["workers"]]))


@serve_app.command("down")
def down(
    name: str = typer.Argument(..., help="Deployment name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Cancel a deployment's managed jobs (controller and workers)."""
    import sys

    from vicuna_ops.serve import deploy

    row = deploy.deployment(name)
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(f"taking {name} down needs confirmation", hint="pass --yes")
        typer.confirm(f"Cancel the {len(row['job_ids'])} managed job(s) of {name}?",
                      abort=True)
    cancelled = deploy.take_down(name)
    if as_json:
        output.print_json({"name": name, "cancelled": cancelled})
    else:
        output.info(f"{name}: cancelled {len(cancelled)} managed job(s)", markup=False)


def _launch_cloud(*, model, clouds, replicas, gpus, spot, ondemand_fallback, name, bucket,
                  port, model_name, max_concurrency, backend, api_key_env, dry_run, yes,
                  as_json, max_model_len=None) -> None:
    import sys

    from vicuna_ops.serve import deploy

    request = deploy.make_request(
        model=model, clouds=clouds, replicas=replicas, gpus=gpus, spot=spot,
        ondemand_fallback=ondemand_fallback, name=name, bucket=bucket, port=port,
        model_name=model_name, max_concurrency=max_concurrency, backend=backend,
        api_key_env=api_key_env, environ=os.environ, max_model_len=max_model_len)
    if not as_json:
        output.info("validating the tasks with SkyPilot...")
    prepared = deploy.prepare(request)
    summary = prepared.summary()
    if not as_json:
        _render_plan(summary)
    if dry_run:
        if as_json:
            output.print_json({**summary, "launched": False})
        else:
            output.info(f"dry run: task YAMLs in {prepared.run_dir}; nothing launched",
                        markup=False)
        return
    if not yes:
        if not sys.stdin.isatty():
            raise UserError("launching needs confirmation", hint="pass --yes (or --dry-run)")
        typer.confirm(f"Launch {request.replicas} worker(s) and a controller?", abort=True)
    jobs = deploy.launch(prepared, os.environ, api_key_env)
    if as_json:
        output.print_json({**summary, "launched": True, "jobs": jobs})
    else:
        output.info(f"launched {len(jobs)} managed job(s); `vops serve status "
                    f"{request.name}` shows the controller's address once it is up",
                    markup=False)


def _render_plan(summary: dict) -> None:
    rows = []
    for index, placement in enumerate(summary["placements"]):
        task = "controller" if index == 0 else f"worker-{index - 1}"
        price = placement["hourly_price"]
        rows.append((task, placement["infra"], placement["instance_type"],
                     "spot" if placement["use_spot"] else "on-demand",
                     f"${price:.3f}/h" if price is not None else None))
    output.stdout.print(output.table(
        f"vops serve {summary['name']}: {summary['model_name']} on {summary['gpus']}",
        ["task", "first zone", "instance", "pricing", "price"], rows))
    auto = summary.get("gpus_auto")
    if auto:
        runner = auto["runner_up"]
        output.info(f"--gpus auto: {auto['gpus']} ({auto['choice']['memory_gib']:g} GiB, "
                    f"${auto['choice']['spot_price']:.3f}/h spot) holds {auto['precision']} "
                    f"weights + KV cache for {auto['max_model_len']:,} tokens x "
                    f"{summary.get('max_concurrency', '?')}: {auto['need']}"
                    + (f"; runner-up {runner['gpus']} at ${runner['spot_price']:.3f}/h"
                       if runner else ""), markup=False)
    if summary["hourly_estimate"] is not None:
        output.info(f"about ${summary['hourly_estimate']:.2f}/h while every task runs in its "
                    "first zone")


# --- the node processes (the controller hidden, the worker documented) -----------------------
# Their flags live in vicuna_ops.serve.node (argparse, which also answers --help), which
# `--local` runs directly as `python -m vicuna_ops.serve.node`: a worker's start then skips
# Typer, Rich and every command group. Here they are passed through unchanged.

_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True,
                 "help_option_names": []}


@serve_app.command("controller", hidden=True, context_settings=_PASS_THROUGH)
def controller(ctx: typer.Context) -> None:
    """Run the controller (what the SkyPilot task and --local start)."""
    from vicuna_ops.serve.node import run_controller

    raise typer.Exit(run_controller(list(ctx.args)))


@serve_app.command("worker", context_settings=_PASS_THROUGH, add_help_option=False)
def worker(ctx: typer.Context) -> None:
    """Join a running controller (local or cloud) as a worker; needs VOPS_WORKER_TOKEN."""
    from vicuna_ops.serve.node import run_worker

    raise typer.Exit(run_worker(list(ctx.args)))


def register(app: typer.Typer) -> None:
    app.add_typer(serve_app, name="serve")
