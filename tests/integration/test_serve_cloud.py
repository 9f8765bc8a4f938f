"""``vops serve --clouds ...`` on SkyPilot's real parser and optimizer (offline catalog).

The one fake is ``vicuna_ops.launch.sky_sdk`` (the API-server calls); the flags, zone
candidates, the spread over clouds and zones, the YAML written and read back by SkyPilot,
the optimizer's pick, the ledger and the secrets' handling are the real code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from fixtures.cli import run_vops
from vicuna_ops.launch import sky_sdk
from vicuna_ops.launch.sky_sdk import ManagedJob
from vicuna_ops.ledger import Ledger

pytestmark = pytest.mark.timeout(240)
MODEL = "s3://vops-test/runs/r1/final"
BUCKET = "s3://vops-test/serve"
TOKEN = "wt-sEcReT-0123456789"
API_KEY = "sk-sEcReT-key"


class FakeSky:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None) -> None:
        self.launches: list[dict] = []
        self.cancelled: list[int] = []
        self.fail_at = fail_at
        monkeypatch.setattr(sky_sdk, "launch_managed_job", self.launch_managed_job)
        monkeypatch.setattr(sky_sdk, "queue", self.queue)
        monkeypatch.setattr(sky_sdk, "cancel", self.cancel)

    def launch_managed_job(self, yaml_path, name, secrets=None):
        if self.fail_at is not None and len(self.launches) == self.fail_at:
            from vicuna_ops.errors import CloudError

            raise CloudError("SkyPilot could not launch: quota")
        self.launches.append({"yaml": Path(yaml_path), "name": name,
                              "secrets": dict(secrets or {})})
        return 100 + len(self.launches)

    def queue(self, job_ids=None, refresh=False):
        return [ManagedJob(job_id=j, name=None, status="RUNNING", recovery_count=1,
                           cloud="aws", region="us-east-1", zone="us-east-1a", resources=None,
                           submitted_at=0.0, end_at=None, job_duration=5.0)
                for j in job_ids or []]

    def cancel(self, job_ids):
        self.cancelled.extend(job_ids)


vops = run_vops


def serve_flags(*extra: str) -> list[str]:
    model = [] if "--model" in extra else ["--model", MODEL]  # --model repeats add models
    return ["serve", *model, "--clouds", "aws,gcp", "--gpus", "L4:1",
            "--bucket", BUCKET, "--name", "chat", "--json", *extra]


def test_dry_run_spreads_replicas_and_skypilot_accepts_every_task(sky_offline, capsys,
                                                                    monkeypatch):
    fake = FakeSky(monkeypatch)
    code, out, err = vops(capsys, *serve_flags("--replicas", "4", "--dry-run"))
    assert code == 0, err
    plan = json.loads(out)
    assert plan["launched"] is False and fake.launches == []
    controller, *workers = plan["placements"]
    assert not controller["use_spot"] and controller["cloud"] in ("aws", "gcp")
    assert len(workers) == 4 and all(w["use_spot"] for w in workers)
    # first choices: four different zones, both clouds
    assert len(set(plan["worker_first_choices"])) == 4
    assert {w["cloud"] for w in workers} == {"aws", "gcp"}
    assert [w["infra"] for w in workers] == plan["worker_first_choices"]
    # the YAMLs are plain SkyPilot task files, secrets by name only
    for path in [plan["controller_yaml"], *plan["worker_yamls"]]:
        task = yaml.safe_load(Path(path).read_text())
        assert task["secrets"]["VOPS_WORKER_TOKEN"] is None
        assert task["envs"]["VOPS_SERVE_NAME"] == "chat"
        assert task["envs"]["VOPS_BUCKET"] == BUCKET
    worker = yaml.safe_load(Path(plan["worker_yamls"][0]).read_text())
    assert worker["resources"]["job_recovery"]["recover_on_exit_codes"] == [75]
    assert worker["resources"]["ordered"][0]["infra"] == plan["worker_first_choices"][0]
    assert worker["envs"]["VOPS_MODEL"] == MODEL and worker["envs"]["VOPS_MODEL_NAME"] == "r1"
    assert worker["resources"]["ports"] == 8001
    with Ledger() as ledger:
        assert ledger.list_runs() == []  # a dry run records nothing


def test_on_demand_fallback_replicas(sky_offline, capsys, monkeypatch):
    FakeSky(monkeypatch)
    code, out, err = vops(capsys, *serve_flags("--replicas", "3", "--ondemand-fallback", "1",
                                               "--dry-run"))
    assert code == 0, err
    workers = json.loads(out)["placements"][1:]
    assert [w["use_spot"] for w in workers] == [False, True, True]
    code, out, err = vops(capsys, *serve_flags("--replicas", "2", "--on-demand", "--dry-run",
                                               "--name", "od"))
    assert code == 0, err
    assert not any(w["use_spot"] for w in json.loads(out)["placements"])


def test_launch_status_down(sky_offline, capsys, monkeypatch, tmp_path):
    fake = FakeSky(monkeypatch)
    monkeypatch.setenv("VOPS_WORKER_TOKEN", TOKEN)
    monkeypatch.setenv("MY_KEYS", API_KEY)
    code, out, err = vops(capsys, *serve_flags("--replicas", "2", "--yes",
                                               "--api-key-env", "MY_KEYS"))
    assert code == 0, err
    launched = json.loads(out)
    assert launched["jobs"] == {"chat-controller": 101, "chat-worker-0": 102,
                                "chat-worker-1": 103}
    assert fake.launches[0]["secrets"] == {"VOPS_WORKER_TOKEN": TOKEN, "VOPS_API_KEYS": API_KEY}
    assert all(l["secrets"] == {"VOPS_WORKER_TOKEN": TOKEN} for l in fake.launches[1:])
    # the secrets are nowhere on disk: not in the YAMLs, not in the ledger
    home = Path(os.environ["VOPS_HOME"])
    for path in home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert TOKEN.encode() not in data and API_KEY.encode() not in data, path
    with Ledger() as ledger:
        row = ledger.get_run("chat")
    assert (row["kind"], row["status"], row["job_ids"]) == ("serve", "launched", [101, 102, 103])

    code, out, err = vops(capsys, "serve", "status", "chat", "--json")
    assert code == 0, err
    status = json.loads(out)
    assert [j["task"] for j in status["jobs"]] == ["chat-controller", "chat-worker-0",
                                                   "chat-worker-1"]
    assert status["controller"] is None  # nothing published in the (unreachable) bucket
    code, out, err = vops(capsys, "serve", "status", "--json")
    assert [r["run_id"] for r in json.loads(out)] == ["chat"]

    # the same name cannot launch twice while it runs
    code, out, err = vops(capsys, *serve_flags("--yes"))
    assert code == 2 and "already exists" in err

    code, out, err = vops(capsys, "serve", "down", "chat", "--yes", "--json")
    assert code == 0, err
    assert fake.cancelled == [101, 102, 103]
    with Ledger() as ledger:
        assert ledger.get_run("chat")["status"] == "down"


def test_a_generated_token_is_kept_private(sky_offline, capsys, monkeypatch):
    fake = FakeSky(monkeypatch)
    monkeypatch.delenv("VOPS_WORKER_TOKEN", raising=False)
    code, out, err = vops(capsys, *serve_flags("--replicas", "1", "--yes"))
    assert code == 0, err
    token_file = Path(os.environ["VOPS_HOME"]) / "serve" / "chat" / "worker.token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    token = token_file.read_text().strip()
    assert len(token) >= 32
    assert {l["secrets"]["VOPS_WORKER_TOKEN"] for l in fake.launches} == {token}
    assert token not in out + err


def test_a_failed_launch_records_what_did_launch(sky_offline, capsys, monkeypatch):
    FakeSky(monkeypatch, fail_at=2)
    monkeypatch.setenv("VOPS_WORKER_TOKEN", TOKEN)
    code, out, err = vops(capsys, *serve_flags("--replicas", "2", "--yes"))
    assert code == 2
    assert "quota" in err and "vops serve down chat" in err
    with Ledger() as ledger:
        row = ledger.get_run("chat")
    assert row["status"] == "launch-failed" and row["job_ids"] == [101, 102]


@pytest.mark.parametrize("extra, needle", [
    (["--model", "/local/folder"], "not in a bucket"),
    (["--model", MODEL, "--model", "v2=" + MODEL], "a cloud deployment serves one --model"),
    (["--bucket", "/tmp/x"], "--bucket must be an s3:// or gs://"),
    (["--replicas", "0"], "--replicas must be between"),
    (["--ondemand-fallback", "5"], "--ondemand-fallback must be between"),
    (["--gpus", "L4:x"], "not a whole number"),
    (["--clouds", "azure"], "unsupported cloud"),
    (["--name", "Bad_Name"], "invalid run name"),
    (["--api-key-env", "NOT_SET_ANYWHERE"], "NOT_SET_ANYWHERE is empty"),
    (["--gpus", "Z999:1"], "unknown GPU"),
])
def test_bad_flags_are_one_line_errors_and_leave_nothing(sky_offline, capsys, monkeypatch,
                                                         extra, needle):
    FakeSky(monkeypatch)
    code, out, err = vops(capsys, *serve_flags("--dry-run", *extra))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (Path(os.environ["VOPS_HOME"]) / "runs" / "chat").exists()


def test_status_of_a_local_controller_by_endpoint(capsys, tmp_path, monkeypatch):
    from vicuna_ops.serve.local import LocalPlan, LocalServing
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serving = LocalServing(LocalPlan(model=None, backend="stub", port=port, workers=1,
                                     state_dir=tmp_path, start_timeout=60, grace=5))
    try:
        serving.start()
        monkeypatch.setenv("VOPS_WORKER_TOKEN", serving.token)
        code, out, err = vops(capsys, "serve", "status", "--endpoint", serving.url, "--json")
        assert code == 0, err
        view = json.loads(out)
        assert view["health"]["workers"]["live"] == 1
        assert view["workers"][0]["state"] == "live"
        code, out, err = vops(capsys, "serve", "status", "--endpoint", serving.url)
        assert code == 0 and "1 live" in out
    finally:
        serving.stop()
    code, out, err = vops(capsys, "serve", "status", "--endpoint", serving.url, "--json")
    assert "unreachable" in json.loads(out)["error"]
