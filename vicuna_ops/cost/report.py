"""Cost rows rendered: a Rich table per run, JSON, or CSV.

Unpriced is never shown as $0: a segment without a price reads "unpriced", and a run total
that misses one reads ">= $x" (the priced part, a lower bound). Local segments read "local".
"""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from vicuna_ops.cost.model import RunCost, SegmentCost

CSV_COLUMNS = (
    "run_id", "row", "segment_id", "kind", "attempt", "status", "cloud", "region", "zone",
    "instance_type", "accelerators", "spot", "nodes", "start", "end", "hours",
    "price_per_hour", "ondemand_per_hour", "price_source", "cost", "ondemand_cost", "saving",
    "steps", "tokens", "epoch", "startup_hours", "training_hours", "redone_steps",
    "redone_hours", "gap_hours", "lost_hours",
    "cost_per_1m_trained_tokens", "cost_per_epoch", "cost_per_1m_generated_tokens", "notes",
)


def to_json(runs: list[RunCost], problems: list[str] | None = None) -> dict:
    return {"runs": [r.to_dict() for r in runs], "problems": list(problems or [])}


def to_csv(runs: list[RunCost]) -> str:
    """One row per segment (row=segment) and one per run (row=total). Money in USD, times as
    ISO 8601 UTC, unpriced as an empty cell (never 0)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    for run in runs:
        for seg in run.segments:
            row = seg.to_dict()
            row.update(row="segment", start=_iso(seg.start), end=_iso(seg.end),
                       notes="; ".join(seg.notes))
            writer.writerow(_cells(row))
        total = run.to_dict(segments=False)
        total.update(row="total", start=_iso(run.start), end=_iso(run.end),
                     hours=total["node_hours"], notes="; ".join(run.notes))
        writer.writerow(_cells(total))
    return out.getvalue()


def render(runs: list[RunCost]) -> Group:
    """Everything ``vops cost`` prints: a table per run, then one line per run summary."""
    parts = [run_table(run) for run in runs]
    if len(runs) > 1:
        parts.append(totals_table(runs))
    return Group(*parts)


def run_table(run: RunCost) -> Table:
    status = f" ({run.status})" if run.status else ""
    table = Table(title=escape(f"{run.run_id}{status}"), title_justify="left", header_style="bold",
                  caption=escape(_summary(run)), caption_justify="left", show_footer=True)
    footers = {"segment": "total", "hours": f"{run.node_hours:.2f}", "cost": total_text(run),
               "on-demand": money(run.ondemand_cost),
               "lost": _hours(run.lost_hours) if run.lost_hours else ""}
    for name in ("segment", "where", "hours", "$/h", "cost", "on-demand", "status", "lost"):
        money_like = name in ("hours", "$/h", "cost", "on-demand")
        # figures never wrap or get cut; the text columns fold instead
        table.add_column(name, footer=footers.get(name, ""), no_wrap=money_like,
                         justify="right" if money_like or name == "lost" else "left",
                         overflow="ellipsis" if money_like else "fold")
    for seg in run.segments:
        table.add_row(*_segment_cells(seg))
    return table


def totals_table(runs: list[RunCost]) -> Table:
    """One line per run; the per-token and per-epoch figures are in each run's caption."""
    table = Table(title="all runs", title_justify="left", header_style="bold")
    for name in ("run", "status", "hours", "cost", "on-demand", "saved", "preempted", "lost"):
        figure = name not in ("run", "status")
        table.add_column(name, no_wrap=figure, justify="right" if figure else "left",
                         overflow="ellipsis" if figure else "fold")
    for run in runs:
        table.add_row(run.run_id, run.status or "-", f"{run.node_hours:.2f}", total_text(run),
                      money(run.ondemand_cost), money(run.saving), str(run.preemptions),
                      _hours(run.lost_hours))
    return table


