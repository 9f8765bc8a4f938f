"""How much work a training run is, and how fast it goes: the hours behind the plan's estimate.

hours = tokens to train / (tokens per second per GPU x GPUs). Each factor says where it came
from, and the plan prints that:

* tokens: ``--max-steps`` x global batch x sequence length (an upper bound: a short sample is
  not padded to it); else the training split's token count from the ``report.json`` that
  ``vops data prepare`` writes beside ``train.jsonl``, times the epochs; else the recipe's
  ``data.expected_conversations`` x its ``data.tokens_per_conversation`` (default
  ``TOKENS_PER_CONVERSATION``), times the epochs. With none of
  these the recipe's ``expected_hours`` stands (rescaled to the GPU count).
* tokens/s per GPU: measured, from earlier segments of the same recipe on the same GPU in the
  ledger; else ``ASSUMED_TOKENS_PER_S`` for that GPU, scaled from 7B to the recipe's
  ``model.params_b`` (training cost grows with the parameter count) and from 2K tokens to
  the recipe's sequence length (attention grows with it: ``context_factor``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from vicuna_ops.launch.accelerators import Gpus
from vicuna_ops.recipe import Recipe

# ShareGPT conversations after cleaning average about a thousand tokens in the v1.1 template
# (FastChat's cleaned 70K set: ~1,000-1,100); a stated round figure, used only without a report.
TOKENS_PER_CONVERSATION = 1_000

# Assumed training throughput per GPU for a 7B LLaMA: full fine-tune, bf16, FSDP full_shard,
# gradient checkpointing, flash attention, 2K context. About 40% of each GPU's dense bf16 peak
# at ~8 x 7e9 FLOPs per token (forward + backward + recomputation). Replaced by measured
# figures as soon as the ledger has segments of the same recipe on the same GPU.
ASSUMED_TOKENS_PER_S = {
    "H100": 5_000,
    "A100-80GB": 2_300,
    "A100": 2_200,
    "L40S": 1_300,
    "A10G": 500,
    "L4": 450,
    "V100": 450,
    "T4": 120,
}
REFERENCE_PARAMS_B = 7.0
REFERENCE_LENGTH = 2048  # the sequence length the table's figures are for


@dataclass(frozen=True)
class Workload:
    """The hours a run needs, and why (``tokens_source``, ``rate_source`` are for people)."""

    hours: float
    tokens: int | None
    tokens_source: str
    tokens_per_s_per_gpu: float | None
    rate_source: str

    def describe(self) -> str:
        if self.tokens is None or self.tokens_per_s_per_gpu is None:
            return self.tokens_source
        return (f"{self.tokens / 1e6:,.1f}M tokens ({self.tokens_source}) at "
                f"{self.tokens_per_s_per_gpu:,.0f} tokens/s per GPU ({self.rate_source})")


def tokens_to_train(recipe: Recipe, max_steps: int | None,
                    report: dict[str, Any] | None) -> tuple[int | None, str]:
    """The run's token count and where it came from; (None, why) when nothing says."""
    epochs = recipe.train.epochs
    from_data: tuple[int, str] | None = None
    train_tokens = _report_train_tokens(report)
    if train_tokens:
        from_data = (round(train_tokens * epochs),
                     f"report.json: {train_tokens:,} training tokens x {epochs:g} epochs")
    elif recipe.data.expected_conversations:
        conversations = recipe.data.expected_conversations
        per = recipe.data.tokens_per_conversation or TOKENS_PER_CONVERSATION
        from_data = (round(conversations * per * epochs),
                     f"{conversations:,} conversations x {per:,} tokens "
                     f"(assumed) x {epochs:g} epochs")
    steps = max_steps or recipe.train.max_steps
    if steps:
        cap = steps * recipe.train.global_batch_size * recipe.data.max_length
        if from_data is None or cap < from_data[0]:
            return cap, (f"{steps:,} steps x {recipe.train.global_batch_size} sequences x "
                         f"{recipe.data.max_length:,} tokens, at most")
    if from_data is not None:
        return from_data
    return None, "the recipe's expected_hours (no report.json beside the data)"


