"""The run's price table: the $/h of each place the run may land, fixed at launch.

A training node installs no SkyPilot, yet its budget guard (``vops train --max-cost``) needs
prices. So the launcher, which holds SkyPilot's catalog, writes the hourly price of every
candidate (cloud, region, zone, instance type, spot and on-demand) to
``<bucket>/<run-id>/prices.json`` (or passes it inline in ``$VOPS_PRICE_TABLE``), and the node
prices its own segments from it::

    {"version": 1, "created": 1717000000.0, "source": "skypilot-catalog",
     "prices": [{"cloud": "aws", "region": "us-east-1", "zone": "us-east-1d",
                 "instance_type": "p4d.24xlarge", "accelerators": "A100:8",
                 "spot": true, "price_per_hour": 2.4655}, ...]}

``price_per_hour`` is one node, instance + accelerators. An entry with ``zone: null`` prices
the whole region (right for on-demand, where SkyPilot's catalog has one price per region).
A place the table lacks is unpriced, never free.
"""

from __future__ import annotations

import json
import os
import time
from typing import Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vicuna_ops.cost.prices import Price, PriceFn, PriceQuery, parse_accelerators, unpriced
from vicuna_ops.errors import ObjectNotFound, UserError

PRICE_TABLE_KEY = "prices.json"  # inside <bucket>/<run-id>/
PRICE_TABLE_ENV = "VOPS_PRICE_TABLE"  # the same JSON, inline, for nodes


class PriceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cloud: str
    region: str | None = None
    zone: str | None = None
    instance_type: str | None = None
    accelerators: str | None = None
    spot: bool
    price_per_hour: float = Field(ge=0)


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    created: float | None = None
    source: str = "skypilot-catalog"
    prices: list[PriceEntry] = []

    def __call__(self, query: PriceQuery) -> Price:
        """The table as a price function."""
        matches = [e for e in self.prices if _same_machine(e, query)]
        if not matches:
            return unpriced(f"the run's price table has no {_describe(query)}")
        exact = [e for e in matches if query.zone is not None and e.zone == query.zone]
        regional = [e for e in matches if e.zone is None and e.region is not None
                    and e.region == query.region]
        if query.zone is None and query.region is not None and not regional:
            # no zone recorded: fine when every zone of the region has the same price
            regional = [e for e in matches if e.region == query.region]
        for found in (exact, regional):
            prices = {e.price_per_hour for e in found}
            if len(prices) == 1:
                entry = found[0]
                note = None if query.instance_type or not entry.instance_type else \
                    f"instance type not recorded: priced as {entry.instance_type}"
                return Price(prices.pop(), entry.instance_type or query.instance_type,
                             "price-table", note)
            if len(prices) > 1:
                return unpriced(f"the run's price table has several prices for "
                                f"{_describe(query)}")
        return unpriced(f"the run's price table has no {_describe(query)}")

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)


def build_price_table(places: Iterable[PriceQuery], prices: PriceFn,
                      created: float | None = None) -> tuple[PriceTable, list[str]]:
    """The launcher's half: price every candidate place, spot and on-demand (the node needs
    the on-demand price too when SkyPilot falls back to it). Returns the table and one line
    per place that has no price (the guard cannot bound those)."""
    entries: dict[tuple, PriceEntry] = {}
    missing: list[str] = []
    for place in places:
        for spot in sorted({place.spot, False}, reverse=True):
            query = PriceQuery(place.cloud.lower(), place.region, place.zone,
                               place.instance_type, place.accelerators, spot)
            price = prices(query)
            if not price.priced:
                missing.append(f"{_describe(query)}: {price.note}")
                continue
            entry = PriceEntry(cloud=query.cloud, region=query.region, zone=query.zone,
                               instance_type=price.instance_type or query.instance_type,
                               accelerators=query.accelerators, spot=spot,
                               price_per_hour=price.per_hour)
            entries[(entry.cloud, entry.region, entry.zone, entry.instance_type,
                     entry.accelerators, entry.spot)] = entry
    return PriceTable(created=created if created is not None else time.time(),
                      prices=list(entries.values())), missing


def table_from_candidates(candidates: Iterable, accelerators: str | None = None,
                          created: float | None = None) -> PriceTable:
    """The launcher's candidate places (objects with cloud, region, zone, instance_type,
    spot_price, ondemand_price, as ``vicuna_ops.launch.candidates.Candidate``), both prices
    of each, as the run's table. A price of None is left out: that place stays unpriced."""
    entries: dict[tuple, PriceEntry] = {}
    for c in candidates:
        for spot, value in ((True, c.spot_price), (False, c.ondemand_price)):
            if value is None:
                continue
            entry = PriceEntry(cloud=c.cloud.lower(), region=c.region, zone=c.zone,
                               instance_type=c.instance_type, accelerators=accelerators,
                               spot=spot, price_per_hour=float(value))
            entries[(entry.cloud, entry.zone, entry.instance_type, spot)] = entry
    return PriceTable(created=created if created is not None else time.time(),
                      prices=list(entries.values()))


def parse_price_table(raw: bytes | str, where: str = "price table") -> PriceTable:
    try:
        return PriceTable.model_validate_json(raw)
    except (ValidationError, ValueError) as exc:
        first = str(exc).splitlines()[0]
        raise UserError(f"{where} is not a valid price table ({first})",
                        hint="rewrite it with vicuna_ops.cost.price_table.write_price_table"
                        ) from exc


def write_price_table(store, table: PriceTable) -> None:  # store: the run's Store
    store.put_bytes(PRICE_TABLE_KEY, table.to_json().encode())


def load_price_table(store) -> PriceTable | None:
    """The run's table from its bucket prefix, or None when it has none."""
    try:
        raw = store.get_bytes(PRICE_TABLE_KEY)
    except ObjectNotFound:
        return None
    return parse_price_table(raw, store.url_for(PRICE_TABLE_KEY))


def price_table_for_node(store=None) -> PriceTable | None:
    """What a training node uses: ``$VOPS_PRICE_TABLE`` (inline JSON, or a path to a file)
    first, then ``prices.json`` in the run's bucket prefix."""
    inline = os.environ.get(PRICE_TABLE_ENV, "").strip()
    if inline:
        if inline.startswith("{"):
            return parse_price_table(inline, f"${PRICE_TABLE_ENV}")
        try:
            with open(inline, "rb") as handle:
                return parse_price_table(handle.read(), inline)
        except OSError as exc:
            raise UserError(f"${PRICE_TABLE_ENV} names {inline}, which cannot be read ({exc})",
                            hint="set it to the table's JSON or a readable file") from exc
    return load_price_table(store) if store is not None else None


def _same_machine(entry: PriceEntry, query: PriceQuery) -> bool:
    if entry.cloud.lower() != query.cloud.lower() or entry.spot != query.spot:
        return False
    if query.instance_type is not None:
        return entry.instance_type == query.instance_type
    wanted = parse_accelerators(query.accelerators)
    return wanted is not None and parse_accelerators(entry.accelerators) == wanted


def _describe(query: PriceQuery) -> str:
    machine = query.instance_type or query.accelerators or "machine"
    where = query.zone or query.region or "unknown place"
    return f"{'spot' if query.spot else 'on-demand'} {machine} on {query.cloud} in {where}"


def dumps(table: PriceTable) -> str:
    """Compact JSON for ``$VOPS_PRICE_TABLE``."""
    return json.dumps(table.model_dump(), separators=(",", ":"))
