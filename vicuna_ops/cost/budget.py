"""The budget guard's arithmetic, for ``vops train --max-cost USD``.

The training runtime calls ``cost_so_far`` at each heartbeat with every segment record of
its run (its own current one included), and stops cleanly once the answer reaches the limit.
It runs on the training node, where SkyPilot is not installed: prices come from the run's
price table that the launcher wrote (see ``price_table``), passed in as ``prices``; left out,
the table in ``$VOPS_PRICE_TABLE`` is used, else SkyPilot's catalog where it is installed
(a local run with sky around), else nothing is priced.

``None`` means "cannot tell": a segment is unpriced (the table lacks its zone). The guard
must not treat that as $0.
"""

from __future__ import annotations

import importlib.util
import os

from vicuna_ops.cost.model import run_cost
from vicuna_ops.cost.price_table import PRICE_TABLE_ENV, price_table_for_node
from vicuna_ops.cost.prices import CatalogPrices, Price, PriceFn, PriceQuery, unpriced
from vicuna_ops.segments import SegmentRecord

_default: tuple[str, PriceFn] | None = None  # (the env value it was built from, prices)


def cost_so_far(records: list[SegmentRecord], prices: PriceFn | None = None) -> float | None:
    """The run's cost so far in USD, each segment counted once; None if any is unpriced.

    ``prices`` is a PriceTable (it is callable) or any PriceQuery -> Price function; see the
    module docstring for the default. Raises UserError if ``$VOPS_PRICE_TABLE`` is invalid."""
    if not records:
        return 0.0
    return run_cost(records[0].run_id, records, prices or node_prices()).cost


def node_prices() -> PriceFn:
    """The default price function on this machine (built once per ``$VOPS_PRICE_TABLE``)."""
    global _default
    key = os.environ.get(PRICE_TABLE_ENV, "")
    if _default is None or _default[0] != key:
        table = price_table_for_node(None)
        if table is not None:
            _default = (key, table)
        elif importlib.util.find_spec("sky") is not None:
            _default = (key, CatalogPrices())
        else:
            _default = (key, _nothing_priced)
    return _default[1]


def _nothing_priced(query: PriceQuery) -> Price:
    return unpriced(f"no price table (${PRICE_TABLE_ENV} or prices.json) and no SkyPilot")


def burn_rate(record: SegmentRecord, prices: PriceFn) -> float | None:
    """What the given segment costs per hour, all its nodes; None if unpriced. Lets the
    guard stop *before* the next heartbeat interval crosses the limit."""
    if record.cloud == "local":
        return 0.0
    price = prices(PriceQuery.of(record))
    return None if price.per_hour is None else price.per_hour * record.num_nodes


def over_budget(records: list[SegmentRecord], prices: PriceFn, max_cost: float,
                lookahead_hours: float = 0.0) -> bool | None:
    """True when the cost so far, plus ``lookahead_hours`` of the newest segment's burn
    rate (e.g. one heartbeat interval), reaches ``max_cost``; None when it cannot tell."""
    spent = cost_so_far(records, prices)
    if spent is None:
        return None
    ahead = 0.0
    if lookahead_hours > 0 and records:
        rate = burn_rate(max(records, key=lambda r: r.heartbeat), prices)
        if rate is None:
            return None
        ahead = rate * lookahead_hours
    return spent + ahead >= max_cost


# What a stop costs after it is requested, beyond the checkpoint itself: the final segment
# write, the lease release and the process exit.
EXIT_S = 5.0
# A stop is requested at a step boundary, and the guard looks at the clock once per step.
STEPS_AHEAD = 2


def stop_reserve_s(checkpoint_s: float, step_s: float) -> float:
    """Seconds between "budget: stop" and the attempt's last billed second: the step in
    progress (and one more for the check itself), the final checkpoint's save and upload,
    and the exit."""
    return STEPS_AHEAD * max(0.0, step_s) + max(0.0, checkpoint_s) + EXIT_S


def stop_deadline(spent: float, rate_per_hour: float, max_cost: float, now: float,
                  reserve_s: float) -> float:
    """The unix time by which a stop must be requested so that the run, its final checkpoint
    included, ends within ``max_cost``: when the money left at ``rate_per_hour`` runs out,
    less ``reserve_s``. Already past (<= now) when the money left does not cover the
    reserve; infinite for a free segment."""
    if rate_per_hour <= 0:
        return float("inf")
    return now + (max_cost - spent) / rate_per_hour * 3600 - reserve_s
