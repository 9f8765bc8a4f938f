"""`vops train --dry-run` end to end (SkyPilot import included): median of 5 runs against
the 3 s budget.

Each run is a fresh process, as a user would start it: parse flags, import SkyPilot, read the
catalog, pick zone candidates, write recipe.yaml and task.yaml, read the YAML back with
SkyPilot's parser, run SkyPilot's optimizer, print the plan as JSON. The baseline, measured
in the same run and interleaved with it (so load on the machine hits both), is a bare
`python -c 'import sky'` process. That process also pays Python's teardown of SkyPilot's
~1,500 modules (0.7-1 s) and imports with the garbage collector running; `vops` skips both
(vicuna_ops/cli/fast_exit.py, adaptors._collector_paused), so a whole dry run can take less
time than the baseline.

No network here: SkyPilot would try to download its catalog, so the runs use a prepared
HOME whose SKY_RUNTIME_DIR holds a copy of tests/data/skypilot-catalog/v8 (SkyPilot reads
$SKY_RUNTIME_DIR/.sky/catalogs/v8, else $HOME/...). On a machine with network nothing is
needed: SkyPilot downloads its catalog once and caches it.

    python bench/train_dry_run.py [--runs 5] [--catalog PATH_TO_v8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGET_S = 3.0
DEFAULT_CATALOG = REPO / "tests" / "data" / "skypilot-catalog" / "v8"


def prepared_env(root: Path, catalog: Path) -> dict[str, str]:
    home = root / "home"
    shutil.copytree(catalog, home / ".sky" / "catalogs" / "v8")  # no .meta/*.md5: never refreshed
    nowhere = root / "nowhere"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "GOOGLE_", "CLOUDSDK_", "SKYPILOT_", "VOPS_"))
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env.update(HOME=str(home), SKY_RUNTIME_DIR=str(home), VOPS_HOME=str(root / "vops"),
               SKYPILOT_DISABLE_USAGE_COLLECTION="1", AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=str(nowhere / "aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(nowhere / "aws-credentials"),
               CLOUDSDK_CONFIG=str(nowhere / "gcloud"), NO_GCE_CHECK="true")
    return env


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + sys of the process and its children) and stdout.
    CPU time barely moves when other work shares the machine; wall time does."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv[:4])} ... failed:\n{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    args = parser.parse_args()
    if not (args.catalog / "aws" / "vms.csv").is_file():
        sys.exit(f"no SkyPilot catalog at {args.catalog} (pass --catalog PATH/v8)")

    vops = shutil.which("vops", path=str(Path(sys.executable).parent)) or "vops"
    with tempfile.TemporaryDirectory(prefix="vops-bench-") as tmp:
        env = prepared_env(Path(tmp), args.catalog)
        baseline_argv = [sys.executable, "-c", "import sky"]
        timed(baseline_argv, env)  # warm the file cache for both
        dry_runs, imports, dry_cpu, import_cpu = [], [], [], []
        for i in range(args.runs + 1):
            argv = [vops, "train", "--dry-run", "--json", "--recipe", "vicuna-7b",
                    "--gpus", "A100:8", "--bucket", "s3://vops-bench/runs",
                    "--data", "s3://vops-bench/sharegpt.jsonl", "--name", f"bench-{i}"]
            elapsed, cpu, out = timed(argv, env)
            if i == 0:
                plan = json.loads(out)  # warm-up, not counted
                continue
            dry_runs.append(elapsed)
            dry_cpu.append(cpu)
            base_elapsed, base_cpu, _ = timed(baseline_argv, env)
            imports.append(base_elapsed)
            import_cpu.append(base_cpu)

    dry, base = statistics.median(dry_runs), statistics.median(imports)
    print(f"first zone: {plan['placement']['infra']} at ${plan['placement']['hourly_price']}/h, "
          f"{len(plan['candidates'])} candidates, estimate ${plan['estimate']['cost']}")
    print(f"python -c 'import sky'   median {base:6.2f} s   runs {_fmt(imports)}")
    print(f"vops train --dry-run     median {dry:6.2f} s   runs {_fmt(dry_runs)}")
    print(f"dry run / budget {BUDGET_S:.0f} s = {dry / BUDGET_S:.2f} (target <= 1.00)")
    print(f"dry run / bare `python -c 'import sky'` process = {dry / base:.2f}")
    cpu, base_cpu = statistics.median(dry_cpu), statistics.median(import_cpu)
    print(f"CPU time (user+sys, load-independent): import sky {base_cpu:.2f} s, dry run "
          f"{cpu:.2f} s, dry run / budget = {cpu / BUDGET_S:.2f}")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def _fmt(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
