"""Training recipes: YAML files in recipes/, validated by pydantic (a typo is an error).

A recipe names a model, the data, the hyperparameters and the hardware it expects; ``vops
train`` resolves one by name (``recipes/<name>.yaml``) or by path and writes the resolved
copy into the run folder, and the training node loads that same copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vicuna_ops.bundled import bundled_dir
from vicuna_ops.errors import ConfigError, UserError



class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TinyModel(_Strict):
    """A LLaMA built from a config on the spot: no download, trains on a CPU in seconds."""

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 512
    seed: int = 0


class RopeScaling(_Strict):
    """Positional interpolation (Vicuna v1.5-16k's "linear RoPE scaling"): positions are divided
    by ``factor``, so a base trained on N positions reads N x factor. Applied to the model's
    config before training and saved with it (``rope_parameters`` in config.json)."""

    type: Literal["linear"] = "linear"
    factor: float = Field(gt=1)


class ModelSpec(_Strict):
    # HF hub id, local folder or bucket URI of an HF model folder; ignored when `tiny` is set.
    name_or_path: str | None = None
    tiny: TinyModel | None = None
    decoder_layer: str = "LlamaDecoderLayer"  # what FSDP auto-wraps
    attn_implementation: Literal["auto", "flash_attention_2", "sdpa", "eager"] = "auto"
    params_b: float | None = Field(None, gt=0)  # billions of parameters: the plan's estimate
    rope_scaling: RopeScaling | None = None  # e.g. {type: linear, factor: 4} for 4K -> 16K


class DataSpec(_Strict):
    path: str | None = None  # JSON/JSONL conversations; `vops train --data` overrides
    eval_path: str | None = None
    max_length: int = Field(2048, gt=0)
    # Conversations the recipe expects, and their average tokens in the template, for the
    # estimate when the data has no report.json (vicuna_ops/launch/workload.py).
    expected_conversations: int | None = Field(None, gt=0)
    tokens_per_conversation: int | None = Field(None, gt=0)


class TrainSpec(_Strict):
    global_batch_size: int = Field(128, gt=0)
    per_device_batch_size: int = Field(2, gt=0)
    learning_rate: float = Field(2e-5, gt=0)
    epochs: float = Field(3, gt=0)
    max_steps: int | None = None
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    bf16: bool = True
    fsdp: str = "full_shard auto_wrap"
    gradient_checkpointing: bool = True
    seed: int = 42
    checkpoint_every_steps: int = Field(200, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    dataloader_workers: int = 0


class ResourcesSpec(_Strict):
    gpus: str = "A100:8"
    # Wall-clock hours the recipe needs on `gpus`: the plan's estimate only when the work
    # cannot be sized from the data and a throughput (vicuna_ops/launch/workload.py).
    expected_hours: float = Field(12.0, gt=0)
    disk_size_gb: int = 512


class Recipe(_Strict):
    name: str
    description: str = ""
    tokenizer: str | None = None  # "builtin:tiny", a local folder, hub id or bucket URI
    model: ModelSpec
    data: DataSpec = DataSpec()
    train: TrainSpec = TrainSpec()
    resources: ResourcesSpec = ResourcesSpec()


def available_recipes() -> list[str]:
    folder = _recipes_dir()
    return sorted(path.stem for path in folder.glob("*.yaml")) if folder else []


def load_recipe(name_or_path: str) -> Recipe:
    """A recipe by name (``recipes/<name>.yaml``) or by path to a YAML file."""
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        folder = _recipes_dir()
        candidate = folder / f"{name_or_path}.yaml" if folder else None
        if candidate is None or not candidate.is_file():
            raise UserError(f"unknown recipe {name_or_path!r}",
                            hint=f"use one of {', '.join(available_recipes())} or a path to a "
                                 "recipe YAML")
        path = candidate
    return parse_recipe(path.read_text(), source=str(path))


def parse_recipe(text: str, source: str = "<recipe>") -> Recipe:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source} is not valid YAML: {exc}".splitlines()[0]) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a YAML mapping")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{source} is invalid: {problems}",
                          hint="see recipes/vicuna-7b.yaml for every field") from exc


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def _recipes_dir() -> Path | None:
    try:
        return bundled_dir("recipes")
    except FileNotFoundError:
        return None
