"""Shared fixtures for every test. The helpers live in ``tests/fixtures/``; see there.

Always on (autouse): ``isolated_home`` -- each test gets a fresh HOME and VOPS_HOME, no cloud
credentials, endpoints or proxies, and AWS/GCP config files that do not exist.

On request:
    s3_server / s3_bucket        moto S3 server URL (env set) / fresh 's3://<bucket>'
    gcs_server / gcs_bucket      gcp-storage-emulator URL (env set) / fresh 'gs://<bucket>'
    any_bucket                   parametrized: 'file://<tmp>', 's3://<bucket>', 'gs://<bucket>'
    remote_bucket                parametrized: 's3://<bucket>', 'gs://<bucket>'
    sky_offline                  SkyPilot parser + optimizer on the local catalog, no network
    no_network                   connections outside loopback fail at once
    moto_process / gcs_process   the session-wide server processes themselves
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
if str(TESTS_DIR) not in sys.path:  # `import fixtures` whatever pytest's import mode
    sys.path.insert(0, str(TESTS_DIR))

from fixtures.isolation import enter_session_home, isolate_test_env, leave_session_home  # noqa: E402
from fixtures.network import block_outside_network  # noqa: E402
from fixtures.services import (  # noqa: E402,F401 - fixtures are found by name
    any_bucket,
    gcs_bucket,
    gcs_process,
    gcs_server,
    moto_process,
    remote_bucket,
    s3_bucket,
    s3_server,
)
from fixtures.skypilot import sky_offline  # noqa: E402,F401

_session_home: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    # Before any test module is imported (so before anything imports sky): see isolation.py.
    global _session_home
    if _session_home is None:
        _session_home = enter_session_home(REPO_ROOT)


def _skipped(config: pytest.Config) -> list:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return reporter.stats.get("skipped", []) if reporter is not None else []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # A skipped test is a missing fixture or dependency hiding a failure: the suite ships
    # everything it needs, so a skip fails the run (VOPS_ALLOW_SKIPS=1 allows them locally).
    if (_skipped(session.config) and exitstatus == pytest.ExitCode.OK
            and os.environ.get("VOPS_ALLOW_SKIPS") != "1"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _skipped(config) and os.environ.get("VOPS_ALLOW_SKIPS") != "1":
        terminalreporter.write_line(
            f"FAILED: {len(_skipped(config))} test(s) skipped; the suite must run whole (reasons in the "
            "short test summary; VOPS_ALLOW_SKIPS=1 allows skips)", red=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _session_home
    if _session_home is not None:
        leave_session_home(_session_home)
        _session_home = None


@pytest.fixture(autouse=True)
def isolated_home(monkeypatch: pytest.MonkeyPatch,
                  tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This test's HOME (fresh, empty); the environment is scrubbed around it."""
    home = tmp_path_factory.mktemp("home")
    isolate_test_env(monkeypatch, home)
    return home


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection or DNS lookup outside loopback raises OSError in this test."""
    block_outside_network(monkeypatch)
