"""Helpers for the cost tests: segment records and a price function from a dict."""

from __future__ import annotations

from vicuna_ops.cost.prices import Price, PriceQuery, unpriced
from vicuna_ops.segments import SegmentRecord

T0 = 1_700_000_000.0  # a fixed start time
HOUR = 3600.0


def seg(segment_id: str, start_h: float, end_h: float, **fields) -> SegmentRecord:
    """A segment from start_h to end_h hours after T0 (training, AWS spot p4d by default)."""
    values = dict(run_id="run-1", segment_id=segment_id, kind="train", attempt=1, cloud="aws",
                  region="us-east-1", zone="us-east-1d", instance_type="p4d.24xlarge",
                  accelerators="A100:8", use_spot=True, num_nodes=1, start=T0 + start_h * HOUR,
                  heartbeat=T0 + end_h * HOUR, status="finished")
    values.update(fields)
    return SegmentRecord(**values)


class DictPrices:
    """(zone, instance_type, spot) -> $/h; anything else is unpriced. Counts calls."""

    def __init__(self, table: dict[tuple[str, str, bool], float]) -> None:
        self.table = table
        self.calls: list[PriceQuery] = []

    def __call__(self, query: PriceQuery) -> Price:
        self.calls.append(query)
        key = (query.zone, query.instance_type, query.spot)
        if key in self.table:
            return Price(self.table[key], query.instance_type, "catalog")
        return unpriced(f"no price for {key}")
