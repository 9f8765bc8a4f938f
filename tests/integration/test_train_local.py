"""``run_local`` (what ``vops train --local`` calls): a real child training process, the
ledger row, the summary, a rerun of a finished run, and a failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from vicuna_ops.errors import VopsError
from vicuna_ops.ledger import Ledger
from vicuna_ops.recipe import load_recipe
from vicuna_ops.storage import open_store
from vicuna_ops.train.local import run_local

pytestmark = pytest.mark.slow


def quick_tiny():
    tiny = load_recipe("tiny")
    train = tiny.train.model_copy(update={"global_batch_size": 4, "per_device_batch_size": 4,
                                          "max_steps": 8, "checkpoint_every_steps": 4})
    return tiny.model_copy(update={"train": train})


def test_local_run_trains_records_and_reruns_as_finished(tmp_path, capsys):
    bucket = str(tmp_path / "bucket")
    summary = run_local(quick_tiny(), bucket, "demo", data=None, max_steps=None, max_cost=None,
                        json_output=False)
    assert summary["status"] == "succeeded" and summary["steps"] == 8
    assert summary["final"] == f"file://{tmp_path}/bucket/demo/final/"
    assert summary["checkpoints"] == [f"file://{tmp_path}/bucket/demo/step_00000004/"]
    assert summary["tokens_per_s"] > 0 and summary["loss"] > 0
    [segment] = summary["segments"]
    assert (segment["status"], segment["first_step"], segment["steps"]) == ("finished", 0, 8)
    assert summary["data"]["uri"] == "builtin:tiny-chat" and summary["data"]["used"] == 512
    final = open_store(bucket).child("demo", "final")
    names = {info.key for info in final.list()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "MANIFEST.json"} <= names
    out = capsys.readouterr().out
    assert "succeeded demo: 8 steps" in out and "final weights: file://" in out

    with Ledger() as ledger:
        row = ledger.get_run("demo")
        assert (row["kind"], row["status"], row["bucket"]) == ("train", "succeeded",
                                                               f"file://{tmp_path}/bucket")
        assert row["data"]["steps"] == 8 and row["data"]["recipe"] == "tiny"
        segments = ledger.segments("demo")
        assert len(segments) == 1 and segments[0]["data"]["status"] == "finished"

    again = run_local(quick_tiny(), bucket, "demo", data=None, max_steps=None, max_cost=None,
                      json_output=True)
    assert again["status"] == "succeeded" and again["steps"] == 8
    assert again["resumed_from"] is None and again["loss"] is None  # nothing was retrained
    with Ledger() as ledger:
        assert [e["kind"] for e in ledger.events("demo")] == ["train-resumed"]


def test_a_failed_training_raises_one_error_and_marks_the_ledger(tmp_path):
    with pytest.raises(VopsError) as caught:
        run_local(quick_tiny(), str(tmp_path / "bucket"), "broken",
                  data=str(tmp_path / "missing.jsonl"), max_steps=2, max_cost=None,
                  json_output=True)
    assert "training of 'broken' failed (exit 2)" in caught.value.message
    assert "no object at" in caught.value.message  # the child's own one-line error
    assert "train.log" in caught.value.hint
    with Ledger() as ledger:
        assert ledger.get_run("broken")["status"] == "failed"


def test_same_name_in_another_bucket_is_refused(tmp_path):
    with Ledger() as ledger:
        ledger.add_run("taken", "train", "succeeded", bucket="s3://elsewhere/taken")
    with pytest.raises(VopsError) as caught:
        run_local(quick_tiny(), str(tmp_path / "bucket"), "taken", data=None, max_steps=None,
                  max_cost=None, json_output=True)
    assert "already exists" in caught.value.message


def test_ctrl_c_checkpoints_and_exits_130(tmp_path):
    """As a terminal's Ctrl-C does: SIGINT to the whole foreground group (CLI and trainer)."""
    bucket = tmp_path / "bucket"
    command = [sys.executable, "-m", "vicuna_ops", "train", "--local", "--recipe", "tiny",
               "--bucket", str(bucket), "--name", "ctrlc", "--max-steps", "5000"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (bucket / "ctrlc" / "LATEST").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "stopped with a checkpoint" in out
    latest = (bucket / "ctrlc" / "LATEST").read_text().strip()
    assert (bucket / "ctrlc" / latest / "MANIFEST.json").is_file()
    assert not (bucket / "ctrlc" / "final").exists()
    with Ledger() as ledger:
        assert ledger.get_run("ctrlc")["status"] == "preempted"
