"""Judge throughput at concurrency 1 vs 16 against a stub judge with 200 ms latency.

    .venv/bin/python bench/eval_judge_throughput.py [--judgments 48] [--latency 0.2] [--json]

The stub (``tests/integration/eval_stub.py``, a fair judge) runs as a real uvicorn process
on loopback; the same pairwise judgments (two models, both seat orders) are judged from
scratch at each concurrency through ``vops eval judge``'s own code path (openai client,
semaphore, fsync'd store). With 200 ms per request, concurrency 1 cannot pass 5
judgments/s; the ratio shows how much the concurrency limit buys.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vicuna_ops.eval.judge import JudgeSettings, judge_all  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_stub(latency: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "STUB_ROLE": "fair", "STUB_LATENCY_S": str(latency),
           "NO_PROXY": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "--app-dir",
                             str(ROOT / "tests" / "integration"), "eval_stub:app", "--host",
                             "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/", timeout=1).close()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the stub judge did not start")


def make_folder(folder: Path, questions: int) -> None:
    """``questions`` single-turn questions answered by two models: 2 judgments each."""
    (folder / "answers").mkdir(parents=True)
    with open(folder / "questions.jsonl", "w") as handle:
        for i in range(questions):
            handle.write(json.dumps({"question_id": i, "category": "writing",
                                     "turns": [f"question {i}"]}) + "\n")
    for model, quality in (("strong", 8), ("weak", 3)):
        with open(folder / "answers" / f"{model}.jsonl", "w") as handle:
            for i in range(questions):
                handle.write(json.dumps({"key": str(i), "question_id": i, "model": model,
                                         "turns": [f"quality={quality}. answer {i}"]}) + "\n")


def measure(url: str, concurrency: int, questions: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_folder(folder, questions)
        settings = JudgeSettings(endpoint=url, judge_model="stub", mode="pairwise",
                                 concurrency=concurrency)
        start = time.perf_counter()
        outcome = judge_all(folder, settings)
        seconds = time.perf_counter() - start
    assert outcome.pool.fatal is None and outcome.pool.done == 2 * questions, outcome.pool
    return {"concurrency": concurrency, "judgments": outcome.pool.done,
            "seconds": round(seconds, 3), "per_s": round(outcome.pool.done / seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judgments", type=int, default=48, help="per concurrency (even)")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    proc, url = start_stub(args.latency)
    try:
        measure(url, 4, 2)  # warm-up: imports, connections
        one = measure(url, 1, args.judgments // 2)
        sixteen = measure(url, 16, args.judgments // 2)
    finally:
        proc.terminate()
        proc.wait(10)
    result = {"latency_s": args.latency, "c1": one, "c16": sixteen,
              "ratio": round(sixteen["per_s"] / one["per_s"], 2)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"stub judge latency {args.latency * 1000:.0f} ms, {one['judgments']} judgments each")
    for row in (one, sixteen):
        print(f"  concurrency {row['concurrency']:>2}: {row['per_s']:6.2f} judgments/s "
              f"({row['seconds']:.2f} s)")
    print(f"  ratio c16/c1: {result['ratio']:.2f}x (ideal 16x)")


if __name__ == "__main__":
    main()
