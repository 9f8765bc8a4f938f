"""Driving ``vops`` and SkyPilot against the local Slurm cluster from a test: run the CLI in a
subprocess under the cluster's environment, read SkyPilot's managed-jobs queue, wait for a
job's status, keep the timings the suite reports.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from e2e_cluster import LocalSlurm

# SkyPilot's managed-job statuses after which nothing changes any more.
TERMINAL = {"SUCCEEDED", "FAILED", "FAILED_SETUP", "FAILED_PRECHECKS", "FAILED_NO_RESOURCE",
            "FAILED_CONTROLLER", "CANCELLED"}

_QUEUE_SCRIPT = r"""
import json, sys
import sky
from sky import jobs
fields = ['job_id', 'job_name', 'status', 'recovery_count', 'cluster_name_on_cloud',
          'failure_reason']
ids = [int(i) for i in sys.argv[1:]] or None
recs = sky.get(jobs.queue_v2(refresh=False, skip_finished=False, job_ids=ids, fields=fields))
recs = recs[0] if isinstance(recs, tuple) else recs
out = []
for r in recs:
    get = r.get if isinstance(r, dict) else (lambda k, r=r: getattr(r, k, None))
    st = get('status')
    out.append({'job_id': get('job_id'), 'job_name': get('job_name'),
                'status': getattr(st, 'value', None) or (str(st) if st else None),
                'recovery_count': get('recovery_count'),
                'cluster_name_on_cloud': get('cluster_name_on_cloud'),
                'failure_reason': get('failure_reason')})
print(json.dumps(out))
"""


@dataclass
class Vops:
    """``vops`` under the cluster's environment, with a VOPS_HOME of the test's own."""

    cluster: LocalSlurm
    vops_home: Path
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return self.cluster.env(VOPS_HOME=str(self.vops_home), **self.extra_env)

    def run(self, *args: str, timeout: float = 600, check: bool = True
            ) -> subprocess.CompletedProcess:
        # umask 000: the folders the launcher creates in a shared-folder bucket (the run's
        # prefix) must be writable by the Slurm user the nodes run as.
        proc = subprocess.run([str(self.cluster.venv / "bin" / "vops"), *args], env=self.env(),
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, preexec_fn=lambda: os.umask(0))
        self._log(args, proc)
        if check and proc.returncode != 0:
            raise AssertionError(f"vops {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stderr[-3000:]}\n{proc.stdout[-2000:]}")
        return proc

    def json(self, *args: str, timeout: float = 600) -> Any:
        return json.loads(self.run(*args, "--json", timeout=timeout).stdout)

    def _log(self, args: Iterable[str], proc: subprocess.CompletedProcess) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / "vops-commands.log").open("a") as out:
            out.write(f"$ vops {' '.join(args)}  -> {proc.returncode}\n{proc.stdout}\n"
                      f"{proc.stderr}\n")


def managed_jobs(cluster: LocalSlurm, job_ids: Iterable[int] = ()) -> list[dict[str, Any]]:
    """SkyPilot's managed-jobs queue (with each job's cluster name on Slurm)."""
    proc = subprocess.run([str(cluster.venv / "bin" / "python"), "-c", _QUEUE_SCRIPT,
                           *map(str, job_ids)], env=cluster.env(), capture_output=True,
                          text=True, timeout=120)
    if proc.returncode != 0:
        raise AssertionError(f"reading the managed-jobs queue failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def managed_job(cluster: LocalSlurm, job_id: int) -> dict[str, Any] | None:
    found = [j for j in managed_jobs(cluster, [job_id]) if j["job_id"] == job_id]
    return found[0] if found else None


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 2.0,
             on_poll: Callable[[Any], None] | None = None) -> Any:
    """Poll ``probe`` until it returns something truthy; AssertionError after ``timeout``."""
    end = time.time() + timeout
    last = None
    while True:
        last = probe()
        if on_poll is not None:
            on_poll(last)
        if last:
            return last
        if time.time() > end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} "
                                 f"(last seen: {last!r})")
        time.sleep(interval)


@dataclass
class JobWatch:
    """Waits for a managed job's statuses, remembering when each was first seen."""

    cluster: LocalSlurm
    job_id: int
    seen: list[tuple[float, str, int]] = field(default_factory=list)  # (time, status, recov.)

    def poll(self) -> dict[str, Any] | None:
        job = managed_job(self.cluster, self.job_id)
        if job and job["status"] and (not self.seen or self.seen[-1][1] != job["status"]
                                      or self.seen[-1][2] != job["recovery_count"]):
            self.seen.append((time.time(), job["status"], job["recovery_count"] or 0))
        return job

    def until(self, wanted: set[str], timeout: float, *, forbidden: set[str] = TERMINAL,
              interval: float = 2.0) -> dict[str, Any]:
        """Wait for one of ``wanted``; fail at once on a status in ``forbidden``."""

        def probe() -> dict[str, Any] | None:
            job = self.poll()
            if job is None:
                return None
            if job["status"] in wanted:
                return job
            if job["status"] in forbidden - wanted:
                raise AssertionError(f"managed job {self.job_id} is {job['status']} while "
                                     f"waiting for {sorted(wanted)}: {job['failure_reason']}; "
                                     f"statuses seen: {self.history()}")
            return None

        return wait_for(f"job {self.job_id} to be {sorted(wanted)}", probe, timeout, interval)

    @contextmanager
    def polling_in_background(self, interval: float = 1.0) -> Iterator[None]:
        """Record statuses from a thread while the caller watches something else."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                try:
                    self.poll()
                except Exception:  # noqa: BLE001 - a failed read is retried; until() reports
                    pass
                stop.wait(interval)

        thread = threading.Thread(target=loop, name="e2e-job-watch", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=150)

    def first_seen(self, status: str, after: float = 0.0) -> float | None:
        return next((t for t, s, _ in self.seen if s == status and t >= after), None)

    def history(self) -> str:
        t0 = self.seen[0][0] if self.seen else 0.0
        return ", ".join(f"{s}(r{r})@{t - t0:.0f}s" for t, s, r in self.seen)


@dataclass
class Timings:
    """Named durations of the e2e steps, reported at the end of the session."""

    values: dict[str, float] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.values[name] = round(seconds, 1)

    def note(self, name: str, value: Any) -> None:
        self.notes[name] = value

    def lines(self) -> list[str]:
        out = [f"{name:<44} {secs:8.1f} s" for name, secs in self.values.items()]
        out += [f"{name:<44} {value}" for name, value in self.notes.items()]
        return out
