"""The SQLite-backed worker registry: write-through, reload, expiry on a fake clock."""

from __future__ import annotations

import pytest

from vicuna_ops.errors import ServeError
from vicuna_ops.serve.protocol import WorkerInfo
from vicuna_ops.serve.registry import Registry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _info(worker_id: str, models=("m",), concurrency=2) -> WorkerInfo:
    return WorkerInfo(worker_id=worker_id, url=f"http://127.0.0.1:{9000 + sum(map(ord, worker_id))}",
                      models=list(models), max_concurrency=concurrency,
                      identity={"cloud": "aws", "zone": "us-east-1a"})


def test_register_heartbeat_drain_and_reload(tmp_path):
    clock = Clock()
    registry = Registry(tmp_path / "r.db", heartbeat_interval=1.0, clock=clock)
    registry.register(_info("a"))
    registry.register(_info("bb", models=("m", "n")))
    registry.drain("bb")
    assert registry.models() == ["m", "n"]
    assert registry.heartbeat("a", in_flight=3)
    assert not registry.heartbeat("ghost", in_flight=0)
    registry.close()

    clock.now += 500  # the controller was down a long time
    reloaded = Registry(tmp_path / "r.db", heartbeat_interval=1.0, clock=clock)
    workers = {w.worker_id: w for w in reloaded.workers()}
    assert set(workers) == {"a", "bb"}
    assert workers["bb"].state == "draining"
    assert workers["a"].identity == {"cloud": "aws", "zone": "us-east-1a"}
    assert workers["a"].max_concurrency == 2
    # reloaded workers get a fresh expiry window: the controller, not they, was away
    assert reloaded.expire() == []


def test_expiry_drops_silent_workers_within_three_intervals(tmp_path):
    clock = Clock()
    registry = Registry(tmp_path / "r.db", heartbeat_interval=2.0, clock=clock)
    registry.register(_info("a"))
    registry.register(_info("b"))
    clock.now += 4.9
    registry.heartbeat("b", 0)
    assert registry.expire() == []
    clock.now += 0.2  # a: 5.1 s silent > 2.5 intervals
    assert registry.expire() == ["a"]
    assert [w.worker_id for w in registry.workers()] == ["b"]
    registry.close()
    assert [w.worker_id for w in Registry(tmp_path / "r.db", heartbeat_interval=2.0).workers()] == ["b"]


def test_reregistering_keeps_the_controllers_in_flight_count(tmp_path):
    registry = Registry(tmp_path / "r.db", heartbeat_interval=1.0)
    registry.register(_info("a")).in_flight = 3
    registry.drain("a")
    worker = registry.register(_info("a"))
    assert worker.in_flight == 3
    assert worker.state == "live"


def test_mark_down_lasts_until_the_next_heartbeat(tmp_path):
    clock = Clock()
    registry = Registry(tmp_path / "r.db", heartbeat_interval=1.0, clock=clock)
    registry.register(_info("a"))
    registry.mark_down("a", 10.0)
    assert registry.get("a").down_until == clock.now + 10
    registry.heartbeat("a", 0)
    assert registry.get("a").down_until == 0.0


def test_an_unwritable_registry_is_a_serve_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ServeError, match="registry"):
        Registry(blocker / "r.db", heartbeat_interval=1.0)


def test_a_new_worker_at_an_old_address_replaces_it(tmp_path):
    registry = Registry(tmp_path / "r.db", heartbeat_interval=1.0)
    registry.register(WorkerInfo(worker_id="old", url="http://10.0.0.1:8001", models=["m"]))
    registry.register(WorkerInfo(worker_id="new", url="http://10.0.0.1:8001", models=["m"]))
    assert [w.worker_id for w in registry.workers()] == ["new"]


def test_known_models_outlive_their_workers_and_a_reload(tmp_path):
    clock = Clock()
    registry = Registry(tmp_path / "r.db", heartbeat_interval=1.0, clock=clock)
    registry.remember({"configured"})
    registry.register(_info("a", models=("m",)))
    assert registry.models() == ["m"] and registry.known_models() == ["configured", "m"]
    clock.now += 10
    assert registry.expire() == ["a"]
    assert registry.models() == [] and registry.known_models() == ["configured", "m"]
    registry.close()
    reloaded = Registry(tmp_path / "r.db", heartbeat_interval=1.0, clock=clock)
    assert reloaded.workers() == [] and reloaded.known_models() == ["configured", "m"]
