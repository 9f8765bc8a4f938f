"""One training attempt, start to exit code: what ``python -m vicuna_ops.train`` runs.

    run lease (LEASE)                         before anything is written: one writer per run;
                                              held by a live trainer -> exit 2
    segment record + notice watchers          first, before any heavy import: billed time and
                                              notices count from the process's start
    final/ verified in the bucket?            -> nothing to do, exit 0 (sizes and SHA-256;
                                              a corrupt one is reported, removed and rebuilt)
    newest verified checkpoint                -> download, check it fits this data and recipe
    tokenizer, data, model, Trainer           -> train from it (or from scratch)
    stop request at a step boundary           -> checkpoint, finish the upload, exit 75 / 0
    all steps done                            -> final/ (HF format) + manifest, exit 0
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vicuna_ops import adaptors, layout
from vicuna_ops.errors import CheckpointError, UserError, VopsError
from vicuna_ops.recipe import Recipe, dump_recipe, load_recipe
from vicuna_ops.segments import node_identity
from vicuna_ops.train import checkpoint
from vicuna_ops.train.args import EXIT_OK, EXIT_PREEMPTED, EXIT_USAGE, TrainArgs, World
from vicuna_ops.train.data import DataPosition
from vicuna_ops.train.heartbeat import SegmentHeartbeat, next_attempt
from vicuna_ops.train.lease import RunLease, lease_ttl
from vicuna_ops.train.preemption import PreemptionWatcher, StopFlag, notice_urls
from vicuna_ops.train.progress import Reporter
from vicuna_ops.train.manifest import Manifest

# manifest meta keys that must match for a resume to continue the same run exactly
_MUST_MATCH = {
    "data_fingerprint": "the training data",
    "global_batch_size": "train.global_batch_size",
    "max_steps": "the step count (--max-steps / train.max_steps / epochs)",
    "seed": "train.seed",
}
_SEGMENT_STATUS = {"already-finished": "finished"}
# The budget guard's guess of a checkpoint's save + upload before one is timed: fp32 weights
# and Adam's two moments, at an assumed upload rate.
CHECKPOINT_BYTES_PER_PARAM = 12
ASSUMED_UPLOAD_BPS = 100e6


@dataclass(frozen=True)
class Outcome:
    status: str  # finished | preempted | budget-stopped | already-finished
    steps: int
    exit_code: int


@dataclass(frozen=True)
class Session:
    """What every stage of one attempt shares."""

    args: TrainArgs
    recipe: Recipe
    world: World
    reporter: Reporter
    run_store: Any
    workdir: Path
    stop_flag: StopFlag
    heartbeat: SegmentHeartbeat | None  # global rank 0 only


def quiet_libraries() -> None:
    """Warnings only from transformers, and no tqdm bars (ours is the progress)."""
    transformers = adaptors.transformers()
    transformers.utils.logging.set_verbosity_warning()
    transformers.utils.logging.disable_progress_bar()


def configure_determinism(cuda: bool) -> int:
    """Same thread count and deterministic kernels, so a resumed run matches bit for bit."""
    torch = adaptors.torch()
    threads = os.environ.get("VOPS_TORCH_THREADS")
    if threads:
        torch.set_num_threads(int(threads))
    if not cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return torch.get_num_threads()


def run(args: TrainArgs, reporter: Reporter | None = None) -> Outcome:
    from vicuna_ops.storage import open_store

    world = World.from_env()
    reporter = reporter or Reporter(enabled=world.is_main, json_events=args.progress)
    recipe = load_recipe(args.recipe)
    run_store = open_store(args.bucket).child(args.run_id)
    identity = node_identity()
    stop_flag = StopFlag()
    aws_url, gcp_url = notice_urls(str(identity.get("cloud", "local")),
                                   args.aws_notice_url, args.gcp_notice_url)
    if world.local_rank != 0:  # one poller per node; the ranks agree at each step anyway
        aws_url = gcp_url = None
    watcher = PreemptionWatcher(stop_flag, aws_url=aws_url, gcp_url=gcp_url,
                                aws_token_url=args.aws_token_url or None,
                                poll_s=args.notice_poll_s, log=reporter.log)
    heartbeat: SegmentHeartbeat | None = None
    lease: RunLease | None = None
    status = "failed"
    try:
        watcher.start()
        if world.is_main:
            attempt, earlier = next_attempt(run_store)
            lease = RunLease(run_store, attempt=attempt, ttl_s=lease_ttl(args.heartbeat_s),
                             log=reporter.log)
            lease.acquire()
            heartbeat = SegmentHeartbeat(
                run_store, args.run_id, attempt=attempt, first_step=None,
                interval_s=args.heartbeat_s, earlier=earlier, stop_flag=stop_flag,
                max_cost=args.max_cost, log=reporter.log, identity=identity, lease=lease,
                on_lease_lost=lambda: _lease_lost(run_store),
                spool_dir=Path(args.workdir) / args.run_id / "segment-spool")
            heartbeat.start()
        session = Session(args, recipe, world, reporter, run_store,
                          Path(args.workdir) / args.run_id, stop_flag, heartbeat)
        reporter.event({"event": "start", "run_id": args.run_id, "recipe": recipe.name,
                        "bucket": run_store.uri, "rank": world.rank,
                        "max_steps": args.max_steps or recipe.train.max_steps,
                        "segment": heartbeat.record.segment_id if heartbeat else None})
        outcome = _already_finished(session) or _train(session)
        status = _SEGMENT_STATUS.get(outcome.status, outcome.status)
        return outcome
    finally:
        watcher.stop()
        if heartbeat is not None:
            heartbeat.finish(status)
        if lease is not None:
            lease.release()


def _lease_lost(run_store: Any) -> None:
    """Another trainer took the run over (we stalled past the lease's expiry): stop now,
    from the heartbeat thread, before this process writes one more object."""
    from vicuna_ops.train.lease import read_lease

    try:
        holder = read_lease(run_store)
    except VopsError:
        holder = None
    who = holder.describe() if holder else "another trainer"
    print(f"error: lost the run lease of {run_store.uri} to {who}; stopping without writing",
          file=sys.stderr, flush=True)
    os._exit(EXIT_USAGE)


def _already_finished(session: Session) -> Outcome | None:
    done, problem = checkpoint.verify_final(session.run_store)
    final = session.run_store.url_for(layout.FINAL)
    if problem is not None and session.world.is_main:
        session.reporter.log(f"{final} is corrupt ({problem}): rebuilding it from the newest "
                             "verified checkpoint")
        session.reporter.event({"event": "final-corrupt", "final": final, "problem": problem})
        checkpoint.discard_final(session.run_store)
    if done is None:
        return None
    steps = int(done.meta.get("steps", 0))
    session.reporter.log(f"{final} is complete (step {steps}); nothing to do")
    session.reporter.event({"event": "end", "status": "already-finished", "steps": steps,
                            "final": final})
    return Outcome("already-finished", steps, EXIT_OK)


def _train(session: Session) -> Outcome:
    from vicuna_ops.train.callbacks import VopsCallback, any_rank
    from vicuna_ops.train.data import PadCollator
    from vicuna_ops.train.model import build_model, parameter_count, resolve_attn_implementation
    from vicuna_ops.train.trainer import Checkpointer, VopsTrainer, training_arguments
    from vicuna_ops.train.uploader import CheckpointUploader

    args, recipe, world, reporter = session.args, session.recipe, session.world, session.reporter
    cuda = adaptors.torch().cuda.is_available()
    threads = configure_determinism(cuda)
    hf_args = training_arguments(recipe, output_dir=session.workdir / "hf",
                                 max_steps=args.max_steps or recipe.train.max_steps,
                                 world=world, cuda=cuda)
    _ = hf_args.device  # sets up torch.distributed under torchrun: the barriers below need it
    if any_rank(_budget_spent(session), world.size, hf_args.device):
        # a rerun of a run whose budget is gone: not even the checkpoint is downloaded
        return _stopped(session, _latest_step(session), uploader=None)
    restore_started = time.monotonic()
    restored = _restore(session)
    restore_s = time.monotonic() - restore_started
    if session.heartbeat is not None:
        session.heartbeat.resumed_at(restored.step if restored else 0)
    tokenizer = _tokenizer(session)
    dataset, data_uri, data_summary = _dataset(session, tokenizer)
    run_facts = {"data_fingerprint": dataset.fingerprint(),
                 "global_batch_size": recipe.train.global_batch_size,
                 "max_steps": hf_args.max_steps, "seed": recipe.train.seed}
    if restored is not None:
        _check_compatible(dict(restored.manifest.meta), run_facts, threads, world, reporter)
    attn = resolve_attn_implementation(recipe.model.attn_implementation, cuda)
    model = build_model(recipe, tokenizer, attn_implementation=attn,
                        local_model_dir=_model_dir(session))
    if session.heartbeat is not None:
        # the budget guard's first idea of a checkpoint's cost: the download it just did, or
        # the Adam checkpoint's size at an assumed upload rate; the first upload replaces it
        guess = restore_s if restored is not None else \
            parameter_count(model) * CHECKPOINT_BYTES_PER_PARAM / ASSUMED_UPLOAD_BPS
        session.heartbeat.expect_checkpoint_s(guess, measured=False)
    reporter.log(f"model: {parameter_count(model):,} parameters, attention {attn}, "
                 f"{'bf16' if hf_args.bf16 else 'fp32'}, {world.size} process(es), "
                 f"{threads} CPU thread(s)")
    if any_rank(session.stop_flag.is_set(), world.size, hf_args.device):
        # noticed while starting up: nothing new to save, so stop before the first step
        return _stopped(session, restored.step if restored else 0, uploader=None)

    uploader = None
    local_ckpts = session.workdir / "checkpoints"
    if world.is_main:
        uploader = CheckpointUploader(session.run_store, recipe.train.keep_checkpoints,
                                      on_event=_upload_events(session), log=reporter.log)
        shutil.rmtree(local_ckpts, ignore_errors=True)  # leftovers of a killed attempt
        (session.workdir / "recipe.yaml").write_text(dump_recipe(recipe))

    def meta(state: Any) -> dict[str, Any]:
        position = DataPosition.at(state.global_step, len(dataset), recipe.train.global_batch_size)
        return {**run_facts, "run_id": args.run_id, "step": state.global_step,
                "epoch": position.epoch, "samples_in_epoch": position.samples_in_epoch,
                "samples_consumed": position.samples_total, "dataset_size": len(dataset),
                "world_size": world.size, "torch_threads": threads,
                "tokens_seen": state.num_input_tokens_seen, "recipe": recipe.name}

    checkpointer = Checkpointer(uploader=uploader, local_root=local_ckpts, world=world,
                                meta=meta, reporter=reporter)
    callback = VopsCallback(reporter=reporter, stop_flag=session.stop_flag,
                            heartbeat=session.heartbeat, world_size=world.size)
    trainer = VopsTrainer(
        model=model, args=hf_args, train_dataset=dataset,
        data_collator=PadCollator(tokenizer.pad_token_id, 8 if cuda else 1),
        callbacks=[callback], sampler_seed=recipe.train.seed, checkpointer=checkpointer)
    # Our progress replaces the Trainer's printed log dicts (they would interleave stdout).
    trainer.remove_callback(adaptors.transformers().PrinterCallback)
    try:
        trainer.train(resume_from_checkpoint=str(restored.path) if restored else None)
        if uploader is not None and not uploader.flush():
            raise CheckpointError("checkpoint upload did not finish")
    except BaseException:
        if uploader is not None:
            uploader.close(timeout=60)  # whatever is in flight may still land
        raise
    steps = trainer.state.global_step
    if callback.stopped_at is not None and steps < trainer.state.max_steps:
        return _stopped(session, steps, uploader)
    return _finish(session, trainer, tokenizer, uploader, checkpointer, callback,
                   {"steps": steps, "recipe": recipe.name, "data": data_uri,
                    "data_stats": data_summary,
                    "tokens_seen": trainer.state.num_input_tokens_seen})


def _budget_spent(session: Session) -> bool:
    request = session.stop_flag.request_made
    return request is not None and request.reason == "budget"


def _latest_step(session: Session) -> int:
    try:
        return layout.step_of(session.run_store.get_bytes(layout.LATEST).decode()) or 0
    except (VopsError, UnicodeDecodeError):
        return 0


def _upload_events(session: Session) -> Any:
    """The uploader's events, also timing each checkpoint for the budget guard."""
    def on_event(event: dict[str, Any]) -> None:
        session.reporter.event(event)
        if event.get("event") == "upload-done" and session.heartbeat is not None:
            session.heartbeat.expect_checkpoint_s(float(event.get("job_s", 0.0)), measured=True)

    return on_event


def _stopped(session: Session, steps: int, uploader: Any) -> Outcome:
    request = session.stop_flag.request_made
    status = "budget-stopped" if request and request.reason == "budget" else "preempted"
    failures = []
    if uploader is not None:
        uploader.close()
        failures = uploader.stats.failures
        note = f"upload FAILED: {failures[-1]}" if failures else "checkpoint uploaded"
    else:  # stopped before its first step: the bucket's checkpoint is still the newest
        note = "no step trained in this attempt, nothing uploaded"
    session.reporter.log(f"stopped at step {steps} ({status}); {note}")
    session.reporter.event({"event": "end", "status": status, "steps": steps,
                            "uploaded": uploader is not None and not failures,
                            "upload_failures": failures})
    return Outcome(status, steps, EXIT_OK if status == "budget-stopped" else EXIT_PREEMPTED)


def _finish(session: Session, trainer: Any, tokenizer: Any, uploader: Any, checkpointer: Any,
            callback: Any, meta: dict[str, Any]) -> Outcome:
    """final/: the model in HF format (config, safetensors, tokenizer), manifest last."""
    steps = meta["steps"]
    final_dir = session.workdir / "final"
    shutil.rmtree(final_dir, ignore_errors=True)
    trainer.save_model(str(final_dir))  # collective under FSDP: gathers the full weights
    if session.world.is_main:
        (final_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle, not the model
        tokenizer.save_pretrained(str(final_dir))
        published = checkpoint.publish_final(session.run_store, final_dir, meta)
        checkpoint.prune(session.run_store, session.recipe.train.keep_checkpoints,
                         session.reporter.log)
        uploader.close()
        final_uri = session.run_store.url_for(layout.FINAL)
        session.reporter.log(f"finished at step {steps}: {final_uri} "
                             f"({published.bytes:,} bytes)")
        session.reporter.event({"event": "final", "uri": final_uri, "bytes": published.bytes})
        session.reporter.event({
            "event": "end", "status": "finished", "steps": steps, "final": final_uri,
            "tokens_per_s": callback.tokens_per_s, "checkpoints": uploader.stats.published,
            "blocked_s": checkpointer.blocked_s, "upload_failures": uploader.stats.failures})
        shutil.rmtree(final_dir, ignore_errors=True)
    return Outcome("finished", steps, EXIT_OK)


def _restore(session: Session) -> checkpoint.Restored | None:
    """Local rank 0 of each node downloads; the others use its copy after a barrier."""
    world, reporter, workdir = session.world, session.reporter, session.workdir
    chosen_file = workdir / "resume" / "CHOSEN"
    restored = None
    if world.local_rank == 0:
        shutil.rmtree(workdir / "resume", ignore_errors=True)
        restored = checkpoint.restore_newest(session.run_store, workdir / "resume",
                                             reporter.log)
        chosen_file.parent.mkdir(parents=True, exist_ok=True)
        chosen_file.write_text(restored.path.name if restored else "")
    _barrier(world)
    if world.local_rank != 0:
        name = chosen_file.read_text().strip()
        if name:
            path = chosen_file.parent / name
            manifest = Manifest.from_json((path / layout.MANIFEST).read_bytes())
            restored = checkpoint.Restored(layout.step_of(name) or 0, path, manifest, [])
    if restored is None:
        reporter.log("no verified checkpoint in the bucket: starting from scratch")
        return None
    reporter.log(f"resuming from {session.run_store.url_for(restored.path.name)} "
                 f"(step {restored.step})")
    reporter.event({"event": "resume", "step": restored.step, "skipped": restored.skipped})
    return restored


def _barrier(world: World) -> None:
    dist = adaptors.torch().distributed
    if world.size > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()


def _tokenizer(session: Session) -> Any:
    from vicuna_ops.tokenizer import load_tokenizer
    from vicuna_ops.train.model import is_bucket_uri

    recipe = session.recipe
    source = recipe.tokenizer or recipe.model.name_or_path
    if not source:
        raise UserError(f"recipe {recipe.name!r} names no tokenizer",
                        hint="set tokenizer: builtin:tiny, a folder or a hub id")
    if is_bucket_uri(source):
        source = str(_download_once(session, source, "tokenizer"))
    tokenizer = load_tokenizer(source)
    if tokenizer.pad_token_id is None:  # LLaMA ships none; pad positions carry no loss
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def _model_dir(session: Session) -> Path | None:
    from vicuna_ops.train.model import is_bucket_uri

    name = session.recipe.model.name_or_path
    if session.recipe.model.tiny is None and is_bucket_uri(name):
        return _download_once(session, str(name), "model")
    return None


def _download_once(session: Session, uri: str, what: str) -> Path:
    """A bucket folder (model, tokenizer) fetched by local rank 0; the node's others wait."""
    from vicuna_ops.train.model import materialize_folder

    dest = session.workdir / what
    if session.world.local_rank == 0:
        materialize_folder(uri, dest)
    _barrier(session.world)
    return dest


def _dataset(session: Session, tokenizer: Any) -> tuple[Any, str, str]:
    from vicuna_ops.train.data import load_conversations

    data_uri = session.args.data or session.recipe.data.path
    if not data_uri:
        raise UserError("no training data", hint="pass --data URI or set data.path in the recipe")
    dataset, stats = load_conversations(data_uri, tokenizer, session.recipe.data.max_length)
    session.reporter.log(f"data {data_uri}: {stats.summary()}")
    session.reporter.event({"event": "data", "uri": data_uri, "records": stats.records,
                            "used": stats.used, "truncated": stats.truncated,
                            "skipped": stats.skipped, "tokens": stats.tokens})
    return dataset, data_uri, stats.summary()


def _check_compatible(saved: dict[str, Any], now: dict[str, Any], threads: int, world: World,
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
