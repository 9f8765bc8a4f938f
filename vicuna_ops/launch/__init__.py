"""Recipe + flags -> SkyPilot task dict -> validated by SkyPilot -> launched as a managed job.

Public API (also what ``vops serve`` builds its SkyPilot tasks with)::

    from vicuna_ops.launch import (parse_gpus, check_gpus, zone_candidates, ordered_resources,
                                   node_install, setup_script, validate_task,
                                   validate_task_file, write_task_yaml, sky_sdk)

    gpus = check_gpus(parse_gpus("A100:8"), ["aws", "gcp"])   # Gpus(name="A100", count=8)
    cands = zone_candidates(gpus, ["aws", "gcp"], use_spot=True, cap=8)
    #  -> [Candidate(cloud, region, zone, instance_type, spot_price, ondemand_price), ...]
    task = {..., "resources": {"accelerators": str(gpus), "use_spot": True,
                               "ordered": ordered_resources(cands)}}
    install = node_install(extras=("serve", "train", "s3", "gcs"))
    task["envs"].update(install.envs()); task["setup"] = setup_script()
    if install.workdir: task["workdir"] = install.workdir
    path = write_task_yaml(run_dir, "task", task)       # name only for secrets: {NAME: None}
    checked = validate_task_file(path)                  # SkyPilot parser + optimizer
    checked.placement                                   # Placement(cloud, region, zone, ...)
    job_id = sky_sdk.launch_managed_job(path, "my-job", secrets={"HF_TOKEN": "..."})
    sky_sdk.queue([job_id]); sky_sdk.tail_logs(job_id, follow=True); sky_sdk.cancel([job_id])

Module map: infra (where a task can run: cloud zones or a Slurm cluster; slurm holds the
Slurm specifics), accelerators (``--gpus``), gpu_fit (``--gpus auto``), candidates (zones +
prices from the catalog), ordering (``--order``), request (``vops train`` flags), task
(template overlay, YAML writing), validate (SkyPilot parser + optimizer), workload + plan
(the work and its cost estimate), setup_source (installing vops on a node),
trainer (the ``vops train`` flow), jobs (status/logs/cancel), sky_sdk (the ONLY module that
calls SkyPilot's API server; tests replace it).

Nothing here imports SkyPilot at import time: each function imports it when called.
"""

from __future__ import annotations

from vicuna_ops.launch.accelerators import Gpus, canonical_gpus, check_gpus, parse_gpus
from vicuna_ops.launch.candidates import (
    DEFAULT_CAP,
    DEFAULT_MIN_PER_CLOUD,
    SUPPORTED_CLOUDS,
    Candidate,
    parse_clouds,
    zone_candidates,
)
from vicuna_ops.launch.setup_source import NodeInstall, node_install, setup_script
from vicuna_ops.launch.task import load_template, ordered_resources, write_task_yaml
from vicuna_ops.launch.validate import (
    Placement,
    ValidatedTask,
    parse_task,
    parse_task_file,
    validate_task,
    validate_task_file,
)

__all__ = [
    "DEFAULT_CAP",
    "DEFAULT_MIN_PER_CLOUD",
    "SUPPORTED_CLOUDS",
    "Candidate",
    "Gpus",
    "NodeInstall",
    "Placement",
    "ValidatedTask",
    "canonical_gpus",
    "check_gpus",
    "load_template",
    "node_install",
    "ordered_resources",
    "parse_clouds",
    "parse_gpus",
    "parse_task",
    "parse_task_file",
    "setup_script",
    "validate_task",
    "validate_task_file",
    "write_task_yaml",
    "zone_candidates",
]
