"""The thin SkyPilot SDK shell: what it hands ``sky.jobs.*`` and how it reads the answers.

Elsewhere sky_sdk itself is the fake; here SkyPilot's client calls (``sky.jobs.launch``,
``sky.jobs.queue_v2``, ``sky.jobs.cancel``, ``sky.get``) are replaced at the request
boundary, so the task that would be sent is a real ``sky.Task`` built by sky_sdk.
"""

from __future__ import annotations

import pytest

from vicuna_ops.errors import CloudError
from vicuna_ops.launch import sky_sdk
from vicuna_ops.launch.task import write_task_yaml

TASK = {
    "name": "run-s",
    "resources": {"accelerators": "A100:8", "use_spot": True,
                  "ordered": [{"infra": "aws/us-east-1/us-east-1d"}]},
    "envs": {"VOPS_RUN_ID": "run-s"},
    "secrets": {"HF_TOKEN": None},
    "run": "echo hi",
}


class Requests:
    """Stands in for the API server: request ids in, results out."""

    def __init__(self, monkeypatch, sky, result=None, error=None):
        self.sent: list[tuple[str, object, dict]] = []
        self.result, self.error = result, error

        def record(kind):
            def call(*args, **kwargs):
                self.sent.append((kind, args[0] if args else None, kwargs))
                return f"request-{kind}"
            return call

        monkeypatch.setattr(sky.jobs, "launch", record("launch"))
        monkeypatch.setattr(sky.jobs, "queue_v2", record("queue"))
        monkeypatch.setattr(sky.jobs, "cancel", record("cancel"))
        monkeypatch.setattr(sky, "get", self.get)

    def get(self, request_id):
        if self.error:
            raise self.error
        return self.result


def test_launch_fills_secrets_in_memory_only(sky_offline, monkeypatch, tmp_path):
    path = write_task_yaml(tmp_path, "task", TASK)
    before = path.read_text()
    api = Requests(monkeypatch, sky_offline.sky, result=([17], None))
    job_id = sky_sdk.launch_managed_job(path, "run-s", secrets={"HF_TOKEN": "hf_value"})
    assert job_id == 17
    ((kind, task, kwargs),) = api.sent
    assert kind == "launch" and kwargs == {"name": "run-s"}
    assert isinstance(task, sky_offline.sky.Task)
    assert {k: v.get_secret_value() for k, v in task.secrets.items()} == {"HF_TOKEN": "hf_value"}
    assert task.envs["VOPS_RUN_ID"] == "run-s"
    assert path.read_text() == before  # the value never reaches the file


def test_launch_errors_become_one_cloud_error(sky_offline, monkeypatch, tmp_path):
    path = write_task_yaml(tmp_path, "task", TASK)
    Requests(monkeypatch, sky_offline.sky, error=RuntimeError("API server refused\nmore"))
    with pytest.raises(CloudError, match="SkyPilot could not launch: API server refused$"):
        sky_sdk.launch_managed_job(path, "run-s", secrets={"HF_TOKEN": "x"})
    Requests(monkeypatch, sky_offline.sky, result=(None, None))
    with pytest.raises(CloudError, match="launched no managed job"):
        sky_sdk.launch_managed_job(path, "run-s", secrets={"HF_TOKEN": "x"})


def test_queue_reads_skypilot_records(sky_offline, monkeypatch):
    from sky.jobs.state import ManagedJobStatus
    from sky.schemas.api.responses import ManagedJobRecord

    record = ManagedJobRecord(job_id=5, job_name="run-s", status=ManagedJobStatus.RECOVERING,
                              recovery_count=3, cloud="GCP", region="us-central1",
                              zone="us-central1-a", cluster_resources="1x GCP(A100:8)",
                              submitted_at=1.0, end_at=0.0, job_duration=60.0,
                              last_recovered_at=50.0)
    api = Requests(monkeypatch, sky_offline.sky, result=([record], 1, {}, 1))
    (got,) = sky_sdk.queue([5])
    assert got == sky_sdk.ManagedJob(job_id=5, name="run-s", status="RECOVERING",
                                     recovery_count=3, cloud="GCP", region="us-central1",
                                     zone="us-central1-a", resources="1x GCP(A100:8)",
                                     submitted_at=1.0, end_at=None, job_duration=60.0,
                                     last_recovered_at=50.0)
    ((kind, _, kwargs),) = api.sent
    assert kind == "queue" and kwargs["job_ids"] == [5] and "status" in kwargs["fields"]
    assert "last_recovered_at" in kwargs["fields"]  # billing widens attempts with it
    plain = {"job_id": 6, "task_name": "t", "status": "SUCCEEDED", "recovery_count": None}
    Requests(monkeypatch, sky_offline.sky, result=[plain])
    (got,) = sky_sdk.queue()
    assert (got.job_id, got.name, got.status, got.recovery_count) == (6, "t", "SUCCEEDED", 0)


def test_cancel_sends_the_job_ids(sky_offline, monkeypatch):
    api = Requests(monkeypatch, sky_offline.sky, result=None)
    sky_sdk.cancel([3, 4])
    assert api.sent == [("cancel", None, {"job_ids": [3, 4]})]


def test_catalog_failures_become_one_line_cloud_errors():
    from vicuna_ops.launch.sky_calls import catalog_calls

    with pytest.raises(CloudError, match="^cannot read SkyPilot's catalog for aws, gcp: "
                                         "Failed to resolve host$"):
        with catalog_calls(["aws", "gcp"]):
            raise ConnectionError("Failed to resolve host\nsecond line")
    import logging

    assert logging.getLogger("sky").level != logging.CRITICAL  # restored
