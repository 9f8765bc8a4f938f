"""Peak memory of ``vops delta make`` / ``apply`` against the model's size.

A LLaMA built from a config (no download; ~60M parameters in bf16 by default, ~115 MB) is
saved in shards of --shard-mb, with a "fine-tuned" copy (every weight nudged). Each operation
runs in a fresh process; its peak RSS (VmHWM) is printed above that of the same process once it
imports torch, transformers and safetensors (the floor; the high-water mark is reset after
the imports), next to the model's size and its
largest shard. ``naive`` is the baseline: both state dicts loaded whole, subtracted, saved
(FastChat's apply_delta without --low-cpu-mem).

    python bench/delta_memory.py [--hidden 512] [--layers 8] [--shard-mb 16]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]

MAKE = ("from vicuna_ops.models.delta import make_delta\n"
        "make_delta({base!r}, {target!r}, {out!r})")
APPLY = ("from vicuna_ops.models.delta import apply_delta; "
         "apply_delta({base!r}, {delta!r}, {out!r})")
NAIVE = """
import glob, torch
from safetensors.torch import load_file, save_file
def whole(folder):
    state = {{}}
    for path in sorted(glob.glob(folder + '/*.safetensors')):
        state.update(load_file(path))
    return state
base, target = whole({base!r}), whole({target!r})
save_file({{k: (target[k].float() - base[k].float()).contiguous() for k in target}}, {out!r})
"""


PRELUDE = """
import torch, transformers, safetensors.torch, vicuna_ops.models.delta, vicuna_ops.storage.local
from transformers import AutoTokenizer, PreTrainedTokenizerFast  # loaded lazily otherwise
from safetensors import safe_open
def status(key):
    return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1])
open('/proc/self/clear_refs', 'w').write('5')  # reset the high-water mark after the imports
floor = status('VmRSS:')
"""
PROBE = "\nprint(floor, status('VmHWM:'))"


def peak_mb(code: str) -> tuple[float, float]:
    """(RSS after the imports, peak RSS after them) of a fresh interpreter running ``code``:
    Linux's VmHWM, reset through /proc/self/clear_refs once torch and transformers loaded."""
    done = subprocess.run([sys.executable, "-c", PRELUDE + code + PROBE], check=True,
                          cwd=REPO, capture_output=True, text=True)
    floor, peak = done.stdout.split()[-2:]
    return int(floor) / 1024, int(peak) / 1024


def build(folder: Path, hidden: int, layers: int, shard_mb: int, nudge: bool) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from vicuna_ops.tokenizer import build_tiny_tokenizer

    config = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64,
                         num_key_value_heads=hidden // 64, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    if nudge:
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 1e-3)
    model.save_pretrained(folder, max_shard_size=f"{shard_mb}MB")
    build_tiny_tokenizer().save_pretrained(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--shard-mb", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        base, target = root / "base", root / "target"
        build(base, args.hidden, args.layers, args.shard_mb, nudge=False)
        build(target, args.hidden, args.layers, args.shard_mb, nudge=True)
        shards = sorted(target.glob("*.safetensors"))
        model_mb = sum(p.stat().st_size for p in shards) / 2**20
        shard_mb = max(p.stat().st_size for p in shards) / 2**20
        print(f"model: {model_mb:,.0f} MB bf16 in {len(shards)} shards, largest {shard_mb:,.1f} MB")
        rows = [("make", peak_mb(MAKE.format(base=str(base), target=str(target),
                                             out=str(root / "delta")))),
                ("apply", peak_mb(APPLY.format(base=str(base), delta=str(root / "delta"),
                                               out=str(root / "applied")))),
                ("naive", peak_mb(NAIVE.format(base=str(base), target=str(target),
                                               out=str(root / "naive.safetensors"))))]
        for name, (floor, peak) in rows:
            above = peak - floor
            print(f"{name:6s} peak {peak:,.0f} MB, {above:,.0f} MB above the imports' "
                  f"{floor:,.0f} MB = "
                  f"{above / model_mb:.2f} x model, {above / shard_mb:.1f} x largest shard")


if __name__ == "__main__":
    main()
