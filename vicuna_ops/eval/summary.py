"""Judgments + answers -> the numbers ``vops eval report`` shows (and prints with --json).

Only judgments of the current prompt version whose digest still matches the answers in the
folder count (an answer regenerated since is stale); when judgments by several judge models
are present, the one with the most is used and the others are named in ``notes``.

Pairwise: the two orders of a (question, turn, pair) combine into one verdict: it stands
when both orders agree; otherwise it is a tie and the pair is position-inconsistent. A pair
with an unparseable order is not scored; a pair with one order still missing is incomplete.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from vicuna_ops.eval import judge, layout, prompts, ratings, stats
from vicuna_ops.eval.questions import Question
from vicuna_ops.eval.store import RecordStore


def summarize(out: Path, *, rounds: int = ratings.DEFAULT_ROUNDS, seed: int = 0) -> dict[str, Any]:
    questions = {q.qid: q for q in layout.load_questions(out)}
    answers = layout.load_answers(out)
    result: dict[str, Any] = {}
    notes: list[str] = []
    for mode in layout.MODES:
        path = layout.judgments_path(out, mode)
        if not path.exists():
            continue
        records = _current(list(RecordStore(path)), questions, answers, mode, notes)
        if not records:
            continue
        if mode == "pairwise":
            result["pairwise"] = pairwise_section(records, rounds=rounds, seed=seed)
        else:
            result["single"] = single_section(records, seed=seed)
    if notes:
        result["notes"] = notes
    return result


def _current(records: list[dict], questions: dict[str, Question],
             answers: dict[str, dict[str, dict]], mode: str, notes: list[str]) -> list[dict]:
    fresh, old_prompt, stale = [], 0, 0
    for record in records:
        if record.get("prompt_version") != prompts.PROMPT_VERSION:
            old_prompt += 1
        elif _digest_now(record, questions, answers) != record.get("digest"):
            stale += 1
        else:
            fresh.append(record)
    if old_prompt:
        notes.append(f"{mode}: {old_prompt} judgment(s) from an older judge prompt ignored")
    if stale:
        notes.append(f"{mode}: {stale} judgment(s) of answers that changed since ignored "
                     "(rerun `vops eval judge`)")
    judges = Counter(r["judge_model"] for r in fresh)
    if len(judges) > 1:
        used = judges.most_common(1)[0][0]
        notes.append(f"{mode}: judged by {', '.join(sorted(judges))}; reporting {used}'s")
        fresh = [r for r in fresh if r["judge_model"] == used]
    return fresh


def _digest_now(record: dict, questions: dict[str, Question],
                answers: dict[str, dict[str, dict]]) -> str | None:
    question = questions.get(str(record.get("question_id")))
    turn = int(record.get("turn", 0))
    if question is None or not 1 <= turn <= len(question.turns):
        return None
    ref = question.reference_for(turn)

    def replies(model: str) -> list[str] | None:
        answer = answers.get(model, {}).get(question.qid)
        return None if answer is None else judge._replies(answer, question)[:turn]

    if record.get("mode") == "single":
        own = replies(record.get("model", ""))
        return None if own is None else judge.digest(*question.turns[:turn], ref, *own)
    a, b = replies(record.get("model_a", "")), replies(record.get("model_b", ""))
    if a is None or b is None:
        return None
    return judge.digest(*question.turns[:turn], ref, *a, "|", *b)


def combine(records: list[dict]) -> tuple[list[dict], dict[str, int]]:
    """One verdict per (question, turn, pair) judged in both orders; and the counts."""
    groups: dict[tuple, dict[tuple[str, str], dict]] = defaultdict(dict)
    for record in records:
        pair = tuple(sorted((record["model_a"], record["model_b"])))
        groups[(str(record["question_id"]), record["turn"], pair)][
            (record["model_a"], record["model_b"])] = record
    combined: list[dict] = []
    counts = Counter()
    for (qid, turn, (m1, m2)), orders in sorted(groups.items()):
        first, second = orders.get((m1, m2)), orders.get((m2, m1))
        if first is None or second is None:
            counts["incomplete"] += 1
            continue
        if first.get("parse_failure") or second.get("parse_failure"):
            counts["unscored"] += 1
            continue
        counts["compared"] += 1
        consistent = first["winner"] == second["winner"]
        if not consistent:
            counts["inconsistent"] += 1
        winner = first["winner"] if consistent else "tie"
        combined.append({"question_id": qid, "category": first.get("category", "?"),
                         "turn": turn, "model_a": m1, "model_b": m2,
                         "outcome": "tie" if winner == "tie" else "a" if winner == m1 else "b",
                         "len_a": first["len_a"], "len_b": first["len_b"],
                         "consistent": consistent})
    return combined, dict(counts)


def pairwise_section(records: list[dict], *, rounds: int, seed: int) -> dict[str, Any]:
    combined, counts = combine(records)
    sides: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for v in combined:
        score_a = ratings.OUTCOME_SCORE[v["outcome"]]
        sides[v["model_a"]].append((score_a, v["len_a"] - v["len_b"], v["category"]))
        sides[v["model_b"]].append((1 - score_a, v["len_b"] - v["len_a"], v["category"]))
    for record in records:  # a model all of whose verdicts failed still gets a row
        sides.setdefault(record["model_a"], [])
    bt = ratings.bradley_terry([(v["model_a"], v["model_b"], v["outcome"]) for v in combined],
                               rounds=rounds, seed=seed)
    models: dict[str, Any] = {}
    for model, rows in sides.items():
        scores = [s for s, _, _ in rows]
        t = stats.tally(scores)
        rating = bt.get(model)
        by_category = {}
        for category in sorted({c for _, _, c in rows}):
            ct = stats.tally([s for s, _, c in rows if c == category])
            by_category[category] = {"wins": ct.wins, "losses": ct.losses, "ties": ct.ties,
                                     "win_rate": _round(ct.win_rate)}
        models[model] = {
            "wins": t.wins, "losses": t.losses, "ties": t.ties,
            "win_rate": _round(t.win_rate),
            "lc_win_rate": _round(stats.lc_win_rate(scores, [d for _, d, _ in rows])),
            "rating": _round(rating.rating, 1) if rating else None,
            "ci95": [_round(rating.ci95[0], 1), _round(rating.ci95[1], 1)] if rating else None,
            "by_category": by_category,
        }
    models = dict(sorted(models.items(), key=lambda kv: -(kv[1]["rating"] or -1e9)))
    compared = counts.get("compared", 0)
    return {
        "models": models,
        "position_inconsistent": _round(counts.get("inconsistent", 0) / compared)
        if compared else None,
        "parse_failures": sum(bool(r.get("parse_failure")) for r in records),
        "judgments": len(records),
        "verdicts": len(combined),
        "incomplete_pairs": counts.get("incomplete", 0),
        "unscored_pairs": counts.get("unscored", 0),
        "judge_model": records[0]["judge_model"],
    }


def single_section(records: list[dict], *, seed: int) -> dict[str, Any]:
    by_model: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        by_model[record["model"]].append(record)
    models: dict[str, Any] = {}
    for model, rows in sorted(by_model.items()):
        rated = [r for r in rows if r.get("rating") is not None]
        mean, ci = stats.mean_ci([r["rating"] for r in rated], seed=seed)
        by_turn = {str(t): _round(_mean([r["rating"] for r in rated if r["turn"] == t]))
                   for t in sorted({r["turn"] for r in rated})}
        by_category = {c: _round(_mean([r["rating"] for r in rated if r["category"] == c]))
                       for c in sorted({r["category"] for r in rated})}
        models[model] = {"mean": _round(mean), "ci95": [_round(ci[0]), _round(ci[1])]
                         if ci else None, "by_turn": by_turn, "by_category": by_category,
                         "rated": len(rated)}
    return {"models": dict(sorted(models.items(), key=lambda kv: -(kv[1]["mean"] or 0))),
            "parse_failures": sum(r.get("rating") is None for r in records),
            "judgments": len(records), "judge_model": records[0]["judge_model"]}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)
