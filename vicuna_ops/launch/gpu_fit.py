"""``--gpus auto``: the cheapest spot GPU whose memory holds the job, with the arithmetic shown.

Serving (one GPU per worker): the weights at their precision plus the KV cache for
``max_model_len x max_concurrency`` sequences plus a fixed runtime overhead must fit in
``GPU_UTILIZATION`` of the GPU's memory (vLLM's default ``gpu_memory_utilization``).
Training (the recipe's GPU count, FSDP full shard): weights, gradients and Adam's fp32 states
(16 bytes per parameter) sharded over the GPUs, plus activations with gradient checkpointing.

The model's shape comes from its ``config.json`` (parameters counted from the dimensions, so a
config alone is enough: no weights are read) or, for training, from the recipe's ``params_b``.
GPU memory comes from SkyPilot's catalog (``device_memory``); prices from the same zone search
``vops train`` uses, so "cheapest" means the cheapest spot zone of the requested clouds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from vicuna_ops.errors import UserError

GIB = 2**30
GPU_UTILIZATION = 0.9  # share of a GPU's memory a server may plan for (vLLM's default)
SERVE_OVERHEAD_GIB = 1.5  # per GPU: CUDA context, activations of a batch, CUDA graphs
TRAIN_BYTES_PER_PARAM = 16  # bf16 weights + bf16 grads + fp32 master, Adam m and v
TRAIN_ACTIVATIONS_GIB = 4.0  # per GPU, with gradient checkpointing at 2K-4K tokens
# Bytes per weight: 4-bit GPTQ/AWQ stores a 16-bit scale and a 4-bit zero per 128 weights.
BYTES_PER_WEIGHT = {"bf16": 2.0, "fp16": 2.0, "fp32": 4.0, "int8": 1.0 + 2 / 128,
                    "int4": 0.5 + (2 + 0.5) / 128}


@dataclass(frozen=True)
class ModelShape:
    params: int
    layers: int
    kv_heads: int
    head_dim: int
    embedding_params: int  # embeddings + lm_head: kept in 16 bits by 4-bit quantizers
    precision: str  # bf16 | fp16 | fp32 | int8 | int4
    max_position_embeddings: int

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V, 16-bit, every layer."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2

    def weight_bytes(self) -> float:
        if self.precision in ("int4", "int8"):
            body = (self.params - self.embedding_params) * BYTES_PER_WEIGHT[self.precision]
            return body + self.embedding_params * 2.0
        return self.params * BYTES_PER_WEIGHT[self.precision]


@dataclass(frozen=True)
class Need:
    """What one GPU must hold, in GiB, with the parts that add up to it."""

    per_gpu_gib: float
    parts: dict[str, float]
    count: int

    def describe(self) -> str:
        parts = " + ".join(f"{name} {value:.1f}" for name, value in self.parts.items())
        per = f" per GPU (of {self.count})" if self.count > 1 else ""
        return f"{parts} = {self.per_gpu_gib:.1f} GiB{per}, within {GPU_UTILIZATION:.0%} of memory"


@dataclass(frozen=True)
class GpuChoice:
    gpus: str  # e.g. "L4:1"
    memory_gib: float  # per GPU, from the catalog
    spot_price: float | None  # cheapest spot zone, $/h per node
    zone: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def shape_from_config(config: dict[str, Any], precision: str | None = None) -> ModelShape:
    """A LLaMA-family config.json -> its shape; precision from ``quantization_config`` or
    ``torch_dtype`` unless given."""
    try:
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        intermediate = int(config["intermediate_size"])
        vocab = int(config["vocab_size"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"the model's config.json has no usable {exc} (not a LLaMA-style "
                        "config)") from None
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    attention = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2
    per_layer = attention + 3 * hidden * intermediate + 2 * hidden
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return ModelShape(params=layers * per_layer + embeddings + hidden, layers=layers,
                      kv_heads=kv_heads, head_dim=head_dim, embedding_params=embeddings,
                      precision=precision or _precision(config),
                      max_position_embeddings=_context(config))


def read_model_config(model: str) -> dict[str, Any]:
    """``config.json`` of a model folder or bucket prefix (one small read)."""
    from vicuna_ops.storage import open_store

    try:
        return json.loads(open_store(model).get_bytes("config.json"))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - missing, unreadable or not JSON: one line
        raise UserError(f"cannot read {model.rstrip('/')}/config.json for --gpus auto: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                        hint="pass --gpus NAME:COUNT instead") from None


def serve_need(shape: ModelShape, max_model_len: int, max_concurrency: int) -> Need:
    parts = {"weights": shape.weight_bytes() / GIB,
             "KV cache": shape.kv_bytes_per_token * max_model_len * max_concurrency / GIB,
             "runtime": SERVE_OVERHEAD_GIB}
    return Need(per_gpu_gib=sum(parts.values()), parts=parts, count=1)


def train_need(params_b: float, count: int) -> Need:
    states = params_b * 1e9 * TRAIN_BYTES_PER_PARAM / count / GIB
    parts = {"weights+grads+Adam (sharded)": states, "activations": TRAIN_ACTIVATIONS_GIB}
    return Need(per_gpu_gib=sum(parts.values()), parts=parts, count=count)


def fits(need: Need, memory_gib: float) -> bool:
    return need.per_gpu_gib <= memory_gib * GPU_UTILIZATION


def gpu_memory(clouds: Sequence[str]) -> dict[str, float]:
    """Accelerator name -> GiB per GPU, from SkyPilot's catalog (the smallest listing)."""
    from vicuna_ops.launch.sky_calls import catalog_calls

    with catalog_calls(clouds):
        from sky import catalog

        listed = catalog.list_accelerators(gpus_only=True, clouds=list(clouds))
    memory: dict[str, float] = {}
    for name, offers in listed.items():
        sizes = [o.device_memory for o in offers if o.device_memory]
        if sizes:
            memory[name] = float(min(sizes))
    return memory


