"""``vops eval``: is the model any good? Answers, an LLM judge, ratings with intervals.

    vops eval answer --endpoint URL --model NAME --questions FILE --out DIR
    vops eval judge  --out DIR --judge-endpoint URL --judge-model NAME --mode pairwise|single
    vops eval report --out DIR [--json] [--plot FILE.png]

All three are resumable and idempotent: a finished step sends no request when run again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import typer

from vicuna_ops.cli import output
from vicuna_ops.errors import UserError, VopsError

eval_app = typer.Typer(help="Judge the model: answer a question set, ask an LLM judge, "
                            "report win rates and ratings with intervals.",
                       no_args_is_help=True)


def _progress(label: str) -> Callable[[int], tuple[Callable[[], None] | None, Callable[[], None]]]:
    """A progress bar on stderr when it is a terminal; nothing otherwise."""
    def start(total: int):
        if not output.stderr.is_terminal:
            return None, lambda: None
        from rich.progress import Progress

        bar = Progress(console=output.stderr, transient=True)
        bar.start()
        task = bar.add_task(label, total=total)
        return (lambda: bar.advance(task)), bar.stop
    return start


def _finish(pool, done_before: int, total: int, what: str, path: Path, as_json: bool,
            extra: dict | None = None) -> None:
    for line in pool.rejected:
        output.info(f"[yellow]warning:[/] refused by the server: {output.escape(line)}")
    payload = {"total": total, "done_before": done_before, "done_now": pool.done,
               "rejected": len(pool.rejected), "path": str(path), **(extra or {})}
    if pool.fatal is None and as_json:
        output.print_json(payload)
    elif pool.fatal is None:
        output.info(f"{what}: {done_before + pool.done} of {total} done ({done_before} before, "
                    f"{pool.done} now) -> {path}", markup=False)
    if pool.fatal is not None:
        exc = pool.fatal
        if isinstance(exc, VopsError):
            exc.message += f" ({done_before + pool.done} of {total} saved)"
            raise exc
        raise exc
    if pool.rejected:
        raise VopsError(f"{len(pool.rejected)} request(s) were refused by the server",
                        hint="see the warnings above; rerun the same command to retry them")


@eval_app.command("answer")
def answer(
    endpoint: str = typer.Option(..., "--endpoint", metavar="URL",
                                 help="OpenAI-compatible server (a `vops serve` deployment)."),
    model: str = typer.Option(..., "--model", metavar="NAME", help="Model to ask."),
    questions: str = typer.Option("builtin:vops-40", "--questions", metavar="FILE",
                                  help="Question JSONL, or builtin:vops-40."),
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Eval folder."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, max=256, metavar="N",
                                    help="Requests in flight."),
    max_tokens: int = typer.Option(1024, "--max-tokens", min=1, metavar="N",
                                   help="Reply length limit per turn."),
    temperature: float = typer.Option(None, "--temperature", min=0.0, max=2.0, metavar="T",
                                      help="For every question (default: per category, 0 for "
                                           "math/coding/reasoning/extraction)."),
    api_key_env: str = typer.Option("VOPS_API_KEY", "--api-key-env", metavar="VAR",
                                    help="Env var holding the API key."),
    retries: int = typer.Option(5, "--retries", min=0, metavar="N",
                                help="Retries on 429/5xx/timeouts, with backoff."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Answer every question through an OpenAI-compatible chat API -> DIR/answers/NAME.jsonl.

    Two-turn questions are asked turn by turn. Rerunning skips what is answered."""
    from vicuna_ops.eval import client, questions as qmod
    from vicuna_ops.eval.answer import AnswerSettings, answer_all, check_settings

    settings = AnswerSettings(endpoint=endpoint, model=model, key=client.api_key(api_key_env),
                              concurrency=concurrency, max_tokens=max_tokens,
                              temperature=temperature, retries=retries)
    client.base_url(endpoint)  # a malformed URL is refused before anything is written
    check_settings(settings)
    loaded = qmod.load(questions)
    progress = _progress(f"answering with {model}")(len(loaded))
    try:
        outcome = answer_all(out, loaded, settings, progress=progress[0])
    finally:
        progress[1]()
    _finish(outcome.pool, outcome.skipped, outcome.total, f"answers from {model}",
            outcome.path, as_json)


