"""The budget guard's arithmetic, priced from a run's price table as a node would."""

from __future__ import annotations

import pytest
from cost_helpers import seg

from vicuna_ops.cost.budget import burn_rate, cost_so_far, over_budget
from vicuna_ops.cost.price_table import PriceEntry, PriceTable

TABLE = PriceTable(prices=[
    PriceEntry(cloud="aws", region="us-east-1", zone="us-east-1d", instance_type="p4d.24xlarge",
               spot=True, price_per_hour=2.4655),
    PriceEntry(cloud="aws", region="us-east-1", zone=None, instance_type="p4d.24xlarge",
               spot=False, price_per_hour=21.957642),
])


def test_cost_so_far_sums_segments_once():
    records = [seg("a1", 0, 2, status="preempted", first_step=0, steps=10),
               seg("a2", 3, 4, attempt=2, num_nodes=2, status="running", first_step=8, steps=20)]
    expected = 2 * 2.4655 + 1 * 2 * 2.4655
    assert cost_so_far(records + [records[1]], TABLE) == pytest.approx(expected)


def test_cost_so_far_is_none_when_a_segment_is_unpriced():
    records = [seg("a1", 0, 2), seg("a2", 3, 4, attempt=2, zone="us-east-1c")]
    assert cost_so_far(records, TABLE) is None


def test_no_records_cost_nothing_and_local_is_free():
    assert cost_so_far([], TABLE) == 0.0
    assert cost_so_far([seg("l", 0, 5, cloud="local", zone=None)], TABLE) == 0.0


def test_over_budget_with_lookahead():
    records = [seg("a1", 0, 2, num_nodes=2, status="running")]  # 2h x 2 x 2.4655 = 9.862
    assert over_budget(records, TABLE, 10.0) is False
    assert over_budget(records, TABLE, 9.8) is True
    # one more 5 min heartbeat interval at 4.931 $/h crosses $10
    assert burn_rate(records[0], TABLE) == pytest.approx(4.931)
    assert over_budget(records, TABLE, 10.0, lookahead_hours=5 / 60) is True
    assert over_budget([seg("x", 0, 1, zone="nowhere")], TABLE, 10.0) is None


def test_default_prices_come_from_the_env_table(monkeypatch):
    from vicuna_ops.cost import budget
    from vicuna_ops.cost.price_table import PRICE_TABLE_ENV, dumps

    records = [seg("a1", 0, 2)]
    monkeypatch.setenv(PRICE_TABLE_ENV, dumps(TABLE))
    assert cost_so_far(records) == pytest.approx(2 * 2.4655)
    # a node without the table and without SkyPilot prices nothing: None, not $0
    monkeypatch.delenv(PRICE_TABLE_ENV)
    monkeypatch.setattr(budget.importlib.util, "find_spec", lambda name: None)
    assert cost_so_far(records) is None
    assert cost_so_far([seg("l", 0, 1, cloud="local")]) == 0.0
