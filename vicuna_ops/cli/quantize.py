"""``vops quantize``: 4-bit GPTQ/AWQ weights through llm-compressor, calibrated on the run's
own train.jsonl (vicuna_ops/models/quantize.py does the work)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer

from vicuna_ops.cli import output


def quantize_command(
    model: str = typer.Option(..., "--model", help="The model folder: a path or bucket URI "
                                                   "(e.g. <bucket>/<run>/final)."),
    method: str = typer.Option(..., "--method", help="gptq or awq."),
    bits: int = typer.Option(4, "--bits", help="Weight bits (4)."),
    calibration: str = typer.Option(..., "--calibration",
                                    help="The run's train.jsonl (or the folder `vops data "
                                         "prepare` wrote); eval.jsonl beside it is scored."),
    out: str = typer.Option(..., "--out", help="Where the quantized model goes: a bucket URI "
                                               "or a path (new or empty)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Quantize a model's weights to 4 bits (GPTQ or AWQ) for vLLM.

    Calibrates on up to 256 conversations of --calibration in the Vicuna template, writes a
    compressed-tensors checkpoint (vLLM loads it; transformers too, with compressed-tensors
    installed), and reports the weight size ratio and the perplexity of eval.jsonl's
    assistant tokens before and after. The output gets MANIFEST.json last and appears only
    when complete.
    """
    from vicuna_ops.models.quantize import check_request, quantize

    check_request(method, bits)  # a typo costs nothing: before torch is even imported
    quiet = as_json or not sys.stderr.isatty()
    with _bars_off(quiet):
        report = quantize(model, method, bits, calibration, out, progress=_say(quiet))
    if as_json:
        output.print_json(report)
        return
    size = report["weight_bytes"]
    typer.echo(f"{out}: {method} int{bits}, group size {report['group_size']}; weights "
               f"{size['before']:,} -> {size['after']:,} bytes ({size['ratio']:.2f}x)")
    ppl = report["perplexity"]
    if ppl is None:
        typer.echo("perplexity: not measured (no eval.jsonl beside the calibration data)")
    else:
        typer.echo(f"perplexity on {ppl['tokens']:,} assistant tokens of {ppl['data']}: "
                   f"{ppl['before']:.3f} -> {ppl['after']:.3f} ({ppl['change_pct']:+.2f}%)")


def _say(quiet: bool):
    """Progress lines on a terminal only: piped or --json, stderr holds nothing but an error."""
    if quiet:
        return lambda _message: None
    return lambda message: typer.echo(message, err=True)


@contextmanager
def _bars_off(quiet: bool) -> Iterator[None]:
    """The libraries' tqdm bars (transformers', llm-compressor's) off when piped or --json;
    the environment is put back after (tests run the CLI in-process)."""
    if not quiet:
        yield
        return
    from vicuna_ops import adaptors

    hf_logging = adaptors.transformers().utils.logging
    before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
        if before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = before


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize_command)
