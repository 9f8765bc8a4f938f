"""Ask a judge model about the answers in an eval folder.

Pairwise: each pair of models (or each model against ``baseline``) on each question and
turn, asked twice, with the answers' seats swapped; ``summary`` combines the two. Single:
a 1-10 rating per answer and turn. Each judgment is saved as it arrives, keyed by (mode,
question, models in their seats, turn, judge model, prompt version, digest of what was
shown): a killed run continues where it stopped, a finished one sends nothing when run
again, and answers regenerated since are judged afresh.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from vicuna_ops.errors import UserError
from vicuna_ops.eval import layout, prompts, verdicts
from vicuna_ops.eval.client import ChatAPI
from vicuna_ops.eval.pool import PoolResult, run_all
from vicuna_ops.eval.questions import Question
from vicuna_ops.eval.store import RecordStore, make_key

JUDGE_TEMPERATURE = 0.0
JUDGE_MAX_TOKENS = 1024


@dataclass(frozen=True)
class JudgeSettings:
    endpoint: str
    judge_model: str
    mode: str
    models: tuple[str, ...] = ()  # empty: every model answered in the folder
    baseline: str | None = None
    key: str = "EMPTY"
    concurrency: int = 8
    retries: int = 5


@dataclass(frozen=True)
class Task:
    """One judge request."""
    key: str
    record: dict[str, Any]  # everything but the judge's reply
    messages: list[dict[str, str]]


@dataclass
class JudgeOutcome:
    planned: int
    skipped: int  # judged before
    pool: PoolResult
    missing_answers: list[str] = field(default_factory=list)
    path: Path | None = None


def digest(*texts: str | None) -> str:
    hasher = hashlib.sha256()
    for text in texts:
        hasher.update((text or "").encode() + b"\x00")
    return hasher.hexdigest()[:16]


def choose_models(answered: list[str], models: tuple[str, ...], baseline: str | None,
                  mode: str) -> list[str]:
    chosen = list(models) or sorted(answered)
    unknown = [m for m in chosen + ([baseline] if baseline else []) if m not in answered]
    if unknown:
        raise UserError(f"no answers from {', '.join(map(repr, unknown))} in this folder",
                        hint="answered: " + (", ".join(sorted(answered)) or "none") +
                             " (run `vops eval answer` for it first)")
    if baseline and baseline not in chosen:
        chosen.append(baseline)
    if mode == "pairwise" and len(chosen) < 2:
        raise UserError("pairwise judging needs two models or more",
                        hint="answer with another model, or use --mode single")
    return chosen


def pairs(models: list[str], baseline: str | None) -> list[tuple[str, str]]:
    if baseline:
        return [(m, baseline) for m in models if m != baseline]
    return list(itertools.combinations(sorted(models), 2))


def plan(questions: list[Question], answers: dict[str, dict[str, dict]],
         settings: JudgeSettings) -> tuple[list[Task], list[str]]:
    """Every judge request the settings call for, and one line per answer that is missing."""
    models = choose_models(list(answers), settings.models, settings.baseline, settings.mode)
    tasks: list[Task] = []
    missing: set[str] = set()
    base = {"judge_model": settings.judge_model, "prompt_version": prompts.PROMPT_VERSION}
    for question in questions:
        have = {m: answers[m].get(question.qid) for m in models}
        for model, record in have.items():
            if record is None:
                missing.add(f"{model}: question {question.question_id}")
        for turn in range(1, len(question.turns) + 1):
            ref = question.reference_for(turn)
            if settings.mode == "single":
                for model in models:
                    if have[model] is not None:
                        tasks.append(_single(question, turn, ref, model, have[model], base))
                continue
            for one, two in pairs(models, settings.baseline):
                if have[one] is None or have[two] is None:
                    continue
                for first, second in ((one, two), (two, one)):
                    tasks.append(_pairwise(question, turn, ref, first, second, have, base))
    return tasks, sorted(missing)


def _replies(record: dict, question: Question) -> list[str]:
    replies = [str(r) for r in record.get("turns", [])]
    return replies + [""] * (len(question.turns) - len(replies))


def _pairwise(question: Question, turn: int, ref: str | None, first: str, second: str,
              have: dict[str, dict], base: dict) -> Task:
    reply_a, reply_b = _replies(have[first], question), _replies(have[second], question)
    shown = digest(*question.turns[:turn], ref, *reply_a[:turn], "|", *reply_b[:turn])
    key = make_key("pairwise", question.qid, first, second, turn, base["judge_model"],
                   base["prompt_version"], shown)
    record = {"key": key, "mode": "pairwise", "question_id": question.question_id,
              "category": question.category, "turn": turn, "model_a": first,
              "model_b": second, **base, "digest": shown,
              "len_a": len(reply_a[turn - 1]), "len_b": len(reply_b[turn - 1])}
    return Task(key, record, prompts.pairwise(question.turns, reply_a, reply_b, turn, ref))


def _single(question: Question, turn: int, ref: str | None, model: str, answer: dict,
            base: dict) -> Task:
    replies = _replies(answer, question)
    shown = digest(*question.turns[:turn], ref, *replies[:turn])
    key = make_key("single", question.qid, model, turn, base["judge_model"],
                   base["prompt_version"], shown)
    record = {"key": key, "mode": "single", "question_id": question.question_id,
              "category": question.category, "turn": turn, "model": model, **base,
              "digest": shown, "len": len(replies[turn - 1])}
    return Task(key, record, prompts.single(question.turns, replies, turn, ref))


def judge_all(out: Path, settings: JudgeSettings,
              progress_factory: Callable[[int], Callable[[], None] | None] | None = None
              ) -> JudgeOutcome:
    if settings.mode not in layout.MODES:
        raise UserError(f"--mode must be 'pairwise' or 'single', not {settings.mode!r}")
    questions = layout.load_questions(out)
    answers = layout.load_answers(out)
    tasks, missing = plan(questions, answers, settings)
    store = RecordStore(layout.judgments_path(out, settings.mode))
    todo = [t for t in tasks if t.key not in store]
    outcome = JudgeOutcome(len(tasks), len(tasks) - len(todo), PoolResult(), missing, store.path)
    if todo:
        progress = progress_factory(len(todo)) if progress_factory else None
        outcome.pool = asyncio.run(_judge(todo, store, settings, progress))
    return outcome


async def _judge(todo: list[Task], store: RecordStore, settings: JudgeSettings,
                 progress: Callable[[], None] | None) -> PoolResult:
    api = ChatAPI(settings.endpoint, settings.judge_model, key=settings.key,
                  retries=settings.retries)

    def job(task: Task):
        async def run() -> None:
            reply = await api.complete(task.messages, temperature=JUDGE_TEMPERATURE,
                                       max_tokens=JUDGE_MAX_TOKENS)
            store.append({**task.record, **_verdict(task.record, reply.text),
                          "judgment": reply.text,
                          "usage": {"prompt_tokens": reply.prompt_tokens,
                                    "completion_tokens": reply.completion_tokens},
                          "tstamp": round(time.time(), 3)})
        return run

    try:
        return await run_all([job(t) for t in todo], settings.concurrency,
                             names=[f"question {t.record['question_id']} turn "
                                    f"{t.record['turn']}" for t in todo], progress=progress)
    finally:
        await api.close()


def _verdict(record: dict, text: str) -> dict[str, Any]:
    if record["mode"] == "single":
        rating = verdicts.parse_rating(text)
        return {"rating": rating, "parse_failure": rating is None}
    verdict = verdicts.parse_pairwise(text)
    winner = {"A": record["model_a"], "B": record["model_b"], "C": "tie"}.get(verdict or "")
    return {"verdict": verdict, "winner": winner, "parse_failure": verdict is None}


def token_usage(out: Path, judge_model: str) -> tuple[int, int, int]:
    """(judgments, input tokens, output tokens) this judge model has spent on the folder."""
    count = prompt = completion = 0
    for mode in layout.MODES:
        path = layout.judgments_path(out, mode)
        if not path.exists():
            continue
        for record in RecordStore(path):
            if record.get("judge_model") == judge_model:
                usage = record.get("usage") or {}
                count += 1
                prompt += int(usage.get("prompt_tokens") or 0)
                completion += int(usage.get("completion_tokens") or 0)
    return count, prompt, completion