def tokens_per_s_per_gpu(recipe: Recipe, gpus: Gpus,
                         measured: Iterable[dict[str, Any]] = ()) -> tuple[float | None, str]:
    """Measured (ledger segments of this recipe on this GPU) or assumed throughput per GPU."""
    tokens = gpu_seconds = 0.0
    for segment in measured:
        count = _gpu_count(segment.get("accelerators"), gpus.name)
        seconds = float(segment.get("heartbeat", 0)) - float(segment.get("start", 0))
        if count and seconds > 0 and segment.get("tokens"):
            tokens += float(segment["tokens"])
            gpu_seconds += seconds * count * int(segment.get("num_nodes") or 1)
    if tokens and gpu_seconds:
        return tokens / gpu_seconds, f"measured over {gpu_seconds / 3600:,.1f} GPU-hours"
    base = ASSUMED_TOKENS_PER_S.get(gpus.name)
    params = recipe.model.params_b
    if base is None or not params:
        return None, "no assumption for this GPU or model size"
    length = recipe.data.max_length
    return (base * REFERENCE_PARAMS_B / params * context_factor(params, length),
            f"assumed for {gpus.name} at {params:g}B parameters, {length:,}-token sequences")


def context_factor(params_b: float, length: int) -> float:
    """Throughput at ``length`` relative to the table's 2,048 tokens: FLOPs per token are
    about 6N + 12 L d s (weights, then attention over the sequence), with L x d ~ 1.7 sqrt(N)
    for LLaMA shapes (7B: 32 x 4096; 13B: 40 x 5120)."""
    params = params_b * 1e9
    layers_x_width = 1.7 * params ** 0.5
    def flops(seq: int) -> float:
        return 6 * params + 12 * layers_x_width * seq
    return flops(REFERENCE_LENGTH) / flops(length)


def workload(recipe: Recipe, gpus: Gpus, num_nodes: int, *, max_steps: int | None = None,
             report: dict[str, Any] | None = None,
             measured: Iterable[dict[str, Any]] = ()) -> Workload:
    tokens, tokens_source = tokens_to_train(recipe, max_steps, report)
    rate, rate_source = tokens_per_s_per_gpu(recipe, gpus, measured)
    if tokens is None or rate is None:
        hours = expected_hours(recipe, gpus, num_nodes)
        return Workload(hours, None, "the recipe's expected_hours", None, rate_source)
    hours = tokens / (rate * gpus.count * num_nodes) / 3600
    return Workload(hours, tokens, tokens_source, rate, rate_source)


def expected_hours(recipe: Recipe, gpus: Gpus, num_nodes: int = 1) -> float:
    """The recipe's hours, rescaled from its own GPU count to ``num_nodes x gpus.count``."""
    from vicuna_ops.launch.accelerators import parse_gpus

    try:
        recipe_gpus = parse_gpus(recipe.resources.gpus).count
    except Exception:  # a recipe with an odd gpus string: take its hours as they are
        recipe_gpus = gpus.count * num_nodes
    return recipe.resources.expected_hours * recipe_gpus / (gpus.count * num_nodes)


def read_data_report(data_uri: str | None) -> dict[str, Any] | None:
    """The ``report.json`` beside ``data_uri`` (a bucket or local file), or None when there is
    none or it cannot be read: the estimate then says it used another source."""
    if not data_uri or "://" in data_uri and not data_uri.startswith(("s3://", "gs://",
                                                                       "file://")):
        return None
    try:
        from vicuna_ops.storage import open_store

        folder, _, _ = data_uri.rstrip("/").rpartition("/")
        return json.loads(open_store(folder).get_bytes("report.json"))
    except Exception:  # noqa: BLE001 - any failure means "no report": the plan says so
        return None


def measured_segments(recipe_name: str, gpu_name: str) -> list[dict[str, Any]]:
    """Train segments in the ledger of earlier runs of ``recipe_name`` on ``gpu_name``."""
    from vicuna_ops.ledger import Ledger

    found = []
    with Ledger() as ledger:
        for run in ledger.list_runs(kind="train"):
            if (run.get("data") or {}).get("recipe") != recipe_name:
                continue
            for row in ledger.segments(run["run_id"]):
                data = row.get("data") or {}
                if _gpu_count(data.get("accelerators"), gpu_name):
                    found.append(data)
    return found


def _report_train_tokens(report: dict[str, Any] | None) -> int | None:
    try:
        tokens = int(report["splits"]["train"]["tokens"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None
    return tokens if tokens > 0 else None


def _gpu_count(accelerators: Any, gpu_name: str) -> int:
    """``"A100:8"`` -> 8 when the name is ``gpu_name``, else 0."""
    if not isinstance(accelerators, str):
        return 0
    name, _, count = accelerators.partition(":")
    try:
        return int(count or 1) if name.strip().upper() == gpu_name.upper() else 0
    except ValueError:
        return 0
