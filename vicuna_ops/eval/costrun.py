"""The judge's spend as a ledger run of its own (kind "eval"), so ``vops cost`` shows it.

One run per eval folder and judge model; rerunning the judge updates it with the totals of
every judgment that judge made in the folder, so a resumed run is never counted twice.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path

from vicuna_ops.errors import UserError

MILLION = 1_000_000


def parse_price(text: str) -> tuple[float, float]:
    """``IN,OUT`` in USD per 1M input and output tokens."""
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or any(v < 0 for v in values):
        raise UserError(f"--judge-price {text!r} is not IN,OUT",
                        hint="USD per 1M input and output tokens, e.g. --judge-price 2.5,10")
    return values  # type: ignore[return-value]


def run_id(out: Path, judge_model: str) -> str:
    """Stable for a folder and judge; fits the ledger's run-name rules."""
    where = str(out.resolve())
    tag = hashlib.sha256(f"{where}\x00{judge_model}".encode()).hexdigest()[:8]
    stem = re.sub(r"[^a-z0-9]+", "-", f"{out.resolve().name}-{judge_model}".lower()).strip("-")
    return f"eval-{stem[:40].strip('-')}-{tag}"


def record(out: Path, judge_model: str, endpoint: str, price: tuple[float, float],
           started: float) -> dict:
    """Write (or update) the eval's ledger run; returns its data."""
    from vicuna_ops.eval.judge import token_usage
    from vicuna_ops.ledger import Ledger

    judgments, tokens_in, tokens_out = token_usage(out, judge_model)
    cost = (tokens_in * price[0] + tokens_out * price[1]) / MILLION
    rid = run_id(out, judge_model)
    data = {"eval_dir": str(out.resolve()), "judge_model": judge_model, "endpoint": endpoint,
            "judgments": judgments, "input_tokens": tokens_in, "output_tokens": tokens_out,
            "price_in_per_1m": price[0], "price_out_per_1m": price[1], "cost_usd": cost,
            "last_judged": time.time()}
    with Ledger() as ledger:
        if ledger.has_run(rid):
            ledger.update_run(rid, status="finished", data=data)
        else:
            ledger.add_run(rid, "eval", "finished", data={**data, "first_judged": started})
    return {"run_id": rid, **data}
