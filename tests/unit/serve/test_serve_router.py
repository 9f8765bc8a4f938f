"""Least-in-flight routing and leases counted by the controller."""

from __future__ import annotations

import gc
import random
from collections import Counter

from vicuna_ops.serve import router
from vicuna_ops.serve.registry import Worker


def _worker(worker_id: str, in_flight=0, concurrency=1, models=("m",), **kw) -> Worker:
    return Worker(worker_id=worker_id, url="http://x:1", models=frozenset(models),
                  max_concurrency=concurrency, in_flight=in_flight, **kw)


def test_the_least_loaded_worker_wins():
    workers = [_worker("a", 3), _worker("b", 1), _worker("c", 2)]
    assert router.choose(workers, "m", now=0).worker_id == "b"


def test_load_is_relative_to_capacity():
    workers = [_worker("big", 6, concurrency=8), _worker("small", 1, concurrency=1)]
    assert router.choose(workers, "m", now=0).worker_id == "big"


def test_ties_are_shared_evenly():
    workers = [_worker("a"), _worker("b"), _worker("c")]
    rng = random.Random(0)
    picks = Counter(router.choose(workers, "m", now=0, rng=rng).worker_id for _ in range(3000))
    assert all(900 < count < 1100 for count in picks.values())


def test_excluded_draining_suspect_and_other_model_workers_are_skipped():
    workers = [_worker("tried"), _worker("draining", state="draining"),
               _worker("suspect", down_until=10.0), _worker("other", models=("x",)),
               _worker("ok", in_flight=5)]
    assert router.choose(workers, "m", now=5.0, exclude={"tried"}).worker_id == "ok"
    assert router.choose(workers, "m", now=11.0, exclude={"tried", "ok"}).worker_id == "suspect"
    assert router.choose(workers[:4], "m", now=5.0, exclude={"tried"}) is None


def test_a_burst_spreads_because_leases_count_at_once():
    workers = [_worker("a"), _worker("b")]
    leases = [router.Lease(router.choose(workers, "m", now=0)) for _ in range(10)]
    assert sorted(w.in_flight for w in workers) == [5, 5]
    for lease in leases:
        lease.release()
        lease.release()  # idempotent
    assert [w.in_flight for w in workers] == [0, 0]


def test_a_lease_bound_to_a_dropped_object_is_released():
    worker = _worker("a")
    lease = router.Lease(worker)

    class Body:
        pass

    body = Body()
    lease.bind(body)
    assert worker.in_flight == 1
    del body
    gc.collect()
    assert lease.released and worker.in_flight == 0
