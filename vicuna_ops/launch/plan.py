"""What a run will cost, before it starts. Pure: candidates + work -> Estimate.

The hours come from the work (``workload.Workload``: tokens to train over tokens/s per GPU,
each with its source), or, when that cannot be sized, from the recipe's ``expected_hours``
rescaled to the GPU count. Cost = hours x nodes x $/h of the zone SkyPilot tries first;
``high`` prices the same hours at the dearest listed zone, where failovers could land. The
on-demand figure is the cheapest on-demand zone of all the requested clouds (what
``--on-demand`` with the same flags would pay, named in the plan), not of the spot
candidates: comparing against the spot zones' own on-demand prices overstates the saving.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

__all__ = ["Estimate", "estimate", "expected_hours"]

from vicuna_ops.launch.accelerators import Gpus
from vicuna_ops.launch.candidates import Candidate
from vicuna_ops.launch.workload import Workload, expected_hours
from vicuna_ops.recipe import Recipe


@dataclass(frozen=True)
class Estimate:
    hours: float  # expected wall-clock hours
    gpu_hours: float
    num_nodes: int
    use_spot: bool
    hourly: float | None  # $/h for all nodes at the first candidate, in the chosen mode
    cost: float | None  # hours x hourly
    cost_high: float | None  # at the dearest listed candidate
    ondemand_hourly: float | None  # $/h for all nodes, the on-demand baseline zone
    ondemand_cost: float | None
    ondemand_zone: str | None  # the baseline's infra, e.g. aws/us-east-1/us-east-1a
    saving: float | None  # 1 - cost / ondemand_cost, spot only
    basis: str = "the recipe's expected_hours"  # where the hours come from, for people

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(recipe: Recipe, gpus: Gpus, candidates: Sequence[Candidate], *,
             use_spot: bool, num_nodes: int = 1,
             ondemand_baseline: Candidate | None = None,
             work: Workload | None = None) -> Estimate:
    """``ondemand_baseline``: the cheapest on-demand zone of the requested clouds; without
    one, the cheapest on-demand price among ``candidates``. ``work``: the sized work; without
    it, the recipe's ``expected_hours``."""
    hours = work.hours if work is not None else expected_hours(recipe, gpus, num_nodes)
    prices = [c.price(use_spot) for c in candidates if c.price(use_spot) is not None]
    ondemand = [c for c in candidates if c.ondemand_price is not None]
    if ondemand_baseline is not None and ondemand_baseline.ondemand_price is not None:
        ondemand = [ondemand_baseline]
    base = min(ondemand, key=lambda c: c.ondemand_price) if ondemand else None
    hourly = prices[0] * num_nodes if prices else None
    high = max(prices) * num_nodes if prices else None
    ondemand_hourly = base.ondemand_price * num_nodes if base else None
    cost = _money(hours * hourly) if hourly is not None else None
    ondemand_cost = _money(hours * ondemand_hourly) if ondemand_hourly is not None else None
    saving = None
    if use_spot and cost is not None and ondemand_cost:
        saving = round(1 - cost / ondemand_cost, 4)
    return Estimate(
        hours=round(hours, 3), gpu_hours=round(hours * gpus.count * num_nodes, 3),
        num_nodes=num_nodes, use_spot=use_spot,
        hourly=_rate(hourly), cost=cost,
        cost_high=_money(hours * high) if high is not None else None,
        ondemand_hourly=_rate(ondemand_hourly),
        ondemand_cost=ondemand_cost, ondemand_zone=base.infra if base else None,
        saving=saving, basis=work.describe() if work is not None else Estimate.basis)


def _money(value: float) -> float:
    return round(value, 2)


def _rate(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
