"""The ``vops serve --clouds`` flow: check the flags, build and validate the SkyPilot tasks,
launch them as managed jobs, record the deployment in the ledger; then status and down.

Order, as for training: every check that can fail on user input runs before anything is
written; the deployment folder holds the task YAMLs (``$VOPS_HOME/runs/<name>/``); the
ledger row goes in before the first SDK call, so a launched job is never untracked, and a
failure halfway records the jobs that did launch so ``vops serve down`` can cancel them.

The worker token is a secret: taken from ``VOPS_WORKER_TOKEN`` or generated and kept in
``$VOPS_HOME/serve/<name>/worker.token`` (mode 0600) for ``vops serve status``; it reaches
SkyPilot in memory only, never a YAML file, the ledger or a log.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from vicuna_ops.config import check_run_id, load_config, runs_dir, vops_home
from vicuna_ops.config import run_dir as make_run_dir
from vicuna_ops.errors import CloudError, UserError, VopsError
from vicuna_ops.serve import skytasks
from vicuna_ops.serve.modelfiles import default_model_name
from vicuna_ops.serve.skytasks import API_KEYS, WORKER_TOKEN, ServeRequest

KIND = "serve"
LAUNCH_FAILED = "launch-failed"
MAX_REPLICAS = 64


def make_request(*, model: str, clouds: str, replicas: int, gpus: str, spot: bool,
                 ondemand_fallback: int, name: str | None, bucket: str | None, port: int,
                 model_name: str | None, max_concurrency: int, backend: str,
                 api_key_env: str | None, environ: Mapping[str, str],
                 max_model_len: int | None = None) -> ServeRequest:
    """Flags -> a request; the cheap checks (no SkyPilot) happen here."""
    from vicuna_ops.launch import parse_gpus
    from vicuna_ops.launch.infra import parse_infra

    # A Slurm cluster's nodes share a filesystem with its login node: file:// reaches them.
    infra = parse_infra(clouds)
    remote = infra.bucket_schemes
    if not model.startswith(remote):
        raise UserError(f"--model {model} is not in a bucket, so cloud workers cannot read it",
                        hint="pass the s3:// or gs:// URI training wrote, e.g. "
                             "s3://b/runs/<run>/final")
    bucket = bucket or load_config().default_bucket
    if not bucket or not bucket.startswith(remote):
        raise UserError("--bucket must be an s3:// or gs:// prefix",
                        hint="workers find the controller's address there")
    from vicuna_ops.storage import parse_uri

    parse_uri(bucket)
    parse_uri(model)
    if not 1 <= replicas <= MAX_REPLICAS:
        raise UserError(f"--replicas must be between 1 and {MAX_REPLICAS}, not {replicas}")
    if not 0 <= ondemand_fallback <= replicas:
        raise UserError(f"--ondemand-fallback must be between 0 and --replicas ({replicas})")
    if backend == "stub":
        raise UserError("the stub backend is for tests and benchmarks",
                        hint="use --backend transformers or vllm")
    gpus_auto = gpus.strip().lower() == "auto"
    infra.check(regions=None, zones=None, gpus_auto=gpus_auto)
    if max_model_len is not None and not 1 <= max_model_len <= 1_048_576:
        raise UserError(f"--max-model-len must be a positive number of tokens, not "
                        f"{max_model_len}")
    served = model_name or default_model_name(model)
    name = check_run_id(name or _default_name(served))
    with_keys = False
    if api_key_env or environ.get(API_KEYS):
        variable = api_key_env or API_KEYS
        if not environ.get(variable, "").strip():
            raise UserError(f"--api-key-env {variable}: {variable} is empty or not set",
                            hint="export it as comma-separated keys")
        with_keys = True
    return ServeRequest(name=name, model=model.rstrip("/"), model_name=served, bucket=bucket,
                        clouds=infra.clouds, replicas=replicas,
                        gpus=None if gpus_auto else parse_gpus(gpus),
                        use_spot=spot and infra.has_spot, gpus_auto=gpus_auto,
                        max_model_len=max_model_len,
                        ondemand_fallback=ondemand_fallback, port=port,
                        backend=backend, max_concurrency=max_concurrency,
                        with_api_keys=with_keys)


def _default_name(model_name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "-" for ch in model_name.lower()).strip("-")
    return f"serve-{cleaned}"[:63].rstrip("-")


@dataclass(frozen=True)
class PreparedServe:
    request: ServeRequest
    run_dir: Path
    controller_yaml: Path
    worker_yamls: list[Path]
    placements: list[Any]  # launch.Placement per task: controller, then workers
    first_choices: list[str]  # each worker's first zone
    gpu_choice: dict[str, Any] | None = None  # --gpus auto: the pick and its arithmetic

    def summary(self) -> dict[str, Any]:
        req = self.request
        return {
            "name": req.name, "model": req.model, "model_name": req.model_name,
            "bucket": req.bucket, "clouds": list(req.clouds), "replicas": req.replicas,
            "gpus": str(req.gpus), "use_spot": req.use_spot,
            "ondemand_replicas": req.ondemand_replicas, "port": req.port,
            "backend": req.backend, "api_keys": req.with_api_keys,
            "controller_yaml": str(self.controller_yaml),
            "worker_yamls": [str(p) for p in self.worker_yamls],
            "placements": [{**p.__dict__, "infra": p.infra} for p in self.placements],
            "worker_first_choices": self.first_choices,
            "hourly_estimate": _hourly(self.placements),
            "secrets": [WORKER_TOKEN, *([API_KEYS] if req.with_api_keys else [])],
            "max_model_len": req.max_model_len, "max_concurrency": req.max_concurrency,
            "gpus_auto": self.gpu_choice,
        }


def _hourly(placements: list[Any]) -> float | None:
    prices = [p.hourly_price for p in placements]
    return None if any(p is None for p in prices) else round(sum(prices), 4)


def prepare(request: ServeRequest) -> PreparedServe:
    """Zones, task YAMLs in the deployment folder, SkyPilot's parser + optimizer on each."""
    from vicuna_ops.launch import (
        check_gpus, load_template, node_install, parse_gpus, validate_task_file,
        write_task_yaml, zone_candidates)
    from vicuna_ops.launch.infra import Infra

    _check_name_free(request.name)
    infra = Infra(request.clouds)
    gpu_choice = None
    if request.gpus_auto:
        gpu_choice = auto_gpus(request)
        request = replace(request, gpus=parse_gpus(gpu_choice["gpus"]),
                          max_model_len=gpu_choice["max_model_len"])
    gpus = check_gpus(request.gpus, request.clouds) if infra.prices_zones else request.gpus
    request = replace(request, gpus=gpus)
    cap = max(8, 2 * request.replicas)
    lists: list[list[Any]] = []
    spot_count = request.replicas - request.ondemand_replicas
    if not infra.prices_zones:  # CPU nodes of one cluster: no zones to spread over
        lists = [[] for _ in range(request.replicas)]
    elif request.ondemand_replicas:
        lists += skytasks.spread_replicas(zone_candidates(
            gpus, request.clouds, use_spot=False, cap=cap), request.ondemand_replicas)
    if spot_count and infra.prices_zones:
        lists += skytasks.spread_replicas(zone_candidates(
            gpus, request.clouds, use_spot=True, cap=cap), spot_count)
    worker_install = node_install(extras=skytasks.SERVE_EXTRAS)
    controller_install = node_install(extras=skytasks.CONTROLLER_EXTRAS)
    existed = (runs_dir() / request.name).exists()
    folder = make_run_dir(request.name)
    try:
        controller = skytasks.controller_task(load_template(skytasks.CONTROLLER_TEMPLATE),
                                              request, controller_install)
        controller = infra.serve_task(controller, port=request.port)
        controller_yaml = write_task_yaml(folder, "controller", controller)
        placements = [validate_task_file(controller_yaml).placement]
        worker_base = load_template(skytasks.WORKER_TEMPLATE)
        worker_yamls = []
        for index, candidates in enumerate(lists):
            task = skytasks.worker_task(worker_base, request, index, candidates, worker_install)
            task = infra.serve_task(task, port=infra.worker_port(
                request.port, index, default=skytasks.WORKER_PORT))
            path = write_task_yaml(folder, f"worker-{index}", task)
            placement = validate_task_file(path).placement
            if infra.prices_zones and placement.infra != candidates[0].infra:
                raise CloudError(f"SkyPilot's optimizer put worker {index} in "
                                 f"{placement.infra}, not its first zone {candidates[0].infra}",
                                 hint="report this with --debug output")
            worker_yamls.append(path)
            placements.append(placement)
    except BaseException:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return PreparedServe(request=request, run_dir=folder, controller_yaml=controller_yaml,
                         worker_yamls=worker_yamls, placements=placements,
                         first_choices=[c[0].infra if c else p.infra
                                        for c, p in zip(lists, placements[1:])],
                         gpu_choice=gpu_choice)


