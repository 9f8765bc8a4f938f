"""Training tokens/s of the tiny recipe through the vops trainer against a bare HF Trainer on
the same model and data without our callbacks.

    vops-dir  VopsTrainer + our callback (progress events, heartbeat counters, stop checks),
              a checkpoint every 10 steps captured and published in the background, segment
              heartbeats - into a local bucket folder, as `vops train --local` does
    vops-s3   the same into moto S3; moto's server shares this machine's cores (a real S3
              would not), niced so the training goes first
    bare      transformers.Trainer with the same TrainingArguments, no saves, no callbacks
              of ours; it visits the data in the same order (our sampler), so both train on
              the same batches: with padding to the longest sample, another order is another
              amount of compute for the same tokens
    hf-saves  for context: the bare Trainer checkpointing every 10 steps its own way
              (synchronous, to local disk, no upload)

Tokens are the non-padding tokens of the batches; time is the ``train()`` call (~2 s on
two cores, so other load on the machine moves single runs by +-10%). Rounds alternate in one
process, each round in a rotated order (no kind always runs first or last after another);
the ratio reported is the median over rounds of vops / bare within the round (runs seconds
apart share the machine's state), next to the ratio of the medians. Target: vops / bare
>= 0.95. Also printed: tokens per CPU-second of
this whole process (all threads, the uploader's included), which other load on a shared
machine disturbs less than wall time.

    python bench/train_tokens_per_s.py [--rounds 7] [--steps 40]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from checkpoint_blocking import start_moto  # noqa: E402

KINDS = ("vops-dir", "vops-s3", "bare", "hf-saves")


def one_round(kind: str, recipe, dataset, tokenizer, stores: dict, workdir: Path,
              index: int) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second) of one training run."""
    import transformers

    from vicuna_ops.train.args import World
    from vicuna_ops.train.callbacks import VopsCallback
    from vicuna_ops.train.data import EpochShuffleSampler, PadCollator
    from vicuna_ops.train.heartbeat import SegmentHeartbeat
    from vicuna_ops.train.model import build_model
    from vicuna_ops.train.preemption import StopFlag
    from vicuna_ops.train.progress import Reporter
    from vicuna_ops.train.trainer import Checkpointer, VopsTrainer, training_arguments
    from vicuna_ops.train.uploader import CheckpointUploader

    world = World(0, 0, 1)
    args = training_arguments(recipe, output_dir=workdir / f"{kind}-{index}",
                              max_steps=recipe.train.max_steps, world=world, cuda=False)
    model = build_model(recipe, tokenizer, attn_implementation="sdpa")
    collator = PadCollator(tokenizer.pad_token_id)
    uploader = heartbeat = None
    if kind in ("bare", "hf-saves"):
        if kind == "bare":
            args.save_strategy = "no"

        class Bare(transformers.Trainer):
            def _get_train_sampler(self, train_dataset=None):
                return EpochShuffleSampler(len(self.train_dataset), recipe.train.seed)

        trainer = Bare(model=model, args=args, train_dataset=dataset, data_collator=collator)
    else:
        run_store = stores[kind].child(f"run-{index}")
        reporter = Reporter(enabled=True, json_events=True, out=io.StringIO(),
                            err=io.StringIO())  # formatted and written, as in a real run
        uploader = CheckpointUploader(run_store, 2, on_event=reporter.event)
        heartbeat = SegmentHeartbeat(run_store, "bench", attempt=1, first_step=0,
                                     interval_s=30.0)  # the node's default
        heartbeat.start()
        checkpointer = Checkpointer(uploader=uploader, local_root=workdir / f"local-{index}",
                                    world=world, meta=lambda state: {}, reporter=reporter)
        callback = VopsCallback(reporter=reporter, stop_flag=StopFlag(), heartbeat=heartbeat,
                                world_size=1)
        trainer = VopsTrainer(model=model, args=args, train_dataset=dataset,
                              data_collator=collator, callbacks=[callback],
                              sampler_seed=recipe.train.seed, checkpointer=checkpointer)
    trainer.remove_callback(transformers.PrinterCallback)
    started, cpu_started = time.perf_counter(), time.process_time()
    trainer.train()
    elapsed = time.perf_counter() - started
    if uploader is not None:  # the uploads belong to the run: their CPU counts
        uploader.close()
        heartbeat.finish("finished")
        if recipe.train.checkpoint_every_steps < recipe.train.max_steps:
            assert uploader.stats.published, "no checkpoint was uploaded"
    cpu = time.process_time() - cpu_started
    tokens = trainer.state.num_input_tokens_seen
    return tokens / elapsed, tokens / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's (40)")
    options = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from vicuna_ops.recipe import load_recipe
    from vicuna_ops.storage import open_store
    from vicuna_ops.tokenizer import build_tiny_tokenizer
    from vicuna_ops.train.data import load_conversations
    from vicuna_ops.train.runner import configure_determinism, quiet_libraries

    quiet_libraries()
    threads = configure_determinism(cuda=False)
    recipe = load_recipe("tiny")
    if options.steps:
        recipe = recipe.model_copy(update={"train": recipe.train.model_copy(
            update={"max_steps": options.steps})})
    tokenizer = build_tiny_tokenizer()
    dataset, _ = load_conversations("builtin:tiny-chat", tokenizer, recipe.data.max_length)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        moto = start_moto(workdir, niceness=19)
        try:
            stores = {"vops-dir": open_store(str(workdir / "bucket")),
                      "vops-s3": open_store("s3://bench/tokens")}
            speeds: dict[str, list[float]] = {kind: [] for kind in KINDS}
            per_cpu: dict[str, list[float]] = {kind: [] for kind in KINDS}
            one_round("bare", recipe, dataset, tokenizer, stores, workdir, -1)  # warm-up
            for index in range(options.rounds):
                shift = index % len(KINDS)
                for kind in KINDS[shift:] + KINDS[:shift]:
                    wall, cpu = one_round(kind, recipe, dataset, tokenizer, stores, workdir,
                                          index)
                    speeds[kind].append(wall)
                    per_cpu[kind].append(cpu)
        finally:
            moto.stop()
    median = {kind: statistics.median(values) for kind, values in speeds.items()}
    print(f"tiny recipe, {recipe.train.max_steps} steps x {recipe.train.global_batch_size} "
          f"conversations, CPU, {threads} threads, {options.rounds} alternating rounds")
    for kind in KINDS:
        each = " ".join(f"{v:,.0f}" for v in speeds[kind])
        print(f"  {kind:<8} median {median[kind]:10,.0f} tokens/s "
              f"{statistics.median(per_cpu[kind]):10,.0f} per CPU-s  (each: {each})")
    for kind in ("vops-dir", "vops-s3"):
        ratio = statistics.median(ours / bare for ours, bare in zip(speeds[kind], speeds["bare"]))
        of_medians = median[kind] / median["bare"]
        cpu_ratio = statistics.median(per_cpu[kind]) / statistics.median(per_cpu["bare"])
        print(f"ratio {kind}/bare = {ratio:.3f} (median of per-round ratios; ratio of medians "
              f"{of_medians:.3f}, per CPU-s {cpu_ratio:.3f})  "
              f"(target >= 0.95: {'PASS' if ratio >= 0.95 else 'FAIL'})")
    print(f"ratio vops-dir/hf-saves = {median['vops-dir'] / median['hf-saves']:.3f}")


if __name__ == "__main__":
    main()
