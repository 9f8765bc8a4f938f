"""``vops delta make`` / ``vops delta apply``: publish fine-tuned weights as a difference
against their base, and rebuild them from it (vicuna_ops/models/delta.py does the work)."""

from __future__ import annotations

import typer

from vicuna_ops.cli import output

delta_app = typer.Typer(help="Delta weights: target - base, and base + delta.",
                        no_args_is_help=True)


@delta_app.command("make")
def make_command(
    base: str = typer.Option(..., "--base", help="The base model folder: a path or bucket URI."),
    target: str = typer.Option(..., "--target",
                               help="The fine-tuned model folder: a path or bucket URI."),
    out: str = typer.Option(..., "--out", help="Where the delta goes: a bucket URI or a path "
                                               "(empty or new)."),
    as_json: bool = typer.Option(False, "--json", help="Print a summary as JSON."),
) -> None:
    """Write target - base as safetensors shards plus delta.json, shard by shard.

    The delta is kept at float32 (float64 for float32 weights), so applying it gives the
    target bit for bit; delta.json records the base's per-tensor digests and carries the
    target's config and tokenizer files.
    """
    from vicuna_ops.models.delta import make_delta

    manifest = make_delta(base, target, out, progress=_say(as_json))
    _summary(manifest, out, as_json)


@delta_app.command("apply")
def apply_command(
    base: str = typer.Option(..., "--base", help="The base model folder: a path or bucket URI."),
    delta: str = typer.Option(..., "--delta", help="The delta: the --out of `vops delta make`."),
    out: str = typer.Option(..., "--out", help="The model folder to write (new or empty): a "
                                               "path, or a bucket URI."),
    as_json: bool = typer.Option(False, "--json", help="Print a summary as JSON."),
) -> None:
    """Rebuild the model: base + delta, shard by shard, into an HF model folder.

    Checks that the base is the one the delta was made against, writes the tokenizer with
    </s> as the end-of-sequence and stop token, and only renames the folder into place
    once everything verified.
    """
    from vicuna_ops.models.delta import apply_delta

    manifest = apply_delta(base, delta, out, progress=_say(as_json))
    _summary(manifest, out, as_json)


def _say(quiet: bool):
    """Progress lines on a terminal only: piped or --json, stderr holds nothing but an error."""
    import sys

    if quiet or not sys.stderr.isatty():
        return lambda _message: None
    return lambda message: typer.echo(message, err=True)


def _summary(manifest: dict, out: str, as_json: bool) -> None:
    kinds = [entry["kind"] for entry in manifest["tensors"].values()]
    summary = {"out": out, "base": manifest["base"], "shards": len(manifest["shards"]),
               "tensors": len(kinds), "full_tensors": kinds.count("full"),
               "delta_bytes": sum(shard["bytes"] for shard in manifest["shards"]),
               "tokenizer": manifest["tokenizer"]}
    if as_json:
        output.print_json(summary)
    else:
        typer.echo(f"{out}: {summary['tensors']} tensors in {summary['shards']} shard(s), "
                   f"{summary['delta_bytes']:,} bytes")


def register(app: typer.Typer) -> None:
    app.add_typer(delta_app, name="delta")
