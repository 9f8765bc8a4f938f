"""The summary rendered: Rich tables for the terminal, a PNG of the ratings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def render(summary: dict[str, Any]) -> Group:
    parts: list[Any] = []
    if "pairwise" in summary:
        parts.extend(_pairwise(summary["pairwise"]))
    if "single" in summary:
        parts.extend(_single(summary["single"]))
    return Group(*parts)


def _table(title: str, columns: list[str], caption: str | None = None) -> Table:
    table = Table(title=Text(title), title_justify="left", header_style="bold",
                  caption=Text(caption) if caption else None, caption_justify="left")
    for i, column in enumerate(columns):
        table.add_column(Text(column), justify="left" if i == 0 else "right", no_wrap=i > 0)
    return table


def _pairwise(section: dict[str, Any]) -> list[Table]:
    inconsistent = section.get("position_inconsistent")
    caption = (f"judge {section['judge_model']}: {section['judgments']} judgments, "
               f"{section['verdicts']} verdicts (both orders); position-inconsistent "
               f"{_pct(inconsistent)} (counted as ties); parse failures "
               f"{section['parse_failures']}")
    if section.get("incomplete_pairs"):
        caption += f"; {section['incomplete_pairs']} pair(s) judged in one order only " \
                   "(rerun `vops eval judge`)"
    table = _table("pairwise", ["model", "rating", "95% CI", "wins", "losses", "ties",
                                "win rate", "LC win rate"], caption)
    for name, m in section["models"].items():
        ci = m.get("ci95")
        table.add_row(Text(name), _num(m.get("rating"), 0),
                      Text(f"{ci[0]:.0f} .. {ci[1]:.0f}" if ci else "-"), str(m["wins"]),
                      str(m["losses"]), str(m["ties"]), _pct(m.get("win_rate")),
                      _pct(m.get("lc_win_rate")))
    categories = sorted({c for m in section["models"].values() for c in m["by_category"]})
    by_cat = _table("pairwise win rate by category", ["model", *categories])
    for name, m in section["models"].items():
        by_cat.add_row(Text(name), *(_pct(m["by_category"].get(c, {}).get("win_rate"))
                                     for c in categories))
    return [table, by_cat]


def _single(section: dict[str, Any]) -> list[Table]:
    turns = sorted({t for m in section["models"].values() for t in m["by_turn"]}, key=int)
    categories = sorted({c for m in section["models"].values() for c in m["by_category"]})
    caption = (f"judge {section['judge_model']}: {section['judgments']} ratings, parse "
               f"failures {section['parse_failures']}")
    table = _table("single (1-10)", ["model", "mean", "95% CI", *(f"turn {t}" for t in turns),
                                     *categories], caption)
    for name, m in section["models"].items():
        ci = m.get("ci95")
        table.add_row(Text(name), _num(m.get("mean"), 2),
                      Text(f"{ci[0]:.2f} .. {ci[1]:.2f}" if ci else "-"),
                      *(_num(m["by_turn"].get(t), 2) for t in turns),
                      *(_num(m["by_category"].get(c), 2) for c in categories))
    return [table]


def _pct(value: float | None) -> Text:
    return Text("-" if value is None else f"{100 * value:.1f}%")


def _num(value: float | None, digits: int) -> Text:
    return Text("-" if value is None else f"{value:.{digits}f}")


def write_plot(summary: dict[str, Any], path: Path) -> Path:
    """Bradley-Terry ratings with their 95% intervals (or mean single scores) as a PNG."""
    from vicuna_ops import adaptors

    matplotlib = adaptors.require("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "pairwise" in summary:
        models = summary["pairwise"]["models"]
        key, label = "rating", "Bradley-Terry rating (Elo scale), 95% bootstrap CI"
    else:
        models = summary["single"]["models"]
        key, label = "mean", "mean judge score (1-10), 95% bootstrap CI"
    rows = [(n, m[key], m.get("ci95")) for n, m in models.items() if m.get(key) is not None]
    rows.sort(key=lambda r: r[1])
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    values = [r[1] for r in rows]
    lows = [r[1] - r[2][0] if r[2] else 0 for r in rows]
    highs = [r[2][1] - r[1] if r[2] else 0 for r in rows]
    ax.errorbar(values, range(len(rows)), xerr=[lows, highs], fmt="o", capsize=4)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows])
    ax.set_xlabel(label)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
