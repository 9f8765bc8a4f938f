"""SkyPilot's own optimizer, in-process, on the catalog subset in tests/data: no network at all.

The expected picks are the ones tests/data/skypilot-catalog/README.md records for SkyPilot
0.14.1 on that snapshot; if they move, the catalog or SkyPilot changed, not vops.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _spot(sky_offline, accelerators: str | None = None, **resources):
    sky = sky_offline.sky
    task = sky.Task(run="true")
    task.set_resources(sky.Resources(accelerators=accelerators, use_spot=True, **resources))
    return sky_offline.best_resources(task)


def test_a100x8_spot_any_cloud_is_aws_p4d_us_east_1d(sky_offline) -> None:
    best = _spot(sky_offline, "A100:8")
    assert str(best.cloud) == "AWS"
    assert (best.instance_type, best.region, best.zone) == ("p4d.24xlarge", "us-east-1",
                                                           "us-east-1d")
    assert best.get_cost(3600) == pytest.approx(2.4655, abs=1e-4)


def test_restricting_to_gcp_picks_gcp(sky_offline) -> None:
    best = _spot(sky_offline, "A100:8", infra="gcp")
    assert str(best.cloud) == "GCP" and best.instance_type == "a2-highgpu-8g"
    h100 = _spot(sky_offline, "H100:8", infra="gcp")
    assert (h100.instance_type, h100.zone) == ("a3-highgpu-8g", "europe-north1-c")
    assert h100.get_cost(3600) == pytest.approx(12.3128, abs=1e-4)


def test_cpu_only_task(sky_offline) -> None:
    sky = sky_offline.sky
    task = sky.Task(run="true")
    task.set_resources(sky.Resources(cpus="4+"))
    best = sky_offline.best_resources(task)
    assert (str(best.cloud), best.instance_type) == ("GCP", "n4-standard-4")
    assert best.get_cost(3600) == pytest.approx(0.1814, abs=1e-4)


def test_task_yaml_validates_with_skypilot_parser(sky_offline) -> None:
    task = sky_offline.sky.Task.from_yaml_config({
        "name": "vops-train",
        "resources": {"accelerators": "A100:8", "use_spot": True,
                      "any_of": [{"infra": "aws"}, {"infra": "gcp"}]},
        "envs": {"BUCKET": "s3://b/runs"},
        "run": "echo $BUCKET",
    })
    assert task.name == "vops-train"
    best = sky_offline.best_resources(task)
    assert str(best.cloud) == "AWS"


def test_catalog_is_the_session_copy_and_home_is_per_test(sky_offline,
                                                          isolated_home: Path) -> None:
    from sky.catalog import common

    assert Path(common._ABSOLUTE_VERSIONED_CATALOG_DIR) == sky_offline.catalog_dir
    assert not (sky_offline.catalog_dir / ".meta").exists()  # never marked for re-download
    assert os.environ["HOME"] == str(isolated_home) != os.environ["SKY_RUNTIME_DIR"]


def test_network_outside_loopback_is_blocked(sky_offline) -> None:
    import socket

    with pytest.raises(OSError, match="disabled"):
        socket.create_connection(("169.254.169.254", 80), timeout=1)
    with pytest.raises(OSError):
        socket.getaddrinfo("example.com", 443)


def test_a_subprocess_reads_the_same_catalog(sky_offline) -> None:
    """`vops` run as a subprocess (CLI tests) inherits SKY_RUNTIME_DIR, whatever its HOME."""
    code = "import sky.catalog.common as c; print(c._ABSOLUTE_VERSIONED_CATALOG_DIR)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip().splitlines()[-1]
    assert Path(out) == sky_offline.catalog_dir
