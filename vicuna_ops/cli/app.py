"""The root ``vops`` app: registers every command group and turns errors into one line.

Nothing heavy is imported here or in the group modules at import time: ``vops --help`` must
stay under 0.3 s, and SkyPilot alone takes ~1.5 s to import.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import typer

try:  # typer >= 0.2x bundles its own click; its exceptions are the ones raised
    from typer._click import exceptions as click
except ImportError:  # pragma: no cover - older typer on the real click
    from click import exceptions as click

from vicuna_ops import __version__
from vicuna_ops.errors import UserError, VopsError

# Each module has `register(app)`, which adds its commands or sub-app.
COMMAND_GROUPS = ("runs", "storage", "cost", "train", "jobs", "serve", "chat", "data",
                  "eval", "arena", "delta", "quantize")

app = typer.Typer(
    name="vops",
    help="vicuna-ops: fine-tune and serve Vicuna-style chat models on spot GPUs, around SkyPilot.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vops {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks (or VOPS_DEBUG=1)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    if debug:
        os.environ["VOPS_DEBUG"] = "1"


for _name in COMMAND_GROUPS:
    importlib.import_module(f"vicuna_ops.cli.{_name}").register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point. Exit codes: 0 ok, 2 user error, 1 anything else."""
    from vicuna_ops.cli.output import error_line

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("VOPS_DEBUG") == "1"
    command = typer.main.get_command(app)
    _hide_flag_types(command)
    try:
        result = command.main(args=args, prog_name="vops", standalone_mode=False)
    except click.UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:
            typer.echo(exc.ctx.get_help())  # a bare group: its help is the answer
            sys.exit(0)
        where = f"vops {exc.ctx.command_path.split(' ', 1)[1]}" if exc.ctx and " " in exc.ctx.command_path else "vops"
        error_line(f"{exc.format_message()} (hint: see `{where} --help`)")
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        error_line("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        error_line(exc.format_message())
        sys.exit(exc.exit_code)
    except VopsError as exc:
        if debug:
            traceback.print_exc()
        error_line(exc.one_line())
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: still one line, with the way to see more
        if debug:
            traceback.print_exc()
        error_line(f"unexpected {type(exc).__name__}: {exc} (hint: rerun with --debug and "
                   "report it)")
        sys.exit(1)
    # click hands back Exit codes instead of exiting when not standalone (130: Ctrl-C)
    if result == 130:
        error_line("interrupted")
    sys.exit(result if isinstance(result, int) else 0)


def _hide_flag_types(command: object) -> None:
    """No ``<bool>`` beside on/off flags in the help (typer shows a type for every option;
    a flag takes no value). An empty metavar is what typer prints in the type column."""
    for param in getattr(command, "params", []):
        if getattr(param, "is_flag", False) and getattr(param, "metavar", None) is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _hide_flag_types(sub)


def console_main() -> None:
    """The ``vops`` console script: ``main`` plus a fast exit (see ``fast_exit``)."""
    from vicuna_ops.cli import fast_exit

    try:
        main()
        code = 0
    except SystemExit as exc:
        code = fast_exit.exit_code(exc.code)
    fast_exit.exit_now(code)


__all__ = ["app", "console_main", "main", "UserError"]
