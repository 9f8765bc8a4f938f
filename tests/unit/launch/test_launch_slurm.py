"""``--clouds slurm``: flags, the task's Slurm form, the node's pip settings and the
persistent-venv preamble (run for real in bash, against a fake user home)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vicuna_ops.errors import UserError
from vicuna_ops.launch import slurm
from vicuna_ops.launch.request import build_request
from vicuna_ops.launch.setup_source import setup_script as inner_setup

PIP_CONFIG = """\
:env:.find-links='/opt/wheels'
:env:.default-timeout='180'
global.find-links='/srv/old-wheels'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.cert='/etc/ssl/certs/ca-certificates.crt'
"""


def test_parse_clouds_naming_slurm():
    assert slurm.parse(None) is None
    assert slurm.parse("aws,gcp") is None
    assert slurm.parse("slurm") == ("slurm",)
    assert slurm.parse(" Slurm/LocalSlurm ") == ("slurm/LocalSlurm",)
    with pytest.raises(UserError, match="cannot be combined"):
        slurm.parse("slurm,aws")
    with pytest.raises(UserError, match="not a Slurm cluster name"):
        slurm.parse("slurm/")


def test_node_size_from_the_environment():
    assert slurm.node_size({}).instance_type == "1CPU--2GB"
    assert slurm.node_size({"VOPS_SLURM_CPUS": "4", "VOPS_SLURM_MEMORY": "7.5"}
                           ).instance_type == "4CPU--7.5GB"
    with pytest.raises(UserError, match="VOPS_SLURM_CPUS='0'"):
        slurm.node_size({"VOPS_SLURM_CPUS": "0"})
    with pytest.raises(UserError, match="not a positive number"):
        slurm.node_size({"VOPS_SLURM_MEMORY": "lots"})


def test_a_slurm_request_takes_a_shared_folder_bucket_and_no_spot(tmp_path):
    req = build_request(recipe="tiny", bucket=str(tmp_path / "bucket"), gpus=None,
                        clouds="slurm", name="r1", environ={})
    assert req.clouds == ("slurm",) and req.use_spot is False
    assert req.bucket.startswith("file://") and req.run_uri.endswith("/bucket/r1")
    assert req.cpu_node == slurm.NodeSize(1, 2)
    with_gpus = build_request(recipe="tiny", bucket="s3://my-bucket/runs", gpus="A100:1",
                              clouds="slurm/big", name="r2", environ={})
    assert with_gpus.cpu_node is None and str(with_gpus.gpus) == "A100:1"


def test_a_cloud_request_still_refuses_a_local_bucket_and_slurm_refuses_regions(tmp_path):
    with pytest.raises(UserError, match="local path"):
        build_request(recipe="tiny", bucket=str(tmp_path), gpus=None, clouds="aws",
                      environ={})
    with pytest.raises(UserError, match="do not apply to Slurm"):
        build_request(recipe="tiny", bucket=str(tmp_path), gpus=None, clouds="slurm",
                      regions="us-east-1", environ={})


def test_pip_settings_follow_pips_precedence_and_reach_pip_and_uv():
    settings = slurm.parse_pip_config(PIP_CONFIG)
    assert settings == {"find-links": "/opt/wheels",  # the environment beats the file
                        "constraint": "/etc/xdg/pip/constraints.txt",
                        "extra-index-url": "file:///opt/pypi/simple file:///opt/pypi-more/simple"}
    envs = slurm.pip_envs(settings, "2.13.0+cpu")
    assert envs["PIP_FIND_LINKS"] == envs["UV_FIND_LINKS"] == "/opt/wheels"
    assert envs["UV_EXTRA_INDEX_URL"] == "file:///opt/pypi/simple file:///opt/pypi-more/simple"
    assert envs["UV_CONSTRAINT"] == "/etc/xdg/pip/constraints.txt"
    assert envs["VOPS_NODE_CONSTRAINTS"] == "torch==2.13.0"  # the version, not the build
    assert "PIP_CERT" not in envs and slurm.pip_envs({}, None) == {}


def test_adapt_task_turns_a_cloud_task_into_a_slurm_one():
    cloud_task = {
        "name": "r1",
        "resources": {"accelerators": "A100:8", "use_spot": True, "disk_size": 64,
                      "ordered": [{"infra": "aws/us-east-1/us-east-1a"}],
                      "job_recovery": {"strategy": "EAGER_NEXT_REGION"}},
        "envs": {"VOPS_RECIPE": "/vops/run/recipe.yaml", "VOPS_GPUS": "A100:8",
                 "VOPS_USE_SPOT": "true"},
        "file_mounts": {"/vops/run/recipe.yaml": "/home/me/.vops/runs/r1/recipe.yaml"},
        "setup": "echo install", "run": "echo train",
    }
    task = slurm.adapt_task(cloud_task, ("slurm",), node=slurm.NodeSize(1, 2), gpus=None,
                            envs={"UV_FIND_LINKS": "/opt/wheels"},
                            recipe_mount="/vops/run/recipe.yaml")
    assert task["resources"] == {"infra": "slurm", "cpus": 1, "memory": 2, "use_spot": False,
                                 "job_recovery": {"strategy": "EAGER_NEXT_REGION"}}
    assert task["file_mounts"] == {slurm.NODE_RECIPE_PATH: "/home/me/.vops/runs/r1/recipe.yaml"}
    assert task["envs"]["VOPS_RECIPE"] == slurm.NODE_RECIPE_PATH
    assert task["envs"]["VOPS_INSTANCE_TYPE"] == "1CPU--2GB" and task["envs"]["VOPS_GPUS"] == ""
    assert task["envs"]["VOPS_USE_SPOT"] == "false"
    assert task["envs"]["UV_FIND_LINKS"] == "/opt/wheels"
    assert task["setup"].endswith("echo install") and "flock" in task["setup"]
    assert task["run"] == "echo train" and cloud_task["resources"]["use_spot"] is True
    gpu = slurm.adapt_task(cloud_task, ("slurm/big",), node=None, gpus="A100:8", envs={})
    assert gpu["resources"]["accelerators"] == "A100:8"
    assert gpu["resources"]["infra"] == "slurm/big" and "cpus" not in gpu["resources"]
    # partitions are the cluster's zones: an ordered list, tried in this order
    two = slurm.adapt_task(cloud_task, ("slurm/big",), node=slurm.NodeSize(1, 2), gpus=None,
                           envs={}, partitions=("debug", "spare"))
    assert two["resources"]["ordered"] == [{"infra": "slurm/big/debug"},
                                           {"infra": "slurm/big/spare"}]
    assert "infra" not in two["resources"] and two["resources"]["cpus"] == 1
    assert two["resources"]["job_recovery"] == cloud_task["resources"]["job_recovery"]


def test_slurm_zones_are_partitions_of_a_named_cluster(tmp_path):
    req = build_request(recipe="tiny", bucket=str(tmp_path), gpus=None, clouds="slurm/big",
                        zones="debug,spare", environ={})
    assert req.zones == ("debug", "spare")
    with pytest.raises(UserError, match="names partitions of one cluster"):
        build_request(recipe="tiny", bucket=str(tmp_path), gpus=None, clouds="slurm",
                      zones="debug", environ={})
    placement = type("P", (), {"region": "big", "zone": "debug", "instance_type": "1CPU--2GB",
                               "hourly_price": 0.05})()
    assert [c.infra for c in slurm.candidates(placement, req.zones)] == [
        "slurm/big/debug", "slurm/big/spare"]
    assert [c.zone for c in slurm.candidates(placement)] == ["debug"]


def _fake_user(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A user home and a PATH whose getent says that is our home."""
    user_home, bindir = tmp_path / "user-home", tmp_path / "bin"
    user_home.mkdir()
    bindir.mkdir()
    getent = bindir / "getent"
    getent.write_text(f"#!/bin/sh\necho \"$2:x:1:1::{user_home}:/bin/sh\"\n")
    getent.chmod(0o755)
    return user_home, {"PATH": f"{bindir}:{os.environ['PATH']}"}


