"""Pricing a long run: vops' cost model against asking SkyPilot's catalog per segment.

A serving deployment that ran for weeks leaves thousands of segments (one per worker
process, rewritten each minute). The baseline, measured in the same process on the same
records, prices each segment the plain way: ``sky.catalog.get_hourly_cost`` (spot and
on-demand) for every record. vops memoizes per (cloud, zone, instance, spot) and adds the
whole model (dedup, interruption losses, totals, the cumulative curve).

Uses the offline catalog subset in tests/data/skypilot-catalog, copied to a temp HOME.

    python bench/cost_report.py [SEGMENTS]
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from fixtures.isolation import enter_session_home, leave_session_home, session_catalog_dir  # noqa: E402

ZONES = [("us-east-1", "us-east-1a"), ("us-east-1", "us-east-1b"), ("us-east-1", "us-east-1d"),
         ("us-west-2", "us-west-2a"), ("us-west-2", "us-west-2b")]


def records(n: int):
    from vicuna_ops.segments import SegmentRecord

    rng = random.Random(0)
    out, t = [], 1_700_000_000.0
    for i in range(n):
        region, zone = rng.choice(ZONES)
        start = t + rng.uniform(0, 3600 * 24 * 14)
        out.append(SegmentRecord(
            run_id="bench", segment_id=f"serve-worker-{i}", kind="serve-worker", cloud="aws",
            region=region, zone=zone, instance_type="g5.xlarge", accelerators="A10G:1",
            use_spot=True, start=start, heartbeat=start + rng.uniform(600, 36000),
            status=rng.choice(["finished", "preempted"]), tokens=rng.randint(0, 10**7)))
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    home = enter_session_home(REPO)
    try:
        import pytest

        from fixtures.skypilot import apply_offline_patches

        patcher = pytest.MonkeyPatch()
        apply_offline_patches(patcher, session_catalog_dir(home))
        from sky import catalog

        from vicuna_ops.cost.model import cumulative_cost, run_cost
        from vicuna_ops.cost.prices import CatalogPrices

        segs = records(n)
        catalog.get_hourly_cost("g5.xlarge", True, None, "us-east-1a", clouds="aws")  # warm

        start = time.perf_counter()
        baseline_total = 0.0
        for r in segs:
            spot = catalog.get_hourly_cost(r.instance_type, True, r.region, r.zone, clouds="aws")
            catalog.get_hourly_cost(r.instance_type, False, r.region, r.zone, clouds="aws")
            baseline_total += spot * r.hours
        baseline = time.perf_counter() - start

        start = time.perf_counter()
        run = run_cost("bench", segs, CatalogPrices())
        curve = cumulative_cost(run.segments)
        vops = time.perf_counter() - start
        patcher.undo()
    finally:
        leave_session_home(home)
    assert abs(run.cost - baseline_total) < 1e-6 * max(1.0, baseline_total), (run.cost,
                                                                               baseline_total)
    print(f"segments                          {n}")
    print(f"baseline: catalog per segment     {baseline * 1000:8.1f} ms")
    print(f"vops: model + curve ({len(curve)} points) {vops * 1000:8.1f} ms")
    print(f"vops / baseline = {vops / baseline:.3f} (same total ${run.cost:,.2f})")


if __name__ == "__main__":
    main()