def _segment_cells(seg: SegmentCost) -> list[str | Text]:
    where = seg.cloud if seg.cloud == "local" else f"{seg.cloud} {seg.zone or seg.region or '?'}"
    machine = seg.instance_type or seg.accelerators or "-"
    if seg.accelerators and seg.instance_type:
        machine += f" ({seg.accelerators})"
    machine += f" x{seg.nodes}" if seg.nodes > 1 else ""
    machine += " spot" if seg.spot else ""
    lost = _hours(seg.lost_hours) if seg.redone_hours is not None or seg.gap_hours is not None \
        else ""
    price = "local" if seg.price_source == "local" else money(
        seg.price_per_hour * seg.nodes if seg.price_per_hour is not None else None)
    cost = Text("unpriced", style="yellow") if seg.cost is None else Text(money(seg.cost))
    lines = [seg.segment_id, f"{seg.kind} #{seg.attempt}, {_when(seg.start)}"]
    if seg.kind == "train" and seg.startup_hours is not None:
        lines.append(f"start-up {_hours(seg.startup_hours)}, training "
                     f"{_hours(seg.training_hours)}, redone {_hours(seg.redone_hours or 0.0)}")
    if seg.redone_steps:
        lines.append(f"{seg.redone_steps} steps redone")
    if seg.merged:
        lines.append(f"+{len(seg.merged)} merged: {', '.join(seg.merged)}")
    lines.extend(seg.notes)
    return [Text("\n".join(lines)), Text(f"{where}\n{machine}"),
            f"{seg.hours:.2f}", price, cost, money(seg.ondemand_cost), _status(seg.status),
            lost]


def _summary(run: RunCost) -> str:
    parts = []
    if run.startup_hours or run.redone_hours:
        parts.append(f"billed node-hours: start-up {_hours(run.startup_hours)} "
                     f"({money(run.startup_cost)}), training {_hours(run.training_hours)}, "
                     f"redone {_hours(run.redone_hours)}")
    if run.saving_pct is not None:
        parts.append(f"spot saved {money(run.saving)} ({run.saving_pct:.0f}% of on-demand)")
    if run.preemptions or run.recoveries:
        recoveries = f" (SkyPilot recoveries: {run.recoveries})" if run.recoveries is not None else ""
        parts.append(f"preemptions: {run.preemptions}{recoveries}; {_hours(run.lost_hours)} lost"
                     f" (redone work cost {money(run.lost_cost)})")
    if run.cost_per_1m_trained_tokens is not None:
        parts.append(f"{money(run.cost_per_1m_trained_tokens)} per 1M trained tokens")
    if run.cost_per_epoch is not None:
        parts.append(f"{money(run.cost_per_epoch)} per epoch ({run.epochs:g} epochs)")
    if run.cost_per_1m_generated_tokens is not None:
        parts.append(f"{money(run.cost_per_1m_generated_tokens)} per 1M generated tokens")
    if run.unpriced_segments:
        parts.append(f"{run.unpriced_segments} unpriced segment(s): the total is a lower bound")
    if not run.segments:
        parts.append("no segments yet (hint: `vops cost sync`)")
    parts.extend(run.notes)
    return "\n".join(parts)


def total_text(run: RunCost) -> str:
    if run.cost is not None:
        return money(run.cost)
    return f">= {money(run.priced_cost)}"


def _status(status: str) -> Text:
    style = {"preempted": "yellow", "failed": "red", "budget-stopped": "magenta"}.get(status)
    return Text(status, style=style or "")


def money(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if abs(value) >= 0.01 or value == 0 else f"${value:.4f}"


def _hours(hours: float | None) -> str:
    if hours is None:
        return "-"
    return f"{hours:.2f}h" if hours >= 1 else f"{hours * 60:.0f}m"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def _cells(row: dict) -> dict:
    return {k: "" if v is None else round(v, 6) if isinstance(v, float) else v
            for k, v in row.items()}
