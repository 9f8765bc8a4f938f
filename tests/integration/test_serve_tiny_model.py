"""A real model behind the controller: a tiny LLaMA (built from a config, saved the way
training saves ``final/``) served by the transformers backend in a uvicorn worker process,
queried with the official ``openai`` client."""

from __future__ import annotations

import socket

import openai
import pytest

from vicuna_ops import template
from vicuna_ops.serve.local import LocalPlan, LocalServing
from vicuna_ops.tokenizer import build_tiny_tokenizer

pytestmark = pytest.mark.timeout(180)

CONTEXT = 256
QUESTION = "What is a llama?"


def _prompt_ids(tokenizer) -> list[int]:
    system, turns = template.parse_turns([{"role": "user", "content": QUESTION}])
    text = template.render_prompt(system, turns)
    return [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]


def build_tiny_model(folder) -> None:
    """Save a tiny LLaMA + the builtin tokenizer, as training saves ``final/``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=CONTEXT, bos_token_id=1, eos_token_id=2,
                         pad_token_id=3, use_cache=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("final")
    build_tiny_model(folder)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    plan = LocalPlan(model=str(folder), backend="transformers", port=port, workers=1,
                     model_name="tiny", heartbeat_interval=0.5,
                     state_dir=tmp_path_factory.mktemp("state"), max_concurrency=2,
                     start_timeout=120, grace=5)
    serving = LocalServing(plan)
    try:
        serving.start()
        yield openai.OpenAI(base_url=serving.url + "/v1", api_key="x", max_retries=0)
    finally:
        serving.stop()


def test_chat_plain_and_streamed_agree(tiny):
    messages = [{"role": "user", "content": QUESTION}]
    plain = tiny.chat.completions.create(model="tiny", messages=messages, temperature=0,
                                         max_tokens=24)
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage.completion_tokens == 24
    assert plain.usage.prompt_tokens == len(_prompt_ids(build_tiny_tokenizer()))
    chunks = list(tiny.chat.completions.create(model="tiny", messages=messages, temperature=0,
                                               max_tokens=24, stream=True))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1


def test_stop_strings_end_the_reply(tiny):
    text = tiny.completions.create(model="tiny", prompt="USER: hi ASSISTANT:", temperature=0,
                                   max_tokens=20).choices[0].text
    stop = text[6:8]
    assert stop.strip() or stop, text
    cut = tiny.completions.create(model="tiny", prompt="USER: hi ASSISTANT:", temperature=0,
                                  max_tokens=20, stop=[stop]).choices[0]
    assert cut.finish_reason == "stop"
    assert cut.text == text[:text.index(stop)]


def test_seeded_sampling_is_reproducible(tiny):
    ask = lambda: tiny.completions.create(model="tiny", prompt="abc", temperature=1.0,  # noqa
                                          top_p=0.9, seed=7, max_tokens=12).choices[0].text
    assert ask() == ask()


def test_prompt_over_the_context_is_413(tiny):
    with pytest.raises(openai.APIStatusError) as caught:
        tiny.completions.create(model="tiny", prompt="x" * (CONTEXT + 10))
    assert caught.value.status_code == 413
