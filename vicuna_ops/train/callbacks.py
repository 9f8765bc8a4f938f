"""The Trainer callback that joins training to the rest of vops: progress events, segment
heartbeat counters, and stop requests (preemption notice, budget) turned into "checkpoint at
this step boundary, then stop".

A stop is decided at ``on_step_end``, i.e. after an optimizer step and before the Trainer's
save/log hook, so the checkpoint holds every step done: zero steps lost. With several
processes the ranks agree first (an all-reduce of the flag), because the save is collective
and each rank's notice may arrive at a different step.
"""

from __future__ import annotations

import time
from typing import Any

from vicuna_ops import adaptors
from vicuna_ops.train.heartbeat import SegmentHeartbeat
from vicuna_ops.train.preemption import StopFlag
from vicuna_ops.train.progress import Reporter

_transformers = adaptors.transformers()


class VopsCallback(_transformers.TrainerCallback):
    def __init__(self, *, reporter: Reporter, stop_flag: StopFlag,
                 heartbeat: SegmentHeartbeat | None, world_size: int) -> None:
        self._reporter, self._flag, self._heartbeat = reporter, stop_flag, heartbeat
        self._world_size = world_size
        self.stopped_at: int | None = None  # the step at which a stop request took effect
        self._start_tokens = 0
        self._last = (0.0, 0)  # (monotonic time, tokens) at the previous log
        self.tokens_per_s: float | None = None
        self.tokens = 0  # trained in this process's attempt

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self._start_tokens = state.num_input_tokens_seen
        self._last = (time.monotonic(), state.num_input_tokens_seen)
        if self._heartbeat is not None:
            self._heartbeat.training_started()
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.tokens = state.num_input_tokens_seen - self._start_tokens
        if self._heartbeat is not None:
            self._heartbeat.update(steps=state.global_step, tokens=self.tokens,
                                   epoch=state.epoch or 0.0)
            self._heartbeat.budget_due()  # raises the stop flag once the deadline passed
        if self.stopped_at is None and any_rank(self._flag.is_set(), self._world_size,
                                                args.device):
            request = self._flag.request_made
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
            self._reporter.event({"event": "stop", "step": state.global_step,
                                  "reason": request.reason if request else "peer",
                                  "source": request.source if request else "another rank"})
            self._reporter.log(f"stop requested ({request.source if request else 'by a peer'}):"
                               f" checkpointing step {state.global_step}")
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> Any:
        if not logs or "loss" not in logs:
            return control
        now, tokens = time.monotonic(), state.num_input_tokens_seen
        elapsed = now - self._last[0]
        if elapsed > 0:
            self.tokens_per_s = (tokens - self._last[1]) / elapsed
        self._last = (now, tokens)
        self._reporter.event({
            "event": "step", "step": state.global_step, "max_steps": state.max_steps,
            "loss": round(float(logs["loss"]), 5),
            "lr": logs.get("learning_rate"), "epoch": round(state.epoch or 0.0, 4),
            "tokens": tokens, "tokens_per_s": round(self.tokens_per_s or 0.0, 1)})
        return control


def any_rank(flag: bool, world_size: int, device: Any) -> bool:
    """True on every rank when it is true on any: a collective decision (MAX all-reduce)."""
    if world_size <= 1:
        return flag
    torch = adaptors.torch()
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())
