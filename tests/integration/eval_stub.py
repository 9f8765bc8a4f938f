"""A scripted OpenAI-compatible server for the eval tests and bench (run by uvicorn).

Behaviour from the environment:

    STUB_ROLE       answer | fair | first | malformed | flaky429 | die_after
    STUB_QUALITY    "alpha:9,beta:5": the models served (answer role) and their quality
    STUB_LENGTH     "alpha:400": extra characters in a model's answers (default 0)
    STUB_LATENCY_S  seconds to wait before each reply
    STUB_DIE_AFTER  die_after: the process exits on the request after this many replies

Answers read ``quality=N`` first; the fair judge compares those numbers (first vs last in
the prompt: A's reply is shown before B's), whatever the seats. ``GET /stats`` counts the
chat requests seen and the replies of each kind.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

ROLE = os.environ.get("STUB_ROLE", "fair")
LATENCY = float(os.environ.get("STUB_LATENCY_S", "0"))
DIE_AFTER = int(os.environ.get("STUB_DIE_AFTER", "0"))


def _table(name: str) -> dict[str, int]:
    raw = os.environ.get(name, "")
    return {k: int(v) for k, v in (item.split(":") for item in raw.split(",") if item)}


QUALITY = _table("STUB_QUALITY")
LENGTH = _table("STUB_LENGTH")
stats: dict[str, int] = {"requests": 0, "replies": 0, "rate_limited": 0, "garbage": 0}
seen_once: set[str] = set()
app = FastAPI()


@app.get("/")
async def root() -> dict:
    return {"ok": True}


@app.get("/stats")
async def get_stats() -> dict:
    return stats


@app.post("/v1/chat/completions")
async def chat(request: Request):
    body = await request.json()
    stats["requests"] += 1
    if ROLE == "die_after" and stats["replies"] >= DIE_AFTER:
        os._exit(3)  # a judge that dies mid-run, request unanswered
    if LATENCY:
        await asyncio.sleep(LATENCY)
    messages = body["messages"]
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    user = messages[-1]["content"]
    digest = hashlib.sha256(repr(messages).encode()).hexdigest()
    if ROLE == "flaky429" and digest not in seen_once:
        seen_once.add(digest)
        stats["rate_limited"] += 1
        return JSONResponse({"error": {"message": "slow down", "type": "rate_limit"}},
                            status_code=429, headers={"retry-after-ms": "20"})
    if ROLE == "answer":
        model = body["model"]
        if model not in QUALITY:
            return JSONResponse({"error": {"message": f"model {model} not found"}},
                                status_code=404)
        text = (f"quality={QUALITY[model]}. {model} answers turn {len(messages) // 2 + 1}: "
                + "x" * LENGTH.get(model, 0))
    else:
        text = _judge(system, user, digest)
    stats["replies"] += 1
    return {"id": "stub", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": sum(len(m["content"]) for m in messages) // 4,
                      "completion_tokens": max(1, len(text) // 4),
                      "total_tokens": 0}}


def _judge(system: str, user: str, digest: str) -> str:
    pairwise = "[[A]]" in system
    if ROLE == "first":
        return "The first reply is better. [[A]]" if pairwise else "Fine. [[5]]"
    if ROLE == "malformed":
        if int(digest, 16) % 2:
            stats["garbage"] += 1
            return "Both replies have merits; hard to say."
        return "Final verdict: [ assistant a ]" if pairwise else "Rating: 7/10"
    qualities = [int(q) for q in re.findall(r"quality=(\d+)", user)]
    if not pairwise:
        return f"Judged. [[{qualities[-1]}]]"
    a, b = qualities[0], qualities[-1]
    return "Verdict: " + ("[[A]]" if a > b else "[[B]]" if b > a else "[[C]]")