@eval_app.command("judge")
def judge(
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Eval folder."),
    judge_endpoint: str = typer.Option(..., "--judge-endpoint", metavar="URL",
                                       help="OpenAI-compatible server of the judge."),
    judge_model: str = typer.Option(..., "--judge-model", metavar="NAME"),
    mode: str = typer.Option("pairwise", "--mode", metavar="pairwise|single"),
    models: str = typer.Option(None, "--models", metavar="A,B,...",
                               help="Models to judge (default: every one answered)."),
    baseline: str = typer.Option(None, "--baseline", metavar="NAME",
                                 help="Pairwise: each model against this one only."),
    concurrency: int = typer.Option(8, "--concurrency", min=1, max=256, metavar="N"),
    judge_price: str = typer.Option(None, "--judge-price", metavar="IN,OUT",
                                    help="USD per 1M input,output tokens: the eval shows in "
                                         "`vops cost`."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", metavar="VAR",
                                    help="Env var holding the judge's API key."),
    retries: int = typer.Option(5, "--retries", min=0, metavar="N",
                                help="Retries on 429/5xx/timeouts, with backoff."),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Ask a judge: pairwise (both orders, position-consistent) or a 1-10 score per answer.

    Resumable: a killed run continues, a finished one sends nothing when rerun."""
    from vicuna_ops.eval import client, costrun
    from vicuna_ops.eval.judge import JudgeSettings, judge_all

    if mode not in ("pairwise", "single"):
        raise UserError(f"--mode must be 'pairwise' or 'single', not {mode!r}")
    if baseline and mode != "pairwise":
        raise UserError("--baseline is for --mode pairwise")
    price = costrun.parse_price(judge_price) if judge_price else None
    client.base_url(judge_endpoint)
    names = tuple(m.strip() for m in (models or "").split(",") if m.strip())
    settings = JudgeSettings(endpoint=judge_endpoint, judge_model=judge_model, mode=mode,
                             models=names, baseline=baseline, key=client.api_key(api_key_env),
                             concurrency=concurrency, retries=retries)
    started = time.time()
    stops: list[Callable[[], None]] = []

    def progress(total: int):
        tick, stop = _progress(f"judging ({mode})")(total)
        stops.append(stop)
        return tick

    try:
        outcome = judge_all(out, settings, progress_factory=progress)
    finally:
        for stop in stops:
            stop()
    for line in outcome.missing_answers:
        output.info(f"[yellow]warning:[/] no answer: {output.escape(line)}")
    extra = {}
    if price is not None and outcome.planned:
        ledger_run = costrun.record(out, judge_model, judge_endpoint, price, started)
        extra = {"ledger_run": ledger_run["run_id"], "cost_usd": round(ledger_run["cost_usd"], 6)}
        if not as_json:
            output.info(f"judge cost so far: ${ledger_run['cost_usd']:.4f} (ledger run "
                        f"{ledger_run['run_id']}, see `vops cost`)", markup=False)
    _finish(outcome.pool, outcome.skipped, outcome.planned, f"{mode} judgments",
            outcome.path, as_json, extra)


@eval_app.command("report")
def report(
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Eval folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    plot: Path = typer.Option(None, "--plot", metavar="FILE.png",
                              help="Also draw the ratings with their intervals."),
) -> None:
    """Win rates (raw and length-controlled) and Bradley-Terry ratings with 95% intervals.

    Also mean single scores per turn and category, position inconsistency, parse failures."""
    from vicuna_ops.eval import report as render_mod
    from vicuna_ops.eval.summary import summarize

    if plot is not None:
        _check_plot(plot)
    summary = summarize(out)
    if "pairwise" not in summary and "single" not in summary:
        raise UserError(f"no judgments in {out}", hint="run `vops eval judge --out DIR ...` first")
    for note in summary.get("notes", []):
        output.info(f"[yellow]note:[/] {output.escape(note)}")
    if plot is not None:
        output.info(f"wrote {output.escape(str(render_mod.write_plot(summary, plot)))}")
    if as_json:
        output.print_json(summary)
    else:
        output.stdout.print(render_mod.render(summary))


def _check_plot(plot: Path) -> None:
    from vicuna_ops import adaptors

    if plot.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UserError(f"cannot plot to {plot.name!r}: unknown format", hint="use FILE.png")
    if not plot.expanduser().parent.is_dir():
        raise UserError(f"cannot write {plot}: {plot.parent} is not a folder",
                        hint="create the folder first")
    adaptors.require("matplotlib")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
