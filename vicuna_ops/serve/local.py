"""``vops serve --local``: the controller and N workers per model as processes on this machine.

The supervisor starts the controller, waits for it, starts the workers on free ports, waits
until they have registered, and then watches them: a worker that dies is started again
(with backoff), and so is the controller (it reloads its registry, so routing resumes at
once). Ctrl-C or SIGTERM stops everything in order: workers drain first (in-flight answers
finish), then the controller; anything still alive after the grace period is killed.

Children run in their own sessions (a terminal Ctrl-C reaches only the supervisor, which
stops them in the right order) and hold a ``vicuna_ops.lifeline``: however the supervisor
dies (``kill -9`` included), they and their own children die within a second. Their output
goes to log files under the state folder; the worker token is generated fresh and passed in
the environment.

A mistake is not retried: the API port is checked before anything starts, a child that exits
2 while starting (a port it cannot bind, a bad flag) ends the command with its one line, and
a child that keeps dying the same way within seconds of every start is given up on.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from vicuna_ops.errors import ServeError, UserError
from vicuna_ops.lifeline import Lifeline

CRASH_WINDOW = 10.0  # an exit this soon after a start counts as failing at start-up
CRASH_LIMIT = 3  # that many in a row, with the same last log line: give up
_OUTSIDE_KILLS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class ServedModel:
    name: str  # what clients ask for
    model: str | None  # folder or bucket URI; None for the stub


_NAME_PREFIX = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)=(.*)")


def parse_models(values: list[str], *, model_name: str | None, backend: str
                 ) -> tuple[ServedModel, ...]:
    """``--model`` given once or more: ``PATH_OR_URI`` or ``NAME=PATH_OR_URI`` each.

    A name defaults to the run or folder name (``--model-name`` renames a single model).
    Local folders must hold an HF model (the stub reads none, so it takes any path); two
    models served under one name are a mistake."""
    from vicuna_ops.serve.modelfiles import default_model_name, is_bucket_uri

    if not values:
        return (ServedModel(model_name or "stub", None),) if backend == "stub" else ()
    if model_name and len(values) > 1:
        raise UserError("--model-name names a single --model",
                        hint="name each model instead: --model NAME=PATH")
    served: list[ServedModel] = []
    for value in values:
        named = _NAME_PREFIX.fullmatch(value)
        if named and not Path(value).expanduser().exists():
            name, spec = named.group(1), named.group(2)
        else:
            name, spec = model_name or default_model_name(value), value
        if not spec and backend != "stub":
            raise UserError(f"--model {value}: no model folder or bucket URI after '='")
        if spec and backend != "stub" and not is_bucket_uri(spec):
            folder = Path(spec).expanduser()
            if not (folder / "config.json").is_file():
                raise UserError(f"{spec} is not an HF model folder (no config.json)",
                                hint="pass the folder training wrote (…/final) or a bucket "
                                "URI")
            spec = str(folder.resolve())
        if any(other.name == name for other in served):
            raise UserError(f"two --model values are both served as {name!r}",
                            hint="name them apart: --model NAME=PATH")
        served.append(ServedModel(name, spec or None))
    return tuple(served)


@dataclass(frozen=True)
class LocalPlan:
    model: str | None
    backend: str = "transformers"
    port: int = 8000
    host: str = "127.0.0.1"
    workers: int = 1
    model_name: str | None = None
    max_concurrency: int = 4
    heartbeat_interval: float = 2.0
    api_key_env: str | None = None
    state_dir: Path = Path(".")
    stub_tokens: int = 32
    stub_rate: float = 100.0
    start_timeout: float = 300.0  # model loading on a slow disk can take minutes
    grace: float = 30.0
    controller_args: tuple[str, ...] = ()  # extra flags (tests, benchmarks)
    worker_args: tuple[str, ...] = ()
    # several models on one controller (``workers`` each); empty: ``model`` / ``model_name``
    models: tuple[ServedModel, ...] = ()

    def served(self) -> tuple[ServedModel, ...]:
        """Every model this deployment serves, with the name its workers register."""
        if self.models:
            return self.models
        if self.model_name:
            name = self.model_name
        elif self.backend == "stub" or not self.model:
            name = "stub"
        else:
            from vicuna_ops.serve.modelfiles import default_model_name

            name = default_model_name(self.model)
        return (ServedModel(name, self.model),)


@dataclass
class _Child:
    role: str  # "controller" or "worker-<i>"
    argv: list[str]
    log_path: Path
    process: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    log_file: object = field(default=None, repr=False)
    started_at: float = 0.0
    quick_failures: list[str] = field(default_factory=list)  # last lines, newest last


class LocalServing:
    """Start, watch and stop the processes of one local deployment."""

    def __init__(self, plan: LocalPlan, *, say: Callable[[str], None] = lambda _m: None) -> None:
        self.plan = plan
        self.say = say
        self.token = secrets.token_urlsafe(32)
        self.url = f"http://{plan.host}:{plan.port}"
        self.stopping = False
        self.lifeline = Lifeline()
        plan.state_dir.mkdir(parents=True, exist_ok=True)
        (plan.state_dir / "logs").mkdir(exist_ok=True)
        self.registry_path = plan.state_dir / "registry.db"
        # for `vops serve status --endpoint` on this machine; removed again by stop()
        self.token_path = plan.state_dir / "worker.token"
        self.token_path.unlink(missing_ok=True)
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.token)
        for stale in plan.state_dir.glob("registry.db*"):  # workers of an earlier run
            stale.unlink()
        self.controller = _Child("controller", self._controller_argv(),
                                 plan.state_dir / "logs" / "controller.log")
        self.workers = [
            _Child(f"worker-{i}", self._worker_argv(i, _free_port(plan.host), served),
                   plan.state_dir / "logs" / f"worker-{i}.log")
            for i, served in enumerate(m for m in plan.served() for _ in range(plan.workers))]

    # --- command lines ---------------------------------------------------------------------

    def _base(self) -> list[str]:
        # `vops serve controller|worker` without the CLI around it (a faster start)
        return [sys.executable, "-m", "vicuna_ops.serve.node"]

    def _controller_argv(self) -> list[str]:
        argv = [*self._base(), "controller", "--host", self.plan.host,
                "--port", str(self.plan.port), "--registry", str(self.registry_path),
                "--heartbeat-interval", str(self.plan.heartbeat_interval)]
        if self.plan.api_key_env:
            argv += ["--api-key-env", self.plan.api_key_env]
        for served in self.plan.served():  # known before their workers register
            argv += ["--model-name", served.name]
        return [*argv, *self.plan.controller_args]

    def served_model_name(self) -> str:
        """The (first) model's name, as its workers register it."""
        return self.plan.served()[0].name

    def _worker_argv(self, index: int, port: int, served: ServedModel) -> list[str]:
        plan = self.plan
        argv = [*self._base(), "worker", "--controller-url", self.url, "--host", plan.host,
                "--port", str(port), "--backend", plan.backend,
                "--max-concurrency", str(plan.max_concurrency),
                "--worker-id", f"local-{index}-{secrets.token_hex(3)}",
                "--model-name", served.name]
        if served.model:
            argv += ["--model", served.model]
        if plan.backend == "stub":
            argv += ["--stub-tokens", str(plan.stub_tokens), "--stub-rate", str(plan.stub_rate)]
        return [*argv, *plan.worker_args]

    def worker_url(self, child: _Child) -> str:
        return f"http://{self.plan.host}:{child.argv[child.argv.index('--port') + 1]}"

    # --- processes -------------------------------------------------------------------------

    def _start(self, child: _Child) -> None:
        env = {**os.environ, "VOPS_WORKER_TOKEN": self.token, "PYTHONUNBUFFERED": "1"}
        if child.log_file:
            child.log_file.close()
        child.log_file = open(child.log_path, "ab")
        child.started_at = time.monotonic()
        child.process = subprocess.Popen(
            child.argv, stdin=subprocess.DEVNULL, stdout=child.log_file,
            stderr=subprocess.STDOUT, **self.lifeline.popen_kwargs(env))

    def start(self) -> None:
        """Start everything and wait until every worker has registered."""
        check_port(self.plan.host, self.plan.port)
        self._start(self.controller)
        self._wait_until(lambda: self._health() is not None, "the controller to answer",
                         [self.controller])
        for worker in self.workers:
            self._start(worker)
        self.say(f"loading the model in {len(self.workers)} worker(s)...")
        self._wait_until(lambda: self._live_workers() >= len(self.workers),
                         f"{len(self.workers)} worker(s) to register", self.workers)

    def _wait_until(self, condition: Callable[[], bool], what: str, children: list[_Child]
                    ) -> None:
        deadline = time.monotonic() + self.plan.start_timeout
        while not condition():
            for child in children:
                code = child.process.poll()
                if code == UserError.exit_code:  # its own one-line verdict: pass it on
                    raise UserError(f"the {child.role}: {_last_line(child.log_path)}")
                if code is not None:
                    raise ServeError(f"the {child.role} exited with code {code} while "
                                     f"starting: {_last_line(child.log_path)}",
                                     hint=f"see {child.log_path}")
            if self.stopping:
                raise KeyboardInterrupt
            if time.monotonic() > deadline:
                raise ServeError(f"timed out waiting for {what}",
                                 hint=f"see the logs in {self.plan.state_dir / 'logs'}")
            time.sleep(0.1)

    def _health(self) -> dict | None:
        import httpx

        try:
            response = httpx.get(self.url + "/healthz", timeout=1.0)
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        ok = response.status_code == 200 and isinstance(body, dict) and "workers" in body
        return body if ok else None

    def _live_workers(self) -> int:
        health = self._health()
        return int(health["workers"]["live"]) if health else 0

    def watch(self) -> None:
        """Restart whatever dies, until ``stop`` is asked for (by a signal handler)."""
        while not self.stopping:
            now = time.monotonic()
            for child in [self.controller, *self.workers]:
                code = child.process.poll() if child.process else None
                if code is None or self.stopping:
                    continue
                if child.next_start == 0.0:
                    last = _last_line(child.log_path)
                    if -code not in _OUTSIDE_KILLS:  # a kill from outside is no failure
                        _count_quick_failure(child, now, last)
                    if len(child.quick_failures) >= CRASH_LIMIT:
                        # exit 2 is the child's verdict on its input (e.g. a port): ours too
                        raise (UserError if code == UserError.exit_code else ServeError)(
                            f"the {child.role} failed {CRASH_LIMIT} times in a row within "
                            f"{CRASH_WINDOW:.0f}s of starting, the same way each time: "
                            f"{last}; giving up", hint=f"see {child.log_path}")
                    backoff = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
                    child.next_start = now + backoff
                    self.say(f"{child.role} exited with code {code}; restarting in "
                             f"{backoff:.1f}s ({last})")
                elif now >= child.next_start:
                    child.restarts += 1
                    child.next_start = 0.0
                    self._start(child)
            time.sleep(0.2)

    def stop(self) -> None:
        """Workers drain first, then the controller; kill what outlives the grace period."""
        self.stopping = True
        for group in (self.workers, [self.controller]):
            alive = [c.process for c in group if c.process and c.process.poll() is None]
            for process in alive:
                _signal(process, signal.SIGTERM)
            deadline = time.monotonic() + self.plan.grace
            for process in alive:
                try:
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _signal(process, signal.SIGKILL)
                    process.wait()
        for child in [self.controller, *self.workers]:
            if child.log_file:
                child.log_file.close()
        self.lifeline.close()
        self.token_path.unlink(missing_ok=True)

    def add_worker(self, extra_args: tuple[str, ...] = (), served: ServedModel | None = None
                   ) -> _Child:
        """Start one more worker of ``served`` (default: the first model); it registers by
        itself."""
        index = len(self.workers)
        argv = [*self._worker_argv(index, _free_port(self.plan.host),
                                   served or self.plan.served()[0]), *extra_args]
        child = _Child(f"worker-{index}", argv,
                       self.plan.state_dir / "logs" / f"worker-{index}.log")
        self.workers.append(child)
        self._start(child)
        return child

    def restart(self, child: _Child) -> None:
        """Start ``child`` again after it exited (same port, same flags)."""
        if child.process and child.process.poll() is None:
            raise ServeError(f"the {child.role} is still running")
        self._start(child)

    def pids(self) -> dict[str, int]:
        return {c.role: c.process.pid for c in [self.controller, *self.workers] if c.process}


