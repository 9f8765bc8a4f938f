"""The ``vops train`` flow for a cloud run: prepare (everything up to a validated task YAML
and a plan, nothing launched) and launch (SkyPilot managed job + ledger row).

Order matters for "bad input leaves nothing behind": every check that can fail on user input
runs before the run folder is created; if SkyPilot rejects the generated task, a run folder
created by this call is removed again. The ledger gets a row only for a launch, and gets it
*before* the SDK call (status ``launching``), so a job can never run untracked if vops dies
between the two; a dry run writes the run folder (recipe.yaml, task.yaml) and no ledger row.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from vicuna_ops.config import run_dir as make_run_dir
from vicuna_ops.config import runs_dir
from vicuna_ops.errors import CloudError, UserError
from vicuna_ops.launch import ordering, sky_sdk
from vicuna_ops.launch.accelerators import canonical_gpus, parse_gpus
from vicuna_ops.launch.candidates import Candidate, cheapest_ondemand, zone_candidates
from vicuna_ops.launch.ordering import OrderBasis
from vicuna_ops.launch.plan import Estimate, estimate
from vicuna_ops.launch.request import TrainRequest
from vicuna_ops.launch.sky_calls import start_catalog_warmup
from vicuna_ops.launch.setup_source import NodeInstall, node_install
from vicuna_ops.launch.task import build_train_task, load_template, write_task_yaml
from vicuna_ops.launch.validate import Placement, validate_task_file
from vicuna_ops.launch.workload import Workload
from vicuna_ops.ledger import Ledger
from vicuna_ops.recipe import dump_recipe

LAUNCH_FAILED = "launch-failed"
REPORT_WAIT_S = 5.0  # how long the plan waits for the data's report.json
DEFAULT_CHECKPOINT_HOURS = 0.5  # --order expected, when the throughput is unknown


@dataclass(frozen=True)
class PreparedRun:
    request: TrainRequest
    run_dir: Path
    task_yaml: Path
    recipe_yaml: Path
    candidates: list[Candidate]
    placement: Placement
    estimate: Estimate
    install: NodeInstall
    order: OrderBasis | None = None  # None on Slurm: one place, nothing to order
    gpu_choice: AutoGpus | None = None  # --gpus auto: what was picked and why

    def summary(self) -> dict[str, Any]:
        """What ``--json`` prints and the ledger keeps (names only for secrets)."""
        req = self.request
        return {
            "run_id": req.run_id,
            "task_yaml": str(self.task_yaml),
            "recipe_yaml": str(self.recipe_yaml),
            "recipe": req.recipe.name,
            "bucket": req.bucket,
            "run_uri": req.run_uri,
            "data": req.data or req.recipe.data.path,
            "resources": {
                "gpus": None if req.cpu_node else str(req.gpus),  # None: a Slurm CPU node
                "use_spot": req.use_spot, "num_nodes": req.num_nodes,
                "clouds": list(req.clouds), "regions": list(req.regions or []) or None,
                "zones": list(req.zones or []) or None,
                "max_restarts_on_errors": req.max_restarts_on_errors,
                "disk_size_gb": req.recipe.resources.disk_size_gb,
                "max_candidates": req.max_candidates, "min_per_cloud": req.min_per_cloud,
            },
            "candidates": [c.to_dict() for c in self.candidates],
            "placement": {**self.placement.__dict__, "infra": self.placement.infra},
            "estimate": self.estimate.to_dict(),
            "order": asdict(self.order) if self.order else None,
            "gpus_auto": self.gpu_choice.to_dict() if self.gpu_choice else None,
            "max_cost": req.max_cost,
            "max_steps": req.max_steps,
            "envs": dict(req.envs),
            "secrets": list(req.secret_names),
            "install": {"mode": self.install.mode, "requirement": self.install.requirement,
                        "install_id": self.install.install_id},
        }


def prepare(request: TrainRequest) -> PreparedRun:
    """Candidates, task YAML in the run folder, SkyPilot's parser + optimizer, the estimate."""
    _check_name_free(request.run_id)
    infra = request.infra
    report = _read_report_in_background(request.data or request.recipe.data.path)
    baseline: Candidate | None = None
    order: _Ordering | None = None
    gpu_choice: AutoGpus | None = None
    if not infra.prices_zones:  # one cluster: SkyPilot's optimizer places it (see below)
        gpus, candidates = request.gpus, []
    else:
        start_catalog_warmup(request.clouds)
        # Canonical name first (cheap); a name or count no cloud offers is explained by
        # zone_candidates when it finds nothing, so the happy path asks the catalog once.
        if request.gpus_auto:
            gpu_choice = _auto_gpus(request)
            gpus = parse_gpus(gpu_choice.gpus)
        else:
            gpus = canonical_gpus(request.gpus, request.clouds)
        request = _with_gpus(request, gpus)
        order = _order(request, gpus)
        candidates = zone_candidates(gpus, request.clouds, regions=request.regions,
                                     zones=request.zones, use_spot=request.use_spot,
                                     cap=request.max_candidates,
                                     min_per_cloud=request.min_per_cloud, rank=order.rank)
        if request.use_spot:
            candidates = ordering.annotate(candidates, order.history,
                                           order.basis.checkpoint_hours,
                                           order.basis.restart_hours)
        if request.use_spot:  # the saving is against what --on-demand would pay
            baseline = cheapest_ondemand(gpus, request.clouds, regions=request.regions,
                                         zones=request.zones)
    install = node_install()
    existed = (runs_dir() / request.run_id).exists()
    folder = make_run_dir(request.run_id)
    try:
        recipe_yaml = folder / "recipe.yaml"
        recipe_yaml.write_text(dump_recipe(request.recipe))
        task = build_train_task(load_template("train"), request, candidates, install,
                                str(recipe_yaml))
        task = infra.train_task(task, request)
        task_yaml = write_task_yaml(folder, "task", task)
        placement = validate_task_file(task_yaml).placement
        candidates = infra.placed_candidates(placement, candidates, request.zones)
        _check_placement(placement, candidates)
    except BaseException:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return PreparedRun(request=request, run_dir=folder, task_yaml=task_yaml,
                       recipe_yaml=recipe_yaml, candidates=candidates, placement=placement,
                       estimate=estimate(request.recipe, gpus, candidates,
                                         use_spot=request.use_spot,
                                         num_nodes=request.num_nodes,
                                         ondemand_baseline=baseline,
                                         work=_workload(request, gpus, report)),
                       install=install, order=order.basis if order else None,
                       gpu_choice=gpu_choice)


