"""Where a GPU request can run: cloud/region/zone candidates from SkyPilot's catalog, with
spot and on-demand prices, cheapest first.

The list becomes the task's ``resources.ordered``: SkyPilot tries the zones in this order at
launch and, after a preemption, fails over along it. A preemption wave usually hits a whole
region, so no region may take more than ``per_region`` places: the list spans regions
instead of filling up with the zones of the cheapest one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from vicuna_ops.errors import CloudError, UserError
from vicuna_ops.launch.accelerators import Gpus

# Clouds whose zone-level catalogs vops plans over (spot capacity with zones and prices).
SUPPORTED_CLOUDS = ("aws", "gcp")
DEFAULT_CAP = 8
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
                    per_region: int = DEFAULT_PER_REGION) -> list[Candidate]:
    """Zones of ``clouds`` that offer ``gpus`` (spot or on demand), cheapest first.

    For each zone the cheapest instance type carrying ``gpus`` is kept. Raises UserError
    when the filters leave nothing, naming the regions that would work.
    """
    everywhere = _all_candidates(gpus, clouds, use_spot)
    kept = [c for c in everywhere
            if (not regions or c.region in regions) and (not zones or c.zone in zones)]
    if not kept:
        mode = "spot" if use_spot else "on-demand"
        where = ", ".join(clouds)
        if not everywhere:
            raise UserError(f"no zone on {where} offers {gpus} {mode}",
                            hint="try other --clouds" + (" or --on-demand" if use_spot else ""))
        cheapest = list(dict.fromkeys(c.region for c in everywhere))[:6]
        asked = ", ".join([*(regions or ()), *(zones or ())])
        raise UserError(f"no zone in {asked} offers {gpus} {mode} on {where}",
                        hint=f"regions that do, cheapest first: {', '.join(cheapest)}")
    return _cap(kept, cap, per_region)


def _cap(ordered: list[Candidate], cap: int, per_region: int) -> list[Candidate]:
    taken: list[Candidate] = []
    per: dict[tuple[str, str], int] = {}
    for cand in ordered:
        key = (cand.cloud, cand.region)
        if per.get(key, 0) >= per_region:
            continue
        per[key] = per.get(key, 0) + 1
        taken.append(cand)
        if len(taken) == cap:
            break
    return taken


def _all_candidates(gpus: Gpus, clouds: Sequence[str], use_spot: bool) -> list[Candidate]:
    from vicuna_ops import adaptors

    adaptors.sky()
    from sky import catalog
    from sky.utils import registry

    best: dict[tuple[str, str, str], Candidate] = {}
    for cloud_name in clouds:
        cloud = registry.CLOUD_REGISTRY.from_str(cloud_name)
        try:
            instance_types, _ = catalog.get_instance_type_for_accelerator(
                gpus.name, gpus.count, use_spot=use_spot, clouds=cloud_name)
            for instance_type in instance_types or []:
                for region in cloud.regions_with_offering(instance_type, gpus.sky, use_spot,
                                                          region=None, zone=None):
                    for zone in region.zones or []:
                        cand = Candidate(
                            cloud=cloud_name, region=region.name, zone=zone.name,
                            instance_type=instance_type,
                            spot_price=_hourly(cloud, instance_type, gpus, True, region.name,
                                               zone.name),
                            ondemand_price=_hourly(cloud, instance_type, gpus, False,
                                                   region.name, zone.name))
                        if cand.price(use_spot) is None:
                            continue
                        key = (cloud_name, region.name, zone.name)
                        if key not in best or cand.price(use_spot) < best[key].price(use_spot):
                            best[key] = cand
        except (UserError, CloudError):
            raise
        except Exception as exc:  # catalog fetch/parse failures from SkyPilot
            raise CloudError(f"cannot read SkyPilot's {cloud_name} catalog: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                             hint="check the network, or see `sky gpus list`") from exc
    return sorted(best.values(),
                  key=lambda c: (c.price(use_spot), c.cloud, c.region, c.zone))


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
