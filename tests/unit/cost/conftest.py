"""Fixtures for the cost unit tests."""

from __future__ import annotations

import pytest
from cost_helpers import DictPrices


@pytest.fixture
def prices() -> DictPrices:
    return DictPrices({
        ("us-east-1d", "p4d.24xlarge", True): 2.4655,
        ("us-east-1d", "p4d.24xlarge", False): 21.957642,
        ("us-east-1a", "p4d.24xlarge", True): 8.1915,
        ("us-east-1a", "p4d.24xlarge", False): 21.957642,
        ("us-west-2a", "g5.xlarge", True): 0.4857,
        ("us-west-2a", "g5.xlarge", False): 1.006,
    })
