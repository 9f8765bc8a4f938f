"""launch/infra.py: one answer to "where can this task run", and launch/ without import
cycles."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vicuna_ops.errors import UserError
from vicuna_ops.launch.infra import CLOUD_SCHEMES, parse_infra


def test_clouds_and_a_slurm_cluster_answer_differently():
    clouds, cluster = parse_infra("gcp,aws"), parse_infra("slurm/big")
    assert clouds.clouds == ("gcp", "aws") and parse_infra(None).clouds == ("aws", "gcp")
    assert (clouds.is_slurm, clouds.has_spot, clouds.reaches_local_paths) == (False, True, False)
    assert (cluster.is_slurm, cluster.has_spot, cluster.reaches_local_paths) == (True, False, True)
    assert clouds.bucket_schemes == CLOUD_SCHEMES and "file://" in cluster.bucket_schemes
    assert clouds.prices_zones and not cluster.prices_zones
    task = {"resources": {"accelerators": "L4:1"}, "envs": {"VOPS_WORKER_PORT": "8001"}}
    assert clouds.serve_task(task, port=9000) is task  # a cloud task is used as it is
    assert cluster.serve_task(task, port=9000)["envs"]["VOPS_WORKER_PORT"] == "9000"
    assert clouds.worker_port(8000, 1, default=8001) == 8001
    assert cluster.worker_port(8000, 1, default=8001) == 8002


@pytest.mark.parametrize("clouds, kwargs, words", [
    ("slurm", {"regions": ("us-east-1",)}, "--regions do not apply to Slurm"),
    ("slurm", {"zones": ("debug",)}, "names partitions of one cluster"),
    ("slurm/big", {"gpus_auto": True}, "--gpus auto"),
])
def test_flags_that_mean_nothing_on_slurm_are_refused(clouds, kwargs, words):
    flags = {"regions": None, "zones": None, "gpus_auto": False, **kwargs}
    with pytest.raises(UserError, match=words):
        parse_infra(clouds).check(**flags)
    parse_infra("aws").check(**flags)  # on clouds they all mean something


@pytest.mark.parametrize("module", ["task", "request", "slurm", "infra", "trainer",
                                   "candidates", "plan"])
def test_each_launch_module_imports_on_its_own_without_a_cycle(module):
    # Each first in a fresh interpreter: a cycle shows up as a partially initialised module.
    code = f"import vicuna_ops.launch.{module}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_task_building_does_not_load_request_building():
    loaded = subprocess.run([sys.executable, "-c", "import sys, vicuna_ops.launch.task; "
                             "print('vicuna_ops.launch.request' in sys.modules)"],
                            capture_output=True, text=True, timeout=60).stdout.strip()
    assert loaded == "False"  # task.py needs TrainRequest only for annotations
