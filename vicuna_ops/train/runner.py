"""One training attempt, start to exit code: what ``python -m vicuna_ops.train`` runs.

    final/ verified in the bucket?            -> nothing to do, exit 0
    newest verified checkpoint                -> download, check it fits this data and recipe
    tokenizer, data, model, Trainer           -> train from it (or from scratch)
    stop request at a step boundary           -> checkpoint, finish the upload, exit 75 / 0
    all steps done                            -> final/ (HF format) + manifest, exit 0

Every attempt writes its segment record and keeps its heartbeat moving until it exits.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vicuna_ops import adaptors, layout
from vicuna_ops.errors import CheckpointError, UserError
from vicuna_ops.recipe import Recipe, dump_recipe, load_recipe
from vicuna_ops.train import checkpoint
from vicuna_ops.train.args import EXIT_OK, EXIT_PREEMPTED, TrainArgs
from vicuna_ops.train.data import DataPosition
from vicuna_ops.train.progress import Reporter
from vicuna_ops.train.snapshot import read_vops_state

# vops_state keys that must match for a resume to continue the same run exactly
_MUST_MATCH = {
    "data_fingerprint": "the training data",
    "global_batch_size": "train.global_batch_size",
    "max_steps": "the step count (--max-steps / train.max_steps / epochs)",
    "seed": "train.seed",
}


@dataclass(frozen=True)
class Outcome:
    status: str  # finished | preempted | budget-stopped | already-finished
    steps: int
    exit_code: int


def configure_determinism(cuda: bool) -> int:
    """Same thread count and deterministic kernels, so a resumed run matches bit for bit."""
    torch = adaptors.torch()
    threads = os.environ.get("VOPS_TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    if not cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.get_num_threads()


def quiet_libraries() -> None:
    """Warnings only from transformers, and no tqdm bars (ours is the progress)."""
    transformers = adaptors.transformers()
    transformers.utils.logging.set_verbosity_warning()
    transformers.utils.logging.disable_progress_bar()


def _tokenizer_source(recipe: Recipe) -> str:
    source = recipe.tokenizer or recipe.model.name_or_path
    if not source:
        raise UserError(f"recipe {recipe.name!r} names no tokenizer",
                        hint="set tokenizer: builtin:tiny, a folder or a hub id")
    return source


def run(args: TrainArgs, reporter: Reporter | None = None) -> Outcome:
    from vicuna_ops.storage import open_store
    from vicuna_ops.train.trainer import World

    world = World.from_env()
    reporter = reporter or Reporter(enabled=world.is_main, json_events=args.progress)
    recipe = load_recipe(args.recipe)
    run_store = open_store(args.bucket).child(args.run_id)
    workdir = Path(args.workdir) / args.run_id
    max_steps = args.max_steps or recipe.train.max_steps
    reporter.event({"event": "start", "run_id": args.run_id, "recipe": recipe.name,
                    "bucket": run_store.uri, "max_steps": max_steps, "rank": world.rank})

    done = checkpoint.final_manifest(run_store)
    if done is not None:
        steps = int(done.meta.get("steps", 0))
        reporter.log(f"{run_store.url_for(layout.FINAL)} is complete (step {steps}); "
                     "nothing to do")
        reporter.event({"event": "end", "status": "already-finished", "steps": steps,
                        "final": run_store.url_for(layout.FINAL)})
        return Outcome("already-finished", steps, EXIT_OK)
    return _train(args, recipe, run_store, workdir, max_steps, world, reporter)


def _train(args: TrainArgs, recipe: Recipe, run_store: Any, workdir: Path,
           max_steps: int | None, world: Any, reporter: Reporter) -> Outcome:
    from vicuna_ops.tokenizer import load_tokenizer
    from vicuna_ops.train import heartbeat as hb
    from vicuna_ops.train.callbacks import VopsCallback
    from vicuna_ops.train.data import PadCollator, load_conversations
    from vicuna_ops.train.model import (
        build_model,
        is_bucket_uri,
        materialize_folder,
        parameter_count,
        resolve_attn_implementation,
    )
    from vicuna_ops.train.preemption import PreemptionWatcher, StopFlag, notice_urls
    from vicuna_ops.train.trainer import Checkpointer, VopsTrainer, training_arguments
    from vicuna_ops.train.uploader import CheckpointUploader

    torch = adaptors.torch()
    cuda = torch.cuda.is_available()
    threads = configure_determinism(cuda)
    stop_flag = StopFlag()
    # Watch from the start: a notice during startup still stops at the first step boundary.
    identity = _identity()
    aws_url, gcp_url = notice_urls(str(identity.get("cloud", "local")),
                                   args.aws_notice_url, args.gcp_notice_url)
    watcher = PreemptionWatcher(stop_flag, aws_url=aws_url, gcp_url=gcp_url,
                                aws_token_url=args.aws_token_url or None,
                                poll_s=args.notice_poll_s, log=reporter.log)
    watcher.start()
    try:
        hf_args = training_arguments(recipe, output_dir=workdir / "hf", max_steps=max_steps,
                                     world=world, cuda=cuda)  # initialises torch.distributed
        restored = _restore(run_store, workdir, world, reporter)

        tokenizer_src = _tokenizer_source(recipe)
        if is_bucket_uri(tokenizer_src):
            tokenizer_src = str(materialize_folder(tokenizer_src, workdir / "tokenizer"))
        tokenizer = load_tokenizer(tokenizer_src)
        if tokenizer.pad_token_id is None:  # LLaMA ships none; pad positions carry no loss
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
        data_uri = args.data or recipe.data.path
        if not data_uri:
            raise UserError("no training data", hint="pass --data URI or set data.path in the "
                                                     "recipe")
        dataset, stats = load_conversations(data_uri, tokenizer, recipe.data.max_length)
        reporter.log(f"data {data_uri}: {stats.summary()}")
        reporter.event({"event": "data", "uri": data_uri, "records": stats.records,
                        "used": stats.used, "truncated": stats.truncated,
                        "skipped": stats.skipped, "tokens": stats.tokens})
        fingerprint = dataset.fingerprint()
        run_facts = {"data_fingerprint": fingerprint,
                     "global_batch_size": recipe.train.global_batch_size,
                     "max_steps": hf_args.max_steps, "seed": recipe.train.seed}
        if restored is not None:
            _check_compatible(read_vops_state(restored.path), run_facts, threads, world,
                              reporter)

        model_dir = None
        if is_bucket_uri(recipe.model.name_or_path):
            model_dir = materialize_folder(str(recipe.model.name_or_path), workdir / "model")
        attn = resolve_attn_implementation(recipe.model.attn_implementation, cuda)
        model = build_model(recipe, tokenizer, attn_implementation=attn,
                            local_model_dir=model_dir)
        reporter.log(f"model: {parameter_count(model):,} parameters, attention {attn}, "
                     f"{'bf16' if hf_args.bf16 else 'fp32'}, {world.size} process(es), "
                     f"{threads} CPU thread(s)")

        first_step = restored.step if restored else 0
        heartbeat = uploader = None
        if world.is_main:
            attempt, earlier = hb.next_attempt(run_store)
            heartbeat = hb.SegmentHeartbeat(
                run_store, args.run_id, attempt=attempt, first_step=first_step,
                interval_s=args.heartbeat_s, earlier=earlier, stop_flag=stop_flag,
                max_cost=args.max_cost, log=reporter.log, identity=identity)
            uploader = CheckpointUploader(run_store, recipe.train.keep_checkpoints,
                                          on_event=reporter.event, log=reporter.log)
            (workdir / "recipe.yaml").write_text(dump_recipe(recipe))

        def meta(state: Any) -> dict[str, Any]:
            position = DataPosition.at(state.global_step, len(dataset),
                                       recipe.train.global_batch_size)
            return {**run_facts, "run_id": args.run_id, "step": state.global_step,
                    "epoch": position.epoch, "samples_in_epoch": position.samples_in_epoch,
                    "samples_consumed": position.samples_total, "dataset_size": len(dataset),
                    "world_size": world.size, "torch_threads": threads,
                    "tokens_seen": state.num_input_tokens_seen, "recipe": recipe.name}

        local_ckpts = workdir / "checkpoints"
        if world.is_main:
            shutil.rmtree(local_ckpts, ignore_errors=True)  # leftovers of a killed attempt
        checkpointer = Checkpointer(uploader=uploader, local_root=local_ckpts, world=world,
                                    meta=meta, reporter=reporter)
        callback = VopsCallback(reporter=reporter, stop_flag=stop_flag, heartbeat=heartbeat,
                                world_size=world.size)
        trainer = VopsTrainer(
            model=model, args=hf_args, train_dataset=dataset,
            data_collator=PadCollator(tokenizer.pad_token_id, 8 if cuda else 1),
            callbacks=[callback], sampler_seed=recipe.train.seed, checkpointer=checkpointer)
        # Our progress replaces the Trainer's printed log dicts (they would interleave stdout).
        trainer.remove_callback(adaptors.transformers().PrinterCallback)
        if heartbeat is not None:
            heartbeat.start()
        return _run_loop(trainer, restored, callback, stop_flag, uploader, heartbeat,
                         checkpointer, run_store, workdir, tokenizer, world, reporter,
                         stats_summary=stats.summary(), data_uri=data_uri, recipe=recipe)
    finally:
        watcher.stop()


def _run_loop(trainer: Any, restored: Any, callback: Any, stop_flag: Any, uploader: Any,
              heartbeat: Any, checkpointer: Any, run_store: Any, workdir: Path, tokenizer: Any,
              world: Any, reporter: Reporter, *, stats_summary: str, data_uri: str,
              recipe: Recipe) -> Outcome:
    try:
        trainer.train(resume_from_checkpoint=str(restored.path) if restored else None)
        if uploader is not None and not uploader.flush():
            raise CheckpointError("checkpoint upload did not finish")
    except BaseException:
        if heartbeat is not None:
            heartbeat.finish("failed")
        if uploader is not None:
            uploader.close(timeout=60)  # whatever is in flight may still land
        raise
    steps = trainer.state.global_step
    request = stop_flag.request_made
    if callback.stopped_at is not None and steps < trainer.state.max_steps:
        status = "budget-stopped" if request and request.reason == "budget" else "preempted"
        if uploader is not None:
            uploader.close()
        if heartbeat is not None:
            heartbeat.finish(status)
        failures = uploader.stats.failures if uploader is not None else []
        reporter.log(f"stopped at step {steps} ({status}); checkpoint "
                     f"{'FAILED: ' + failures[-1] if failures else 'uploaded'}")
        reporter.event({"event": "end", "status": status, "steps": steps,
                        "upload_failures": failures})
        code = EXIT_OK if status == "budget-stopped" else EXIT_PREEMPTED
        return Outcome(status, steps, code)

    final_dir = workdir / "final"
    shutil.rmtree(final_dir, ignore_errors=True)
    trainer.save_model(str(final_dir))  # collective under FSDP: gathers the full weights
    if world.is_main:
        (final_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle; not the model's
        tokenizer.save_pretrained(str(final_dir))
        published = checkpoint.publish_final(run_store, final_dir, {
            "steps": steps, "recipe": recipe.name, "data": data_uri, "data_stats": stats_summary,
            "tokens_seen": trainer.state.num_input_tokens_seen})
        checkpoint.prune(run_store, recipe.train.keep_checkpoints, reporter.log)
        uploader.close()
        heartbeat.finish("finished")
        final_uri = run_store.url_for(layout.FINAL)
        reporter.log(f"finished at step {steps}: {final_uri} ({published.bytes:,} bytes)")
        reporter.event({"event": "final", "uri": final_uri, "bytes": published.bytes})
        reporter.event({"event": "end", "status": "finished", "steps": steps,
                        "final": final_uri, "tokens_per_s": callback.tokens_per_s,
                        "checkpoints": uploader.stats.published,
                        "blocked_s": checkpointer.blocked_s,
                        "upload_failures": uploader.stats.failures})
        shutil.rmtree(final_dir, ignore_errors=True)
    return Outcome("finished", steps, EXIT_OK)


def _restore(run_store: Any, workdir: Path, world: Any, reporter: Reporter) -> Any:
    """Local rank 0 of each node downloads; the others use its copy after a barrier."""
    torch = adaptors.torch()
    chosen_file = workdir / "resume" / "CHOSEN"
    restored = None
    if world.local_rank == 0:
        shutil.rmtree(workdir / "resume", ignore_errors=True)
        restored = checkpoint.restore_newest(run_store, workdir / "resume", reporter.log)
        chosen_file.parent.mkdir(parents=True, exist_ok=True)
        chosen_file.write_text(restored.path.name if restored else "")
    dist = torch.distributed
    if world.size > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()
    if world.local_rank != 0:
        name = chosen_file.read_text().strip()
        if name:
            restored = checkpoint.Restored(layout.step_of(name) or 0, chosen_file.parent / name,
                                           None, [])  # type: ignore[arg-type]
    if restored is not None:
        reporter.log(f"resuming from {run_store.url_for(restored.path.name)} "
                     f"(step {restored.step})")
        reporter.event({"event": "resume", "step": restored.step,
                        "skipped": restored.skipped})
    else:
        reporter.log("no verified checkpoint in the bucket: starting from scratch")
    return restored


def _check_compatible(saved: dict[str, Any], now: dict[str, Any], threads: int, world: Any,
                      reporter: Reporter) -> None:
    for key, what in _MUST_MATCH.items():
        if key in saved and saved[key] != now[key]:
            raise CheckpointError(
                f"the checkpoint was written with different {what} ({key}: {saved[key]!r} "
                f"then, {now[key]!r} now); resuming would not continue the same run",
                hint="restart with the original data and recipe, or train under a new run "
                     "name")
    for key, value, why in (("torch_threads", threads, "CPU threads"),
                            ("world_size", world.size, "processes")):
        if key in saved and saved[key] != value:
            reporter.log(f"warning: the checkpoint was written with {saved[key]} {why}, now "
                         f"{value}: the result may differ in the last bits from an "
                         "uninterrupted run")


def _identity() -> dict[str, Any]:
    from vicuna_ops.segments import node_identity

    return node_identity()
