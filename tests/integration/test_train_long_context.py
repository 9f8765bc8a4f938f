"""Long context on a CPU: ``vops train --local --recipe tiny-16k`` trains a tiny LLaMA whose
base reads 128 positions at 512 tokens with linear RoPE scaling x4, saves the scaling in
``final/config.json``, resumes exactly from a checkpoint, and the result serves prompts past
the base's 128 positions (and refuses ones past 512)."""

from __future__ import annotations

import json
import shutil
import socket

import openai
import pytest

from fixtures.cli import run_vops
from vicuna_ops import template
from vicuna_ops.recipe import load_recipe
from vicuna_ops.serve.local import LocalPlan, LocalServing
from vicuna_ops.tokenizer import build_tiny_tokenizer
from vicuna_ops.train.builtin_data import tiny_chat

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BASE, LONG = 128, 512


def _train(capsys, bucket) -> dict:
    code, out, err = run_vops(capsys, "train", "--local", "--recipe", "tiny-16k", "--bucket",
                              str(bucket), "--name", "long", "--json")
    assert code == 0, err
    return json.loads(out)


def test_every_sample_runs_past_the_base_positions():
    recipe = load_recipe("tiny-16k")
    tokenizer = build_tiny_tokenizer()
    lengths = []
    for record in tiny_chat()[:50]:
        system, turns = template.parse_turns(
            [{"role": "user" if m["from"] == "human" else "assistant", "content": m["value"]}
             for m in record["conversations"]])
        lengths.append(len(template.tokenize(tokenizer, system, turns,
                                             recipe.data.max_length).input_ids))
    assert min(lengths) > BASE and max(lengths) <= LONG


def test_train_saves_the_scaling_resumes_exactly_and_serves_long_prompts(tmp_path, capsys):
    bucket = tmp_path / "bucket"
    summary = _train(capsys, bucket)
    assert summary["status"] == "succeeded" and summary["steps"] == 12
    final = bucket / "long" / "final"
    config = json.loads((final / "config.json").read_text())
    assert config["max_position_embeddings"] == BASE
    assert config["rope_parameters"]["rope_type"] == "linear"
    assert config["rope_parameters"]["factor"] == 4.0

    # the saved config's rotary embedding interpolates: position 4p == base position p
    import torch
    from transformers import AutoConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    saved = AutoConfig.from_pretrained(final)
    plain = AutoConfig.from_pretrained(final)
    plain.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
    x = torch.zeros(1, 1, 16)
    cos_s, sin_s = LlamaRotaryEmbedding(saved)(x, torch.arange(LONG).unsqueeze(0))
    cos_p, sin_p = LlamaRotaryEmbedding(plain)(x, torch.arange(BASE).unsqueeze(0))
    assert torch.allclose(cos_s[0, ::4], cos_p[0], atol=1e-6)
    assert torch.allclose(sin_s[0, ::4], sin_p[0], atol=1e-6)

    # resume: without final/, the same command resumes from the newest checkpoint (step 8)
    # and ends with weights bitwise equal to the uninterrupted run's
    reference = (final / "model.safetensors").read_bytes()
    shutil.rmtree(final)
    again = _train(capsys, bucket)
    assert again["status"] == "succeeded" and again["resumed_from"] == 8, again
    assert (final / "model.safetensors").read_bytes() == reference

    # serving: the context is the scaled one, a 300-token prompt works, 600 is a 413
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    plan = LocalPlan(model=str(final), backend="transformers", port=port, workers=1,
                     model_name="long", heartbeat_interval=0.5,
                     state_dir=tmp_path / "state", max_concurrency=1, start_timeout=120,
                     grace=5)
    serving = LocalServing(plan)
    try:
        serving.start()
        client = openai.OpenAI(base_url=serving.url + "/v1", api_key="x", max_retries=0)
        reply = client.completions.create(model="long", prompt="a" * 299, temperature=0,
                                          max_tokens=16)
        assert reply.usage.prompt_tokens == 300  # <s> + 299 byte tokens: past the base's 128
        assert reply.usage.completion_tokens == 16
        with pytest.raises(openai.APIStatusError) as caught:
            client.completions.create(model="long", prompt="a" * (LONG + 90), max_tokens=4)
        assert caught.value.status_code == 413
    finally:
        serving.stop()
