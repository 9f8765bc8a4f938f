"""4-bit weights through llm-compressor (the vLLM project's quantization library).

GPTQ and AWQ both write a compressed-tensors checkpoint (``pack-quantized``: int4 weights
packed in int32, a bf16/fp16/fp32 scale per group of input channels, ``quantization_config``
in config.json). vLLM loads it as it is (its ``compressed-tensors`` quantization, Marlin
kernels on the GPU); transformers loads it on any device through the compressed-tensors
package, unpacking to dense weights. Every Linear layer is quantized except ``lm_head``, as
in the library's own W4A16 examples.

- gptq: ``GPTQModifier``, symmetric int4 (the library's W4A16 scheme, vLLM's most common).
- awq: ``AWQModifier`` (activation-aware smoothing) then ``QuantizationModifier`` with
  asymmetric int4 (its W4A16_ASYM scheme, as the library's AWQ examples do).

Group size: 128, the usual and what vLLM's kernels are tuned for; a model whose layer widths
128 does not divide (the 64-wide tiny recipe) gets the largest of 64 or 32 that divides them
all, recorded in the checkpoint's config.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vicuna_ops.errors import UserError

METHODS = ("gptq", "awq")
BITS = (4,)
GROUP_SIZES = (128, 64, 32)
IGNORE = ["lm_head"]
INSTALL_HINT = "pip install 'vicuna-ops[quantize]' (llm-compressor)"


def require_library() -> Any:
    """llmcompressor, or a UserError that says how to install it (before any work starts)."""
    import os

    from vicuna_ops import adaptors

    # At import llm-compressor replaces loguru's sinks with one on *stdout* at INFO (every
    # layer; and it would break --json). An empty console level adds no sink; its "disabled"
    # switch would also skip registering the METRIC level that GPTQ then logs at (a crash).
    # A user who wants its logs sets LLM_COMPRESSOR_LOG_LEVEL=INFO.
    os.environ.setdefault("LLM_COMPRESSOR_LOG_LEVEL", "")
    try:
        return adaptors.require("llmcompressor")
    except UserError as exc:
        raise UserError("vops quantize needs llm-compressor, which is not installed",
                        hint=INSTALL_HINT) from exc


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("llmcompressor", "compressed-tensors")}


def group_size(model: Any) -> int:
    """The largest of GROUP_SIZES that divides the input width of every layer quantized."""
    import torch

    widths = {module.in_features for name, module in model.named_modules()
              if isinstance(module, torch.nn.Linear) and name.rpartition(".")[2] not in IGNORE}
    for size in GROUP_SIZES:
        if all(width % size == 0 for width in widths):
            return size
    raise UserError(f"no 4-bit group size in {GROUP_SIZES} divides the model's layer widths "
                    f"{sorted(widths)}", hint="quantize a model whose hidden and intermediate "
                                              "sizes are multiples of 32")


def recipe(method: str, bits: int, group: int) -> list[Any]:
    """The llm-compressor modifiers for ``method`` at ``bits`` with groups of ``group``."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    weights = QuantizationArgs(num_bits=bits, type="int", strategy="group", group_size=group,
                               symmetric=method == "gptq")
    groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}
    if method == "gptq":
        return [GPTQModifier(config_groups=groups, ignore=IGNORE)]
    from llmcompressor.modifiers.transform.awq import AWQModifier

    return [AWQModifier(), QuantizationModifier(config_groups=groups, ignore=IGNORE)]


def compress(model: Any, method: str, bits: int, samples: list[dict[str, list[int]]],
             max_length: int, out: Path) -> int:
    """Calibrate ``model`` in place on ``samples`` and save it compressed to ``out``; the
    group size used."""
    from datasets import Dataset
    from llmcompressor import oneshot

    group = group_size(model)
    dataset = Dataset.from_dict({"input_ids": [sample["input_ids"] for sample in samples]})
    with _cpu_safe():
        oneshot(model=model, dataset=dataset, recipe=recipe(method, bits, group),
                max_seq_length=max_length, num_calibration_samples=len(samples))
        with warnings.catch_warnings():  # the library's layer offloading, not a real risk
            warnings.filterwarnings("ignore", message="Attempting to save a model with "
                                                      "offloaded modules")
            model.save_pretrained(out, save_compressed=True)
    return group


@contextmanager
def _cpu_safe() -> Iterator[None]:
    """Without an accelerator, skip the library's pinning of cached activations.

    AWQ pins its cached inputs to page-locked memory so that copies *to a GPU* are faster
    (IntermediatesCache.pin_memory); with no GPU, torch refuses to pin at all ("Cannot access
    accelerator device"). Pinning changes no number, so on a CPU-only machine it is a no-op.
    """
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    if torch.accelerator.is_available():
        yield
        return
    original = IntermediatesCache.pin_memory
    IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original