def launch(prepared: PreparedRun, environ: Mapping[str, str]) -> int:
    """Submit the managed job; the ledger row goes in first and records the outcome."""
    req = prepared.request
    secrets = {}
    for name in req.secret_names:
        if not environ.get(name):  # it was set at prepare time; it must still be
            raise UserError(f"--secret {name}: {name} is not set in this environment")
        secrets[name] = environ[name]
    summary = prepared.summary()
    _publish_price_table(prepared)
    with Ledger() as ledger:
        if ledger.has_run(req.run_id):  # a retry after a failed launch reuses the row
            ledger.update_run(req.run_id, status="launching", task_yaml=str(prepared.task_yaml),
                              data=summary)
        else:
            ledger.add_run(req.run_id, "train", "launching", bucket=req.bucket,
                           task_yaml=str(prepared.task_yaml), data=summary)
        try:
            job_id = sky_sdk.launch_managed_job(prepared.task_yaml, req.run_id, secrets=secrets)
        except BaseException as exc:
            ledger.update_run(req.run_id, status=LAUNCH_FAILED,
                              data={"launch_error": _one_line(exc)})
            ledger.add_event(req.run_id, "launch-failed", {"error": _one_line(exc)})
            raise
        ledger.update_run(req.run_id, status="launched", job_ids=[job_id],
                          data={"launched_at": time.time(), "job_name": req.run_id})
        ledger.add_event(req.run_id, "launched", {
            "job_id": job_id, "placement": prepared.placement.infra,
            "estimate": prepared.estimate.cost})
    return job_id


def _publish_price_table(prepared: PreparedRun) -> None:
    """Put the candidates' prices in the run's bucket prefix (``prices.json``), where the
    node's budget guard reads them: the node has no SkyPilot, hence no catalog. Writing it
    before the launch also proves the bucket is reachable and writable, before any GPU
    is paid for."""
    from vicuna_ops.cost.price_table import table_from_candidates, write_price_table
    from vicuna_ops.storage import open_store

    req = prepared.request
    table = table_from_candidates(prepared.candidates,
                                  None if req.cpu_node else str(req.gpus))
    write_price_table(open_store(req.run_uri), table)


def _read_report_in_background(data_uri: str | None) -> Future:
    """``report.json`` beside the data, read while SkyPilot prices the zones (a bucket
    round trip; a missing or unreachable one just means the estimate uses another source)."""
    from concurrent.futures import ThreadPoolExecutor

    from vicuna_ops.launch.workload import read_data_report

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vops-report")
    future = pool.submit(read_data_report, data_uri)
    pool.shutdown(wait=False)
    return future