def run_local(plan: LocalPlan, *, say: Callable[[str], None],
              ready: Callable[[LocalServing], None]) -> None:
    """Run a local deployment in the foreground until SIGINT/SIGTERM."""
    serving = LocalServing(plan, say=say)

    def on_signal(signum: int, frame: object) -> None:
        serving.stopping = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            serving.start()
        except KeyboardInterrupt:
            return
        ready(serving)
        serving.watch()
        say("stopping: workers drain, then the controller")
    finally:
        serving.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def check_port(host: str, port: int) -> None:
    """A ``UserError`` now if ``port`` cannot be bound (the controller would fail later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            hint = ("another process listens there; pick another --port or stop it"
                    if exc.errno == errno.EADDRINUSE else "pick another --port")
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                            hint=hint) from exc


def _count_quick_failure(child: _Child, now: float, last_line: str) -> None:
    """Remember an exit soon after a start; a slow exit or a different error starts over.
    Digits do not count (timestamps, pids, ports differ between two equal failures)."""
    last_line = re.sub(r"\d+", "#", last_line)
    if now - child.started_at > CRASH_WINDOW or (
            child.quick_failures and child.quick_failures[-1] != last_line):
        child.quick_failures.clear()
    if now - child.started_at <= CRASH_WINDOW:
        child.quick_failures.append(last_line)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _signal(process: subprocess.Popen, sig: int) -> None:
    try:
        process.send_signal(sig)
    except ProcessLookupError:
        pass


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    # a child's own one-line error reads "error: ..."; ours will say "error:" once already
    return lines[-1][:300].removeprefix("error: ") if lines else "no output"
