"""``python -m vicuna_ops.train``: the command a training node runs (under torchrun on GPUs).

Flags are parsed before torch or transformers are imported, so ``--help`` and a bad flag are
instant; a vops error prints one line (a traceback only with VOPS_DEBUG=1) and exits with its
code. See ``vicuna_ops.train.args`` for the flags and exit codes.
"""

from __future__ import annotations

import os
import sys
import traceback

from vicuna_ops.errors import VopsError
from vicuna_ops.train.args import EXIT_FAILED, parse_args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except VopsError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings, no surprises
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
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
