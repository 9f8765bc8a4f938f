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
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from vicuna_ops.errors import VopsError
from vicuna_ops.train.args import EXIT_FAILED, TrainArgs, World, parse_args


def main(argv: list[str] | None = None) -> int:
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
