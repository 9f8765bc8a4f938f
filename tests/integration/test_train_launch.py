"""``vops train`` end to end on SkyPilot's real parser and optimizer (offline catalog).

The one fake is ``vicuna_ops.launch.sky_sdk`` (the module that talks to an API server):
everything in front of it -- flags, catalog candidates, the template overlay, the YAML on
disk read back by ``sky.Task.from_yaml``, the optimizer's pick, the plan, the ledger -- is
the real code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.cli import run_vops
from vicuna_ops.errors import CloudError
from vicuna_ops.launch import sky_sdk
from vicuna_ops.ledger import Ledger

BUCKET = "s3://vops-test-bucket/runs"
DATA = "s3://vops-test-bucket/sharegpt/train.jsonl"
SECRET_VALUE = "hf_sEcReT_value_9f8e7d"


@pytest.fixture
def launch_bucket(s3_server):
    """The bucket a launch writes its price table to, on the moto server."""
    from vicuna_ops import adaptors

    adaptors.boto3().client("s3").create_bucket(Bucket="vops-test-bucket")
    return BUCKET


class FakeSky:
    """Records what would have reached SkyPilot's API server."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: Exception | None = None):
        self.launches: list[dict] = []
        self.fail = fail
        self.next_job_id = 41
        monkeypatch.setattr(sky_sdk, "launch_managed_job", self.launch_managed_job)

    def launch_managed_job(self, yaml_path, name, secrets=None):
        self.launches.append({"yaml_path": Path(yaml_path), "name": name,
                              "secrets": dict(secrets or {})})
        if self.fail:
            raise self.fail
        self.next_job_id += 1
        return self.next_job_id


vops = run_vops


def dry_run(capsys, *extra: str, name: str = "run-a") -> dict:
    code, out, err = vops(capsys, "train", "--dry-run", "--json", "--bucket", BUCKET,
                          "--data", DATA, "--name", name, *extra)
    assert code == 0, err
    return json.loads(out)


def ledger_rows() -> list[dict]:
    with Ledger() as ledger:
        return ledger.list_runs()


def runs_folder() -> Path:
    return Path(os.environ["VOPS_HOME"]) / "runs"


@pytest.mark.parametrize("extra, cloud, gpus", [
    ((), None, "A100:8"),
    (("--clouds", "aws"), "aws", "A100:8"),
    (("--clouds", "gcp"), "gcp", "A100:8"),
    (("--gpus", "H100:8"), None, "H100:8"),
    (("--gpus", "L4:1", "--clouds", "aws,gcp"), None, "L4:1"),
    (("--gpus", "H100:8", "--clouds", "gcp"), "gcp", "H100:8"),
])
def test_dry_run_yaml_round_trips_and_the_optimizer_picks_a_listed_spot_zone(
        sky_offline, capsys, extra, cloud, gpus):
    plan = dry_run(capsys, *extra)
    path = Path(plan["task_yaml"])
    assert path.is_file() and path.parent == runs_folder() / "run-a"
    listed = {(c["cloud"], c["region"], c["zone"]) for c in plan["candidates"]}
    assert 1 <= len(listed) <= 8
    assert all(c["spot_price"] for c in plan["candidates"])
    prices = [c["spot_price"] for c in plan["candidates"]]
    assert prices[0] == min(prices)  # cheapest first
    if cloud:
        assert {c[0] for c in listed} == {cloud}

    # What `sky jobs launch task.yaml` would read, optimized by SkyPilot itself.
    task = sky_offline.sky.Task.from_yaml(str(path))
    best = sky_offline.best_resources(task)
    name, count = gpus.split(":")
    assert best.use_spot and best.accelerators == {name: int(count)}
    assert (str(best.cloud).lower(), best.region, best.zone) in listed
    assert (best.region, best.zone) == (plan["placement"]["region"], plan["placement"]["zone"])
    assert plan["candidates"][0]["zone"] == best.zone
    assert task.envs["VOPS_RUN_ID"] == "run-a" and task.envs["VOPS_BUCKET"] == BUCKET
    assert task.envs["VOPS_GPUS"] == gpus and task.envs["VOPS_USE_SPOT"] == "true"
    assert ledger_rows() == []  # a dry run leaves the run folder, not a ledger row
    assert (path.parent / "recipe.yaml").is_file()


