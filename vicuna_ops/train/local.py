"""``vops train --local``: the node's training process, run here, with a progress bar.

The training runs in a child ``python -m vicuna_ops.train`` - the very command a GPU node
runs - rather than in the CLI's process: it is the same code path end to end (flags, env,
signals, exit codes), torch's process-wide state (threads, deterministic mode, signal
handlers) stays out of the CLI, and a crash or a kill of the training cannot take the CLI or
the ledger write down with it. The child reports JSON progress events on stdout; its log goes
to ``$VOPS_HOME/runs/<name>/train.log``.

Inputs are checked first (``preflight.py``): a wrong path or a run another trainer holds
costs one line and exit 2, and writes nothing.

Ctrl-C, SIGTERM and SIGHUP are a preemption notice: the child checkpoints at the next step
and exits; this command then exits 128 + the signal (130, 143, 129); running the same command
again resumes. A second one kills the child (the checkpoint protocol makes that safe too).
The handlers are installed explicitly, so a ``nohup ... &`` start (SIGINT inherited as
ignored) still stops cleanly. Whatever kills this process, the child goes with it (it arms
Linux's parent-death signal and watches its stdin pipe, see ``__main__``).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vicuna_ops import layout
from vicuna_ops.config import run_dir
from vicuna_ops.errors import UserError, VopsError
from vicuna_ops.recipe import Recipe, dump_recipe
from vicuna_ops.train.args import EXIT_OK, EXIT_PREEMPTED
from vicuna_ops.train.progress import parse_event

_LEDGER_STATUS = {"finished": "succeeded", "already-finished": "succeeded",
                  "budget-stopped": "budget-stopped", "preempted": "preempted"}


def child_command(recipe_path: Path, bucket: str, name: str, workdir: Path, *,
                  data: str | None, max_steps: int | None, max_cost: float | None) -> list[str]:
    command = [sys.executable, "-m", "vicuna_ops.train", "--recipe", str(recipe_path),
               "--run-id", name, "--bucket", bucket, "--workdir", str(workdir), "--progress"]
    for flag, value in (("--data", data), ("--max-steps", max_steps), ("--max-cost", max_cost)):
        if value is not None:
            command += [flag, str(value)]
    return command


def run_local(recipe: Recipe, bucket: str, name: str, *, data: str | None,
              max_steps: int | None, max_cost: float | None, json_output: bool) -> dict:
    """Train ``recipe`` here into ``bucket/name/``; returns the run's summary.

    Raises VopsError when the training fails (the ledger row says 'failed' first).
    """
    from vicuna_ops.ledger import Ledger
    from vicuna_ops.storage import open_store
    from vicuna_ops.train.preflight import check_inputs

    run_store = open_store(bucket).child(name)
    check_inputs(recipe, run_store, data)
    if max_cost is not None:  # said here, once; the trainer's own line goes to train.log
        from vicuna_ops.cli import output

        output.info(f"note: --max-cost {max_cost:g} has no effect: local runs are not priced "
                    "($0), so the budget never runs out", markup=False)
    with Ledger() as ledger:
        _check_ledger_row(ledger, name, open_store(bucket).uri)
    folder = run_dir(name)
    recipe_path = folder / "recipe.yaml"
    recipe_path.write_text(dump_recipe(recipe))
    log_path = folder / "train.log"
    with Ledger() as ledger:
        # The ledger keeps the bucket root, as launched runs do: readers append /<run-id>.
        _open_ledger_row(ledger, name, open_store(bucket).uri, recipe, data, max_steps, max_cost)
    command = child_command(recipe_path, bucket, name, folder / "work", data=data,
                            max_steps=max_steps, max_cost=max_cost)
    started = time.time()
    try:
        with open(log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n"
                      .encode())
            log.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "VOPS_HEARTBEAT_S":
                   os.environ.get("VOPS_HEARTBEAT_S", "5"), "VOPS_PARENT_PID": str(os.getpid())}
            with _stop_signals():
                # stdin: a pipe the child watches (EOF = this process is gone)
                child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=log, env=env, text=True, bufsize=1)
                try:
                    events, interrupted = _follow(child, json_output, recipe, max_steps,
                                                  on_event=_SegmentFolder(name, run_store))
                finally:
                    child.stdin.close()  # type: ignore[union-attr]
    except BaseException:
        with Ledger() as ledger:
            ledger.update_run(name, status="failed")
        raise
    code = child.returncode
    if interrupted is not None and code in (-signal.SIGKILL, -signal.SIGTERM):
        code = EXIT_PREEMPTED  # killed on the user's second Ctrl-C: resumable like a preemption
    summary = _summarize(events, name, run_store, code, time.time() - started, log_path)
    # the CLI exits 128 + the signal (130 for Ctrl-C), as an interrupted command does
    summary["interrupted"] = interrupted is not None
    summary["exit_code_cli"] = 128 + interrupted if interrupted is not None else None
    with Ledger() as ledger:
        _close_ledger_row(ledger, name, run_store, summary)
    if summary["status"] == "failed":
        raise VopsError(f"training of {name!r} failed (exit {code}): {_last_error(log_path)}",
                        hint=f"see {log_path}; rerun the same command to resume from the "
                             "last checkpoint")
    if not json_output:
        _print_summary(summary)
    return summary


def _check_ledger_row(ledger: Any, name: str, uri: str) -> None:
    if not ledger.has_run(name):
        return
    row = ledger.get_run(name)
    if row["kind"] != "train" or row["bucket"] != uri:
        raise UserError(f"run {name!r} already exists ({row['kind']} run in {row['bucket']})",
                        hint="pick another --name, or the same --bucket to resume it")


def _open_ledger_row(ledger: Any, name: str, uri: str, recipe: Recipe, data: str | None,
                     max_steps: int | None, max_cost: float | None) -> None:
    import socket

    # host + pid: `vops runs` tells a run whose process is gone from a running one
    facts = {"recipe": recipe.name, "local": True, "data": data or recipe.data.path,
             "max_steps": max_steps, "max_cost": max_cost, "host": socket.gethostname(),
             "pid": os.getpid()}
    if not ledger.has_run(name):
        ledger.add_run(name, "train", "running", bucket=uri, data=facts)
        return
    _check_ledger_row(ledger, name, uri)
    ledger.update_run(name, status="running", data=facts)  # a rerun resumes it
    ledger.add_event(name, "train-resumed", {"local": True})


class _Stop(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stop(signum: int, _frame: object) -> None:
    raise _Stop(signum)


@contextmanager
def _stop_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP interrupt the follow loop below, however this process was
    started (``nohup ... &`` leaves SIGINT ignored; a SIGHUP that nohup ignores stays so)."""
    wanted = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: _raise_stop}
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        wanted[signal.SIGHUP] = _raise_stop
    previous = {signum: signal.signal(signum, handler) for signum, handler in wanted.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _SegmentFolder:
    """Copies the run's segment records into the ledger as the run goes (at its start, then
    every ``every_s``), so a run whose ``vops`` is killed is still billed in `vops cost` up
    to its last heartbeat, with no `vops cost sync`."""

    def __init__(self, name: str, run_store: Any, every_s: float = 30.0) -> None:
        self._name, self._store, self._every = name, run_store, every_s
        self._last = 0.0

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] not in ("start", "step") or time.monotonic() - self._last < self._every:
            return
        self._last = time.monotonic()
        from vicuna_ops.ledger import Ledger

        with Ledger() as ledger:
            _fold_segments(ledger, self._name, self._store)


