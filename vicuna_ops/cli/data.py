"""``vops data prepare``: ShareGPT dumps -> training-ready train.jsonl / eval.jsonl + report."""

from __future__ import annotations

import time
from typing import Any, Optional

import typer

from vicuna_ops.cli import output

data_app = typer.Typer(help="Prepare conversation data for training.", no_args_is_help=True)


@data_app.command("prepare")
def prepare_command(
    inputs: list[str] = typer.Argument(
        ..., metavar="IN",
        help="ShareGPT .json (a list) or .jsonl files, gzipped or not: paths, file://, s3:// "
             "or gs:// URIs, or folders/prefixes holding them."),
    out: str = typer.Option(..., "--out", "-o",
                            help="Folder or bucket prefix for train.jsonl, eval.jsonl and "
                                 "report.json."),
    tokenizer: str = typer.Option(..., "--tokenizer",
                                  help="builtin:tiny or a local HF tokenizer folder: the one "
                                       "the model will train with."),
    max_length: int = typer.Option(2048, "--max-length",
                                   help="Tokens per segment in the Vicuna v1.1 template."),
    eval_ratio: float = typer.Option(0.01, "--eval-ratio",
                                     help="Share of conversations drawn into eval.jsonl."),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/eval draw."),
    min_turns: int = typer.Option(1, "--min-turns",
                                  help="Fewest question+answer exchanges to keep."),
    min_chars: int = typer.Option(1, "--min-chars",
                                  help="Fewest characters (all turns together) to keep."),
    keep_lang: Optional[list[str]] = typer.Option(
        None, "--keep-lang", help="Keep only these languages (ISO codes, comma-separated or "
                                  "repeated; 'unknown' allowed)."),
    skip_lang: Optional[list[str]] = typer.Option(
        None, "--skip-lang", help="Leave out these languages."),
    blocklist: Optional[str] = typer.Option(
        None, "--blocklist", help="File (path or URI) of phrases, one per line, replacing the "
                                  "default (OpenAI, ChatGPT); conversations containing one are "
                                  "left out. 'none': no blocklist."),
    keep_plugins: bool = typer.Option(False, "--keep-plugins",
                                      help="Keep tool-using sessions (a 'plugins' field); left "
                                           "out by default."),
    on_long_turn: str = typer.Option("drop", "--on-long-turn",
                                     help="An exchange longer than --max-length on its own: "
                                          "drop or truncate."),
    keep_special_tokens: bool = typer.Option(
        False, "--keep-special-tokens",
        help="Leave literal special tokens such as '</s>' in the text (by default they get a "
             "space, '< /s>', so the tokenizer reads them as text)."),
    workers: int = typer.Option(0, "--workers", help="Worker processes (0: one per core)."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace an earlier output under --out."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Clean, filter and split ShareGPT conversations into train/eval JSONL.

    Scraped HTML becomes markdown. Malformed, out-of-order, empty, short,
    duplicate, other-language and blocklisted conversations are left out and
    counted. Long ones are split at turn boundaries to fit --max-length tokens.
    Writes train.jsonl, eval.jsonl and report.json under --out.
    """
    from vicuna_ops.data import CleanOptions, PrepareOptions, prepare

    clean = CleanOptions(
        max_length=max_length, min_turns=min_turns, min_chars=min_chars,
        keep_langs=_languages(keep_lang, "--keep-lang"),
        skip_langs=_languages(skip_lang, "--skip-lang"),
        blocklist=_blocklist(blocklist), keep_plugins=keep_plugins,
        on_long_turn=on_long_turn, neutralize_special_tokens=not keep_special_tokens)
    options = PrepareOptions(clean=clean, eval_ratio=eval_ratio, seed=seed, workers=workers,
                             overwrite=overwrite)
    with _progress_bar() as progress:
        report = prepare(inputs, out, tokenizer, options, progress=progress)
    if as_json:
        output.print_json(report.to_dict())
    else:
        _render(report)


def _languages(values: list[str] | None, flag: str) -> frozenset[str]:
    from vicuna_ops.data.language import LANGUAGES
    from vicuna_ops.errors import UserError

    codes = {code.strip().lower() for value in values or [] for code in value.split(",")
             if code.strip()}
    unknown = sorted(codes - set(LANGUAGES))
    if unknown:
        raise UserError(f"{flag}: unknown language {unknown[0]!r}",
                        hint=f"use one of {', '.join(LANGUAGES)}")
    return frozenset(codes)


def _blocklist(value: str | None) -> tuple[str, ...]:
    from vicuna_ops.data.filters import DEFAULT_BLOCKLIST

    if value is None:
        return DEFAULT_BLOCKLIST
    if value.strip().lower() == "none":  # a file called "none": pass ./none
        return ()
    return tuple(_read_blocklist(value))


def _read_blocklist(uri: str) -> list[str]:
    from vicuna_ops.data.filters import read_blocklist
    from vicuna_ops.data.inputs import resolve_inputs
    from vicuna_ops.errors import UserError

    files = resolve_inputs([uri])
    if len(files) != 1 or files[0].uri.rstrip("/") != _canonical(uri):
        raise UserError(f"--blocklist {uri} is not a file", hint="name a text file of phrases")
    with files[0].open() as stream:
        text = stream.read().decode("utf-8", errors="replace")
    return read_blocklist(text)


def _canonical(uri: str) -> str:
    from vicuna_ops.storage import parse_uri

    return parse_uri(uri).uri


class _progress_bar:
    """A Rich progress bar on stderr (bytes read, records done, records/s, ETA from the bytes
    left); silent off a terminal."""

    def __enter__(self) -> Any:
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.bar = Progress(TextColumn("preparing"), BarColumn(), DownloadColumn(),
                            TextColumn("{task.fields[records]} records"),
                            TextColumn("{task.fields[rate]}/s"), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=output.stderr,
                            disable=not output.stderr.is_terminal, transient=True)
        self.bar.start()
        self.task = self.bar.add_task("prepare", total=None, records=0, rate="-")
        self.started = time.monotonic()
        return self.update

    def update(self, done: int, total: int | None, records: int) -> None:
        rate = records / max(time.monotonic() - self.started, 1e-6)
        self.bar.update(self.task, completed=done, total=total, records=f"{records:,}",
                        rate=f"{rate:,.0f}")

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()


def _render(report: Any) -> None:
    from vicuna_ops.data.report import CHANGE_HELP, REASON_HELP, REASONS

    data = report.to_dict()
    rows = [("records in", data["records_in"], ""), ("kept", data["kept"], "")]
    rows += [(f"  {reason}", data["left_out"][reason], REASON_HELP[reason])
             for reason in REASONS if data["left_out"][reason]]
    output.stdout.print(output.table("records", ["", "count", "why left out"], rows))
    splits = [(f"{name}.jsonl", s["conversations"], s["segments"], s["tokens"],
               s["max_tokens"]) for name, s in data["splits"].items()]
    output.stdout.print(output.table(
        f"output under {data['output']}",
        ["file", "conversations", "segments", "tokens", "longest"], splits))
    if data["changes"]:
        output.stdout.print(output.table(
            "changes", ["change", "count", ""],
            [(name, count, CHANGE_HELP.get(name, "")) for name, count in
             data["changes"].items()]))
    for problem in data["problems"][:10]:
        output.info(f"[yellow]skipped[/] {output.escape(problem['source'])}:{problem['line']} "
                    f"(item {problem['item']}): {output.escape(str(problem['detail']))}")
    if len(data["problems"]) > 10:
        output.info(f"... {len(data['problems']) - 10} more in "
                    f"{output.escape(data['files']['report.json'])}")
    for warning in data["warnings"]:
        output.info(f"[yellow]warning:[/] {output.escape(warning)}")
    rate = data["records_per_second"]
    speed = f" ({rate:,.0f}/s)" if rate else ""
    output.info(f"{data['records_in']:,} records in {data['seconds']:.1f}s{speed}; "
                f"report: {output.escape(data['files']['report.json'])}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
