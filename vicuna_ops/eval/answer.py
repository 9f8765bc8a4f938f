"""Answer every question with one model: ``DIR/answers/NAME.jsonl``, one record per question.

A two-turn question is asked turn by turn, the model's own first reply in the context of the
second. A question is saved when all its turns are answered, so a killed run redoes at most
the questions in flight, and a finished one sends no request when run again (nothing is
contacted at all). The questions themselves are kept in ``DIR/questions.jsonl``: the judge
reads them (categories, references) from there.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vicuna_ops.errors import UserError
from vicuna_ops.eval import layout
from vicuna_ops.eval.client import ChatAPI
from vicuna_ops.eval.pool import PoolResult, run_all
from vicuna_ops.eval.questions import Question
from vicuna_ops.eval.store import RecordStore


@dataclass(frozen=True)
class AnswerSettings:
    endpoint: str
    model: str
    key: str = "EMPTY"
    concurrency: int = 8
    max_tokens: int | None = 1024
    temperature: float | None = None  # None: per category
    retries: int = 5


@dataclass(frozen=True)
class AnswerOutcome:
    total: int
    skipped: int  # answered before
    pool: PoolResult
    path: Path


def answer_all(out: Path, questions: list[Question], settings: AnswerSettings,
               progress: Callable[[], None] | None = None) -> AnswerOutcome:
    layout.save_questions(out, questions)
    store = RecordStore(layout.answers_path(out, settings.model))
    todo = [q for q in questions if q.qid not in store]
    if not todo:  # nothing to do: not even a connection
        return AnswerOutcome(len(questions), len(questions), PoolResult(), store.path)
    pool = asyncio.run(_answer(todo, store, settings, progress))
    return AnswerOutcome(len(questions), len(questions) - len(todo), pool, store.path)


async def _answer(todo: list[Question], store: RecordStore, settings: AnswerSettings,
                  progress: Callable[[], None] | None) -> PoolResult:
    api = ChatAPI(settings.endpoint, settings.model, key=settings.key, retries=settings.retries)
    try:
        jobs = [_job(api, q, store, settings) for q in todo]
        return await run_all(jobs, settings.concurrency, names=[f"question {q.qid}" for q in todo],
                             progress=progress)
    finally:
        await api.close()


def _job(api: ChatAPI, question: Question, store: RecordStore, settings: AnswerSettings):
    async def run() -> None:
        temperature = (settings.temperature if settings.temperature is not None
                       else question.temperature)
        messages: list[dict[str, str]] = []
        replies: list[str] = []
        counts: list[dict[str, Any]] = []
        for turn in question.turns:
            messages.append({"role": "user", "content": turn})
            reply = await api.complete(messages, temperature=temperature,
                                       max_tokens=settings.max_tokens)
            messages.append({"role": "assistant", "content": reply.text})
            replies.append(reply.text)
            counts.append({"prompt_tokens": reply.prompt_tokens,
                           "completion_tokens": reply.completion_tokens,
                           "finish_reason": reply.finish_reason})
        store.append({"key": question.qid, "question_id": question.question_id,
                      "model": settings.model, "category": question.category,
                      "turns": replies, "token_counts": counts, "temperature": temperature,
                      "max_tokens": settings.max_tokens, "endpoint": api.url,
                      "tstamp": round(time.time(), 3)})
    return run


def check_settings(settings: AnswerSettings) -> None:
    if not settings.model.strip():
        raise UserError("--model is empty", hint="name the model the endpoint serves")
