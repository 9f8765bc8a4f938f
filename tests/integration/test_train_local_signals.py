"""``vops train --local`` as a user runs it, in real processes: one trainer per run, no
orphan after ``kill -9``, SIGTERM and Ctrl-C (even inherited as ignored) stop it with a
checkpoint and one message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vicuna_ops.ledger import Ledger

pytestmark = pytest.mark.slow


def vops_train(bucket: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vicuna_ops", "train", "--local", "--recipe", "tiny",
            "--bucket", str(bucket), "--name", name, "--max-steps", "5000", *extra]


def start(command: list[str], sigint: signal.Handlers = signal.SIG_DFL) -> subprocess.Popen:
    """The CLI in its own session (as a terminal job is), with SIGINT's disposition set
    explicitly: the test must not depend on how pytest itself was started."""
    def dispositions() -> None:
        signal.signal(signal.SIGINT, sigint)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=dispositions)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)


def alive(pid: int) -> bool:
    """A zombie (exited, not yet reaped by whoever adopted it) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_one_trainer_per_run_no_orphan_and_sigterm_stops_cleanly(tmp_path):
    bucket = tmp_path / "bucket"
    run = bucket / "demo"
    first = start(vops_train(bucket, "demo"))
    try:
        wait_for(run / "LATEST", first)
        holder = json.loads((run / "LEASE").read_text())
        trainer_pid = holder["pid"]
        assert alive(trainer_pid) and trainer_pid != first.pid

        # a second `vops train` on the live run: exit 2, one line naming the holder
        second = subprocess.run(vops_train(bucket, "demo"), capture_output=True, text=True,
                                timeout=120)
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "is being trained by host" in lines[0]
        assert f"pid {trainer_pid} (attempt 1, since" in lines[0]
        with Ledger() as ledger:
            assert ledger.get_run("demo")["status"] == "running"  # untouched by the refusal

        # the node's own entry point refuses too (its lease, not the CLI's check)
        node = subprocess.run(
            [sys.executable, "-m", "vicuna_ops.train", "--recipe", "tiny", "--run-id", "demo",
             "--bucket", str(bucket), "--workdir", str(tmp_path / "work")],
            capture_output=True, text=True, timeout=120)
        assert node.returncode == 2, node.stderr
        assert "is being trained by host" in node.stderr.strip().splitlines()[-1]

        # kill -9 of `vops`: its trainer goes with it within 5 s
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        deadline = time.monotonic() + 5
        while alive(trainer_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(trainer_pid), "the trainer outlived `vops train --local`"
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)

    # the same command again takes the dead trainer's lease at once, and SIGTERM to `vops`
    # alone stops it with a checkpoint: exit 143, one message
    latest_before = (run / "LATEST").read_text()
    again = start(vops_train(bucket, "demo"))
    deadline = time.monotonic() + 120
    while (run / "LATEST").read_text() == latest_before:
        assert again.poll() is None and time.monotonic() < deadline, again.communicate()
        time.sleep(0.2)
    os.kill(again.pid, signal.SIGTERM)
    out, err = finish(again)
    assert again.returncode == 143, err
    assert "stopped with a checkpoint; run the same command again to resume" in out
    assert "error" not in err and "Traceback" not in err
    log = (Path(os.environ["VOPS_HOME"]) / "runs" / "demo" / "train.log").read_text()
    assert "took over the run lease" in log and "is gone" in log
    assert not (run / "LEASE").exists()  # released on the clean stop
    with Ledger() as ledger:
        assert ledger.get_run("demo")["status"] == "preempted"


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN], ids=["default", "ignored"])
def test_ctrl_c_checkpoints_and_exits_130(tmp_path, sigint):
    """As a terminal's Ctrl-C does: SIGINT to the whole foreground group (CLI and trainer);
    'ignored' is a start from `nohup ... &`, which leaves SIGINT ignored in the CLI."""
    bucket = tmp_path / "bucket"
    proc = start(vops_train(bucket, "ctrlc"), sigint=sigint)
    try:
        wait_for(bucket / "ctrlc" / "LATEST", proc)
        os.killpg(proc.pid, signal.SIGINT)
    finally:
        out, err = finish(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "error: interrupted" not in err
    assert out.count("stopped with a checkpoint; run the same command again to resume") == 1
    latest = (bucket / "ctrlc" / "LATEST").read_text().strip()
    assert (bucket / "ctrlc" / latest / "MANIFEST.json").is_file()
    assert not (bucket / "ctrlc" / "final").exists()
    with Ledger() as ledger:
        assert ledger.get_run("ctrlc")["status"] == "preempted"
