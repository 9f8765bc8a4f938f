"""A model's context length and RoPE scaling, read from or written to an HF config.

transformers 5 keeps RoPE settings in ``config.rope_parameters`` (``rope_type``, ``factor``,
``rope_theta``); older configs (and vLLM, and Vicuna v1.5-16k's own config.json) say
``rope_scaling: {type: linear, factor: 4}``. Both are read here. ``max_position_embeddings``
stays the *base* model's (4,096 for Llama 2), as in Vicuna's published 16K config: the usable
context is that times a linear factor.
"""

from __future__ import annotations

from typing import Any

DEFAULT_CONTEXT = 2048


def rope_factor(config: Any) -> float:
    """The linear RoPE scaling factor of an HF config (object or dict); 1.0 without one."""
    for name in ("rope_parameters", "rope_scaling"):
        params = config.get(name) if isinstance(config, dict) else getattr(config, name, None)
        if isinstance(params, dict):
            kind = params.get("rope_type", params.get("type"))
            if kind == "linear" and params.get("factor"):
                return float(params["factor"])
    return 1.0


def context_length(config: Any) -> int:
    """Positions the model can attend over: ``max_position_embeddings`` x a linear factor."""
    base = (config.get("max_position_embeddings") if isinstance(config, dict)
            else getattr(config, "max_position_embeddings", None))
    return int(int(base or DEFAULT_CONTEXT) * rope_factor(config))


def apply_rope_scaling(config: Any, kind: str, factor: float) -> None:
    """Set linear RoPE scaling on a transformers config before the model is built from it."""
    params = dict(getattr(config, "rope_parameters", None) or {})
    params.update({"rope_type": kind, "factor": float(factor)})
    params.setdefault("rope_theta", getattr(config, "rope_theta", None) or 10000.0)
    config.rope_parameters = params
