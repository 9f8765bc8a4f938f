"""The GPU check's serving half: ``vops serve --local`` on the trained model (the vLLM backend
on a GPU that has vLLM, else transformers), then a short load test through the controller's
OpenAI API: CONCURRENCY clients x REQUESTS chat completions; prints generated tokens/s,
latency percentiles and failures. Standard library only on the client side.

    python bench/gpu/serve_check.py --model FINAL --backend vllm|transformers --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, body: dict, timeout: float = 120) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_ready(base: str, proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"vops serve exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{base}/v1/models", timeout=2) as response:
                models = json.loads(response.read())["data"]
            if models:
                return models[0]["id"]
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(1)
    raise SystemExit("vops serve was not ready in time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--backend", default="transformers")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "VOPS_HOME": str(args.out / "vops-home")}
    log = (args.out / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "vicuna_ops", "serve", "--local", "--model",
                             args.model, "--backend", args.backend, "--port", str(port),
                             "--max-concurrency", str(args.concurrency)],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.time()
        model = wait_ready(base, proc, timeout=600)
        ready_s = time.time() - t0

        def one(i: int) -> tuple[float, int] | None:
            start = time.time()
            try:
                reply = post(f"{base}/v1/chat/completions", {
                    "model": model, "max_tokens": args.max_tokens, "temperature": 0.7,
                    "messages": [{"role": "user", "content": f"Tell me about spot zone {i}."}]})
            except Exception:  # noqa: BLE001 - counted as a failure
                return None
            return time.time() - start, int(reply["usage"]["completion_tokens"])

        t1 = time.time()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.time() - t1
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    done = [r for r in results if r is not None]
    latencies = sorted(r[0] for r in done)
    result = {"backend": args.backend, "ready_s": round(ready_s, 1),
              "requests": args.requests, "failed": args.requests - len(done),
              "concurrency": args.concurrency,
              "generated_tokens_per_s": round(sum(r[1] for r in done) / wall, 1),
              "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
              "latency_p90_s": round(latencies[int(0.9 * (len(latencies) - 1))], 3)
              if latencies else None}
    (args.out / "serve_check.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
