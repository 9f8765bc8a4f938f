"""Flags and VOPS_* variables of ``python -m vicuna_ops.train``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vicuna_ops.errors import UserError
from vicuna_ops.train.args import parse_args

BASE = ["--recipe", "tiny", "--run-id", "r1", "--bucket", "/tmp/b"]


def test_flags_parse_with_defaults():
    args = parse_args(BASE, env={})
    assert (args.recipe, args.run_id, args.bucket) == ("tiny", "r1", "/tmp/b")
    assert args.max_steps is None and args.max_cost is None and not args.progress
    assert args.workdir.endswith("vops-train")
    assert args.aws_notice_url is None and args.gcp_notice_url is None


def test_environment_fills_missing_flags_and_flags_win():
    env = {"VOPS_RECIPE": "vicuna-7b", "VOPS_RUN_ID": "from-env", "VOPS_BUCKET": "s3://b/runs",
           "VOPS_MAX_STEPS": "12", "VOPS_MAX_COST": "3.5", "VOPS_PROGRESS": "1",
           "VOPS_HEARTBEAT_S": "0.5"}
    args = parse_args(["--run-id", "from-flag"], env=env)
    assert args.recipe == "vicuna-7b" and args.run_id == "from-flag"
    assert args.bucket == "s3://b/runs" and args.max_steps == 12 and args.max_cost == 3.5
    assert args.progress and args.heartbeat_s == 0.5


def test_empty_notice_url_variable_turns_the_watcher_off():
    args = parse_args(BASE, env={"VOPS_AWS_NOTICE_URL": "", "VOPS_GCP_NOTICE_URL": "http://x/p"})
    assert args.aws_notice_url == "" and args.gcp_notice_url == "http://x/p"


@pytest.mark.parametrize("argv, env, needle", [
    (["--recipe", "tiny"], {}, "--run-id (or VOPS_RUN_ID)"),
    (BASE + ["--max-steps", "0"], {}, "--max-steps must be positive"),
    (BASE, {"VOPS_MAX_COST": "lots"}, "VOPS_MAX_COST='lots' is not a valid float"),
    (["--recipe", "t", "--run-id", "Bad_Name", "--bucket", "b"], {}, "invalid run name"),
])
def test_bad_input_is_one_user_error(argv, env, needle):
    with pytest.raises(UserError) as caught:
        parse_args(argv, env=env)
    assert needle in caught.value.one_line()


def test_help_and_bad_flags_import_neither_sky_nor_torch():
    code = ("import sys, runpy\n"
            "sys.argv = ['vicuna_ops.train', '--help']\n"
            "try:\n    runpy.run_module('vicuna_ops.train', run_name='__main__')\n"
            "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "heavy = [m for m in ('sky', 'torch', 'transformers', 'boto3') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "--max-cost" in out and "VOPS_BUCKET" in out
    assert "HEAVY []" in out


def test_missing_flags_exit_2_with_one_line():
    result = subprocess.run([sys.executable, "-m", "vicuna_ops.train", "--recipe", "tiny"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: missing --run-id")
