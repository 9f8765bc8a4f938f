"""What the controller costs, and what it saves: a benchmark on loopback with stub workers.

    .venv/bin/python bench/serve_proxy.py [--quick] [--json] [--controller-cpus 0,1]

Three stub workers (fixed tokens at a fixed rate, no model) and a controller run as real
uvicorn processes (``vicuna_ops.serve.local.LocalServing``). Measured, each against its
baseline in the same run:

1. latency the controller adds: the same request sent directly to a worker and through the
   controller, alternately, one at a time; p50 and p99 of time to first token and time to
   the last byte, in ms and as a ratio;
2. requests per second through the controller at 32 concurrent clients, against the same
   load sent directly to the workers (round-robin) -- the proxy's ceiling on this machine;
3. chaos: 32 concurrent streaming clients while one of the three workers is SIGKILLed every
   5 s and started again 2.5 s later (so 2 or 3 are up): requests that failed or came back
   with a wrong text (target 0), and how many streams were resumed mid-way.

On a shared 2-core machine the load generator, the workers and the controller compete for
the same cores; ``--controller-cpus`` pins the controller (``sched_setaffinity``) where
there are cores to spare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vicuna_ops.serve.local import LocalPlan, LocalServing  # noqa: E402

TOKENS = 16


def expected(tokens: int) -> str:
    return "".join(f" t{i}" for i in range(tokens))


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(state: Path, rate: float, tokens: int, cpus: set[int] | None) -> LocalServing:
    plan = LocalPlan(model=None, backend="stub", port=_port(), workers=3,
                     heartbeat_interval=1.0, state_dir=state, stub_tokens=tokens,
                     stub_rate=rate, max_concurrency=256, start_timeout=60, grace=5,
                     worker_args=("--max-queue", "4096"))
    serving = LocalServing(plan)
    serving.start()
    if cpus:
        os.sched_setaffinity(serving.controller.process.pid, cpus)
    return serving


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _stream(client: httpx.AsyncClient, url: str, headers: dict) -> tuple[float, float, str]:
    """(time to first token, time to last byte, text) of one streamed completion."""
    started = time.perf_counter()
    first = None
    text = []
    async with client.stream("POST", url + "/v1/completions", headers=headers, json={
            "model": "stub", "prompt": "bench", "max_tokens": 64, "stream": True}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"status {response.status_code}")
        done = False
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(event["error"]["message"])
            piece = event["choices"][0]["text"] if event["choices"] else ""
            if piece and first is None:
                first = time.perf_counter() - started
            text.append(piece)
        if not done:
            raise RuntimeError("stream ended without [DONE]")
    return first or 0.0, time.perf_counter() - started, "".join(text)


async def _plain(client: httpx.AsyncClient, url: str, headers: dict) -> str:
    response = await client.post(url + "/v1/completions", headers=headers, json={
        "model": "stub", "prompt": "bench", "max_tokens": 64})
    if response.status_code != 200:
        raise RuntimeError(f"status {response.status_code}")
    return response.json()["choices"][0]["text"]


async def latency(serving: LocalServing, rounds: int) -> dict:
    worker = serving.worker_url(serving.workers[0])
    direct_headers = {"authorization": f"Bearer {serving.token}"}
    series = {"direct": ([], []), "controller": ([], [])}
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(20):  # warm both paths' connection pools
            await _stream(client, worker, direct_headers)
            await _stream(client, serving.url, {})
        for _ in range(rounds):
            for name, url, headers in (("direct", worker, direct_headers),
                                       ("controller", serving.url, {})):
                first, total, _text = await _stream(client, url, headers)
                series[name][0].append(first)
                series[name][1].append(total)
    out = {}
    for label, index in (("first_token", 0), ("last_byte", 1)):
        direct, via = series["direct"][index], series["controller"][index]
        row = {}
        for q, key in ((0.5, "p50"), (0.99, "p99")):
            d, c = _pct(direct, q) * 1000, _pct(via, q) * 1000
            row[key] = {"direct_ms": round(d, 3), "controller_ms": round(c, 3),
                        "added_ms": round(c - d, 3), "ratio": round(c / d, 3)}
        out[label] = row
    return out


async def throughput(serving: LocalServing, seconds: float, clients: int) -> dict:
    """Alternating rounds, direct then through the controller, so both see the same
    neighbours on a shared machine; plus the CPU the controller spends per request, which
    does not depend on how busy the machine is."""
    import psutil

    workers = [serving.worker_url(w) for w in serving.workers]
    direct_headers = {"authorization": f"Bearer {serving.token}"}
    want = expected(TOKENS)
    controller = psutil.Process(serving.controller.process.pid)
    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients * 2)

    async def run(client: httpx.AsyncClient, targets: list[tuple[str, dict]], span: float
                  ) -> tuple[int, float, int]:
        done = errors = 0
        stop = time.perf_counter() + span

        async def client_loop(index: int) -> None:
            nonlocal done, errors
            url, headers = targets[index % len(targets)]
            while time.perf_counter() < stop:
                try:
                    ok = await _plain(client, url, headers) == want
                except Exception:
                    ok = False
                done += ok
                errors += not ok

        started = time.perf_counter()
        await asyncio.gather(*(client_loop(i) for i in range(clients)))
        return done, time.perf_counter() - started, errors

    totals = {"direct": [0, 0.0], "controller": [0, 0.0]}
    errors = 0
    cpu = 0.0
    rounds = 3
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await run(client, [(serving.url, {})], 0.5)  # warm up
        for _ in range(rounds):
            done, took, bad = await run(client, [(w, direct_headers) for w in workers],
                                        seconds / rounds)
            totals["direct"][0] += done
            totals["direct"][1] += took
            errors += bad
            before = sum(controller.cpu_times()[:2])
            done, took, bad = await run(client, [(serving.url, {})], seconds / rounds)
            cpu += sum(controller.cpu_times()[:2]) - before
            totals["controller"][0] += done
            totals["controller"][1] += took
            errors += bad
    direct_rps = totals["direct"][0] / totals["direct"][1]
    via_rps = totals["controller"][0] / totals["controller"][1]
    cpu_ms = 1000 * cpu / max(1, totals["controller"][0])
    return {"clients": clients, "direct_rps": round(direct_rps, 1),
            "controller_rps": round(via_rps, 1), "ratio": round(via_rps / direct_rps, 3),
            "controller_cpu_ms_per_request": round(cpu_ms, 3),
            "controller_capacity_rps_per_core": round(1000 / cpu_ms, 1) if cpu_ms else None,
            "errors": errors}


async def chaos(serving: LocalServing, seconds: float, clients: int, tokens: int) -> dict:
    want = expected(tokens)
    stop_at = time.perf_counter() + seconds
    results = {"ok": 0, "failed": 0, "wrong": 0}
    kills = 0
    errors: list[str] = []

    async def client_loop(client: httpx.AsyncClient, index: int) -> None:
        while time.perf_counter() < stop_at:
            try:
                if index % 4 == 3:
                    text = await _plain(client, serving.url, {})
                else:
                    _first, _total, text = await _stream(client, serving.url, {})
            except Exception as exc:
                results["failed"] += 1
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            results["ok" if text == want else "wrong"] += 1

    async def killer() -> None:
        nonlocal kills
        victim = 0
        while time.perf_counter() + 5 < stop_at:
            await asyncio.sleep(5.0)
            child = serving.workers[victim % len(serving.workers)]
            child.process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(child.process.wait)
            kills += 1
            await asyncio.sleep(2.5)  # 2 of 3 up meanwhile
            serving.restart(child)
            victim += 1

    limits = httpx.Limits(max_connections=clients * 2, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        await asyncio.gather(killer(), *(client_loop(client, i) for i in range(clients)))
    metrics = httpx.get(serving.url + "/metrics").text

    def metric(name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith(name))

    return {"clients": clients, "seconds": seconds, "kills": kills, **results,
            "resumed_streams": int(metric("vops_stream_resumes_total")),
            "retried_requests": int(metric("vops_retries_total")),
            "first_errors": errors[:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Shorter phases.")
    parser.add_argument("--json", action="store_true", help="Print one JSON object.")
    parser.add_argument("--controller-cpus", help="Pin the controller, e.g. 0,1.")
    args = parser.parse_args()
    cpus = {int(c) for c in args.controller_cpus.split(",")} if args.controller_cpus else None
    quick = args.quick
    report: dict = {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("VOPS_HOME", tmp)
        # 1-2: 16 tokens at 1000 tok/s (16 ms of generation per request)
        serving = _start(Path(tmp) / "a", rate=1000.0, tokens=TOKENS, cpus=cpus)
        try:
            report["latency"] = asyncio.run(latency(serving, 100 if quick else 400))
            report["throughput"] = asyncio.run(throughput(serving, 4 if quick else 10, 32))
        finally:
            serving.stop()
        # 3: 32 tokens at 50 tok/s: 0.64 s streams, so kills land mid-stream
        serving = _start(Path(tmp) / "b", rate=50.0, tokens=32, cpus=cpus)
        try:
            report["chaos"] = asyncio.run(chaos(serving, 20 if quick else 60, 32, 32))
        finally:
            serving.stop()
    report["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"serve proxy benchmark ({report['cpus']} cpus, load {report['load_avg_1m']} -> "
          f"{report['load_avg_1m_after']})")
    for label, rows in report["latency"].items():
        for key, row in rows.items():
            print(f"  {label:11s} {key}: direct {row['direct_ms']:7.2f} ms  controller "
                  f"{row['controller_ms']:7.2f} ms  added {row['added_ms']:6.2f} ms  "
                  f"ratio {row['ratio']:.2f}x")
    t = report["throughput"]
    print(f"  throughput ({t['clients']} clients): direct {t['direct_rps']} req/s, through the "
          f"controller {t['controller_rps']} req/s (ratio {t['ratio']:.2f}), errors {t['errors']}")
    print(f"  controller CPU: {t['controller_cpu_ms_per_request']} ms per request -> about "
          f"{t['controller_capacity_rps_per_core']} req/s per core when it is the bottleneck")
    c = report["chaos"]
    print(f"  chaos ({c['clients']} clients, {c['seconds']:.0f} s, {c['kills']} kills): "
          f"ok {c['ok']}, failed {c['failed']}, wrong text {c['wrong']}, resumed streams "
          f"{c['resumed_streams']}, retried requests {c['retried_requests']}")
    for line in c["first_errors"]:
        print(f"    {line}")


if __name__ == "__main__":
    main()
