"""`vops --help` start-up time: median of 10 runs against the 0.3 s budget.

The baseline, measured in the same run, is a bare interpreter start (`python -c pass`), so a
slow machine shows up in both numbers.

    python bench/cli_help.py
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BUDGET_S = 0.3
RUNS = 10


def median_seconds(argv: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    vops = shutil.which("vops") or str(Path(sys.executable).with_name("vops"))
    baseline = median_seconds([sys.executable, "-c", "pass"])
    help_time = median_seconds([vops, "--help"])
    print(f"python -c pass      median {baseline * 1000:7.1f} ms")
    print(f"vops --help         median {help_time * 1000:7.1f} ms")
    print(f"vops --help / budget {BUDGET_S}s = {help_time / BUDGET_S:.2f} (target <= 1.00)")
    print(f"vops --help / bare interpreter = {help_time / baseline:.2f}")


if __name__ == "__main__":
    main()
