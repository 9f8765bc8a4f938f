"""How long training is blocked per checkpoint: background upload vs synchronous, on moto S3.

Three ways to checkpoint the same training (same model, data, seed, so the same states):

    background   what vops does: copy the state to host memory on the training thread, then
                 write, hash and upload it (files, manifest, LATEST, prune) on the uploader
    sync         the same work - capture, write, publish - all on the training thread
    hf-sync      the HF Trainer's own ``_save_checkpoint`` to local disk, then the upload

Printed: the mean training-thread seconds per checkpoint of each, and the ratio
background / sync (target <= 0.05), plus each mode's total wall time for the same steps
(what the background work costs the training on a small machine). One run each, interleaved
is not possible for a stateful training, so the modes run back to back.

    python bench/checkpoint_blocking.py [--size tiny|small] [--steps 6] [--every 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

SIZES = {  # hidden, intermediate, layers, heads, per-device batch, max_length
    "tiny": (64, 128, 2, 4, 8, 256),
    "small": (512, 1376, 4, 8, 2, 192),
}


def start_moto(workdir: Path, niceness: int = 0):
    """moto's S3 server on loopback (the tests' helper), env pointed at it, bucket 'bench'.

    ``niceness``: a real bucket is not on the training machine; niced, moto's own CPU use
    does not compete with the training the way a remote S3 server would not.
    """
    import boto3
    from fixtures.network import start_service

    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1"}
    nice = ["nice", "-n", str(niceness)] if niceness else []
    service = start_service("moto", lambda port: [*nice, sys.executable, "-m", "moto.server",
                                                  "-H", "127.0.0.1", "-p", str(port)],
                            workdir, ready_path="/moto-api/", env=env)
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                           "AWS_DEFAULT_REGION")})
    os.environ["AWS_ENDPOINT_URL"] = service.url
    boto3.client("s3", endpoint_url=service.url).create_bucket(Bucket="bench")
    return service


def recipe_for(size: str, steps: int, every: int):
    from vicuna_ops.recipe import load_recipe

    hidden, inter, layers, heads, batch, length = SIZES[size]
    tiny = load_recipe("tiny")
    model = tiny.model.model_copy(update={"tiny": tiny.model.tiny.model_copy(update={
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": heads})})
    train = tiny.train.model_copy(update={"global_batch_size": batch,
                                          "per_device_batch_size": batch, "max_steps": steps,
                                          "checkpoint_every_steps": every,
                                          "keep_checkpoints": 2})
    data = tiny.data.model_copy(update={"max_length": length})
    return tiny.model_copy(update={"model": model, "train": train, "data": data})


def run_mode(mode: str, recipe, store, workdir: Path) -> tuple[list[float], float, int]:
    from vicuna_ops.tokenizer import build_tiny_tokenizer
    from vicuna_ops.train import checkpoint, snapshot
    from vicuna_ops.train.args import World
    from vicuna_ops.train.data import PadCollator, load_conversations
    from vicuna_ops.train.model import build_model
    from vicuna_ops.train.progress import Reporter
    from vicuna_ops.train.trainer import Checkpointer, VopsTrainer, training_arguments
    from vicuna_ops.train.uploader import CheckpointUploader

    tokenizer = build_tiny_tokenizer()
    dataset, _ = load_conversations("builtin:tiny-chat", tokenizer, recipe.data.max_length)
    model = build_model(recipe, tokenizer, attn_implementation="sdpa")
    world = World(0, 0, 1)
    args = training_arguments(recipe, output_dir=workdir / mode, max_steps=recipe.train.max_steps,
                              world=world, cuda=False)
    reporter = Reporter(enabled=False, json_events=False)
    run_store = store.child(mode)
    uploader = CheckpointUploader(run_store, 2) if mode == "background" else None
    meta = lambda state: {"step": state.global_step}  # noqa: E731

    class Inline(Checkpointer):
        """Everything on the training thread."""

        def save(self, trainer, trainer_save) -> None:
            started = time.perf_counter()
            step = trainer.state.global_step
            folder = workdir / mode / f"inline-{step}"
            if mode == "sync":
                trainer.store_flos()
                snapshot.write(snapshot.capture(trainer), folder)
            else:
                trainer_save()
                folder = Path(trainer.args.output_dir) / f"checkpoint-{step}"
            checkpoint.publish_checkpoint(run_store, folder, step, meta(trainer.state))
            checkpoint.prune(run_store, 2)
            self.blocked_s.append(time.perf_counter() - started)

    kind = Checkpointer if mode == "background" else Inline
    saver = kind(uploader=uploader, local_root=workdir / mode / "local", world=world,
                 meta=meta, reporter=reporter)
    trainer = VopsTrainer(model=model, args=args, train_dataset=dataset,
                          data_collator=PadCollator(tokenizer.pad_token_id),
                          sampler_seed=recipe.train.seed, checkpointer=saver)
    trainer.remove_callback(__import__("transformers").PrinterCallback)
    started = time.perf_counter()
    trainer.train()
    if uploader is not None:
        uploader.close()
    wall = time.perf_counter() - started
    size = sum(c.sizes.get("model.safetensors", 0) + c.sizes.get("optimizer.pt", 0)
               for c in checkpoint.list_candidates(run_store)[:1])
    return saver.blocked_s, wall, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--every", type=int, default=2)
    options = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from vicuna_ops.storage import open_store
    from vicuna_ops.train.runner import configure_determinism, quiet_libraries

    quiet_libraries()
    configure_determinism(cuda=False)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        moto = start_moto(workdir)
        try:
            store = open_store("s3://bench/runs")
            recipe = recipe_for(options.size, options.steps, options.every)
            results = {mode: run_mode(mode, recipe, store, workdir)
                       for mode in ("background", "sync", "hf-sync")}
        finally:
            moto.stop()
    size_mb = results["background"][2] / 1e6
    print(f"checkpoint blocking, {options.size} model (~{size_mb:.1f} MB of weights + "
          f"optimizer per checkpoint), {options.steps} steps, a checkpoint every "
          f"{options.every}, moto S3 on loopback")
    for mode, (blocked, wall, _size) in results.items():
        each = " ".join(f"{b * 1000:.0f}" for b in blocked)
        print(f"  {mode:<11} blocked {statistics.mean(blocked) * 1000:9.1f} ms per checkpoint "
              f"(median {statistics.median(blocked) * 1000:.1f}; each: {each} ms), "
              f"training wall {wall:6.2f} s")
    ratio = statistics.mean(results["background"][0]) / statistics.mean(results["sync"][0])
    ratio_hf = statistics.mean(results["background"][0]) / statistics.mean(results["hf-sync"][0])
    print(f"ratio background/sync    = {ratio:.4f}  (target <= 0.05: "
          f"{'PASS' if ratio <= 0.05 else 'FAIL'})")
    print(f"ratio background/hf-sync = {ratio_hf:.4f}")


if __name__ == "__main__":
    main()
