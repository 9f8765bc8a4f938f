"""End-to-end tests on a real SkyPilot backend: a one-node Slurm cluster on this machine.

``slurm_cluster`` (session) runs tests/e2e/harness/up.sh once -- idempotent, a cluster that is
already up is reused -- and harness/down.sh at the end, whatever the tests did: managed jobs
cancelled, SkyPilot's API server and helpers, sshd, slurmd, slurmctld and munged stopped.
``VOPS_E2E_KEEP=1`` leaves it up for the next run (down.sh later, or run.sh, stops it).

When they run:
* ``CI=true``: always; a machine that cannot host the cluster FAILS the tests (it must not
  pass by skipping them);
* otherwise only when asked, with ``VOPS_E2E=1`` (tests/e2e/run.sh sets it), because a run
  installs Slurm, creates a user and takes several minutes; without root or apt they skip,
  saying why.

Knobs: ``VOPS_E2E_BASE`` (default /tmp/vops-e2e), ``VOPS_E2E_KEEP``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e_cluster import DEFAULT_BASE, LocalSlurm, missing_client_modules, skip_reason  # noqa: E402
from e2e_sky import Timings  # noqa: E402

_TIMINGS = Timings()


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _gate() -> str | None:
    """None when the e2e tests must run; else the reason they skip (or, in CI, fail)."""
    reason = skip_reason()
    if reason is None and not _in_ci() and os.environ.get("VOPS_E2E") != "1":
        return ("e2e tests start a local Slurm cluster and take minutes: set VOPS_E2E=1 "
                "or run tests/e2e/run.sh")
    return reason


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _e2e_gate() -> None:
    reason = _gate()
    if reason is None:
        return
    if _in_ci() and skip_reason() is not None:
        pytest.fail(f"CI=true but this machine cannot run the e2e suite: {reason}",
                    pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def e2e_timings() -> Timings:
    return _TIMINGS


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory, e2e_timings: Timings):
    """The running local Slurm cluster (up.sh), torn down (down.sh) after the session."""
    if _gate() is not None:  # a session fixture may be set up before the gate of a test
        pytest.skip(_gate())
    missing = missing_client_modules()
    if missing:
        pytest.fail(f"SkyPilot's Slurm client packages are missing from {sys.prefix}: "
                    f"{', '.join(missing)} (install them with: pip install -e '.[slurm]')",
                    pytrace=False)
    base = Path(os.environ.get("VOPS_E2E_BASE", str(DEFAULT_BASE)))
    logs = tmp_path_factory.mktemp("e2e-logs")
    t0 = time.time()
    cluster = LocalSlurm.up(base, log=logs / "up.log")
    e2e_timings.add("cluster up (up.sh)" + (" [warm]" if cluster.was_warm else ""),
                    time.time() - t0)
    try:
        # Started here, from a known environment: every later `vops` call reuses it.
        t0 = time.time()
        cluster.sky("api", "start", timeout=300)
        e2e_timings.add("SkyPilot API server start", time.time() - t0)
        yield cluster
    finally:
        if os.environ.get("VOPS_E2E_KEEP") == "1":
            sys.stderr.write(f"\nVOPS_E2E_KEEP=1: the cluster at {base} stays up; stop it "
                             f"with: bash tests/e2e/harness/down.sh {base} {cluster.venv}\n")
        else:
            t0 = time.time()
            rc = cluster.down(log=logs / "down.log")
            shutil.rmtree(base / "shared", ignore_errors=True)  # the tests' buckets, models
            e2e_timings.add("cluster down (down.sh)", time.time() - t0)
            if rc != 0:
                sys.stderr.write(f"\ntests/e2e/harness/down.sh exited {rc}: see "
                                 f"{logs / 'down.log'}\n")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    lines = _TIMINGS.lines()
    if not lines:
        return
    terminalreporter.section("e2e timings (local Slurm)")
    for line in lines:
        terminalreporter.write_line(line)