@dataclass(frozen=True)
class AutoGpus:
    """``--gpus auto``'s pick, the runner-up and the memory arithmetic behind them."""

    gpus: str
    need: str
    choice: dict
    runner_up: dict | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _auto_gpus(request: TrainRequest) -> AutoGpus:
    """The GPUs that train the recipe cheapest per token among those whose memory holds its
    sharded model states (gpu_fit.train_need), at 1, 2, 4 or 8 per node."""
    from vicuna_ops.launch import gpu_fit
    from vicuna_ops.launch.workload import ASSUMED_TOKENS_PER_S

    params_b = request.recipe.model.params_b
    if not params_b:
        raise UserError(f"--gpus auto needs the recipe's model size; {request.recipe.name!r} "
                        "has no model.params_b", hint="add model.params_b to the recipe or "
                                                     "pass --gpus NAME:COUNT")

    def dollars_per_token(choice: gpu_fit.GpuChoice) -> float:
        name, _, count = choice.gpus.partition(":")
        return choice.spot_price / (ASSUMED_TOKENS_PER_S.get(name, 1.0) * int(count))

    best, runner_up, need = gpu_fit.choose(
        lambda count: gpu_fit.train_need(params_b, count), (1, 2, 4, 8), request.clouds,
        cost_of=dollars_per_token)
    return AutoGpus(gpus=best.gpus, need=need.describe(), choice=best.to_dict(),
                    runner_up=runner_up.to_dict() if runner_up else None)


@dataclass(frozen=True)
class _Ordering:
    basis: OrderBasis
    history: dict
    rank: Any  # a sort key for zone_candidates, or None: cheapest first


def _order(request: TrainRequest, gpus: Any) -> _Ordering:
    """``--order``: the ledger's preemption history per zone and this run's checkpoint
    interval (from its throughput) turn into a sort key for the candidates."""
    from vicuna_ops.launch.workload import measured_segments, tokens_per_s_per_gpu

    history = ordering.zone_history(ordering.ledger_segments()) if request.use_spot else {}
    chosen = ordering.choose_order(request.order, request.use_spot, history)
    recipe = request.recipe
    rate, _ = tokens_per_s_per_gpu(recipe, gpus, measured_segments(recipe.name, gpus.name))
    checkpoint_hours = DEFAULT_CHECKPOINT_HOURS
    if rate:
        tokens_per_hour = rate * gpus.count * request.num_nodes * 3600
        checkpoint_hours = (recipe.train.checkpoint_every_steps * recipe.train.global_batch_size
                            * recipe.data.max_length / tokens_per_hour)
    basis = OrderBasis(order=chosen, checkpoint_hours=round(checkpoint_hours, 4),
                       restart_hours=ordering.RESTART_HOURS,
                       zones_with_history=len(history),
                       history_hours=round(sum(h.hours for h in history.values()), 3))
    rank = (ordering.rank_key(history, checkpoint_hours, ordering.RESTART_HOURS)
            if chosen == "expected" else None)
    return _Ordering(basis=basis, history=history, rank=rank)


def _workload(request: TrainRequest, gpus: Any, report: Future) -> Workload:
    from vicuna_ops.launch.workload import measured_segments, workload

    try:
        found = report.result(timeout=REPORT_WAIT_S)
    except Exception:  # noqa: BLE001 - slow or failed: size the work without it
        found = None
    return workload(request.recipe, gpus, request.num_nodes, max_steps=request.max_steps,
                    report=found, measured=measured_segments(request.recipe.name, gpus.name))


def _check_name_free(run_id: str) -> None:
    with Ledger() as ledger:
        if not ledger.has_run(run_id):
            return
        row = ledger.get_run(run_id)
    if row["status"] == LAUNCH_FAILED and not row["job_ids"]:
        return
    raise UserError(f"run {run_id!r} already exists ({row['status']})",
                    hint="pick another --name; `vops runs` lists the runs")


def _with_gpus(request: TrainRequest, gpus: Any) -> TrainRequest:
    from dataclasses import replace

    return replace(request, gpus=gpus)


def _check_placement(placement: Placement, candidates: list[Candidate]) -> None:
    """SkyPilot must pick one of our zones; anything else means the task says something else
    than the plan shows."""
    zones = {(c.cloud, c.region, c.zone) for c in candidates}
    if (placement.cloud, placement.region, placement.zone) not in zones:
        raise CloudError(f"SkyPilot's optimizer picked {placement.infra}, which is not among "
                         "the planned zones", hint="report this with --debug output")


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