def _fold_segments(ledger: Any, name: str, run_store: Any) -> None:
    from vicuna_ops.segments import read_segments

    try:
        records, _problems = read_segments(run_store)
    except VopsError:
        return
    for record in records:
        end = record.heartbeat if record.status != "running" else None
        ledger.upsert_segment(name, record.segment_id, record.start, end,
                              record.model_dump(mode="json"))


def _follow(child: subprocess.Popen, quiet: bool, recipe: Recipe, max_steps: int | None,
            on_event: Any = None) -> tuple[list[dict[str, Any]], int | None]:
    """Read the child's events until it exits; Ctrl-C (SIGTERM, SIGHUP) asks it to stop, a
    second one kills it. Returns the events and the first stopping signal (None: none)."""
    events: list[dict[str, Any]] = []
    view = None if quiet else _ProgressView(max_steps or recipe.train.max_steps)
    interrupts = 0
    stopped_by: int | None = None
    lines: Iterable[str] = child.stdout  # type: ignore[assignment]
    try:
        if view is not None:
            view.start()
        while True:
            try:
                for line in lines:
                    event = parse_event(line)
                    if event is not None:
                        events.append(event)
                        if on_event is not None:
                            on_event(event)
                        if view is not None:
                            view.update(event)
                break
            except KeyboardInterrupt as exc:
                interrupts += 1
                if stopped_by is None:
                    stopped_by = exc.signum if isinstance(exc, _Stop) else signal.SIGINT
                child.send_signal(signal.SIGTERM if interrupts == 1 else signal.SIGKILL)
                if view is not None:
                    view.note("stopping: checkpointing at the next step (Ctrl-C again to kill)"
                              if interrupts == 1 else "killed")
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if view is not None:
            view.stop()
    return events, stopped_by


