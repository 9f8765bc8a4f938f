"""Arena votes -> Bradley-Terry ratings with bootstrap 95% intervals, and their table.

The ratings come from ``vicuna_ops.eval.ratings.bradley_terry``, the code ``vops eval report``
uses for judge verdicts: the same Elo scale (mean 1000), the same seeded bootstrap. A vote of
"both bad" counts as a tie there, as Chatbot Arena counts it; the table shows both apart.
A contestant is a model (two models served) or a model at a sampling setting (one model
against itself): ``stub [t=0.2]``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from vicuna_ops.eval import ratings
from vicuna_ops.serve.arena import battles_for_rating


def summarize(votes: list[dict], *, rounds: int = ratings.DEFAULT_ROUNDS,
              seed: int = 0) -> dict[str, Any]:
    battles = battles_for_rating(votes)
    bt = ratings.bradley_terry(battles, rounds=rounds, seed=seed)
    tally: dict[str, Counter] = {}
    for a, b, outcome in battles:
        for me, other_won, i_won in ((a, "b", "a"), (b, "a", "b")):
            counts = tally.setdefault(me, Counter())
            counts["battles"] += 1
            counts["wins" if outcome == i_won else "losses" if outcome == other_won
                   else "ties" if outcome == "tie" else "both_bad"] += 1
    models: dict[str, Any] = {}
    for name in sorted(tally, key=lambda n: -(bt[n].rating if n in bt else -1e9)):
        c, rating = tally[name], bt.get(name)
        decided = c["battles"]
        models[name] = {
            "rating": round(rating.rating, 1) if rating else None,
            "ci95": [round(rating.ci95[0], 1), round(rating.ci95[1], 1)] if rating else None,
            "battles": decided, "wins": c["wins"], "losses": c["losses"], "ties": c["ties"],
            "both_bad": c["both_bad"],
            # ties and "both bad" count half, as in the ratings and in `vops eval report`
            "win_rate": round((c["wins"] + 0.5 * (c["ties"] + c["both_bad"])) / decided, 4)
            if decided else None,
        }
    outcomes = Counter(v["outcome"] for v in votes)
    return {"models": models, "votes": len(votes),
            "outcomes": {k: outcomes.get(k, 0) for k in ("a", "b", "tie", "bothbad")},
            "rounds": rounds}


def render(summary: dict[str, Any], source: str) -> Any:
    from rich.table import Table
    from rich.text import Text

    o = summary["outcomes"]
    caption = (f"{summary['votes']} vote(s) from {source}: A {o['a']}, B {o['b']}, tie "
               f"{o['tie']}, both bad {o['bothbad']}; ratings on the Elo scale (mean 1000), "
               f"95% intervals from {summary['rounds']} bootstrap resamples")
    table = Table(title=Text("arena"), title_justify="left", header_style="bold",
                  caption=Text(caption), caption_justify="left")
    for i, column in enumerate(["contestant", "rating", "95% CI", "battles", "wins", "losses",
                                "ties", "both bad", "win rate"]):
        table.add_column(Text(column), justify="left" if i == 0 else "right", no_wrap=i > 0)
    for name, m in summary["models"].items():
        ci = m["ci95"]
        table.add_row(Text(name), Text("-" if m["rating"] is None else f"{m['rating']:.0f}"),
                      Text(f"{ci[0]:.0f} .. {ci[1]:.0f}" if ci else "-"), str(m["battles"]),
                      str(m["wins"]), str(m["losses"]), str(m["ties"]), str(m["both_bad"]),
                      Text("-" if m["win_rate"] is None else f"{100 * m['win_rate']:.1f}%"))
    return table