def auto_gpus(request: ServeRequest) -> dict[str, Any]:
    """``--gpus auto``: the cheapest spot GPU whose memory holds the model's weights at their
    precision plus the KV cache for ``max_model_len x max_concurrency`` (launch.gpu_fit),
    from the model's config.json alone."""
    from vicuna_ops.launch import gpu_fit

    shape = gpu_fit.shape_from_config(gpu_fit.read_model_config(request.model))
    length = request.max_model_len or shape.max_position_embeddings
    best, runner_up, need = gpu_fit.choose(
        lambda count: gpu_fit.serve_need(shape, length, request.max_concurrency), (1,),
        request.clouds)
    return {"gpus": best.gpus, "max_model_len": length, "precision": shape.precision,
            "params": shape.params, "need": need.describe(), "choice": best.to_dict(),
            "runner_up": runner_up.to_dict() if runner_up else None}


def worker_token(name: str, environ: Mapping[str, str], *, create: bool) -> str | None:
    """``VOPS_WORKER_TOKEN``, else the deployment's token file (made when ``create``)."""
    if environ.get(WORKER_TOKEN, "").strip():
        return environ[WORKER_TOKEN].strip()
    path = vops_home() / "serve" / name / "worker.token"
    if path.exists():
        return path.read_text().strip()
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def launch(prepared: PreparedServe, environ: Mapping[str, str],
           api_key_env: str | None = None) -> dict[str, int]:
    """Submit the controller, then every worker; returns job ids by task name."""
    from vicuna_ops.launch import sky_sdk
    from vicuna_ops.ledger import Ledger

    req = prepared.request
    token = worker_token(req.name, environ, create=True)
    controller_secrets = {WORKER_TOKEN: token}
    if req.with_api_keys:
        controller_secrets[API_KEYS] = environ[api_key_env or API_KEYS]
    jobs: dict[str, int] = {}
    with Ledger() as ledger:
        if ledger.has_run(req.name):
            ledger.update_run(req.name, status="launching", data=prepared.summary())
        else:
            ledger.add_run(req.name, KIND, "launching", bucket=req.bucket,
                           task_yaml=str(prepared.controller_yaml), data=prepared.summary())
        try:
            jobs[f"{req.name}-controller"] = sky_sdk.launch_managed_job(
                prepared.controller_yaml, f"{req.name}-controller", secrets=controller_secrets)
            for index, path in enumerate(prepared.worker_yamls):
                job_name = f"{req.name}-worker-{index}"
                jobs[job_name] = sky_sdk.launch_managed_job(path, job_name,
                                                            secrets={WORKER_TOKEN: token})
        except BaseException as exc:
            ledger.update_run(req.name, status=LAUNCH_FAILED, job_ids=list(jobs.values()),
                              data={"jobs": jobs, "launch_error": _one_line(exc)})
            ledger.add_event(req.name, "launch-failed", {"error": _one_line(exc),
                                                         "launched": jobs})
            if jobs and isinstance(exc, VopsError):
                exc.hint = f"{len(jobs)} job(s) did launch: `vops serve down {req.name}`"
            raise
        ledger.update_run(req.name, status="launched", job_ids=list(jobs.values()),
                          data={"jobs": jobs, "launched_at": time.time()})
        ledger.add_event(req.name, "launched", {"jobs": jobs})
    return jobs


