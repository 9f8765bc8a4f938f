"""The node-start record: sky/train.yaml's setup writes it, the trainer bills from it."""

from __future__ import annotations

import os
import subprocess
import time

from vicuna_ops import segments
from vicuna_ops.launch.task import load_template
from vicuna_ops.storage import open_store
from vicuna_ops.train.heartbeat import SegmentHeartbeat


def test_the_setup_step_records_the_time_the_trainer_starts_its_segment_from(tmp_path,
                                                                            monkeypatch):
    setup = load_template("train")["setup"]
    before = time.time()
    # a bare node: no vops, no python on PATH needed; only bash, date and mv
    subprocess.run(["bash", "-euo", "pipefail", "-c", setup], check=True,
                   env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]})
    written = float((tmp_path / ".vops" / "node-started").read_text())
    assert before - 1 <= written <= time.time()

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(segments.NODE_STARTED_ENV, raising=False)
    monkeypatch.setenv("SKYPILOT_TASK_ID", "sky-managed-1")  # on a SkyPilot node
    time.sleep(0.05)
    store = open_store(str(tmp_path / "bucket")).child("run-1")
    beat = SegmentHeartbeat(store, "run-1", attempt=1, first_step=0, interval_s=60)
    assert beat.record.start == written and beat.record.start_source == "setup"


def test_off_a_skypilot_node_the_home_file_is_not_read(tmp_path, monkeypatch):
    (tmp_path / ".vops").mkdir()
    (tmp_path / ".vops" / "node-started").write_text("1.0")
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in (segments.NODE_STARTED_ENV, "SKYPILOT_TASK_ID", "SKYPILOT_CLUSTER_INFO"):
        monkeypatch.delenv(name, raising=False)
    assert segments.node_started_path() is None and segments.node_start(10.0) is None
