"""``vops cost``: what runs cost, what spot saved, what preemptions wasted.

    vops cost [RUN...] [--since DATE] [--json | --csv] [--plot FILE] [--sync]
    vops cost sync [RUN...] [--no-queue] [--json]

The report reads the ledger; ``vops cost sync`` (or ``--sync``) first folds the buckets'
segment records and SkyPilot's managed-jobs queue into it.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

import typer
from typer.core import TyperGroup

from vicuna_ops.cli import output
from vicuna_ops.errors import UserError


class ReportOrSubcommand(TyperGroup):
    """A group whose own positional arguments are run names: ``vops cost r1 r2 --json``
    reports, ``vops cost sync r1`` runs the subcommand. Click would otherwise read ``r1`` as
    a subcommand name (or let a RUN argument swallow ``sync``)."""

    allow_interspersed_args = True  # `vops cost r1 --json`

    def parse_args(self, ctx, args):
        if args and args[0] in self.commands:
            super(TyperGroup, self).parse_args(ctx, [])  # the group's options at defaults
            ctx._protected_args, ctx.args = [args[0]], list(args[1:])
            return ctx.args
        return super().parse_args(ctx, args)  # RUN... takes every positional

    def get_params(self, ctx):
        params = super().get_params(ctx)
        if ctx.command is not self:  # a subcommand's path: `vops cost sync`, no `[RUN]...`
            params = [p for p in params if p.param_type_name != "argument"]
        return params


cost_app = typer.Typer(cls=ReportOrSubcommand, invoke_without_command=True,
                       help="What each run cost, what spot saved, what preemptions wasted.")


@cost_app.callback(invoke_without_command=True)
def cost(
    ctx: typer.Context,
    runs: list[str] = typer.Argument(None, metavar="RUN",
                                     help="Runs to report (default: all)."),
    since: str = typer.Option(None, "--since", metavar="DATE",
                              help="Runs created since DATE (2024-05-01, an ISO time, or 7d/12h)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV: one row per segment and "
                                                     "one total row per run."),
    plot: str = typer.Option(None, "--plot", metavar="FILE",
                             help="Also write cumulative cost over time to FILE "
                                  "(.png, .svg or .html)."),
    sync_first: bool = typer.Option(False, "--sync", help="Run `vops cost sync` first."),
) -> None:
    """What each run cost, what spot saved, what preemptions wasted.

    Each segment (training attempt, serving worker) is priced from SkyPilot's catalog, next
    to the on-demand cost of the same hours and the time lost to preemptions."""
    if ctx.invoked_subcommand is not None:
        return
    from vicuna_ops.cost.collect import run_costs
    from vicuna_ops.cost.report import render, to_csv, to_json
    from vicuna_ops.ledger import Ledger

    # every flag is checked before the ledger is opened: a rejected command writes nothing
    if as_json and as_csv:
        raise UserError("--json and --csv cannot be combined", hint="pick one")
    cutoff = parse_since(since) if since else None
    if plot:
        check_plot_path(plot)
    with Ledger() as ledger:
        if sync_first:
            _sync(ledger, runs or None, queue=True, quiet=as_json or as_csv)
        results, problems = run_costs(ledger, runs or None, since=cutoff)
    for problem in problems:
        output.info(f"[yellow]warning:[/] {output.escape(problem)}")
    if plot:
        from vicuna_ops.cost.plot import write_plot

        output.info(f"wrote {output.escape(str(write_plot(results, plot)))}")
    if as_json:
        output.print_json(to_json(results, problems))
    elif as_csv:
        typer.echo(to_csv(results), nl=False)
    elif not results:
        output.info("no runs" + (" since " + since if since else "") +
                    " (hint: `vops runs` lists what the ledger knows)", markup=False)
    else:
        output.stdout.print(render(results))


@cost_app.command("sync")
def sync(
    runs: list[str] = typer.Argument(None, metavar="RUN", help="Runs to sync (default: all)."),
    no_queue: bool = typer.Option(False, "--no-queue",
                                  help="Skip SkyPilot's managed-jobs queue (buckets only)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Fold each run's bucket segment records and SkyPilot's job queue into the ledger.

    Idempotent: running it twice changes nothing."""
    from vicuna_ops.ledger import Ledger

    with Ledger() as ledger:
        results = _sync(ledger, runs or None, queue=not no_queue, quiet=as_json)
    if as_json:
        output.print_json([r.to_dict() for r in results])
        return
    output.stdout.print(output.table(
        "cost sync", ["run", "segments", "changed", "run updated", "problems"],
        [(r.run_id, r.segments_seen, r.segments_changed, "yes" if r.run_changed else "no",
          len(r.problems)) for r in results]))


def _sync(ledger, runs, *, queue: bool, quiet: bool):
    from vicuna_ops.cost.sync import sky_queue, sync_runs

    results = sync_runs(ledger, runs, queue=sky_queue if queue else None)
    for result in results:
        for problem in result.problems:
            output.info(f"[yellow]warning:[/] {output.escape(result.run_id)}: "
                        f"{output.escape(problem)}")
    return results


def check_plot_path(plot: str) -> None:
    """What ``write_plot`` would refuse, refused now: format, folder, matplotlib."""
    from pathlib import Path

    from vicuna_ops import adaptors
    from vicuna_ops.cost.plot import FORMATS

    path = Path(plot).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise UserError(f"cannot plot to {path.name!r}: unknown format",
                        hint=f"use one of {', '.join(sorted(FORMATS))}")
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: {path.parent} is not a folder",
                        hint="create the folder first")
    adaptors.require("matplotlib")


_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([dhm])$")


def parse_since(text: str, now: float | None = None) -> float:
    """``2024-05-01``, ``2024-05-01T12:00`` (UTC unless it says otherwise), or ``7d``/``12h``/
    ``30m`` ago -> unix seconds."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        seconds = float(match.group(1)) * {"d": 86400, "h": 3600, "m": 60}[match.group(2)]
        return (time.time() if now is None else now) - seconds
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since {text!r} is not a date",
                        hint="use 2024-05-01, 2024-05-01T12:00, or 7d / 12h / 30m") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def register(app: typer.Typer) -> None:
    app.add_typer(cost_app, name="cost")