def _summarize(events: list[dict[str, Any]], name: str, run_store: Any, code: int,
               seconds: float, log_path: Path) -> dict[str, Any]:
    end = next((e for e in reversed(events) if e["event"] == "end"), None)
    if end is not None and code in (EXIT_OK, EXIT_PREEMPTED):
        status = _LEDGER_STATUS.get(end["status"], "failed")
    else:
        status = "preempted" if code == EXIT_PREEMPTED else "failed"
    steps_events = [e for e in events if e["event"] == "step"]
    data = next((e for e in events if e["event"] == "data"), None)
    resumed = next((e["step"] for e in events if e["event"] == "resume"), None)
    final = run_store.url_for(layout.FINAL) + "/" if status == "succeeded" else None
    return {
        "run_id": name,
        "status": status,
        "exit_code": code,
        "steps": end["steps"] if end else (steps_events[-1]["step"] if steps_events else 0),
        "resumed_from": resumed,
        "final": final,
        "checkpoints": _checkpoints(run_store),
        "loss": steps_events[-1]["loss"] if steps_events else None,
        "tokens_per_s": _tokens_per_s(steps_events),
        "data": {k: data[k] for k in ("uri", "used", "truncated", "skipped")} if data else None,
        "segments": _segments(run_store),
        "final_rebuilt": next((e["problem"] for e in events if e["event"] == "final-corrupt"),
                              None),
        "bucket": run_store.uri,
        "seconds": round(seconds, 1),
        "log": str(log_path),
    }


def _tokens_per_s(steps: list[dict[str, Any]]) -> float | None:
    """Average over the run (the first step's time includes warm-up, so start after it)."""
    if len(steps) < 2:
        return None
    first, last = steps[0], steps[-1]
    elapsed = last["ts"] - first["ts"]
    return round((last["tokens"] - first["tokens"]) / elapsed, 1) if elapsed > 0 else None


def _checkpoints(run_store: Any) -> list[str]:
    """The complete checkpoints in the bucket now (newest first)."""
    from vicuna_ops.train.checkpoint import list_candidates

    try:
        return [run_store.url_for(c.folder) + "/" for c in list_candidates(run_store)
                if c.has_manifest]
    except VopsError:
        return []


def _segments(run_store: Any) -> list[dict[str, Any]]:
    """One line per attempt, from the bucket's segment records."""
    from vicuna_ops.segments import read_segments

    try:
        records = read_segments(run_store)[0]
    except VopsError:
        return []
    return [{"segment_id": r.segment_id, "attempt": r.attempt, "status": r.status,
             "first_step": r.first_step, "steps": r.steps, "tokens": r.tokens,
             "seconds": round(r.heartbeat - r.start, 1)} for r in records if r.kind == "train"]


def _close_ledger_row(ledger: Any, name: str, run_store: Any, summary: dict[str, Any]) -> None:
    ledger.update_run(name, status=summary["status"], data={
        "steps": summary["steps"], "final": summary["final"], "exit_code": summary["exit_code"],
        "tokens_per_s": summary["tokens_per_s"]})
    _fold_segments(ledger, name, run_store)  # so `vops cost` sees the local run's attempts


