"""In which order SkyPilot should try the zones: ``--order price|expected``.

``price`` is cheapest spot price first. ``expected`` is cheapest *expected cost per useful
hour* first: a zone that is preempted often is cheap per hour and dear per result, because
every preemption bills a restart (provisioning, setup, model download) and the work done since
the last checkpoint a second time. With preemption rate ``rate`` (per hour of running), restart
overhead ``R`` hours and checkpoint interval ``C`` hours (on average ``C / 2`` of work is redone):

    expected $/useful hour = price x (1 + rate x (R + C / 2))

Rates come from the ledger: every spot train segment of every run, per zone, with a preemption
counted for each segment that ended ``preempted`` (the trainer heard the notice) or ``lost``
(the node vanished). Zones with little history are pulled towards ``PRIOR_RATE`` (a gamma
prior worth ``PRIOR_HOURS`` of observation), so one lucky hour does not make a zone look safe.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Literal, Sequence

from vicuna_ops.errors import UserError

Order = Literal["price", "expected"]
ORDERS: tuple[str, ...] = ("price", "expected")

# A spot zone with no history: about one preemption per 10 hours (the order of magnitude
# SkyPilot's Vicuna runs and public spot advisors report for A100 spot), worth 10 hours.
PRIOR_RATE = 0.1
PRIOR_HOURS = 10.0
RESTART_HOURS = 0.25  # provisioning + setup + model download, when nothing was measured
INTERRUPTED = ("preempted", "lost")


@dataclass(frozen=True)
class ZoneHistory:
    hours: float = 0.0
    preemptions: int = 0

    @property
    def rate(self) -> float:
        """Preemptions per hour, smoothed towards the prior."""
        return (self.preemptions + PRIOR_RATE * PRIOR_HOURS) / (self.hours + PRIOR_HOURS)


@dataclass(frozen=True)
class OrderBasis:
    """What the ``expected`` order assumed, for the plan."""

    order: str
    checkpoint_hours: float
    restart_hours: float
    zones_with_history: int
    history_hours: float

    def describe(self) -> str:
        if self.order == "price":
            return "cheapest spot price first"
        return (f"cheapest expected $ per useful hour first (preemption history: "
                f"{self.history_hours:,.1f} h in {self.zones_with_history} zone(s); checkpoint "
                f"every {self.checkpoint_hours * 60:,.0f} min, restart {self.restart_hours * 60:,.0f} min)")


def parse_order(text: str | None) -> str | None:
    """``--order``: price, expected, or None (expected once there is history)."""
    if text is None:
        return None
    value = text.strip().lower()
    if value not in ORDERS:
        raise UserError(f"--order {text!r} is not one of {', '.join(ORDERS)}",
                        hint="price: cheapest first; expected: cheapest per useful hour")
    return value


def zone_history(segments: Iterable[dict[str, Any]]) -> dict[tuple[str, str], ZoneHistory]:
    """Hours and preemptions per (cloud, zone) over spot train segments."""
    hours: dict[tuple[str, str], float] = {}
    count: dict[tuple[str, str], int] = {}
    for seg in segments:
        if not seg.get("use_spot") or not seg.get("zone") or seg.get("kind", "train") != "train":
            continue
        key = (str(seg.get("cloud") or ""), str(seg["zone"]))
        span = max(0.0, float(seg.get("heartbeat") or 0) - float(seg.get("start") or 0)) / 3600
        hours[key] = hours.get(key, 0.0) + span
        count[key] = count.get(key, 0) + (seg.get("status") in INTERRUPTED)
    return {key: ZoneHistory(hours[key], count[key]) for key in hours}


def expected_hourly(price: float, rate: float, checkpoint_hours: float,
                    restart_hours: float) -> float:
    """$ per useful hour: each preemption bills a restart and half a checkpoint interval."""
    return price * (1 + rate * (restart_hours + checkpoint_hours / 2))


def rank_key(history: dict[tuple[str, str], ZoneHistory], checkpoint_hours: float,
             restart_hours: float):
    """A sort key for candidates (``.cloud``, ``.zone``, ``.spot_price``) under ``expected``."""
    def key(cand: Any) -> tuple[float, str, str, str]:
        rate = history.get((cand.cloud, cand.zone), ZoneHistory()).rate
        value = expected_hourly(cand.spot_price, rate, checkpoint_hours, restart_hours)
        return (value, cand.cloud, cand.region, cand.zone)
    return key


def choose_order(requested: str | None, use_spot: bool,
                 history: dict[tuple[str, str], ZoneHistory]) -> str:
    """``expected`` by default once the ledger has spot history; on-demand is never
    preempted, so its order is the price."""
    if not use_spot:
        return "price"
    if requested is not None:
        return requested
    return "expected" if history else "price"


def annotate(candidates: Sequence[Any], history: dict[tuple[str, str], ZoneHistory],
             checkpoint_hours: float, restart_hours: float) -> list[Any]:
    """The candidates with ``expected_hourly`` and ``preemption_rate`` filled in (spot)."""
    out = []
    for cand in candidates:
        if cand.spot_price is None:
            out.append(cand)
            continue
        rate = history.get((cand.cloud, cand.zone), ZoneHistory()).rate
        out.append(replace(cand, preemption_rate=round(rate, 4), expected_hourly=round(
            expected_hourly(cand.spot_price, rate, checkpoint_hours, restart_hours), 6)))
    return out


def ledger_segments() -> list[dict[str, Any]]:
    """Every segment record the ledger holds (all runs)."""
    from vicuna_ops.ledger import Ledger

    found = []
    with Ledger() as ledger:
        for run in ledger.list_runs(kind="train"):
            found += [row.get("data") or {} for row in ledger.segments(run["run_id"])]
    return found