def test_a100_spot_on_any_cloud_goes_to_us_east_1d_first(sky_offline, capsys):
    plan = dry_run(capsys)
    assert plan["placement"]["infra"] == "aws/us-east-1/us-east-1d"
    assert plan["placement"]["hourly_price"] == pytest.approx(2.4655)
    est = plan["estimate"]
    assert est["cost"] == pytest.approx(est["hours"] * 2.4655, abs=0.01)
    assert est["ondemand_cost"] > est["cost"] and 0.5 < est["saving"] < 1
    assert plan["resources"]["gpus"] == "A100:8" and plan["dry_run"] is True


def test_regions_zones_and_on_demand_shape_the_candidates(sky_offline, capsys):
    plan = dry_run(capsys, "--regions", "us-east-1,us-east-2", name="run-r")
    assert {c["region"] for c in plan["candidates"]} == {"us-east-1", "us-east-2"}
    # the user's regions are not thinned out to 3 zones each
    assert sum(c["region"] == "us-east-1" for c in plan["candidates"]) == 4
    plan = dry_run(capsys, "--zones", "us-east-2b", name="run-z")
    assert [c["zone"] for c in plan["candidates"]] == ["us-east-2b"]
    plan = dry_run(capsys, "--on-demand", name="run-o")
    task = sky_offline.sky.Task.from_yaml(plan["task_yaml"])
    assert not sky_offline.best_resources(task).use_spot
    prices = [c["ondemand_price"] for c in plan["candidates"]]
    assert prices == sorted(prices) and plan["estimate"]["saving"] is None


def test_plan_is_rendered_for_people(sky_offline, capsys):
    code, out, err = vops(capsys, "train", "--dry-run", "--bucket", BUCKET, "--data", DATA,
                          "--name", "run-h")
    assert code == 0, err
    assert "us-east-1d" in out and "$2.47" in out and "saving" in out
    assert str(runs_folder() / "run-h" / "task.yaml") in out.replace("\n", "")


