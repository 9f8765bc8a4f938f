"""The HF Trainer, set up from a recipe, with two changes: our seeded data order, and
checkpoints that go through the vops protocol instead of piling up in ``output_dir``.

Settings from the recipe: global batch = per-device batch x processes x accumulation (it must
divide), bf16 when the recipe asks and the GPU has it (fp32 on CPU), FSDP (``full_shard
auto_wrap`` on the decoder layer, FULL_STATE_DICT so rank 0 holds a whole checkpoint) when
several processes run, gradient checkpointing (as FSDP activation checkpointing under FSDP).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vicuna_ops import adaptors
from vicuna_ops.errors import ConfigError
from vicuna_ops.recipe import Recipe
from vicuna_ops.train import snapshot
from vicuna_ops.train.args import World
from vicuna_ops.train.data import EpochShuffleSampler
from vicuna_ops.train.progress import Reporter
from vicuna_ops.train.uploader import CheckpointUploader, UploadJob, lower_priority

_transformers = adaptors.transformers()


def accumulation_steps(recipe: Recipe, world_size: int) -> int:
    train = recipe.train
    per_step = train.per_device_batch_size * world_size
    if train.global_batch_size % per_step:
        raise ConfigError(
            f"global_batch_size {train.global_batch_size} is not a multiple of "
            f"per_device_batch_size {train.per_device_batch_size} x {world_size} processes",
            hint="change train.per_device_batch_size or train.global_batch_size in the recipe")
    return train.global_batch_size // per_step


def use_bf16(recipe: Recipe, cuda: bool) -> bool:
    if not (recipe.train.bf16 and cuda):
        return False
    return bool(adaptors.torch().cuda.is_bf16_supported())


def fsdp_settings(recipe: Recipe, world_size: int) -> tuple[bool, dict[str, Any] | None]:
    spec = recipe.train.fsdp.split()
    if world_size <= 1 or not spec:
        return False, None
    return True, {
        "version": 2,
        "reshard_after_forward": "shard_grad_op" not in spec,
        "cpu_offload": "offload" in spec,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": [recipe.model.decoder_layer],
        "state_dict_type": "FULL_STATE_DICT",
        "activation_checkpointing": recipe.train.gradient_checkpointing,
        "cpu_ram_efficient_loading": recipe.model.tiny is None,
    }


def training_arguments(recipe: Recipe, *, output_dir: Path, max_steps: int | None,
                       world: World, cuda: bool) -> Any:
    train = recipe.train
    fsdp, fsdp_config = fsdp_settings(recipe, world.size)
    bf16 = use_bf16(recipe, cuda)
    return _transformers.TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=train.per_device_batch_size,
        gradient_accumulation_steps=accumulation_steps(recipe, world.size),
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        num_train_epochs=train.epochs,
        max_steps=max_steps if max_steps is not None else -1,
        warmup_steps=train.warmup_ratio,  # v5: a float in [0, 1) is a ratio of all steps
        lr_scheduler_type=train.lr_scheduler,
        bf16=bf16,
        tf32=True if cuda else None,
        fsdp=fsdp,
        fsdp_config=fsdp_config,
        gradient_checkpointing=train.gradient_checkpointing and not fsdp,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="steps",
        save_steps=train.checkpoint_every_steps,
        save_total_limit=None,  # the uploader deletes local folders once they are in the bucket
        report_to="none",
        disable_tqdm=True,
        seed=train.seed,
        dataloader_num_workers=train.dataloader_workers,
        dataloader_pin_memory=cuda,
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        use_cpu=not cuda,
        ddp_find_unused_parameters=False,
    )


class Checkpointer:
    """Where the Trainer's saves go: a snapshot handed to the uploader (one process), or the
    Trainer's own collective save into ``output_dir`` then the uploader (several processes)."""

    def __init__(self, *, uploader: CheckpointUploader | None, local_root: Path, world: World,
                 meta: Callable[[Any], dict[str, Any]], reporter: Reporter) -> None:
        self._uploader, self._local_root, self._world = uploader, local_root, world
        self._meta, self._reporter = meta, reporter
        self.blocked_s: list[float] = []  # training-thread time per checkpoint
        # Snapshots whose files are written: their host buffers are reused by the next capture.
        self._spare: list[snapshot.Snapshot] = []
        self._spare_lock = threading.Lock()
        self._prewarmed = False

    def _take_spare(self) -> snapshot.Snapshot | None:
        with self._spare_lock:
            return self._spare.pop() if self._spare else None

    def _give_back(self, snap: snapshot.Snapshot) -> None:
        with self._spare_lock:
            if len(self._spare) < 2:  # one being written + one pending is all we ever need
                self._spare.append(snap)

    def _spare_for(self, step: int) -> snapshot.Snapshot | None:
        """Buffers for the capture at ``step``. With none spare (one snapshot being written,
        one waiting), the waiting one is withdrawn: this capture supersedes it anyway, and
        reusing its buffers avoids a fresh multi-GB allocation on the training thread."""
        spare = self._take_spare()
        if spare is None and self._uploader is not None \
                and self._uploader.withdraw_pending(step):
            spare = self._take_spare()
        return spare

    def prewarm(self, trainer: Any) -> None:
        """Once, after the first optimizer step (when Adam's state exists): allocate the
        snapshot buffers on a background thread, so the first checkpoint only copies."""
        if self._prewarmed or self._world.size != 1 or self._uploader is None:
            return
        self._prewarmed = True
        model = trainer.accelerator.unwrap_model(trainer.model)
        shapes = (model.state_dict(), trainer.optimizer.state_dict())  # references: cheap

        def allocate() -> None:  # two: one the uploader is writing, one for the next capture
            lower_priority()
            for _ in range(2):
                self._give_back(snapshot.buffers_for(*shapes))

        threading.Thread(target=allocate, name="vops-prewarm", daemon=True).start()

    def save(self, trainer: Any, trainer_save: Callable[[], None]) -> None:
        started = time.perf_counter()
        step = trainer.state.global_step
        meta = self._meta(trainer.state)
        if self._world.size == 1:
            trainer.store_flos()
            snap = snapshot.capture(trainer, into=self._spare_for(step))
            job = UploadJob(step, self._local_root / f"step_{step:08d}", meta,
                            prepare=lambda folder: snapshot.write(snap, folder),
                            release=lambda: self._give_back(snap))
        else:
            trainer_save()  # collective: FSDP gathers the full state dict to rank 0
            trainer.accelerator.wait_for_everyone()
            folder = Path(trainer.args.output_dir) / f"checkpoint-{step}"
            job = UploadJob(step, folder, meta)
        if self._uploader is not None:
            self._uploader.submit(job)
        blocked = time.perf_counter() - started
        self.blocked_s.append(blocked)
        self._reporter.event({"event": "checkpoint", "step": step,
                              "blocked_s": round(blocked, 5)})


