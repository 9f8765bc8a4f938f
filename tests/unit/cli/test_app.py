"""The CLI contract every command shares: fast help, one-line errors, exit codes, --debug."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY_MODULES = ("sky", "torch", "transformers", "boto3", "google.cloud.storage", "fastapi",
                 "uvicorn", "matplotlib")


def run_vops(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vicuna_ops", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)


def test_importing_the_cli_loads_no_heavy_module():
    code = ("import sys, vicuna_ops.cli.app; "
            f"print([m for m in {HEAVY_MODULES!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_the_command_groups():
    result = run_vops("--help")
    assert result.returncode == 0
    for group in ("runs", "storage"):
        assert group in result.stdout


def test_version():
    result = run_vops("--version")
    assert result.returncode == 0 and result.stdout.startswith("vops ")


@pytest.mark.parametrize("args", [["runs", "--bogus"], ["runs", "--kind"],
                                  ["no-such-command"]])
def test_usage_errors_are_one_line_and_exit_2(args):
    result = run_vops(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "--help" in lines[0]
    assert "Traceback" not in result.stderr


def test_user_error_is_one_line_and_debug_shows_the_traceback():
    result = run_vops("runs", "--kind", "nonsense")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --kind must be 'train' or 'serve', not 'nonsense'"]
    debug = run_vops("--debug", "runs", "--kind", "nonsense")
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr and "UserError" in debug.stderr


def test_runs_json_lists_ledger_rows(tmp_path):
    from vicuna_ops.ledger import Ledger

    env = {"VOPS_HOME": str(tmp_path)}
    with Ledger(tmp_path / "ledger.db") as ledger:
        ledger.add_run("r1", "train", "launched", bucket="s3://b/r")
    result = run_vops("runs", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["run_id"], r["bucket"]) for r in rows] == [("r1", "s3://b/r")]


@pytest.mark.parametrize("uri", ["s3://", "gs:///x", "ftp://x"])
@pytest.mark.parametrize("command", [["storage", "ls"], ["storage", "check"]])
def test_malformed_bucket_uri_is_one_line_exit_2(command, uri):
    result = run_vops(*command, uri)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert uri.split(":")[0] in lines[0]
