"""``vops cost --plot FILE``: cumulative cost over time per run, preemptions marked, with the
on-demand cost of the same hours dashed alongside.

``.png`` (or ``.svg``) is the matplotlib figure; ``.html`` is one self-contained page: the
figure as inline SVG plus the totals table, no scripts, no CDN. Needs the ``plot`` extra.
"""

from __future__ import annotations

import html
import io
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from vicuna_ops import adaptors
from vicuna_ops.cost.model import RunCost, cost_at, cumulative_cost
from vicuna_ops.cost.report import money, total_text
from vicuna_ops.errors import UserError

FORMATS = {".png": "png", ".svg": "svg", ".html": "html", ".htm": "html"}


def write_plot(runs: list[RunCost], path: str | Path) -> Path:
    """Write the plot; the format follows the file's suffix. Written atomically."""
    path = Path(path).expanduser()
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"cannot plot to {path.name!r}: unknown format",
                        hint=f"use one of {', '.join(sorted(FORMATS))}")
    if not path.parent.is_dir():
        raise UserError(f"cannot write {path}: {path.parent} is not a folder",
                        hint="create the folder first")
    figure = _figure(runs)
    buffer = io.BytesIO()
    vector = kind in ("svg", "html")
    figure.savefig(buffer, format="svg" if vector else kind, bbox_inches="tight",
                   metadata={"Creator": None, "Date": None} if vector else None)
    data = buffer.getvalue()
    if kind == "html":
        data = _html_page(runs, data.decode()).encode()
    _write_atomically(path, data)
    return path


def _figure(runs: list[RunCost]):
    adaptors.require("matplotlib")
    from matplotlib import dates
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    figure = Figure(figsize=(10, 5.5), dpi=110)
    axes = figure.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(runs))]
    plotted = 0
    for run, color in zip(runs, colors):
        points = cumulative_cost(run.segments)
        if not points:
            continue
        plotted += 1
        times = [_dt(p.t) for p in points]
        label = f"{run.run_id} ({total_text(run)})"
        axes.plot(times, [p.cost for p in points], color=color, linewidth=2, label=label)
        if any(p.ondemand for p in points) and any(s.spot for s in run.segments):
            axes.plot(times, [p.ondemand for p in points], color=color, linestyle="--",
                      linewidth=1, label=f"{run.run_id} on demand")
        for seg in run.segments:
            if seg.status in ("preempted", "budget-stopped"):
                marker = "x" if seg.status == "preempted" else "s"
                axes.plot([_dt(seg.end)], [cost_at(points, seg.end)], marker=marker,
                          color="red" if seg.status == "preempted" else "purple",
                          markersize=9, linestyle="none")
    if plotted:
        axes.plot([], [], marker="x", color="red", linestyle="none", label="preempted")
        if any(s.status == "budget-stopped" for r in runs for s in r.segments):
            axes.plot([], [], marker="s", color="purple", linestyle="none",
                      label="budget-stopped")
        axes.legend(loc="upper left", fontsize="small")
        axes.xaxis.set_major_formatter(dates.DateFormatter("%m-%d %H:%M", tz=timezone.utc))
        figure.autofmt_xdate()
    else:
        axes.text(0.5, 0.5, "no segments to plot", ha="center", va="center",
                  transform=axes.transAxes)
    axes.set_xlabel("time (UTC)")
    axes.set_ylabel("cumulative cost (USD)")
    axes.set_title("cost over time")
    axes.grid(True, alpha=0.3)
    return figure


def _html_page(runs: list[RunCost], svg: str) -> str:
    svg = svg[svg.find("<svg"):]  # drop the XML prolog and doctype: inline SVG needs neither
    rows = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in (
            run.run_id, run.status or "-", f"{run.node_hours:.2f}", total_text(run),
            money(run.ondemand_cost), money(run.saving), run.preemptions,
            f"{run.lost_hours:.2f}")) + "</tr>" for run in runs)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>vops cost</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
svg{{max-width:100%;height:auto}}</style></head><body>
<h1>vops cost</h1>
<p>Solid: cumulative cost. Dashed: the same hours on demand. x: preemption.</p>
{svg}
<table><thead><tr><th>run</th><th>status</th><th>node hours</th><th>cost</th><th>on demand</th>
<th>saved</th><th>preemptions</th><th>lost hours</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
