"""``vops storage``: look into a bucket the way vops sees it (same URIs, same credentials)."""

from __future__ import annotations

import typer

from vicuna_ops.cli import output

storage_app = typer.Typer(help="Inspect buckets and paths by URI (file, s3://, gs://).",
                          no_args_is_help=True)


@storage_app.command("ls")
def ls(
    uri: str = typer.Argument(..., help="A path, file://, s3://bucket/prefix or gs://bucket/prefix."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="List everything below."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List the objects under a URI."""
    from vicuna_ops.storage import open_store

    store = open_store(uri)
    objects = store.list("", recursive=recursive)
    if as_json:
        output.print_json([{"key": o.key, "size": o.size, "uri": store.url_for(o.key)}
                           for o in objects])
        return
    output.stdout.print(output.table(store.uri, ["key", "bytes"],
                                     [(o.key, o.size) for o in objects]))


@storage_app.command("check")
def check(
    uri: str = typer.Argument(..., help="The bucket URI to probe."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check that a bucket is reachable and writable with the current credentials."""
    from vicuna_ops.storage import open_store

    store = open_store(uri)
    store.check()
    if as_json:
        output.print_json({"uri": store.uri, "ok": True})
    else:
        output.stdout.print(f"[green]ok[/] {output.escape(store.uri)}")


def register(app: typer.Typer) -> None:
    app.add_typer(storage_app, name="storage")
