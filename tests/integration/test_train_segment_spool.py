"""Segment records survive a bucket outage: a real S3 server (moto) stopped while the
heartbeat writes, then started again on the same port. Every write made during the outage
waits on the node; the newest version reaches the bucket once it is back, and the attempt's
final record with it."""

from __future__ import annotations

import time

import pytest
from fixtures.network import free_port
from fixtures.services import S3_ENV, bucket_name

from vicuna_ops.segments import read_segments
from vicuna_ops.storage import open_store
from vicuna_ops.train.heartbeat import SegmentHeartbeat

pytestmark = pytest.mark.slow


def test_records_written_during_an_outage_reach_the_bucket_when_it_is_back(tmp_path,
                                                                           monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    # in-process: the buckets live in this process's moto backend, so they outlast a
    # stopped server, as a real bucket outlasts a network outage
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        import boto3

        name = bucket_name()
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=name)
        store = open_store(f"s3://{name}").child("run-1")
        logs: list[str] = []
        beat = SegmentHeartbeat(store, "run-1", attempt=1, first_step=0, interval_s=0.2,
                                log=logs.append, spool_dir=tmp_path / "spool", drain_s=20)
        beat.start()
        beat.update(steps=1, tokens=10, epoch=0.0)
        time.sleep(0.5)

        server.stop()  # the bucket is unreachable: connection refused
        for step in range(2, 6):
            beat.update(steps=step, tokens=10 * step, epoch=0.0)
            time.sleep(0.4)
        assert beat.write_failures >= 2 and beat.spooled == 1
        assert any("kept on this node" in line for line in logs)

        server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port,
                                                verbose=False)
        server.start()
        deadline = time.monotonic() + 30
        while beat.spooled and time.monotonic() < deadline:
            time.sleep(0.1)
        assert beat.spooled == 0  # written by a later beat, not lost
        (live,), _ = read_segments(store)
        assert live.steps == 5

        beat.update(steps=6, tokens=60, epoch=0.0)
        done = beat.finish("finished")
        (stored,), problems = read_segments(store)
        assert not problems
        assert (stored.steps, stored.tokens, stored.status) == (6, 60, "finished")
        assert stored.heartbeat == done.heartbeat
        assert not list((tmp_path / "spool").glob("*.json"))
    finally:
        server.stop()
