"""The local Slurm cluster the e2e tests run on, seen from Python: bring-up and teardown
(``harness/up.sh`` / ``harness/down.sh``), the environment SkyPilot needs, and the Slurm
side of a test (which allocation belongs to a cluster, the "preemption" by ``scancel``).

Everything here runs on this machine: Slurm's "node" is this machine, its jobs run as the
harness's remote user, and a folder under the harness's base is a bucket every node sees.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HARNESS = Path(__file__).resolve().parent / "harness"
DEFAULT_BASE = Path("/tmp/vops-e2e")
# What SkyPilot's Slurm support imports on the client side (`skypilot[slurm]`); without them
# the managed-jobs controller cannot recover a cancelled allocation.
SLURM_CLIENT_MODULES = {"grpc": "grpcio", "hostlist": "python-hostlist"}
# Variables of the test process that must not reach SkyPilot. The suite's isolation pins
# SkyPilot's runtime dir to its offline catalog copy and points cloud config files at paths
# that do not exist; an API server started with those (it keeps the environment of the client
# that starts it, and clients forward KUBECONFIG & co.) fails every launch on the missing
# AWS_CONFIG_FILE, although only Slurm is allowed.
_DROPPED_VARS = ("SKY_RUNTIME_DIR", "SKYPILOT_API_SERVER_ENDPOINT", "SKYPILOT_CONFIG",
                 "SKYPILOT_GLOBAL_CONFIG", "SKYPILOT_PROJECT_CONFIG", "AWS_CONFIG_FILE",
                 "AWS_SHARED_CREDENTIALS_FILE", "CLOUDSDK_CONFIG", "KUBECONFIG")


def skip_reason() -> str | None:
    """Why this machine cannot run the e2e suite, or None when it can."""
    if not sys.platform.startswith("linux"):
        return f"the local Slurm cluster needs Linux, not {sys.platform}"
    if os.geteuid() != 0:
        return ("the local Slurm cluster needs root (tests/e2e/harness/up.sh installs Slurm "
                "with apt, creates a user and starts slurmctld, slurmd and sshd)")
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "Slurm is not installed and there is no apt-get to install it with"
    return None


def missing_client_modules(python: str = sys.executable) -> list[str]:
    """The ``skypilot[slurm]`` client packages that ``python`` cannot import."""
    if python == sys.executable:
        return [pkg for mod, pkg in SLURM_CLIENT_MODULES.items()
                if importlib.util.find_spec(mod) is None]
    code = ("import importlib.util as u, sys; print(' '.join(m for m in sys.argv[1:] "
            "if u.find_spec(m) is None))")
    out = subprocess.run([python, "-c", code, *SLURM_CLIENT_MODULES], capture_output=True,
                         text=True, check=True).stdout.split()
    return [SLURM_CLIENT_MODULES[m] for m in out]


def read_env_sh(path: Path) -> tuple[dict[str, str], list[str]]:
    """``export K=V`` and ``unset A B`` lines of the harness's env.sh."""
    exports: dict[str, str] = {}
    unset: list[str] = []
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if len(words) >= 2 and words[0] == "export":
            for word in words[1:]:
                key, _, value = word.partition("=")
                exports[key] = value
        elif words and words[0] == "unset":
            unset.extend(words[1:])
    return exports, unset


