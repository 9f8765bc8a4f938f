"""In-memory checkpoint snapshots, written to disk later in the HF Trainer's own format.

Training is blocked only while the state is copied to host memory (a memcpy of model and
optimizer tensors, plus the small RNG/scheduler/trainer states); serialising, hashing and
uploading happen on the uploader thread. The files are exactly the ones the Trainer's
``resume_from_checkpoint`` reads - ``model.safetensors``, ``config.json``, ``optimizer.pt``,
``scheduler.pt``, ``rng_state.pth``, ``trainer_state.json`` - so resume stays the Trainer's
code, and the bitwise-equality test proves the two agree.

Used for a single process (the model and optimizer state are whole in this process). With
several processes (DDP/FSDP) the Trainer's own collective save writes the folder instead.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vicuna_ops import adaptors


@dataclass
class Snapshot:
    step: int
    model_state: dict[str, Any]  # name -> CPU tensor (a private copy)
    config_json: str
    optimizer_state: dict[str, Any]
    scheduler_state: dict[str, Any] | None
    rng_state: dict[str, Any]
    trainer_state_json: str

    @property
    def nbytes(self) -> int:
        torch = adaptors.torch()
        total = sum(t.numel() * t.element_size() for t in self.model_state.values())
        for value in _walk(self.optimizer_state):
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
        return total


def _walk(value: Any):
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _walk(item)
    else:
        yield value


def _host_copy(value: Any, into: Any = None) -> Any:
    """A deep copy of a state dict in which every tensor is copied to host memory.

    ``into`` is an earlier copy of the same structure: its tensors are overwritten in place.
    Reusing buffers matters more than it looks: a fresh multi-GB allocation is paid for in page
    faults on first touch, several times the cost of the copy itself. All tensors are copied
    in one ``_foreach_copy_`` call: per-tensor calls give the GIL back and forth hundreds of
    times, and each time the uploader thread may hold it for a switch interval. GPU tensors
    land in pinned memory with non-blocking copies (the caller synchronises once).
    """
    torch = adaptors.torch()
    pairs: list[tuple[Any, Any]] = []

    def plan(item: Any, old: Any) -> Any:
        if isinstance(item, torch.Tensor):
            source = item.detach()
            if not (isinstance(old, torch.Tensor) and old.shape == source.shape
                    and old.dtype == source.dtype):
                old = torch.empty(source.shape, dtype=source.dtype, pin_memory=source.is_cuda)
            pairs.append((old, source))
            return old
        if isinstance(item, dict):
            previous = old if isinstance(old, dict) else {}
            return {key: plan(sub, previous.get(key)) for key, sub in item.items()}
        if isinstance(item, (list, tuple)):
            previous = old if isinstance(old, (list, tuple)) and len(old) == len(item) else None
            items = [plan(sub, previous[i] if previous else None) for i, sub in enumerate(item)]
            return items if isinstance(item, list) else tuple(items)
        return copy.deepcopy(item)

    copied = plan(value, into)
    if pairs:
        targets, sources = zip(*pairs)
        torch._foreach_copy_(list(targets), list(sources),
                             non_blocking=any(t.is_cuda for t in sources))
    return copied


def _host_buffers(value: Any) -> Any:
    """Zero-filled host tensors shaped like ``value``'s (pages faulted in now, not later)."""
    torch = adaptors.torch()
    if isinstance(value, torch.Tensor):
        return torch.zeros(value.shape, dtype=value.dtype, pin_memory=value.is_cuda)
    if isinstance(value, dict):
        return {key: _host_buffers(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_host_buffers(item) for item in value)
    return None


def buffers_for(model_state: dict[str, Any], optimizer_state: dict[str, Any]) -> Snapshot:
    """An empty snapshot whose buffers a later ``capture(into=...)`` fills without allocating.

    ``model_state`` / ``optimizer_state`` are the live state dicts (only shapes are read), so
    this may run on a background thread while training goes on.
    """
    return Snapshot(step=-1, model_state=_host_buffers(model_state), config_json="",
                    optimizer_state=_host_buffers(optimizer_state), scheduler_state=None,
                    rng_state={}, trainer_state_json="")


def rng_states() -> dict[str, Any]:
    """The states the Trainer's ``_load_rng_state`` restores (python, numpy, torch CPU/CUDA)."""
    import numpy as np

    torch = adaptors.torch()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.random.get_rng_state()
    return states


def capture(trainer: Any, into: Snapshot | None = None) -> Snapshot:
    """Copy everything a resume needs out of a single-process Trainer, right now.

    ``into``: a snapshot no longer in use whose buffers may be overwritten.
    """
    torch = adaptors.torch()
    model = trainer.accelerator.unwrap_model(trainer.model)
    model_state = _host_copy(model.state_dict(), into.model_state if into else None)
    optimizer_state = _host_copy(trainer.optimizer.state_dict(),
                                 into.optimizer_state if into else None)
    if torch.cuda.is_available():
        torch.cuda.synchronize()  # the non-blocking device-to-host copies have landed
    scheduler = trainer.lr_scheduler
    return Snapshot(
        step=trainer.state.global_step,
        model_state=model_state,
        config_json=model.config.to_json_string(use_diff=True),
        optimizer_state=optimizer_state,
        scheduler_state=copy.deepcopy(scheduler.state_dict()) if scheduler is not None else None,
        rng_state=rng_states(),
        trainer_state_json=json.dumps(dataclasses.asdict(trainer.state), indent=2,
                                      sort_keys=True) + "\n",
    )


def write(snapshot: Snapshot, folder: Path) -> None:
    """The snapshot as an HF Trainer checkpoint folder. (What vops itself records - data
    position, fingerprint, ... - goes into the checkpoint's manifest.)"""
    from safetensors.torch import save_file

    torch = adaptors.torch()
    names = adaptors.require("transformers.trainer")  # the Trainer's own file-name constants
    folder.mkdir(parents=True, exist_ok=True)
    save_file(snapshot.model_state, str(folder / names.SAFE_WEIGHTS_NAME),
              metadata={"format": "pt"})
    (folder / names.CONFIG_NAME).write_text(snapshot.config_json)
    torch.save(snapshot.optimizer_state, folder / names.OPTIMIZER_NAME)
    if snapshot.scheduler_state is not None:
        torch.save(snapshot.scheduler_state, folder / names.SCHEDULER_NAME)
    torch.save(snapshot.rng_state, folder / "rng_state.pth")
    (folder / names.TRAINER_STATE_NAME).write_text(snapshot.trainer_state_json)