def serve_command(final_uri: str) -> str:
    """The command that serves a finished run (a local bucket's folder as a plain path)."""
    model = final_uri.rstrip("/")
    if model.startswith("file://"):
        model = model[len("file://"):]
    return f"vops serve --local --model {shlex.quote(model)} --port 8000"


def _last_error(log_path: Path) -> str:
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        return "no log"
    for line in reversed(lines):
        if line.startswith("error:"):
            return line[len("error:"):].strip()
    return next((line for line in reversed(lines) if line), "no output")


def _print_summary(summary: dict[str, Any]) -> None:
    from vicuna_ops.cli import output

    status = summary["status"]
    colour = {"succeeded": "green", "preempted": "yellow", "budget-stopped": "yellow"}.get(
        status, "red")
    speed = f", {summary['tokens_per_s']:,.0f} tokens/s" if summary["tokens_per_s"] else ""
    output.stdout.print(f"[{colour}]{status}[/] {output.escape(summary['run_id'])}: "
                        f"{summary['steps']} steps in {summary['seconds']:.0f}s{speed}",
                        highlight=False)
    if summary["final"]:
        output.stdout.print(f"final weights: {output.escape(summary['final'])}",
                            highlight=False)
        output.stdout.print(f"next: {output.escape(serve_command(summary['final']))}",
                            highlight=False)
    elif status == "preempted":
        output.stdout.print("stopped with a checkpoint; run the same command again to resume",
                            highlight=False)
    output.stdout.print(f"log: {output.escape(summary['log'])}", highlight=False)


class _ProgressView:
    """A Rich progress bar: step, loss, tokens/s, uploads; messages printed above it."""

    def __init__(self, total: int | None) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from vicuna_ops.cli import output

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("step {task.completed:.0f}/{task.total:.0f}"),
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} tok/s"),
            TextColumn("uploads {task.fields[uploads]}"), TimeElapsedColumn(),
            console=output.stderr, transient=False)
        self._task = self._progress.add_task("train", total=total or 1, loss="-", speed="-",
                                             uploads="0")
        self._uploads = 0
        self._uploading: int | None = None

    def start(self) -> None:
        self._progress.start()

    def stop(self) -> None:
        self._progress.stop()

    def note(self, message: str) -> None:
        from vicuna_ops.cli.output import escape

        self._progress.console.print(escape(message), highlight=False)

    def update(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "start" and event.get("max_steps"):
            self._progress.update(self._task, total=event["max_steps"])
        elif kind == "resume":
            self._progress.update(self._task, completed=event["step"])
            self.note(f"resuming from the checkpoint of step {event['step']}")
        elif kind == "data":
            skipped = sum(event["skipped"].values())
            self.note(f"data {event['uri']}: {event['used']} conversations, "
                      f"{event['truncated']} truncated, {skipped} skipped")
        elif kind == "step":
            self._progress.update(self._task, completed=event["step"],
                                  total=event.get("max_steps") or None,
                                  loss=f"{event['loss']:.3f}",
                                  speed=f"{event['tokens_per_s']:,.0f}")
        elif kind in ("upload-start", "upload-done", "upload-failed"):
            if kind == "upload-done":
                self._uploads += 1
            self._uploading = event["step"] if kind == "upload-start" else None
            shown = f"{self._uploads}" + (f" (step {self._uploading}...)"
                                          if self._uploading is not None else "")
            self._progress.update(self._task, uploads=shown)
            if kind == "upload-failed":
                self.note(f"upload of step {event['step']} failed: {event['error']}")
        elif kind == "stop":
            self.note(f"stop requested ({event['source']}): checkpointing step {event['step']}")
        elif kind == "final-corrupt":
            self.note(f"{event['final']} is corrupt ({event['problem']}): rebuilding it from "
                      "the newest verified checkpoint")
        elif kind == "end" and event.get("status") == "already-finished":
            self.note("this run has already finished; nothing to train")
