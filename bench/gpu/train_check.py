"""The GPU check's training half: a ~100M-parameter LLaMA built from a config, trained for a
few steps through vops' own node entry point (``torchrun -m vicuna_ops.train``, as
sky/train.yaml runs it) with the 7B recipe's settings: bf16, FSDP full_shard auto_wrap,
gradient checkpointing, flash attention when flash-attn is installed (else SDPA), 2,048-token
sequences. Prints tokens/s and MFU (6 x parameters x tokens/s over the GPU's dense bf16 peak;
gradient checkpointing's recomputation is not counted as useful work).

    python bench/gpu/train_check.py --out DIR [--steps 30] [--peak-tflops 989]

Also runs on a CPU (``--cpu``: a 2-layer model, 3 steps) so the script itself is checked
where there is no GPU; the figures then mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
PREFIX = "@vops "  # vicuna_ops.train.args.PROGRESS_PREFIX
# H100 SXM dense bf16 (NVIDIA's datasheet); an H200 has the same compute.
DEFAULT_PEAK_TFLOPS = 989.0


def recipe(seq: int, cpu: bool) -> dict:
    width, layers = (64, 2) if cpu else (768, 12)
    return {
        "name": "gpu-check-100m", "tokenizer": "builtin:tiny",
        "model": {"tiny": {"hidden_size": width, "intermediate_size": 4 * width,
                           "num_hidden_layers": layers, "num_attention_heads": max(4, width // 64),
                           "num_key_value_heads": max(4, width // 64),
                           "max_position_embeddings": seq, "seed": 0},
                  "decoder_layer": "LlamaDecoderLayer", "attn_implementation": "auto"},
        "data": {"max_length": seq},
        "train": {"global_batch_size": 16, "per_device_batch_size": 2, "learning_rate": 2e-5,
                  "epochs": 1, "bf16": not cpu, "fsdp": "" if cpu else "full_shard auto_wrap",
                  "gradient_checkpointing": True, "checkpoint_every_steps": 1000,
                  "keep_checkpoints": 1, "seed": 42},
        "resources": {"gpus": "H100:1", "disk_size_gb": 64},
    }


def long_conversations(path: Path, count: int, chars: int) -> None:
    """Multi-turn conversations of about ``chars`` characters (the byte-level tokenizer: about
    a token per character), so sequences run close to the recipe's length."""
    rng = random.Random(0)
    per_turn = max(6, chars // 60)  # words: several turns fit, the first reply within reach
    words = ["spot", "zone", "checkpoint", "resume", "gradient", "token", "vicuna", "model",
             "bucket", "preempt", "shard", "kernel", "tensor", "batch", "cache", "serve"]
    with path.open("w") as out:
        for i in range(count):
            turns, size = [], 0
            while size < chars:
                text = " ".join(rng.choice(words)
                                for _ in range(rng.randint(per_turn // 2, per_turn)))
                turns.append({"from": "human" if len(turns) % 2 == 0 else "gpt", "value": text})
                size += len(text)
            if len(turns) % 2:
                turns.append({"from": "gpt", "value": "done."})
            out.write(json.dumps({"id": f"c{i}", "conversations": turns}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--peak-tflops", type=float, default=DEFAULT_PEAK_TFLOPS)
    parser.add_argument("--cpu", action="store_true", help="smoke-test the script on a CPU")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    seq, steps = (256, 3) if args.cpu else (args.seq, args.steps)
    data = out / "train.jsonl"
    long_conversations(data, count=16 * (steps + 2), chars=int(seq * 0.9))
    spec = recipe(seq, args.cpu)
    spec["data"]["path"] = str(data)
    recipe_path = out / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=1",
            "--master-port=29511", "-m", "vicuna_ops.train", "--recipe", str(recipe_path),
            "--run-id", "gpu-check", "--bucket", str(out / "bucket"), "--workdir",
            str(out / "work"), "--max-steps", str(steps), "--progress"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    (out / "train.log").write_text(proc.stderr)
    events = [json.loads(line[len(PREFIX):]) for line in proc.stdout.splitlines()
              if line.startswith(PREFIX)]
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
        raise SystemExit(f"training failed with exit code {proc.returncode}")
    rates = [e["tokens_per_s"] for e in events if e.get("event") == "step" and e.get("tokens_per_s")]
    final = out / "bucket" / "gpu-check" / "final"
    params = _count_params(final)
    steady = sorted(rates[len(rates) // 3:])  # after warm-up (compile, allocator)
    median = steady[len(steady) // 2] if steady else 0.0
    mfu = 6 * params * median / (args.peak_tflops * 1e12)
    result = {"parameters": params, "steps": steps, "sequence_length": seq,
              "tokens_per_s_median": round(median, 1), "mfu": round(mfu, 4),
              "peak_tflops": args.peak_tflops, "final": str(final)}
    (out / "train_check.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


def _count_params(final: Path) -> int:
    """Parameters in the trained model's safetensors files (headers only)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(final.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                shape = handle.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total


if __name__ == "__main__":
    main()
