"""The run lease on every store (file, moto S3, GCS emulator): conditional writes, and real
processes racing for one run's lease - a fresh one and an expired one - with exactly one
winner each time."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from vicuna_ops.storage import open_store
from vicuna_ops.train.lease import LEASE_KEY, LeaseHeld, LeaseRecord, RunLease

ROUNDS = 6
RACERS = 3

RACER = r"""
import json, sys, time
from vicuna_ops.storage import open_store
from vicuna_ops.train.lease import LeaseHeld, RunLease
uri, start, rounds = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
for r in range(rounds):
    lease = RunLease(open_store(uri).child(f"round-{r}"), attempt=1, ttl_s=60)
    time.sleep(max(0.0, start + r * 1.0 - time.time()))
    try:
        lease.acquire(wait_s=0)
        print(json.dumps({"round": r, "won": True}), flush=True)
    except LeaseHeld as exc:
        print(json.dumps({"round": r, "won": False, "error": exc.one_line()}), flush=True)
sys.stdin.read()  # hold every lease until the test has seen all answers
"""


def test_conditional_writes(any_bucket):
    store = open_store(any_bucket).child("run")
    assert store.read_versioned("k") is None
    first = store.put_if_absent("k", b"one")
    assert first and store.put_if_absent("k", b"two") is None
    assert store.get_bytes("k") == b"one"
    current = store.read_versioned("k")
    assert current.data == b"one" and current.version == first
    second = store.put_if_version("k", b"three", first)
    assert second and second != first
    assert store.put_if_version("k", b"four", first) is None  # stale version: refused
    assert store.get_bytes("k") == b"three"
    assert not store.delete_if_version("k", first)
    assert store.delete_if_version("k", second) and not store.exists("k")
    assert store.put_if_version("gone", b"x", second) is None
    assert [i.key for i in store.list()] == []  # the local lock file is never listed


def _race(uri: str, rounds: int) -> list[list[dict]]:
    start = time.time() + 4  # every racer has imported its storage client by then
    procs = [subprocess.Popen([sys.executable, "-c", RACER, uri, str(start), str(rounds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(RACERS)]
    try:
        answers = [[json.loads(p.stdout.readline()) for _ in range(rounds)] for p in procs]
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.wait(timeout=30)
    return [[answers[p][r] for p in range(RACERS)] for r in range(rounds)]


def test_racing_processes_exactly_one_wins(any_bucket):
    store = open_store(any_bucket)
    now = time.time()
    for r in range(ROUNDS // 2, ROUNDS):  # these rounds race to take over an expired lease
        stale = LeaseRecord("gone-1", "elsewhere", 4242, 1, now - 100, now - 50)
        store.child(f"round-{r}").put_bytes(LEASE_KEY, stale.to_json())
    for r, answers in enumerate(_race(any_bucket, ROUNDS)):
        winners = [a for a in answers if a["won"]]
        assert len(winners) == 1, (r, answers)
        for loser in (a for a in answers if not a["won"]):
            assert "is being trained by host" in loser["error"] and " pid " in loser["error"]
        holder = LeaseRecord.parse(store.child(f"round-{r}").get_bytes(LEASE_KEY))
        assert holder.host != "elsewhere"


def test_renew_release_and_takeover_after_expiry(any_bucket):
    store = open_store(any_bucket).child("run")
    clock = [1000.0]
    logs: list[str] = []
    first = RunLease(store, attempt=1, ttl_s=30, clock=lambda: clock[0])
    first.acquire(wait_s=0)
    clock[0] += 20
    assert first.renew()
    assert LeaseRecord.parse(store.get_bytes(LEASE_KEY)).expires == 1050.0
    clock[0] += 40  # expired: another host's trainer may take it
    second = RunLease(store, attempt=2, ttl_s=30, clock=lambda: clock[0], log=logs.append)
    second._host = "other-host"  # as if on another node
    second.acquire(wait_s=0)
    assert "took over the run lease" in logs[0] and "expired 10s ago" in logs[0]
    assert not first.renew()  # the old holder learns it lost, and must stop writing
    first.release()  # does not delete the new holder's lease
    assert LeaseRecord.parse(store.get_bytes(LEASE_KEY)).attempt == 2
    second.release()
    assert not store.exists(LEASE_KEY)


def test_a_live_holder_elsewhere_is_waited_for_then_refused(any_bucket):
    store = open_store(any_bucket).child("run")
    clock = [1000.0]
    slept: list[float] = []
    logs: list[str] = []
    live = LeaseRecord("h", "node-7", 99, 3, 990.0, 1020.0)
    store.put_bytes(LEASE_KEY, live.to_json())

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds
        store.put_bytes(LEASE_KEY, LeaseRecord("h", "node-7", 99, 3, 990.0,
                                               clock[0] + 30).to_json())  # it keeps renewing

    lease = RunLease(store, attempt=4, ttl_s=30, clock=lambda: clock[0], sleep=sleep,
                     log=logs.append)
    with pytest.raises(LeaseHeld) as caught:
        lease.acquire(wait_s=5)
    assert "host node-7 pid 99 (attempt 3, since" in caught.value.message
    assert sum(slept) >= 5 and "waiting for the run lease" in logs[0]
