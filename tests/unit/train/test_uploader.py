"""The background uploader: one in flight, newest pending wins, failures don't stop it."""

from __future__ import annotations

import threading
from pathlib import Path

from vicuna_ops.errors import StorageError
from vicuna_ops.storage import open_store
from vicuna_ops.train import checkpoint
from vicuna_ops.train.uploader import CheckpointUploader, UploadJob


def job(tmp_path: Path, step: int, prepare=None) -> UploadJob:
    folder = tmp_path / f"ckpt-{step}"
    if prepare is None:
        folder.mkdir()
        (folder / "weights.bin").write_bytes(bytes([step]) * 64)
    return UploadJob(step, folder, {"step": step}, prepare=prepare)


def test_pending_checkpoint_is_superseded_while_one_uploads(tmp_path):
    store = open_store(str(tmp_path / "bucket"))
    release = threading.Event()
    started = threading.Event()

    def slow_prepare(folder: Path) -> None:
        started.set()
        release.wait(10)
        (folder / "weights.bin").write_bytes(b"one")

    events = []
    uploader = CheckpointUploader(store, keep=5, on_event=events.append)
    uploader.submit(job(tmp_path, 1, slow_prepare))
    assert started.wait(10)
    uploader.submit(job(tmp_path, 2))
    uploader.submit(job(tmp_path, 3))  # replaces 2 before it started
    assert not (tmp_path / "ckpt-2").exists()
    assert uploader.busy
    release.set()
    assert uploader.close(timeout=20)
    assert uploader.stats.published == [1, 3] and uploader.stats.superseded == [2]
    assert [c.step for c in checkpoint.list_candidates(store)] == [3, 1]
    assert store.get_bytes("LATEST") == b"step_00000003"
    assert not (tmp_path / "ckpt-1").exists() and not (tmp_path / "ckpt-3").exists()
    kinds = [e["event"] for e in events]
    assert kinds.count("upload-done") == 2 and "upload-skipped" in kinds


def test_withdrawn_pending_checkpoint_gives_its_buffers_back(tmp_path):
    store = open_store(str(tmp_path / "bucket"))
    release, started = threading.Event(), threading.Event()
    returned = []

    def slow_prepare(folder: Path) -> None:
        started.set()
        release.wait(10)
        (folder / "weights.bin").write_bytes(b"one")

    uploader = CheckpointUploader(store, keep=5)
    assert not uploader.withdraw_pending(1)  # nothing waiting
    uploader.submit(job(tmp_path, 1, slow_prepare))
    assert started.wait(10)
    waiting = job(tmp_path, 2)
    waiting.release = lambda: returned.append(2)
    uploader.submit(waiting)
    assert uploader.withdraw_pending(3)
    assert returned == [2] and not (tmp_path / "ckpt-2").exists()
    assert not uploader.withdraw_pending(3)  # the one in flight is never withdrawn
    uploader.submit(job(tmp_path, 3))
    release.set()
    assert uploader.close(timeout=20)
    assert uploader.stats.published == [1, 3] and uploader.stats.superseded == [2]
    assert store.get_bytes("LATEST") == b"step_00000003"


def test_a_failed_upload_is_reported_and_the_next_one_still_runs(tmp_path):
    store = open_store(str(tmp_path / "bucket"))
    real_put_bytes = store.put_bytes

    def flaky(key, data):
        if key.startswith("step_00000001/"):
            raise StorageError("bucket unreachable")
        real_put_bytes(key, data)

    store.put_bytes = flaky
    logs, events = [], []
    uploader = CheckpointUploader(store, keep=2, on_event=events.append, log=logs.append)
    uploader.submit(job(tmp_path, 1))
    assert uploader.flush(timeout=20)
    uploader.submit(job(tmp_path, 2))
    assert uploader.close(timeout=20)
    assert uploader.stats.published == [2]
    assert uploader.stats.failures == ["step 1: bucket unreachable"]
    assert any("upload of step 1 failed" in line for line in logs)
    assert {"event": "upload-failed", "step": 1, "error": "bucket unreachable"} in events
    assert [c.step for c in checkpoint.list_candidates(store)] == [2]


def test_a_known_fresh_folder_skips_the_cleanup_and_a_stale_one_is_cleaned(tmp_path):
    store = open_store(str(tmp_path / "bucket"))
    store.put_bytes("step_00000002/stale.bin", b"left by a killed attempt")
    deletes = []
    real_delete_prefix = store.delete_prefix
    store.delete_prefix = lambda prefix: (deletes.append(prefix), real_delete_prefix(prefix))[1]
    uploader = CheckpointUploader(store, keep=5)
    for step in (1, 2, 3):
        uploader.submit(job(tmp_path, step))
        assert uploader.flush(timeout=20)
    uploader.close(timeout=20)
    # step 1: nothing listed yet, so cleaned; step 2: listed and stale, so cleaned; 3: fresh
    assert deletes == ["step_00000001", "step_00000002"]
    assert not store.exists("step_00000002/stale.bin")


def test_a_bug_in_an_upload_does_not_kill_the_thread(tmp_path):
    store = open_store(str(tmp_path / "bucket"))

    def broken(folder: Path) -> None:
        raise RuntimeError("boom")

    uploader = CheckpointUploader(store, keep=2)
    uploader.submit(job(tmp_path, 1, broken))
    assert uploader.flush(timeout=20)
    uploader.submit(job(tmp_path, 2))
    assert uploader.close(timeout=20)
    assert uploader.stats.published == [2]
    assert uploader.stats.failures == ["step 1: RuntimeError: boom"]