class VopsTrainer(_transformers.Trainer):
    """``Trainer`` with the seeded epoch order and checkpoints routed to a ``Checkpointer``."""

    def __init__(self, *args: Any, sampler_seed: int, checkpointer: Checkpointer | None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sampler_seed = sampler_seed
        self._checkpointer = checkpointer

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        return EpochShuffleSampler(len(dataset), self._sampler_seed)

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> Any:
        # Resumed from the last step's checkpoint (killed before final/ was written): the
        # Trainer would run one more step before its end-of-training check. Train nothing.
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return [], None
        return super().get_batch_samples(epoch_iterator, num_batches, device)

    def _maybe_log_save_evaluate(self, *args: Any, **kwargs: Any) -> None:
        # Runs after every optimizer step, before any save: the first call prewarms buffers.
        if self._checkpointer is not None:
            self._checkpointer.prewarm(self)
        super()._maybe_log_save_evaluate(*args, **kwargs)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        if self._checkpointer is None:  # a plain HF save (used by the benchmark baseline)
            super()._save_checkpoint(model, trial)
            return
        if 0 < self.state.max_steps <= self.state.global_step:
            # The last step: final/ is written next, so a full checkpoint (for a 7B model with
            # its Adam state, some 80 GB) would only delay the end of the run. Killed before
            # final/ lands, a restart redoes at most one checkpoint interval.
            return
        self._checkpointer.save(self, lambda: super(VopsTrainer, self)._save_checkpoint(
            model, trial))
