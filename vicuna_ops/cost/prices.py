"""Hourly prices: what one node of a segment costs per hour, from SkyPilot's own catalog.

A price function maps a ``PriceQuery`` (cloud, region, zone, instance type or accelerators,
spot) to a ``Price``. A price that the catalog does not have is *unpriced* (``per_hour`` is
None, with the reason), never 0: a report that silently counts an unknown zone as free
understates what a run cost.

SkyPilot prices a VM as instance + accelerators (``Resources._get_hourly_cost``): on AWS the
GPUs are inside the instance price (the accelerator part is 0), on GCP they are separate
catalog rows added to the host VM. We call the same cloud methods, so a segment costs exactly
what ``sky launch`` would have shown for that zone.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, replace
from typing import Callable

from vicuna_ops import adaptors


@dataclass(frozen=True)
class PriceQuery:
    cloud: str
    region: str | None
    zone: str | None
    instance_type: str | None
    accelerators: str | None  # "A100:8"
    spot: bool

    @classmethod
    def of(cls, record, spot: bool | None = None) -> "PriceQuery":
        """The query for a SegmentRecord, optionally with the spot flag overridden (the
        on-demand price of the same machine is ``PriceQuery.of(rec, spot=False)``)."""
        return cls(cloud=(record.cloud or "unknown").lower(), region=record.region,
                   zone=record.zone, instance_type=record.instance_type,
                   accelerators=record.accelerators,
                   spot=record.use_spot if spot is None else spot)


@dataclass(frozen=True)
class Price:
    per_hour: float | None  # one node; None = unpriced
    instance_type: str | None = None  # what was priced (resolved when the query had none)
    source: str = "unpriced"  # catalog | price-table | local | unpriced
    note: str | None = None  # why unpriced, or how the instance type was resolved

    @property
    def priced(self) -> bool:
        return self.per_hour is not None


PriceFn = Callable[[PriceQuery], Price]


def unpriced(reason: str, instance_type: str | None = None) -> Price:
    return Price(None, instance_type, "unpriced", reason)


def parse_accelerators(spec: str | None) -> tuple[str, float] | None:
    """``"A100:8"`` -> ("A100", 8); ``"A100"`` -> ("A100", 1); None or junk -> None."""
    if not spec or not spec.strip():
        return None
    name, _, count = spec.strip().partition(":")
    try:
        number = float(count) if count else 1.0
    except ValueError:
        return None
    if not name or number <= 0:
        return None
    return name, int(number) if number.is_integer() else number


def first_priced(*functions: PriceFn) -> PriceFn:
    """A price function that asks each in turn and returns the first priced answer (or the
    first unpriced answer, whose reason is the most relevant one)."""

    def price(query: PriceQuery) -> Price:
        answers = [fn(query) for fn in functions]
        return next((a for a in answers if a.priced), answers[0] if answers else
                    unpriced("no price source"))

    return price


class CatalogPrices:
    """SkyPilot's catalog as a price function, memoized (a report asks for the same machine
    many times). Importing SkyPilot takes about a second, so it happens on the first call."""

    def __init__(self) -> None:
        self._cache: dict[PriceQuery, Price] = {}
        self._lock = threading.RLock()  # _region_wide_spot re-enters

    def __call__(self, query: PriceQuery) -> Price:
        with self._lock:
            if query not in self._cache:
                self._cache[query] = self._lookup(query)
            return self._cache[query]

    def _lookup(self, query: PriceQuery) -> Price:
        adaptors.sky()  # install hint if missing; usage collection off
        from sky.utils import registry

        try:
            cloud = registry.CLOUD_REGISTRY.from_str(query.cloud)
        except ValueError:
            cloud = None
        if cloud is None:
            return unpriced(f"SkyPilot has no catalog for cloud {query.cloud!r}")
        if query.zone is None and query.region is None:
            return unpriced("no region or zone recorded")

        instance_type, note = query.instance_type, None
        if instance_type is None:
            instance_type, note = _cheapest_instance_type(query)
            if instance_type is None:
                return unpriced(note)
        if query.zone is None and query.spot:
            return self._region_wide_spot(replace(query, instance_type=instance_type), note)
        try:
            per_hour = _vm_hourly_cost(cloud, query, instance_type)
        except (ValueError, KeyError, IndexError, AssertionError) as exc:
            where = f"zone {query.zone}" if query.zone else f"region {query.region}"
            kind = "spot" if query.spot else "on-demand"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return unpriced(f"no {kind} price for {instance_type} in {where} ({first})",
                            instance_type)
        if per_hour is None or not math.isfinite(per_hour) or per_hour < 0:
            where = query.zone or query.region
            return unpriced(f"no price for {instance_type} in {where}", instance_type)
        return Price(per_hour, instance_type, "catalog", note)

    def _region_wide_spot(self, query: PriceQuery, note: str | None) -> Price:
        """Spot prices differ by zone (on AWS a lot): with no zone recorded, price the region
        only when every zone in it has the same spot price."""
        from sky import catalog

        try:
            regions = catalog.get_region_zones_for_instance_type(
                query.instance_type, True, clouds=query.cloud)
        except (ValueError, KeyError, AttributeError) as exc:
            return unpriced(f"no zones for {query.instance_type} ({exc})", query.instance_type)
        zones = [z.name for r in regions if r.name == query.region for z in (r.zones or [])]
        prices = {self(replace(query, zone=z)).per_hour for z in zones}
        if not zones or None in prices:
            return unpriced(f"no spot price for {query.instance_type} in region {query.region}",
                            query.instance_type)
        if len(prices) > 1:
            return unpriced(f"zone not recorded and spot prices differ across {query.region}'s"
                            " zones", query.instance_type)
        return Price(prices.pop(), query.instance_type, "catalog", note)


def _vm_hourly_cost(cloud, query: PriceQuery, instance_type: str) -> float:
    """Instance + accelerators, the way ``sky.Resources`` prices a launchable resource."""
    from sky import catalog

    per_hour = float(cloud.instance_type_to_hourly_cost(instance_type, query.spot,
                                                        query.region, query.zone))
    accelerators = parse_accelerators(query.accelerators)
    if accelerators is None:  # GCP's a2/a3/g2 come with their GPUs; AWS prices them in
        try:
            built_in = catalog.get_accelerators_from_instance_type(instance_type,
                                                                   clouds=query.cloud)
        except AttributeError:  # a catalog without that lookup (Slurm's): none built in
            built_in = None
        accelerators = next(iter(built_in.items())) if built_in else None
    if accelerators is not None:
        name, count = accelerators
        per_hour += float(cloud.accelerators_to_hourly_cost({name: count}, query.spot,
                                                            query.region, query.zone))
    return per_hour


def _cheapest_instance_type(query: PriceQuery) -> tuple[str | None, str]:
    """The cheapest instance type offering the query's accelerators there, and a note."""
    from sky import catalog

    accelerators = parse_accelerators(query.accelerators)
    if accelerators is None:
        return None, "no instance type or accelerators recorded"
    name, count = accelerators
    try:
        types, _ = catalog.get_instance_type_for_accelerator(
            name, count, use_spot=query.spot, region=query.region, zone=query.zone,
            clouds=query.cloud)
    except (ValueError, KeyError, AssertionError) as exc:
        return None, f"no {query.cloud} instance type offers {query.accelerators} ({exc})"
    if not types:
        return None, (f"no {query.cloud} instance type offers {query.accelerators} in "
                      f"{query.zone or query.region}")
    return types[0], f"instance type not recorded: priced as {types[0]}, the cheapest with " \
                     f"{query.accelerators}"