@pytest.mark.parametrize("args, words", [
    (["--gpus", "A100:0"], "at least 1"),
    (["--gpus", "FOO:8"], "unknown GPU 'FOO'"),
    (["--gpus", "A100:x"], "not a whole number"),
    (["--gpus", "A100:3"], "A100:3 is not offered"),
    (["--bucket", "ftp://x"], "unsupported storage scheme"),
    (["--bucket", "s3://"], "no bucket name"),
    (["--recipe", "no-such-recipe"], "unknown recipe"),
    (["--env", "NOEQUALS"], "not KEY=VALUE"),
    (["--clouds", "azure"], "unsupported cloud"),
    (["--regions", "mars-north-1"], "no zone in mars-north-1"),
    (["--num-nodes", "two"], "--num-nodes"),
    (["--secret", "NOT_SET_ANYWHERE_123"], "not set in this environment"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(sky_offline, capsys, monkeypatch,
                                                          args, words):
    fake = FakeSky(monkeypatch)
    base = {"--bucket": BUCKET, "--data": DATA, "--name": "bad-run"}
    for flag in args[::2]:
        base.pop(flag, None)
    argv = ["train", "--yes", *[x for kv in base.items() for x in kv], *args]
    code, out, err = vops(capsys, *argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], err
    assert "Traceback" not in err
    assert ledger_rows() == [] and fake.launches == []
    assert not (runs_folder() / "bad-run").exists()


@pytest.mark.usefixtures("launch_bucket")
def test_launch_records_the_run_and_keeps_the_secret_off_disk(sky_offline, capsys,
                                                               monkeypatch):
    fake = FakeSky(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", SECRET_VALUE)
    code, out, err = vops(capsys, "train", "--yes", "--json", "--bucket", BUCKET, "--data", DATA,
                          "--name", "run-l", "--secret", "HF_TOKEN", "--env", "WANDB_MODE=off",
                          "--max-cost", "150", "--max-steps", "500", "--num-nodes", "2",
                          "--max-restarts-on-errors", "2")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["job_id"] == 42 and summary["run_id"] == "run-l"

    (call,) = fake.launches
    assert call["name"] == "run-l" and call["secrets"] == {"HF_TOKEN": SECRET_VALUE}
    task_yaml = call["yaml_path"]
    text = task_yaml.read_text()
    assert "HF_TOKEN: null" in text
    task = sky_offline.sky.Task.from_yaml(str(task_yaml))
    assert task.envs["VOPS_MAX_COST"] == "150" and task.envs["VOPS_MAX_STEPS"] == "500"
    assert task.num_nodes == 2
    assert list(task.resources)[0].job_recovery["max_restarts_on_errors"] == 2

    (row,) = ledger_rows()
    assert row["run_id"] == "run-l" and row["kind"] == "train" and row["status"] == "launched"
    assert row["job_ids"] == [42] and row["task_yaml"] == str(task_yaml)
    assert row["bucket"] == BUCKET
    data = row["data"]
    assert data["secrets"] == ["HF_TOKEN"] and data["max_cost"] == 150
    assert data["candidates"][0]["spot_price"] > 0 and data["estimate"]["cost"] > 0
    assert data["resources"] == {"gpus": "A100:8", "use_spot": True, "num_nodes": 2,
                                 "clouds": ["aws", "gcp"], "regions": None, "zones": None,
                                 "max_restarts_on_errors": 2, "disk_size_gb": 512,
                                 "max_candidates": 8, "min_per_cloud": 2}
    with Ledger() as ledger:
        assert [e["kind"] for e in ledger.events("run-l")] == ["launched"]
    # The candidates' prices went to the bucket for the node's budget guard.
    from vicuna_ops.cost.price_table import load_price_table
    from vicuna_ops.storage import open_store

    table = load_price_table(open_store(BUCKET).child("run-l"))
    assert {(e.zone, e.spot) for e in table.prices} >= {
        (c["zone"], True) for c in data["candidates"]}

    # The value is nowhere on disk under VOPS_HOME, nor in what vops printed.
    for path in Path(os.environ["VOPS_HOME"]).rglob("*"):
        if path.is_file():
            assert SECRET_VALUE.encode() not in path.read_bytes(), path
    assert SECRET_VALUE not in out and SECRET_VALUE not in err


@pytest.mark.usefixtures("launch_bucket")
def test_a_taken_name_is_refused_before_anything_is_written(sky_offline, capsys, monkeypatch):
    fake = FakeSky(monkeypatch)
    assert vops(capsys, "train", "--yes", "--bucket", BUCKET, "--data", DATA,
                "--name", "run-t")[0] == 0
    before = (runs_folder() / "run-t" / "task.yaml").read_text()
    code, _, err = vops(capsys, "train", "--yes", "--bucket", BUCKET, "--data", DATA,
                        "--name", "run-t", "--gpus", "L4:1")
    assert code == 2 and "already exists" in err
    assert len(fake.launches) == 1
    assert (runs_folder() / "run-t" / "task.yaml").read_text() == before


@pytest.mark.usefixtures("launch_bucket")
def test_a_failed_launch_is_recorded_and_can_be_retried(sky_offline, capsys, monkeypatch):
    fake = FakeSky(monkeypatch, fail=CloudError("SkyPilot could not launch: API server down"))
    code, _, err = vops(capsys, "train", "--yes", "--bucket", BUCKET, "--data", DATA,
                        "--name", "run-f")
    assert code == 2 and err.strip().splitlines() == [
        "error: SkyPilot could not launch: API server down"]
    (row,) = ledger_rows()
    assert row["status"] == "launch-failed" and row["job_ids"] == []
    assert "API server down" in row["data"]["launch_error"]
    fake.fail = None
    code, _, err = vops(capsys, "train", "--yes", "--bucket", BUCKET, "--data", DATA,
                        "--name", "run-f")
    assert code == 0, err
    (row,) = ledger_rows()
    assert row["status"] == "launched" and row["job_ids"] == [42]


def test_without_yes_and_no_terminal_nothing_launches(sky_offline, capsys, monkeypatch):
    fake = FakeSky(monkeypatch)
    code, _, err = vops(capsys, "train", "--bucket", BUCKET, "--data", DATA, "--name", "run-n")
    assert code == 2 and "--yes" in err
    assert fake.launches == [] and ledger_rows() == []


@pytest.mark.parametrize("args, words", [
    (["--gpus", "A100:8"], "--gpus does not apply to --local"),
    (["--dry-run"], "--dry-run does not apply to --local"),
    (["--on-demand"], "--spot/--on-demand does not apply"),
    (["--max-steps", "0"], "--max-steps must be at least 1"),
    (["--max-cost", "-1"], "--max-cost must be a positive"),
    (["--name", "Not Valid"], "invalid run name"),
    (["--recipe", "nope"], "unknown recipe"),
])
def test_local_flag_checks(capsys, tmp_path, args, words):
    base = ["train", "--local", "--recipe", "tiny", "--bucket", str(tmp_path / "b"),
            "--name", "loc"]
    code, _, err = vops(capsys, *base, *args)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1
    assert ledger_rows() == []


def test_local_needs_a_bucket(capsys):
    code, _, err = vops(capsys, "train", "--local", "--recipe", "tiny")
    assert code == 2 and "--bucket is required" in err


def test_cli_subprocess_dry_run_and_one_line_errors(tmp_path):
    """As a user runs it: a separate process, SkyPilot imported there, no fixture patches."""
    env = {**os.environ, "VOPS_HOME": str(tmp_path / "vops")}
    base = [sys.executable, "-m", "vicuna_ops", "train", "--dry-run", "--json", "--bucket",
            BUCKET, "--data", DATA, "--name", "sub"]
    good = subprocess.run(base, capture_output=True, text=True, env=env, timeout=120)
    assert good.returncode == 0, good.stderr
    plan = json.loads(good.stdout)
    assert plan["placement"]["infra"] == "aws/us-east-1/us-east-1d"
    bad = subprocess.run(base + ["--gpus", "FOO:8"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "error: unknown GPU 'FOO' on aws, gcp (hint: aws, gcp offer A100, A100-80GB, A10G, "
        "H100, L4, T4, V100)"]


def test_public_gpu_helpers_on_the_catalog(sky_offline):
    from vicuna_ops.errors import UserError
    from vicuna_ops.launch import check_gpus, parse_gpus, zone_candidates

    assert check_gpus(parse_gpus("a100:8"), ["aws", "gcp"]) == ("A100", 8)
    assert check_gpus(parse_gpus("L4"), ["gcp"]) == ("L4", 1)
    with pytest.raises(UserError, match="unknown GPU 'FOO' on aws"):
        check_gpus(parse_gpus("FOO:8"), ["aws"])
    with pytest.raises(UserError, match="A100:3 is not offered") as bad_count:
        check_gpus(parse_gpus("A100:3"), ["aws", "gcp"])
    assert bad_count.value.hint == "A100 comes in counts 1, 2, 4, 8"
    cands = zone_candidates(parse_gpus("l4:1"), ["aws", "gcp"], use_spot=True, cap=5)
    assert len(cands) == 5 and all(c.spot_price and c.ondemand_price for c in cands)
    assert [c.spot_price for c in cands] == sorted(c.spot_price for c in cands)
    assert all(c.ondemand_price > c.spot_price for c in cands)
