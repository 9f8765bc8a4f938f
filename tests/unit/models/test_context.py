"""RoPE scaling: the recipe field, the config it writes, the context it gives, and that linear
scaling interpolates (position 4p scaled is position p unscaled) rather than extrapolates."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from vicuna_ops.errors import ConfigError, UserError
from vicuna_ops.models.context import apply_rope_scaling, context_length, rope_factor
from vicuna_ops.recipe import load_recipe, parse_recipe
from vicuna_ops.tokenizer import build_tiny_tokenizer
from vicuna_ops.train.model import build_model


def _config(**extra) -> LlamaConfig:
    return LlamaConfig(vocab_size=32, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=4,
                       max_position_embeddings=128, **extra)


def test_context_reads_both_spellings_of_linear_scaling():
    assert context_length({"max_position_embeddings": 4096}) == 4096
    vicuna_16k = {"max_position_embeddings": 4096,
                  "rope_scaling": {"type": "linear", "factor": 4.0}}
    assert rope_factor(vicuna_16k) == 4.0 and context_length(vicuna_16k) == 16384
    v5 = {"max_position_embeddings": 128,
          "rope_parameters": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1e4}}
    assert context_length(v5) == 512
    dynamic = {"max_position_embeddings": 128, "rope_scaling": {"type": "dynamic", "factor": 2}}
    assert context_length(dynamic) == 128  # only linear interpolation stretches it here
    config = _config()
    apply_rope_scaling(config, "linear", 4)
    assert config.rope_parameters["rope_type"] == "linear" and context_length(config) == 512
    assert config.to_dict()["rope_parameters"]["factor"] == 4.0


def test_scaled_position_4p_is_unscaled_position_p():
    scaled = _config()
    apply_rope_scaling(scaled, "linear", 4)
    x = torch.zeros(1, 1, 16)
    positions = torch.arange(512).unsqueeze(0)
    cos_s, sin_s = LlamaRotaryEmbedding(scaled)(x, positions)
    cos_p, sin_p = LlamaRotaryEmbedding(_config())(x, torch.arange(128).unsqueeze(0))
    assert torch.allclose(cos_s[0, ::4], cos_p[0], atol=1e-6)
    assert torch.allclose(sin_s[0, ::4], sin_p[0], atol=1e-6)
    # and not extrapolation: unscaled positions past the base differ from the scaled ones
    cos_u, _ = LlamaRotaryEmbedding(_config())(x, positions)
    assert not torch.allclose(cos_u[0, 200:], cos_s[0, 200:], atol=1e-3)


def test_tiny_16k_builds_a_scaled_model_whose_base_is_4x_shorter():
    recipe = load_recipe("tiny-16k")
    assert recipe.data.max_length == 4 * recipe.model.tiny.max_position_embeddings
    model = build_model(recipe, build_tiny_tokenizer(), attn_implementation="sdpa")
    assert model.config.max_position_embeddings == 128
    assert model.config.rope_parameters["rope_type"] == "linear"
    assert context_length(model.config) == recipe.data.max_length


def test_a_training_length_past_the_context_is_one_user_error():
    recipe = load_recipe("tiny-16k")
    unscaled = recipe.model_copy(update={"model": recipe.model.model_copy(
        update={"rope_scaling": None})})
    with pytest.raises(UserError) as caught:
        build_model(unscaled, build_tiny_tokenizer(), attn_implementation="sdpa")
    assert "512 tokens" in caught.value.message and "128 positions" in caught.value.message
    assert "factor: 4" in caught.value.hint


@pytest.mark.parametrize("scaling, problem", [
    ("{type: linear, factor: 1}", "greater than 1"),
    ("{type: yarn, factor: 4}", "linear"),
    ("{type: linear, factr: 4}", "factr"),
])
def test_bad_rope_scaling_is_named(scaling, problem):
    with pytest.raises(ConfigError) as caught:
        parse_recipe(f"name: x\nmodel: {{name_or_path: m, rope_scaling: {scaling}}}\n")
    assert "rope_scaling" in caught.value.message and problem in caught.value.message


@pytest.mark.parametrize("name, length, factor", [
    ("vicuna-7b-v1.5", 4096, None), ("vicuna-13b-v1.5", 4096, None),
    ("vicuna-7b-v1.5-16k", 16384, 4.0)])
def test_v15_recipes(name, length, factor):
    recipe = load_recipe(name)
    assert recipe.model.name_or_path.startswith("meta-llama/Llama-2-")
    assert recipe.data.max_length == length and recipe.data.expected_conversations == 125000
    assert recipe.model.params_b and recipe.train.global_batch_size == 128
    assert recipe.train.learning_rate == 2e-5 and recipe.train.epochs == 3
    assert (recipe.model.rope_scaling.factor if recipe.model.rope_scaling else None) == factor
