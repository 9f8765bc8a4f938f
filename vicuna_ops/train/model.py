"""The model a recipe names: a tiny LLaMA built from its config with a fixed seed (no
download, identical on every machine), or a pretrained one (hub id, local folder or bucket URI
of an HF model folder).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from vicuna_ops import adaptors
from vicuna_ops.errors import UserError
from vicuna_ops.recipe import Recipe


def resolve_attn_implementation(requested: str, cuda: bool) -> str:
    """``auto``: flash_attention_2 on a GPU with flash-attn installed, else SDPA."""
    has_flash = importlib.util.find_spec("flash_attn") is not None
    if requested == "auto":
        return "flash_attention_2" if cuda and has_flash else "sdpa"
    if requested == "flash_attention_2" and not (cuda and has_flash):
        raise UserError("the recipe asks for flash_attention_2, which needs a GPU and flash-attn",
                        hint="pip install flash-attn on the GPU node, or set "
                             "model.attn_implementation: auto")
    return requested


def build_model(recipe: Recipe, tokenizer: Any, *, attn_implementation: str,
                local_model_dir: str | Path | None = None) -> Any:
    """A causal LM in fp32 (the Trainer's bf16 autocast / FSDP mixed precision does the rest).

    ``local_model_dir`` is where a bucket-hosted model was downloaded (see
    ``materialize_model``); otherwise ``model.name_or_path`` goes to ``from_pretrained``.
    """
    torch = adaptors.torch()
    transformers = adaptors.transformers()
    spec = recipe.model
    if spec.tiny is not None:
        tiny = spec.tiny
        config = transformers.LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=tiny.hidden_size,
            intermediate_size=tiny.intermediate_size,
            num_hidden_layers=tiny.num_hidden_layers,
            num_attention_heads=tiny.num_attention_heads,
            num_key_value_heads=tiny.num_key_value_heads,
            max_position_embeddings=tiny.max_position_embeddings,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=False,
            use_cache=False,
        )
        config._attn_implementation = attn_implementation
        _scale_rope(config, recipe)
        # A private RNG stream: the weights depend on tiny.seed only, and building the model
        # leaves the global RNG where the Trainer's seeding put it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(tiny.seed)
            model = transformers.LlamaForCausalLM(config)
        return model
    source = str(local_model_dir or spec.name_or_path or "")
    if not source:
        raise UserError(f"recipe {recipe.name!r} names no model",
                        hint="set model.name_or_path or model.tiny")
    try:
        # RoPE scaling has to be in the config the model is built from: the rotary
        # embedding's frequencies are computed at construction
        config = transformers.AutoConfig.from_pretrained(source)
        _scale_rope(config, recipe)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            source, config=config, dtype=torch.float32, attn_implementation=attn_implementation)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load model {source!r}: {str(exc).splitlines()[0]}",
                        hint="give a local folder, a bucket URI or a hub id this node can "
                             "reach") from exc
    model.config.use_cache = False  # no KV cache while training (and gradient checkpointing)
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def _scale_rope(config: Any, recipe: Recipe) -> None:
    """Apply the recipe's RoPE scaling, then check the training length fits the context."""
    from vicuna_ops.models.context import apply_rope_scaling, context_length

    scaling = recipe.model.rope_scaling
    if scaling is not None:
        apply_rope_scaling(config, scaling.type, scaling.factor)
    context = context_length(config)
    if recipe.data.max_length > context:
        raise UserError(
            f"recipe {recipe.name!r} trains on {recipe.data.max_length:,} tokens but the model "
            f"reads {context:,} positions",
            hint="lower data.max_length or set model.rope_scaling: {type: linear, factor: "
                 f"{recipe.data.max_length / config.max_position_embeddings:g}}}")


def is_bucket_uri(name: str | None) -> bool:
    """s3://, gs:// or file:// (a plain path or hub id goes to from_pretrained as is)."""
    return bool(name) and "://" in name and name.split("://", 1)[0] in ("s3", "gs", "file")


def materialize_folder(uri: str, dest: Path) -> Path:
    """Download an HF model/tokenizer folder from a bucket URI into ``dest`` (once)."""
    from vicuna_ops.storage import open_store

    store = open_store(uri)
    done = dest / ".vops-complete"
    if done.exists():
        return dest
    objects = [info for info in store.list("") if not info.is_dir]
    if not objects:
        raise UserError(f"no files under {uri}", hint="point at a folder with config.json")
    for info in objects:
        store.get_file(info.key, dest / info.key)
    done.write_text(uri)
    return dest


def parameter_count(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
