"""Background checkpoint uploads: training hands a checkpoint over and goes on.

At most one upload is in flight. A checkpoint that arrives while one is uploading waits in a
single pending slot; if a newer one arrives before it starts, the newer one replaces it (the
older local copy is dropped) - uploading a stale checkpoint would only delay the fresh one.
``flush()`` waits for the pending and in-flight uploads, for preemption and the end of the run.

A job may carry a ``prepare`` step (writing an in-memory snapshot to disk), so even the disk
writes happen off the training thread. A failed upload is logged and counted; training goes
on and the next checkpoint tries again.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vicuna_ops import layout
from vicuna_ops.errors import VopsError
from vicuna_ops.train import checkpoint

Event = Callable[[dict[str, Any]], None]


@dataclass
class UploadJob:
    step: int
    local_dir: Path
    meta: dict[str, Any]
    prepare: Callable[[Path], None] | None = None  # writes the files into local_dir
    release: Callable[[], None] | None = None  # called once prepare's inputs are not needed
    submitted: float = field(default_factory=time.monotonic)


@dataclass
class UploadStats:
    published: list[int] = field(default_factory=list)
    superseded: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0


class CheckpointUploader:
    def __init__(self, store: Any, keep: int, *, on_event: Event = lambda _e: None,
                 log: Callable[[str], None] = lambda _m: None) -> None:
        self._store, self._keep = store, keep
        self._on_event, self._log = on_event, log
        self._cond = threading.Condition()
        self._pending: UploadJob | None = None
        self._busy = False
        self._closed = False
        # Step folders in the bucket as of our last listing (we are its only writer); None
        # until the first prune, so the first upload cleans up whatever a killed attempt left.
        self._folders: set[str] | None = None
        self.stats = UploadStats()
        self._thread = threading.Thread(target=self._run, name="vops-uploader", daemon=True)
        self._thread.start()

    def submit(self, job: UploadJob) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("uploader is closed")
            stale, self._pending = self._pending, job
            self._cond.notify_all()
        if stale is not None:
            self._discard(stale, f"superseded by step {job.step}")

    def withdraw_pending(self, newer_step: int) -> bool:
        """Drop the checkpoint still waiting for its turn, because step ``newer_step`` is
        about to replace it; its ``release`` runs now, so the newer capture can reuse its
        host buffers instead of allocating fresh ones. False when nothing was waiting."""
        with self._cond:
            stale, self._pending = self._pending, None
            self._cond.notify_all()
        if stale is None:
            return False
        self._discard(stale, f"superseded by step {newer_step}")
        return True

    def _discard(self, stale: UploadJob, reason: str) -> None:
        _release(stale)
        self.stats.superseded.append(stale.step)
        shutil.rmtree(stale.local_dir, ignore_errors=True)
        self._on_event({"event": "upload-skipped", "step": stale.step, "reason": reason})

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._pending is not None

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending or in flight; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._busy or self._pending is not None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> bool:
        done = self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=1.0)
        return done

    def _run(self) -> None:
        lower_priority()
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                job, self._pending, self._busy = self._pending, None, True
            try:
                self._upload(job)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _upload(self, job: UploadJob) -> None:
        self._on_event({"event": "upload-start", "step": job.step})
        try:
            if job.prepare is not None:
                job.local_dir.mkdir(parents=True, exist_ok=True)
                try:
                    job.prepare(job.local_dir)
                finally:
                    _release(job)
            folder = layout.checkpoint_dir(job.step)
            fresh = self._folders is not None and folder not in self._folders
            self._folders = None  # unknown until this upload's prune lists again
            result = checkpoint.publish_checkpoint(self._store, job.local_dir, job.step,
                                                   job.meta, fresh=fresh)
            self._folders = checkpoint.prune(self._store, self._keep, self._log)
        except Exception as exc:  # noqa: BLE001 - a dead uploader thread would hang flush()
            text = exc.message if isinstance(exc, VopsError) else f"{type(exc).__name__}: {exc}"
            self.stats.failures.append(f"step {job.step}: {text}")
            self._log(f"upload of step {job.step} failed: {text}; the next checkpoint retries")
            self._on_event({"event": "upload-failed", "step": job.step, "error": text})
            return
        finally:
            shutil.rmtree(job.local_dir, ignore_errors=True)
        self.stats.published.append(job.step)
        self.stats.bytes += result.bytes
        self.stats.seconds += result.seconds
        self._on_event({"event": "upload-done", "step": job.step, "bytes": result.bytes,
                        "seconds": round(result.seconds, 4), "files": result.files,
                        # handed over -> in the bucket: what a stop's checkpoint waits for
                        "job_s": round(time.monotonic() - job.submitted, 4)})


def lower_priority(niceness: int = 10) -> None:
    """Nice this thread (Linux threads have their own niceness; the threads it starts, such as
    boto3's transfer pool, inherit it): when CPUs are short, training goes first and the
    upload, which has a whole checkpoint interval to finish, waits."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
        pass


def _release(job: UploadJob) -> None:
    if job.release is not None:
        job.release()
        job.release = None
