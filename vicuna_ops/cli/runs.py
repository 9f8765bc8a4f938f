"""``vops runs``: what the ledger knows about every run on this machine."""

from __future__ import annotations

import typer

from vicuna_ops.cli import output


def runs(
    kind: str = typer.Option(None, "--kind", help="Only 'train' or 'serve' runs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the runs in the ledger, oldest first."""
    from vicuna_ops.errors import UserError
    from vicuna_ops.ledger import Ledger

    if kind not in (None, "train", "serve"):
        raise UserError(f"--kind must be 'train' or 'serve', not {kind!r}")
    with Ledger() as ledger:
        rows = ledger.list_runs(kind=kind)
    if as_json:
        output.print_json(rows)
        return
    output.stdout.print(output.table(
        "runs", ["run", "kind", "status", "created", "bucket", "job ids"],
        [(r["run_id"], r["kind"], r["status"], output.when(r["created_at"]), r["bucket"],
          ",".join(map(str, r["job_ids"])) or None) for r in rows]))


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)
