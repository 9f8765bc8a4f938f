"""How long a serving worker takes from process start to registered with its controller.

    .venv/bin/python bench/worker_start.py [--runs 7] [--json]

A controller runs as a real uvicorn process (``vicuna_ops.serve.local.LocalServing``); each
run starts one stub-backend worker exactly as ``vops serve --local`` does and times it from
``Popen`` until the controller lists it (polled every 5 ms), then kills it. The baseline,
measured alternately in the same run, is a bare ``python -c pass`` from ``Popen`` to exit:
what any Python process costs on this machine at this moment. Printed: the median of each,
wall and CPU seconds (the worker's CPU time when it registered; on a loaded machine the CPU
figure moves less than the wall one), and their ratios (the figures to compare).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vicuna_ops.serve.local import LocalPlan, LocalServing  # noqa: E402


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _bare_python() -> tuple[float, float]:
    """Wall and CPU seconds of ``python -c pass``."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    _, _, usage = os.wait4(process.pid, 0)
    process.returncode = 0
    return time.perf_counter() - started, usage.ru_utime + usage.ru_stime


def _worker(serving: LocalServing, client: httpx.Client) -> tuple[float, float]:
    """Wall seconds from Popen to registered, and the worker's CPU seconds by then."""
    started = time.perf_counter()
    child = serving.add_worker()
    worker_id = child.argv[child.argv.index("--worker-id") + 1]
    try:
        while True:
            reply = client.get(serving.url + "/vops/workers")
            if any(w["worker_id"] == worker_id for w in reply.json()["workers"]):
                wall = time.perf_counter() - started
                cpu = psutil.Process(child.process.pid).cpu_times()
                return wall, cpu.user + cpu.system
            if child.process.poll() is not None:
                raise SystemExit(f"the worker exited with {child.process.returncode}; "
                                 f"see {child.log_path}")
            if time.perf_counter() - started > 120:
                raise SystemExit("the worker did not register within 120 s")
            time.sleep(0.005)
    finally:
        child.process.kill()
        child.process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state:
        plan = LocalPlan(model=None, backend="stub", port=_port(), workers=0,
                         heartbeat_interval=1.0, state_dir=Path(state), start_timeout=60,
                         grace=5)
        serving = LocalServing(plan)
        try:
            serving.start()
            client = httpx.Client(headers={"authorization": f"Bearer {serving.token}"},
                                  timeout=5)
            _worker(serving, client)  # warm the disk cache: every run then starts alike
            bare, worker = [], []
            for _ in range(args.runs):
                bare.append(_bare_python())
                worker.append(_worker(serving, client))
        finally:
            serving.stop()
    median = lambda values, i: round(statistics.median(v[i] for v in values), 3)  # noqa: E731
    result = {"runs": args.runs,
              "worker_start_to_registered_s": median(worker, 0),
              "bare_python_s": median(bare, 0),
              "worker_cpu_s": median(worker, 1), "bare_python_cpu_s": median(bare, 1)}
    result["ratio"] = round(result["worker_start_to_registered_s"] / result["bare_python_s"], 1)
    result["cpu_ratio"] = round(result["worker_cpu_s"] / max(result["bare_python_cpu_s"], 1e-3),
                                1)
    if args.json:
        print(json.dumps(result))
        return
    print(f"median of {args.runs} runs, stub backend, wall (CPU) seconds:")
    print(f"  worker, start to registered: {result['worker_start_to_registered_s']:.3f} "
          f"({result['worker_cpu_s']:.3f} CPU)")
    print(f"  bare `python -c pass`:       {result['bare_python_s']:.3f} "
          f"({result['bare_python_cpu_s']:.3f} CPU)")
    print(f"  ratio: {result['ratio']}x wall, {result['cpu_ratio']}x CPU")


if __name__ == "__main__":
    main()
