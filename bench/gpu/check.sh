#!/usr/bin/env bash
# The GPU check (issue 16 §5): on ONE GPU, train a ~100M-parameter LLaMA built from a config
# for a few steps with the 7B recipe's settings (FSDP, gradient checkpointing, flash attention
# or SDPA, bf16) through vops' node entry point, report tokens/s and MFU; then serve the
# result through the vLLM backend (the transformers backend where vLLM is not installed) and
# run a short load test against the controller. One short prepared run, for the device tool:
#
#   run(command="bash bench/gpu/check.sh", timeout_s=540)     # figures land in $OUT
#
# The device image has torch, transformers, accelerate, safetensors, rich, typer and pyyaml
# but no pydantic, fastapi, uvicorn or vllm: carry them as wheels in .whl/ (see the device
# tool's README) and this script installs them first. Runs here on a CPU with CPU=1 (tiny
# sizes) to check the script itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/vops-gpu-check}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" - <<'PY' | tee "$OUT/versions.txt"
import importlib
for name in ("torch", "transformers", "accelerate", "flash_attn", "vllm", "fastapi", "pydantic"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as exc:  # noqa: BLE001
        print(name, "missing:", type(exc).__name__)
PY
if [ "${CPU:-0}" = 1 ]; then TRAIN_ARGS=(--cpu); else TRAIN_ARGS=(); fi
"$PY" bench/gpu/train_check.py --out "$OUT/train" "${TRAIN_ARGS[@]}" | tee "$OUT/train.json"
FINAL=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["final"])' "$OUT/train/train_check.json")
BACKEND=transformers
"$PY" -c 'import vllm' 2>/dev/null && BACKEND=vllm
"$PY" bench/gpu/serve_check.py --model "$FINAL" --backend "$BACKEND" --out "$OUT" | tee "$OUT/serve.json"
