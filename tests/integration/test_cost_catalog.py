"""Segments priced through SkyPilot's own catalog functions equal a hand computation from the
rows of tests/data/skypilot-catalog, to the cent."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from vicuna_ops.cost.model import run_cost
from vicuna_ops.cost.price_table import build_price_table
from vicuna_ops.cost.prices import CatalogPrices, PriceQuery
from vicuna_ops.segments import SegmentRecord

T0 = 1_700_000_000.0
HOUR = 3600.0


@pytest.fixture
def catalog(sky_offline, monkeypatch):
    from sky.catalog import aws_catalog

    # aws_catalog caches its zone-mapped table per process: start from the patched mapping
    monkeypatch.setattr(aws_catalog, "_user_df", None)
    return sky_offline.catalog_dir


def rows(catalog_dir: Path, cloud: str) -> list[dict[str, str]]:
    with open(catalog_dir / cloud / "vms.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def aws_price(catalog_dir: Path, instance_type: str, zone: str, spot: bool) -> float:
    with open(catalog_dir / "aws" / "az_mappings-default.csv", newline="") as handle:
        zone_id = {r["AvailabilityZoneName"]: r["AvailabilityZone"]
                   for r in csv.DictReader(handle)}[zone]
    (row,) = [r for r in rows(catalog_dir, "aws")
              if r["InstanceType"] == instance_type and r["AvailabilityZone"] == zone_id]
    return float(row["SpotPrice" if spot else "Price"])


def gcp_price(catalog_dir: Path, instance_type: str, gpu: str, count: int, zone: str,
              spot: bool) -> float:
    table = rows(catalog_dir, "gcp")
    column = "SpotPrice" if spot else "Price"
    (host,) = [r for r in table if r["InstanceType"] == instance_type
               and r["AvailabilityZone"] == zone]
    (gpus,) = [r for r in table if not r["InstanceType"] and r["AcceleratorName"] == gpu
               and float(r["AcceleratorCount"]) == count and r["AvailabilityZone"] == zone]
    return float(host[column]) + float(gpus[column])


def seg(segment_id, start_h, end_h, **fields) -> SegmentRecord:
    values = dict(run_id="run-1", segment_id=segment_id, kind="train", attempt=1,
                  use_spot=True, start=T0 + start_h * HOUR, heartbeat=T0 + end_h * HOUR,
                  status="finished")
    values.update(fields)
    return SegmentRecord(**values)


def test_costs_match_the_catalog_rows_to_the_cent(catalog):
    records = [
        # AWS spot: priced per zone
        seg("a1", 0, 3.25, cloud="aws", region="us-east-1", zone="us-east-1d",
            instance_type="p4d.24xlarge", accelerators="A100:8", status="preempted",
            first_step=0, steps=100),
        # GCP spot, 2 nodes: host VM + the A100 rows, both from the zone
        seg("a2", 3.75, 5.5, attempt=2, cloud="gcp", region="us-central1",
            zone="us-central1-a", instance_type="a2-highgpu-8g", accelerators="A100:8",
            num_nodes=2, first_step=90, steps=200),
        # AWS on demand, a small serving worker
        seg("w1", 0, 10, kind="serve-worker", cloud="aws", region="us-west-2",
            zone="us-west-2b", instance_type="g5.xlarge", accelerators="A10G:1",
            use_spot=False, tokens=2_000_000),
    ]
    run = run_cost("run-1", records, CatalogPrices())
    p4d_spot = aws_price(catalog, "p4d.24xlarge", "us-east-1d", True)
    p4d_od = aws_price(catalog, "p4d.24xlarge", "us-east-1d", False)
    a2_spot = gcp_price(catalog, "a2-highgpu-8g", "A100", 8, "us-central1-a", True)
    a2_od = gcp_price(catalog, "a2-highgpu-8g", "A100", 8, "us-central1-a", False)
    g5_od = aws_price(catalog, "g5.xlarge", "us-west-2b", False)
    assert p4d_spot == 2.4655  # the README's figure: the rows are the ones we think

    by_id = {s.segment_id: s for s in run.segments}
    assert round(by_id["a1"].cost, 2) == round(3.25 * p4d_spot, 2)
    assert round(by_id["a1"].ondemand_cost, 2) == round(3.25 * p4d_od, 2)
    assert round(by_id["a2"].cost, 2) == round(1.75 * 2 * a2_spot, 2)
    assert round(by_id["a2"].ondemand_cost, 2) == round(1.75 * 2 * a2_od, 2)
    assert round(by_id["w1"].cost, 2) == round(10 * g5_od, 2)
    expected = 3.25 * p4d_spot + 1.75 * 2 * a2_spot + 10 * g5_od
    assert round(run.cost, 2) == round(expected, 2)
    assert round(run.saving, 2) == round(3.25 * (p4d_od - p4d_spot)
                                         + 3.5 * (a2_od - a2_spot), 2)
    # attempt 1 ran steps 1-100 in 3.25h; attempt 2 resumed at 91: 10 steps redone
    assert by_id["a1"].redone_steps == 10
    assert round(by_id["a1"].redone_cost, 2) == round(10 * 3.25 / 100 * p4d_spot, 2)
    assert by_id["a1"].gap_hours == pytest.approx(0.5)
    assert round(run.cost_per_1m_generated_tokens, 2) == round(10 * g5_od / 2, 2)


def test_unknown_zone_or_instance_is_unpriced(catalog):
    prices = CatalogPrices()
    missing_zone = prices(PriceQuery("aws", "us-east-1", "us-east-1e", "p4d.24xlarge",
                                     "A100:8", True))  # no p4d in use1-az3
    assert missing_zone.per_hour is None and "us-east-1e" in missing_zone.note
    missing_type = prices(PriceQuery("aws", "us-east-1", "us-east-1d", "p9.huge", None, True))
    assert missing_type.per_hour is None
    no_gpu_rows = prices(PriceQuery("gcp", "us-central1", "us-central1-z", "a2-highgpu-8g",
                                    "A100:8", True))
    assert no_gpu_rows.per_hour is None
    assert prices(PriceQuery("azure-ish", "r", "z", "x", None, True)).per_hour is None
    run = run_cost("run-1", [seg("a", 0, 1, cloud="aws", region="us-east-1",
                                 zone="us-east-1e", instance_type="p4d.24xlarge")], prices)
    assert run.cost is None and run.unpriced_segments == 1 and run.priced_cost == 0.0


def test_missing_instance_type_resolves_to_the_cheapest_offering(catalog):
    price = CatalogPrices()(PriceQuery("aws", "us-east-1", "us-east-1d", None, "A100:8", True))
    assert price.instance_type == "p4d.24xlarge"
    assert price.per_hour == aws_price(catalog, "p4d.24xlarge", "us-east-1d", True)
    assert "not recorded" in price.note and "p4d.24xlarge" in price.note
    gcp = CatalogPrices()(PriceQuery("gcp", "us-central1", "us-central1-a", None, "A100:8",
                                     True))
    assert gcp.instance_type == "a2-highgpu-8g"
    assert gcp.per_hour == pytest.approx(
        gcp_price(catalog, "a2-highgpu-8g", "A100", 8, "us-central1-a", True))


def test_spot_without_a_zone_is_priced_only_when_the_region_agrees(catalog):
    prices = CatalogPrices()
    # us-east-1's zones have p4d spot at 2.47 .. 8.19: no single answer
    aws = prices(PriceQuery("aws", "us-east-1", None, "p4d.24xlarge", None, True))
    assert aws.per_hour is None and "differ" in aws.note
    # GCP prices spot per region
    gcp = prices(PriceQuery("gcp", "us-central1", None, "a2-highgpu-8g", "A100:8", True))
    assert gcp.per_hour == pytest.approx(
        gcp_price(catalog, "a2-highgpu-8g", "A100", 8, "us-central1-b", True))
    on_demand = prices(PriceQuery("aws", "us-east-1", None, "p4d.24xlarge", None, False))
    assert on_demand.per_hour == aws_price(catalog, "p4d.24xlarge", "us-east-1a", False)


def test_launcher_price_table_carries_catalog_prices_to_the_node(catalog):
    places = [PriceQuery("aws", "us-east-1", z, "p4d.24xlarge", "A100:8", True)
              for z in ("us-east-1a", "us-east-1d", "us-east-1e")]
    table, missing = build_price_table(places, CatalogPrices())
    assert len(missing) == 2 and all("us-east-1e" in m for m in missing)  # spot + on-demand
    query = PriceQuery("aws", "us-east-1", "us-east-1a", "p4d.24xlarge", "A100:8", True)
    assert table(query).per_hour == aws_price(catalog, "p4d.24xlarge", "us-east-1a", True)
