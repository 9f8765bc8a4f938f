"""The harness itself: SkyPilot sees the local Slurm cluster, prices its virtual instance
types with the harness's pricing row, and the offline workaround is active. Cheap, and the
first thing to read when a longer e2e test fails."""

from __future__ import annotations

import subprocess

import pytest

from e2e_cluster import LocalSlurm

pytestmark = pytest.mark.e2e

PRICE_SCRIPT = """
from sky.catalog import slurm_catalog
import sky.backends.backend_utils as b
print(slurm_catalog.get_hourly_cost('1CPU--2GB', False, 'localslurm', 'debug'))
print(getattr(b, 'LOCAL_SLURM_NETPATCHED', False))
"""


def test_sky_check_enables_the_local_slurm_cluster(slurm_cluster: LocalSlurm) -> None:
    proc = slurm_cluster.sky("check", "slurm", timeout=300)
    text = proc.stdout + proc.stderr
    assert "Slurm: enabled" in text, text
    assert slurm_cluster.exports["LOCAL_SLURM_ALIAS"] in text


def test_slurm_instance_types_are_priced_and_the_netpatch_is_on(
        slurm_cluster: LocalSlurm) -> None:
    proc = subprocess.run([str(slurm_cluster.venv / "bin" / "python"), "-c", PRICE_SCRIPT],
                          env=slurm_cluster.env(), capture_output=True, text=True, timeout=120,
                          check=True)
    price, patched = proc.stdout.split()
    # up.sh's pricing row: $0.04 per vCPU-hour + $0.005 per GB-hour -> 1 CPU, 2 GB = $0.05/h
    assert float(price) == pytest.approx(0.05)
    assert patched == "True"


def test_the_node_declares_cpus_for_three_tasks_and_a_relaunch(
        slurm_cluster: LocalSlurm) -> None:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%c %T"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert int(out[0]) >= 4, f"the node declares {out[0]} CPUs; the serve test needs 4"