def _check_name_free(name: str) -> None:
    from vicuna_ops.ledger import Ledger

    with Ledger() as ledger:
        if not ledger.has_run(name):
            return
        row = ledger.get_run(name)
    if row["status"] in (LAUNCH_FAILED, "down") and not _live_jobs(row):
        return
    raise UserError(f"a run named {name!r} already exists ({row['kind']}, {row['status']})",
                    hint="pick another --name, or `vops serve down` it first")


def _live_jobs(row: dict[str, Any]) -> bool:
    return bool(row["job_ids"]) and row["status"] != "down"


def deployment(name: str) -> dict[str, Any]:
    """The ledger row of a serve deployment (UserError for unknown or non-serve runs)."""
    from vicuna_ops.ledger import Ledger

    with Ledger() as ledger:
        row = ledger.get_run(name)
    if row["kind"] != KIND:
        raise UserError(f"{name!r} is a {row['kind']} run, not a serve deployment",
                        hint="`vops serve status` lists the deployments")
    return row


def deployments() -> list[dict[str, Any]]:
    from vicuna_ops.ledger import Ledger

    with Ledger() as ledger:
        return ledger.list_runs(kind=KIND)


def jobs_of(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The deployment's managed jobs as SkyPilot's queue sees them (CloudError if it can't)."""
    from vicuna_ops.launch import sky_sdk

    names = {job_id: name for name, job_id in (row["data"].get("jobs") or {}).items()}
    if not row["job_ids"]:
        return []
    found = {job.job_id: job for job in sky_sdk.queue(row["job_ids"])}
    return [{"task": names.get(job_id), "job_id": job_id,
             **({k: v for k, v in found[job_id].to_dict().items() if k != "job_id"}
                if job_id in found else {"status": "UNKNOWN"})}
            for job_id in row["job_ids"]]


def controller_view(url: str, token: str | None, timeout: float = 5.0) -> dict[str, Any]:
    """What a controller says about itself (healthz) and its workers (with the token)."""
    import httpx

    try:
        health = httpx.get(url.rstrip("/") + "/healthz", timeout=timeout).json()
        view: dict[str, Any] = {"url": url, "health": health, "workers": None}
        if token:
            reply = httpx.get(url.rstrip("/") + "/vops/workers", timeout=timeout,
                              headers={"authorization": f"Bearer {token}"})
            if reply.status_code == 200:
                view["workers"] = reply.json()["workers"]
        return view
    except (httpx.HTTPError, ValueError) as exc:
        return {"url": url, "error": f"unreachable: {type(exc).__name__}"}


def controller_url(row: dict[str, Any]) -> str | None:
    from vicuna_ops.serve import discovery

    try:
        return discovery.lookup(row["bucket"], row["run_id"])
    except VopsError:
        return None


def take_down(name: str) -> list[int]:
    """Cancel every job of the deployment and forget its published address."""
    from vicuna_ops.launch import sky_sdk
    from vicuna_ops.ledger import Ledger

    row = deployment(name)
    job_ids = list(row["job_ids"])
    if job_ids:
        sky_sdk.cancel(job_ids)
    try:
        from vicuna_ops import layout
        from vicuna_ops.storage import open_store

        open_store(row["bucket"]).child(name).delete(layout.CONTROLLER_ADDRESS)
    except VopsError:
        pass  # already gone, or the bucket is unreachable: workers are cancelled anyway
    with Ledger() as ledger:
        ledger.update_run(name, status="down", data={"down_at": time.time()})
        ledger.add_event(name, "down", {"cancelled": job_ids})
    return job_ids


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