def choose(need_for: Any, counts: Sequence[int], clouds: Sequence[str], *,
           cost_of: Any = None) -> tuple[GpuChoice, GpuChoice | None, Need]:
    """The cheapest spot (name, count) that fits and its runner-up. ``need_for(count)`` gives
    the Need for a count; ``cost_of(choice)`` what "cheapest" compares (default: $/h; a
    training run compares $ per trained token instead). Raises UserError when nothing in the
    catalog fits."""
    from vicuna_ops.launch.accelerators import Gpus
    from vicuna_ops.launch.candidates import zone_candidates

    options: list[tuple[GpuChoice, Need]] = []
    for name, memory in sorted(gpu_memory(clouds).items()):
        for count in counts:
            need = need_for(count)
            if not fits(need, memory):
                continue
            try:
                best = zone_candidates(Gpus(name, count), clouds, cap=1, min_per_cloud=0)
            except UserError:  # not offered at this count on spot
                continue
            options.append((GpuChoice(f"{name}:{count}", memory, best[0].spot_price,
                                      best[0].infra), need))
    if not options:
        largest = need_for(max(counts))
        raise UserError(f"no GPU on {', '.join(clouds)} fits {largest.describe()}",
                        hint="lower --max-model-len or --max-concurrency, quantize the model "
                             "(vops quantize), or pass --gpus NAME:COUNT")
    cost_of = cost_of or (lambda choice: choice.spot_price)
    options.sort(key=lambda item: (cost_of(item[0]), item[0].gpus))
    best, need = options[0]
    runner_up = options[1][0] if len(options) > 1 else None
    return best, runner_up, need


def _precision(config: dict[str, Any]) -> str:
    quant = config.get("quantization_config") or {}
    bits = quant.get("bits") or (quant.get("config_groups", {}).get("group_0", {})
                                 .get("weights", {}).get("num_bits")
                                 if isinstance(quant.get("config_groups"), dict) else None)
    if bits:
        return "int4" if int(bits) <= 4 else "int8"
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    return {"float16": "fp16", "float32": "fp32"}.get(dtype, "bf16")


def _context(config: dict[str, Any]) -> int:
    length = int(config.get("max_position_embeddings") or 2048)
    scaling = config.get("rope_scaling") or {}
    factor = scaling.get("factor") if isinstance(scaling, dict) else None
    return int(length * float(factor)) if factor and scaling.get("type", scaling.get(
        "rope_type")) == "linear" else length
