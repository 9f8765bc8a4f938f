"""--gpus auto: the memory arithmetic, on LLaMA-shaped configs (no weights needed)."""

from __future__ import annotations

import pytest

from vicuna_ops.errors import UserError
from vicuna_ops.launch.gpu_fit import (
    GIB,
    GPU_UTILIZATION,
    fits,
    serve_need,
    shape_from_config,
    train_need,
)

LLAMA_13B = {"hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 40,
             "intermediate_size": 13824, "vocab_size": 32000, "max_position_embeddings": 2048,
             "torch_dtype": "float16"}
LLAMA_7B = {**LLAMA_13B, "hidden_size": 4096, "num_hidden_layers": 32,
            "num_attention_heads": 32, "intermediate_size": 11008}


def test_parameters_are_counted_from_the_dimensions():
    assert shape_from_config(LLAMA_7B).params == pytest.approx(6.74e9, rel=0.01)
    assert shape_from_config(LLAMA_13B).params == pytest.approx(13.02e9, rel=0.01)
    shape = shape_from_config(LLAMA_13B)
    assert shape.kv_bytes_per_token == 2 * 40 * 40 * 128 * 2 and shape.precision == "fp16"


def test_precision_comes_from_the_quantization_config_and_context_from_rope_scaling():
    gptq = {**LLAMA_13B, "quantization_config": {"bits": 4, "quant_method": "gptq"}}
    assert shape_from_config(gptq).precision == "int4"
    compressed = {**LLAMA_13B, "quantization_config": {
        "config_groups": {"group_0": {"weights": {"num_bits": 4}}}}}
    assert shape_from_config(compressed).precision == "int4"
    long = {**LLAMA_7B, "max_position_embeddings": 4096,
            "rope_scaling": {"type": "linear", "factor": 4.0}}
    assert shape_from_config(long).max_position_embeddings == 16384
    assert shape_from_config(LLAMA_7B, precision="bf16").precision == "bf16"


def test_4_bit_weights_are_a_quarter_plus_scales_and_16_bit_embeddings():
    bf16 = shape_from_config(LLAMA_13B, "bf16")
    int4 = shape_from_config(LLAMA_13B, "int4")
    assert bf16.weight_bytes() == 2 * bf16.params
    assert 0.25 < int4.weight_bytes() / bf16.weight_bytes() < 0.32


def test_a_13b_model_fits_24_gib_in_4_bit_and_not_in_16_bit():
    int4 = serve_need(shape_from_config(LLAMA_13B, "int4"), 2048, 4)
    bf16 = serve_need(shape_from_config(LLAMA_13B, "bf16"), 2048, 4)
    assert fits(int4, 24.0) and not fits(int4, 16.0)
    assert not fits(bf16, 24.0) and fits(bf16, 40.0)
    # the parts add up and the KV cache is what the arithmetic says
    assert int4.per_gpu_gib == pytest.approx(sum(int4.parts.values()))
    assert int4.parts["KV cache"] == pytest.approx(819_200 * 2048 * 4 / GIB)
    assert "KV cache" in int4.describe() and f"{GPU_UTILIZATION:.0%}" in int4.describe()
    # longer contexts or more concurrency need more
    assert serve_need(shape_from_config(LLAMA_13B, "int4"), 4096, 8).per_gpu_gib > 24


def test_training_shards_model_states_over_the_gpus():
    assert train_need(7.0, 8).parts["weights+grads+Adam (sharded)"] == pytest.approx(
        7e9 * 16 / 8 / GIB)
    assert fits(train_need(6.7, 8), 40.0) and not fits(train_need(6.7, 1), 80.0)


def test_a_config_that_is_not_llama_shaped_is_one_line():
    with pytest.raises(UserError, match="config.json has no usable"):
        shape_from_config({"hidden_size": 10})
