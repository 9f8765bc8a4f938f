"""``vops arena report``: the web Arena's votes as Bradley-Terry ratings with 95% intervals.

    vops arena report [--db PATH | --name NAME | --port 8000] [--json]

Where the votes are: ``arena.db`` beside the controller's registry. ``vops serve --local
--port P`` keeps it in ``$VOPS_HOME/serve/local-P/`` (so ``--port`` finds it, 8000 by
default); a controller started with ``--name NAME`` and no ``--registry`` in
``$VOPS_HOME/serve/NAME/``; anything else: ``--db PATH``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from vicuna_ops.cli import output
from vicuna_ops.errors import UserError, VopsError

arena_app = typer.Typer(help="The web Arena's votes (served at /arena by `vops serve`).",
                        no_args_is_help=True)


def votes_path(db: Path | None, name: str | None, port: int) -> Path:
    """The votes database a command means; a ``UserError`` naming what exists if absent."""
    from vicuna_ops.config import vops_home
    from vicuna_ops.serve.arena import DB_NAME

    serve_dir = vops_home() / "serve"
    path = db or serve_dir / (name or f"local-{port}") / DB_NAME
    if path.is_file():
        return path
    found = sorted(str(p) for p in serve_dir.glob(f"*/{DB_NAME}"))
    hint = (f"votes exist in: {', '.join(found)} (pass --db PATH)" if found else
            "vote at http://HOST:PORT/arena of a `vops serve` deployment first")
    raise UserError(f"no Arena votes database at {path}", hint=hint)


@arena_app.command("report")
def report(
    db: Path = typer.Option(None, "--db", metavar="PATH", help="The votes database "
                            "(arena.db beside the controller's registry)."),
    name: str = typer.Option(None, "--name", help="A controller's --name on this machine: "
                             "$VOPS_HOME/serve/NAME/arena.db."),
    port: int = typer.Option(8000, "--port", help="A `vops serve --local --port` on this "
                             "machine: $VOPS_HOME/serve/local-PORT/arena.db."),
    rounds: int = typer.Option(1000, "--rounds", min=0, max=100_000, metavar="N",
                               help="Bootstrap resamples for the intervals."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Bradley-Terry ratings (Elo scale) with bootstrap 95% intervals from the Arena's votes,
    computed as `vops eval report` does."""
    import sqlite3

    from vicuna_ops import adaptors
    from vicuna_ops.serve.arena import ArenaStore
    from vicuna_ops.serve.arena_report import render, summarize

    adaptors.require("numpy")  # the ratings' fit (the eval extra); a missing one is one line
    path = votes_path(db, name, port)
    try:
        store = ArenaStore(path)
        try:
            votes = list(store.votes())
        finally:
            store.close()
    except (sqlite3.Error, VopsError) as exc:
        raise UserError(f"cannot read the Arena votes in {path}: "
                        f"{getattr(exc, 'message', exc)}",
                        hint="is it an arena.db written by the controller?") from exc
    summary = summarize(votes, rounds=rounds)
    if as_json:
        output.print_json({**summary, "db": str(path)})
        return
    if not votes:
        output.info(f"no votes yet in {output.escape(str(path))}")
        return
    output.stdout.print(render(summary, str(path)))


def register(app: typer.Typer) -> None:
    app.add_typer(arena_app, name="arena")
