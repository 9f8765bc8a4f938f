"""The run's price table (prices.json): lookups, the file format, loading on a node."""

from __future__ import annotations

import json

import pytest

from vicuna_ops.cost.price_table import (
    PRICE_TABLE_ENV,
    PriceEntry,
    PriceTable,
    build_price_table,
    dumps,
    load_price_table,
    parse_price_table,
    price_table_for_node,
    write_price_table,
)
from vicuna_ops.cost.prices import PriceQuery
from vicuna_ops.errors import UserError

TABLE = PriceTable(created=1.0, prices=[
    PriceEntry(cloud="aws", region="us-east-1", zone="us-east-1d", instance_type="p4d.24xlarge",
               accelerators="A100:8", spot=True, price_per_hour=2.4655),
    PriceEntry(cloud="aws", region="us-east-1", zone="us-east-1a", instance_type="p4d.24xlarge",
               accelerators="A100:8", spot=True, price_per_hour=8.1915),
    PriceEntry(cloud="aws", region="us-east-1", zone=None, instance_type="p4d.24xlarge",
               accelerators="A100:8", spot=False, price_per_hour=21.957642),
    PriceEntry(cloud="gcp", region="us-central1", zone="us-central1-a",
               instance_type="a2-highgpu-8g", accelerators="A100:8", spot=True,
               price_per_hour=14.4308),
    PriceEntry(cloud="gcp", region="us-central1", zone="us-central1-b",
               instance_type="a2-highgpu-8g", accelerators="A100:8", spot=True,
               price_per_hour=14.4308),
])


def q(zone, spot=True, region="us-east-1", cloud="aws", instance_type="p4d.24xlarge",
      accelerators="A100:8"):
    return PriceQuery(cloud, region, zone, instance_type, accelerators, spot)


def test_exact_zone():
    price = TABLE(q("us-east-1a"))
    assert price.per_hour == 8.1915 and price.source == "price-table"


def test_region_wide_on_demand_entry_prices_every_zone():
    assert TABLE(q("us-east-1c", spot=False)).per_hour == 21.957642


def test_missing_zone_is_unpriced_not_zero():
    price = TABLE(q("us-east-1c"))
    assert price.per_hour is None and "no spot p4d.24xlarge" in price.note


def test_no_zone_recorded_prices_only_when_the_region_agrees():
    assert TABLE(q(None)).per_hour is None  # 2.4655 vs 8.1915
    gcp = q(None, cloud="gcp", region="us-central1", instance_type="a2-highgpu-8g")
    assert TABLE(gcp).per_hour == 14.4308


def test_accelerators_only_query_matches_by_accelerators():
    price = TABLE(q("us-east-1d", instance_type=None))
    assert price.per_hour == 2.4655 and price.instance_type == "p4d.24xlarge"
    assert "not recorded" in price.note


def test_other_cloud_or_machine_is_unpriced():
    assert not TABLE(q("us-east-1d", cloud="gcp")).priced
    assert not TABLE(q("us-east-1d", instance_type="g5.xlarge")).priced


def test_round_trip_through_a_store(tmp_path):
    from vicuna_ops.storage import open_store

    store = open_store(str(tmp_path / "bucket")).child("run-1")
    assert load_price_table(store) is None
    write_price_table(store, TABLE)
    assert load_price_table(store) == TABLE
    raw = json.loads((tmp_path / "bucket" / "run-1" / "prices.json").read_text())
    assert raw["version"] == 1 and raw["prices"][0]["price_per_hour"] == 2.4655


def test_bad_file_is_a_user_error_naming_it():
    with pytest.raises(UserError, match="not a valid price table"):
        parse_price_table('{"version": 1, "prices": [{"cloud": "aws"}]}', "prices.json")
    with pytest.raises(UserError):
        parse_price_table('{"version": 1, "prices": [], "typo": 1}')
    negative = {"version": 1, "prices": [{"cloud": "aws", "spot": True, "price_per_hour": -1}]}
    with pytest.raises(UserError):
        parse_price_table(json.dumps(negative))


def test_node_reads_the_env_var_first(monkeypatch, tmp_path):
    monkeypatch.setenv(PRICE_TABLE_ENV, dumps(TABLE))
    assert price_table_for_node(None) == TABLE
    path = tmp_path / "t.json"
    path.write_text(TABLE.to_json())
    monkeypatch.setenv(PRICE_TABLE_ENV, str(path))
    assert price_table_for_node(None) == TABLE
    monkeypatch.setenv(PRICE_TABLE_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(UserError, match="cannot be read"):
        price_table_for_node(None)
    monkeypatch.delenv(PRICE_TABLE_ENV)
    assert price_table_for_node(None) is None


def test_build_price_table_prices_spot_and_on_demand_and_lists_the_missing():
    source = TABLE  # any price function
    places = [q("us-east-1d"), q("us-east-1e")]
    table, missing = build_price_table(places, source, created=5.0)
    got = {(e.zone, e.spot): e.price_per_hour for e in table.prices}
    assert got == {("us-east-1d", True): 2.4655, ("us-east-1d", False): 21.957642,
                   ("us-east-1e", False): 21.957642}
    assert len(missing) == 1 and "us-east-1e" in missing[0]
    assert table.created == 5.0
    assert table(q("us-east-1d")).per_hour == 2.4655


def test_table_from_the_launchers_candidates():
    from vicuna_ops.cost.price_table import table_from_candidates
    from vicuna_ops.launch.candidates import Candidate

    candidates = [Candidate("aws", "us-east-1", "us-east-1d", "p4d.24xlarge", 2.4655, 21.957642),
                  Candidate("aws", "us-east-1", "us-east-1e", "p4d.24xlarge", None, 21.957642)]
    table = table_from_candidates(candidates, "A100:8", created=3.0)
    assert len(table.prices) == 3
    assert table(q("us-east-1d")).per_hour == 2.4655
    assert table(q("us-east-1e", spot=False)).per_hour == 21.957642
    assert not table(q("us-east-1e")).priced  # no spot price: unpriced, not free
    assert parse_price_table(table.to_json()) == table
