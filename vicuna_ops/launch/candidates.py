"""Where a GPU request can run: cloud/region/zone candidates from SkyPilot's catalog, with
spot and on-demand prices, cheapest first.

The list becomes the task's ``resources.ordered``: SkyPilot tries the zones in this order at
launch and, after a preemption, fails over along it, and never looks beyond it. Hence two
spreads:

* over regions: a preemption wave usually hits a whole region, so no region may take more
  than ``per_region`` places;
* over clouds: every requested cloud that offers the GPU keeps its ``min_per_cloud``
  cheapest zones even when another cloud's zones are all cheaper. Otherwise a two-cloud job
  whose cheapest cloud fills the list (8 AWS p4d zones under GCP's cheapest A100 zone) can
  never leave that cloud, even when it has no spot capacity at all.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

from vicuna_ops.errors import UserError
from vicuna_ops.launch.accelerators import Gpus

# Clouds whose zone-level catalogs vops plans over (spot capacity with zones and prices).
SUPPORTED_CLOUDS = ("aws", "gcp")
DEFAULT_CAP = 8  # --max-candidates
DEFAULT_MIN_PER_CLOUD = 2  # --min-per-cloud
DEFAULT_PER_REGION = 3


@dataclass(frozen=True)
class Candidate:
    """One place to run: ``instance_type`` in ``zone``, $/h per node (None: not offered)."""

    cloud: str
    region: str
    zone: str
    instance_type: str
    spot_price: float | None
    ondemand_price: float | None
    # --order expected: the zone's smoothed preemptions per hour and $ per useful hour
    preemption_rate: float | None = None
    expected_hourly: float | None = None

    @property
    def infra(self) -> str:
        """SkyPilot's ``infra:`` string, e.g. ``aws/us-east-1/us-east-1d``."""
        return f"{self.cloud}/{self.region}/{self.zone}"

    def price(self, use_spot: bool) -> float | None:
        return self.spot_price if use_spot else self.ondemand_price

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_clouds(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"aws,gcp"`` -> ``("aws", "gcp")``; None -> every supported cloud."""
    if text is None:
        return SUPPORTED_CLOUDS
    items = _split(text)
    if not items:
        raise UserError("--clouds is empty", hint=f"use some of {','.join(SUPPORTED_CLOUDS)}")
    unknown = [c for c in items if c not in SUPPORTED_CLOUDS]
    if unknown:
        raise UserError(f"unsupported cloud {unknown[0]!r}",
                        hint=f"--clouds takes {', '.join(SUPPORTED_CLOUDS)} (comma separated)")
    return tuple(dict.fromkeys(items))


def parse_names(text: str | Sequence[str] | None, flag: str) -> tuple[str, ...] | None:
    """``--regions``/``--zones``: a comma-separated list, or None for no filter."""
    if text is None:
        return None
    items = _split(text)
    if not items:
        raise UserError(f"{flag} is empty", hint=f"leave {flag} out to allow every one")
    return tuple(dict.fromkeys(items))


def zone_candidates(gpus: Gpus, clouds: Sequence[str] = SUPPORTED_CLOUDS, *,
                    regions: Sequence[str] | None = None, zones: Sequence[str] | None = None,
                    use_spot: bool = True, cap: int = DEFAULT_CAP,
                    per_region: int = DEFAULT_PER_REGION,
                    min_per_cloud: int = DEFAULT_MIN_PER_CLOUD,
                    rank: Callable[[Candidate], Any] | None = None) -> list[Candidate]:
    """Zones of ``clouds`` that offer ``gpus`` (spot or on demand), cheapest first.

    For each zone the cheapest instance type carrying ``gpus`` is kept; at most ``cap``
    zones, at least ``min_per_cloud`` of each cloud that has them, and (unless
    ``regions``/``zones`` narrow the choice) at most ``per_region`` per region. ``rank``
    (a sort key) replaces "cheapest" in all of that, e.g. ``ordering.rank_key``. Raises
    UserError when the filters leave nothing, naming regions that would work.
    """
    from vicuna_ops.launch.accelerators import canonical_gpus

    gpus = canonical_gpus(gpus, clouds)
    everywhere = _all_candidates(gpus, clouds, use_spot)
    kept = [c for c in everywhere
            if (not regions or c.region in regions) and (not zones or c.zone in zones)]
    if not kept:
        mode = "spot" if use_spot else "on-demand"
        where = ", ".join(clouds)
        if not everywhere:
            from vicuna_ops.launch.accelerators import check_gpus

            check_gpus(gpus, clouds)  # an unknown name or count gets its own message
            raise UserError(f"no zone on {where} offers {gpus} {mode}",
                            hint="try other --clouds" + (" or --on-demand" if use_spot else ""))
        cheapest = list(dict.fromkeys(c.region for c in everywhere))[:6]
        asked = ", ".join([*(regions or ()), *(zones or ())])
        raise UserError(f"no zone in {asked} offers {gpus} {mode} on {where}",
                        hint=f"regions that do, cheapest first: {', '.join(cheapest)}")
    # Spread over regions only when vops picks them; a user's own list is taken as given.
    if rank is not None:
        kept.sort(key=rank)
    spread = per_region if not (regions or zones) else cap
    return _with_both_prices(_cap(kept, cap, spread, min_per_cloud), gpus, use_spot, clouds)


def cheapest_ondemand(gpus: Gpus, clouds: Sequence[str] = SUPPORTED_CLOUDS, *,
                      regions: Sequence[str] | None = None,
                      zones: Sequence[str] | None = None) -> Candidate | None:
    """The cheapest on-demand zone for ``gpus`` (canonical: ``canonical_gpus``) on ``clouds``
    (same filters): what the same flags with ``--on-demand`` would pay, the honest baseline
    for a spot saving."""
    for cand in _all_candidates(gpus, clouds, use_spot=False):
        if (not regions or cand.region in regions) and (not zones or cand.zone in zones):
            return cand
    return None


def _cap(ordered: list[Candidate], cap: int, per_region: int,
         min_per_cloud: int = 0) -> list[Candidate]:
    """The first ``cap`` of ``ordered`` (cheapest first), at most ``per_region`` per region,
    after reserving the ``min_per_cloud`` cheapest places of every cloud in it."""
    per: dict[tuple[str, str], int] = {}
    taken: set[int] = set()

    def take(index: int, cand: Candidate) -> bool:
        key = (cand.cloud, cand.region)
        if index in taken or per.get(key, 0) >= per_region:
            return False
        per[key] = per.get(key, 0) + 1
        taken.add(index)
        return True

    for cloud in dict.fromkeys(c.cloud for c in ordered):
        reserved = 0
        for index, cand in enumerate(ordered):
            if reserved >= min_per_cloud or len(taken) >= cap:
                break
            if cand.cloud == cloud and take(index, cand):
                reserved += 1
    for index, cand in enumerate(ordered):
        if len(taken) >= cap:
            break
        take(index, cand)
    return [ordered[index] for index in sorted(taken)]  # still cheapest first


def _all_candidates(gpus: Gpus, clouds: Sequence[str], use_spot: bool) -> list[Candidate]:
    """Every zone with a price in the requested mode, cheapest first. Only that price is
    looked up here (a catalog lookup per zone adds up); ``_with_both_prices`` fills in the
    other one for the few candidates that are kept.

    One thread per cloud: SkyPilot's first look at AWS's catalog waits on an account probe
    (``aws configure list``, a subprocess), and GCP's zones are priced meanwhile.
    """
    from concurrent.futures import ThreadPoolExecutor

    from vicuna_ops.launch.sky_calls import catalog_calls

    with catalog_calls(clouds), ThreadPoolExecutor(max_workers=len(clouds)) as pool:
        per_cloud = list(pool.map(lambda name: _cloud_candidates(gpus, name, use_spot),
                                  clouds))
    everywhere = [cand for found in per_cloud for cand in found]
    return sorted(everywhere, key=lambda c: (c.price(use_spot), c.cloud, c.region, c.zone))


def _cloud_candidates(gpus: Gpus, cloud_name: str, use_spot: bool) -> list[Candidate]:
    """One cloud's zones for ``gpus``, each with its cheapest instance type carrying them."""
    from sky import catalog
    from sky.utils import registry

    cloud = registry.CLOUD_REGISTRY.from_str(cloud_name)
    best: dict[tuple[str, str], Candidate] = {}
    instance_types, _ = catalog.get_instance_type_for_accelerator(
        gpus.name, gpus.count, use_spot=use_spot, clouds=cloud_name)
    for instance_type in instance_types or []:
        for region in cloud.regions_with_offering(instance_type, gpus.sky, use_spot,
                                                  region=None, zone=None):
            for zone in region.zones or []:
                price = _hourly(cloud, instance_type, gpus, use_spot, region.name, zone.name)
                key = (region.name, zone.name)
                if price is None or (key in best and best[key].price(use_spot) <= price):
                    continue
                best[key] = Candidate(cloud=cloud_name, region=region.name, zone=zone.name,
                                      instance_type=instance_type,
                                      spot_price=price if use_spot else None,
                                      ondemand_price=None if use_spot else price)
    return list(best.values())


def _with_both_prices(candidates: list[Candidate], gpus: Gpus, use_spot: bool,
                      clouds: Sequence[str]) -> list[Candidate]:
    from dataclasses import replace

    from vicuna_ops.launch.sky_calls import catalog_calls

    out = []
    with catalog_calls(clouds):
        from sky.utils import registry

        for cand in candidates:
            other = _hourly(registry.CLOUD_REGISTRY.from_str(cand.cloud), cand.instance_type,
                            gpus, not use_spot, cand.region, cand.zone)
            out.append(replace(cand, **{"ondemand_price" if use_spot else "spot_price": other}))
    return out


def _hourly(cloud: Any, instance_type: str, gpus: Gpus, use_spot: bool, region: str,
            zone: str) -> float | None:
    """Per-node $/h in one zone: the VM plus, on GCP, the GPUs attached to it."""
    try:
        price = (cloud.instance_type_to_hourly_cost(instance_type, use_spot, region, zone)
                 + cloud.accelerators_to_hourly_cost(gpus.sky, use_spot, region, zone))
    except (ValueError, KeyError, IndexError):  # not priced in this zone
        return None
    if price is None or math.isnan(price) or price <= 0:
        return None
    return round(float(price), 6)


def _split(text: str | Sequence[str]) -> list[str]:
    parts = text.split(",") if isinstance(text, str) else [p for t in text for p in t.split(",")]
    return [p.strip().lower() for p in parts if p.strip()]