def _run_setup(cluster_home: Path, env: dict[str, str], inner: str) -> str:
    cluster_home.mkdir(parents=True, exist_ok=True)
    full = {**env, "HOME": str(cluster_home), "VOPS_INSTALL": "~/sky_workdir[train,s3,gcs]",
            "VOPS_INSTALL_ID": "0.1.0+src.abc[train,s3,gcs]",
            "VOPS_NODE_CONSTRAINTS": "torch==2.13.0", "UV_CONSTRAINT": "/etc/c.txt"}
    proc = subprocess.run(["bash", "-c", slurm.setup_script(inner)], env=full,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_venv_survives_a_new_cluster_home(tmp_path):
    """Attempt 1 installs into the user's home; attempt 2 (a fresh cluster $HOME, as after a
    preemption) finds the same venv and the marker, and skips the install."""
    user_home, env = _fake_user(tmp_path)
    # Stands in for setup_source's script: the same marker logic, a fake install.
    inner = inner_setup().split('# A leading ~')[0] + (
        'mkdir -p "$VENV/bin"; echo installed-with "$UV_CONSTRAINT" '
        '"$(cat "$HOME/.vops/constraints.txt")"\n'
        'echo "$VOPS_INSTALL_ID" > "$MARKER"\n')
    out = _run_setup(tmp_path / "cluster-1", env, inner)
    assert "installed-with" in out
    constraints = str(tmp_path / "cluster-1" / ".vops" / "constraints.txt")
    assert f"{constraints} /etc/c.txt torch==2.13.0" in out
    venv = user_home / ".vops" / "venvs" / "venv-train-s3-gcs"
    assert (venv / ".vops-install-id").read_text().strip() == "0.1.0+src.abc[train,s3,gcs]"
    assert (tmp_path / "cluster-1" / "vops-venv").resolve() == venv.resolve()

    out = _run_setup(tmp_path / "cluster-2", env, inner)
    assert "already installed" in out and "installed-with" not in out
    assert (tmp_path / "cluster-2" / "vops-venv").resolve() == venv.resolve()


def test_serve_tasks_on_slurm_get_a_cpu_node_and_a_port_each():
    worker = {"name": "d-worker-1",
              "resources": {"accelerators": "L4:1", "use_spot": True, "ports": 8001,
                            "ordered": [], "job_recovery": {"strategy": "EAGER_NEXT_REGION"}},
              "envs": {"VOPS_WORKER_PORT": "8001", "VOPS_GPUS": "L4:1"}, "setup": "echo s"}
    task = slurm.serve_task(worker, ("slurm",), port=slurm.worker_port(9000, 1))
    assert task["resources"] == {"infra": "slurm", "cpus": 1, "memory": 2, "use_spot": False,
                                 "job_recovery": {"strategy": "EAGER_NEXT_REGION"}}
    assert task["envs"]["VOPS_WORKER_PORT"] == "9002" and task["envs"]["VOPS_GPUS"] == ""
    controller = {"name": "d-controller", "resources": {"cpus": "2+", "ports": 9000},
                  "envs": {"VOPS_API_PORT": "9000"}, "setup": "echo s"}
    task = slurm.serve_task(controller, ("slurm",), port=9000)
    assert task["envs"]["VOPS_API_PORT"] == "9000" and "ports" not in task["resources"]
    assert "VOPS_WORKER_PORT" not in task["envs"]