@dataclass
class LocalSlurm:
    base: Path
    venv: Path  # the venv whose SkyPilot talks to the cluster (holds the netpatch)
    exports: dict[str, str] = field(default_factory=dict)
    unset: list[str] = field(default_factory=list)
    was_warm: bool = False  # the daemons were already up when this session started

    # -- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def up(cls, base: Path = DEFAULT_BASE, venv: Path | None = None, *,
           log: Path | None = None, timeout: float = 900) -> "LocalSlurm":
        """Run harness/up.sh (idempotent: a running cluster is reused as it is)."""
        venv = venv or Path(sys.prefix)
        warm = _daemons_alive(base)
        log = log or base.parent / f"{base.name}-up.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "VENV": str(venv)}
        with log.open("ab") as out:
            proc = subprocess.run(["bash", str(HARNESS / "up.sh"), str(base)], env=env,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"tests/e2e/harness/up.sh {base} failed (exit "
                               f"{proc.returncode}); log {log}:\n" + "\n".join(tail))
        exports, unset = read_env_sh(base / "env.sh")
        return cls(base=base, venv=venv, exports=exports, unset=unset, was_warm=warm)

    def down(self, *, log: Path | None = None, timeout: float = 300) -> int:
        """Run harness/down.sh: cancel jobs, stop the API server, the daemons, every helper."""
        log = log or self.base.parent / f"{self.base.name}-down.log"
        with log.open("ab") as out:
            proc = subprocess.run(["bash", str(HARNESS / "down.sh"), str(self.base),
                                   str(self.venv)], stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout)
        return proc.returncode

    # -- environment -------------------------------------------------------------------------

    @property
    def user(self) -> str:
        return self.exports["LOCAL_SLURM_USER"]

    @property
    def sky_home(self) -> Path:
        return Path(self.exports["HOME"])

    def env(self, **extra: str) -> dict[str, str]:
        """This process's environment as SkyPilot on the cluster needs it (env.sh applied)."""
        env = dict(os.environ)
        for name in (*_DROPPED_VARS, *self.unset):
            env.pop(name, None)
        env.update(self.exports)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra)
        return env

    def sky(self, *args: str, timeout: float = 300, check: bool = True
            ) -> subprocess.CompletedProcess:
        """The ``sky`` CLI of the cluster's venv, under the cluster's HOME."""
        return subprocess.run([str(self.venv / "bin" / "sky"), *args], env=self.env(),
                              capture_output=True, text=True, timeout=timeout, check=check)

    # -- files every node sees ----------------------------------------------------------------

    def shared_dir(self, *parts: str) -> Path:
        """A folder under the base that the remote user (every task) can write: the e2e
        tests' buckets. Fresh each call."""
        path = self.base.joinpath("shared", *parts)
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        user = pwd.getpwnam(self.user)
        for folder in [path, *path.parents]:
            if folder == self.base:
                break
            os.chown(folder, user.pw_uid, user.pw_gid)
        return path

    def run_as_user(self, argv: list[str], *, env: dict[str, str] | None = None,
                    timeout: float = 600, log: Path | None = None
                    ) -> subprocess.CompletedProcess:
        """Run ``argv`` as the remote user, the way a task would (its home, its files)."""
        user = pwd.getpwnam(self.user)
        base_env = {"HOME": user.pw_dir, "USER": self.user, "LOGNAME": self.user,
                    "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        base_env.update(env or {})
        cmd = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
               "--init-groups", "--", *argv]
        if log is None:
            return subprocess.run(cmd, env=base_env, cwd=user.pw_dir, capture_output=True,
                                  text=True, timeout=timeout)
        with log.open("w") as out:
            return subprocess.run(cmd, env=base_env, cwd=user.pw_dir, stdout=out,
                                  stderr=subprocess.STDOUT, text=True, timeout=timeout)

    # -- Slurm ---------------------------------------------------------------------------------

    def allocations(self) -> list[tuple[str, str, str]]:
        """(Slurm job id, job name, state) of the remote user's jobs."""
        out = subprocess.run(["squeue", "-h", "-u", self.user, "-o", "%i %j %T"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        return [tuple(line.split()[:3]) for line in out.splitlines()  # type: ignore[misc]
                if len(line.split()) >= 3]

    def allocation_of(self, cluster_name_on_cloud: str) -> str | None:
        """The Slurm job id holding a SkyPilot cluster (named after the cluster on the cloud)."""
        ids = [a[0] for a in self.allocations() if a[1] == cluster_name_on_cloud]
        return ids[0] if len(ids) == 1 else None

    def allocation_named(self, prefix: str) -> str | None:
        """The one Slurm job whose name starts with ``prefix``. A managed job's cluster on
        Slurm is named ``<job name>-<job id>-<user hash>``."""
        ids = [a[0] for a in self.allocations() if a[1].startswith(prefix)]
        return ids[0] if len(ids) == 1 else None

    def partition_of(self, slurm_job_id: str) -> str | None:
        """The partition (SkyPilot's zone) an allocation runs in, while it is queued."""
        out = subprocess.run(["squeue", "-h", "-j", slurm_job_id, "-o", "%P"],
                             capture_output=True, text=True, timeout=30).stdout.split()
        return out[0] if out else None

    def preempt(self, slurm_job_id: str) -> float:
        """``scancel`` an allocation: to SkyPilot, the node is gone. Returns when it was."""
        t = time.time()
        subprocess.run(["scancel", slurm_job_id], check=True, timeout=30)
        return t


def _daemons_alive(base: Path) -> bool:
    """The slurmctld that up.sh recorded for ``base`` still runs."""
    pids = base / "pids"
    if not pids.exists():
        return False
    for line in pids.read_text().splitlines():
        name, _, pid = line.partition(" ")
        if name == "slurmctld" and pid.strip().isdigit():
            try:
                exe = os.readlink(f"/proc/{pid.strip()}/exe")
            except OSError:
                return False
            return "slurmctld" in exe
    return False
