"""``python -m vicuna_ops.train``: the command a training node runs (under torchrun on GPUs).

Flags are parsed before torch or transformers are imported, so ``--help`` and a bad flag are
instant; a vops error prints one line (a traceback only with VOPS_DEBUG=1) and exits with its
code. See ``vicuna_ops.train.args`` for the flags and exit codes.

Under torchrun the exit code is lost (any failing worker makes torchrun exit 1), so rank 0
also writes it to ``<workdir>/<run-id>/exit_code``; the node's task script exits with that::

    torchrun ... -m vicuna_ops.train ... && rc=0 || rc=$?
    f="${VOPS_TRAIN_WORKDIR:-/tmp/vops-train}/$VOPS_RUN_ID/exit_code"
    if [ "$rc" -ne 0 ] && [ -f "$f" ]; then rc=$(cat "$f"); fi
    exit "$rc"

Started by ``vops train --local`` (``VOPS_PARENT_PID`` set), the process dies with its parent
whatever kills the parent: Linux's parent-death signal (SIGKILL), and, where there is none,
EOF on the stdin pipe the parent holds open. The checkpoint protocol makes that kill safe.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from pathlib import Path

from vicuna_ops.errors import VopsError
from vicuna_ops.train.args import EXIT_FAILED, TrainArgs, World, parse_args


def main(argv: list[str] | None = None) -> int:
    die_with_parent()
    try:
        args = parse_args(argv)
    except VopsError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings, no surprises
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    code_file = exit_code_file(args)
    code_file.unlink(missing_ok=True)  # a stale one from an earlier attempt on this node
    code = _run(args)
    if World.from_env().is_main:
        code_file.parent.mkdir(parents=True, exist_ok=True)
        code_file.write_text(f"{code}\n")
    return code


_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Go down with the ``vops`` process that started us (a no-op on a training node)."""
    raw = os.environ.get("VOPS_PARENT_PID")
    if not raw or not raw.isdigit():
        return
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != int(raw):  # the parent died before the signal was armed
        os._exit(EXIT_FAILED)
    threading.Thread(target=_watch_stdin, name="vops-parent-watch", daemon=True).start()


def _watch_stdin() -> None:
    """The parent holds our stdin pipe open for as long as it lives: EOF means it is gone."""
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


def exit_code_file(args: TrainArgs) -> Path:
    """Where rank 0 leaves this attempt's exit code. torchrun turns any failing worker into
    its own exit 1, so a node script reads the real code (75: recover me) from here."""
    return Path(args.workdir) / args.run_id / "exit_code"


def _run(args: TrainArgs) -> int:
    try:
        from vicuna_ops.train.runner import quiet_libraries, run

        quiet_libraries()
        return run(args).exit_code
    except VopsError as exc:
        if os.environ.get("VOPS_DEBUG") == "1":
            traceback.print_exc()
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: one line, the traceback with VOPS_DEBUG=1
        if os.environ.get("VOPS_DEBUG") == "1":
            traceback.print_exc()
        print(f"error: unexpected {type(exc).__name__}: {exc} (hint: rerun with VOPS_DEBUG=1 "
              "and report it)", file=sys.stderr)
        return EXIT_FAILED


def _exit(code: int) -> None:
    # The reader of our progress may be gone (a killed CLI): don't turn a finished run into
    # "Exception ignored ... BrokenPipeError" and exit 120 while flushing at shutdown.
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(code)


if __name__ == "__main__":
    _exit(main())
