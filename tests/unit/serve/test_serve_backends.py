"""Generation backends: the stop-string scanner, the stub's resumable stream, and the
transformers decode loop on a tiny LLaMA saved to disk (EOS, stop strings, budget, cancel)."""

from __future__ import annotations

import asyncio

import pytest

from vicuna_ops.errors import UserError
from vicuna_ops.serve.backends import (
    GenerationParams, GenerationStats, StopScanner, StubBackend, TransformersBackend,
    load_backend)
from vicuna_ops.tokenizer import build_tiny_tokenizer


def _run(backend, prompt, params):
    stats = GenerationStats()

    async def collect():
        return [piece async for piece in backend.generate(prompt, params, stats)]

    return asyncio.run(collect()), stats


def test_stop_scanner_holds_back_a_possible_stop_string():
    scanner = StopScanner(("END",))
    assert scanner.feed("hello E") == "hello "  # "E" may start END
    assert scanner.feed("hello EN") == ""
    assert scanner.feed("hello ENX") == "ENX"  # it did not
    assert scanner.feed("hello ENX EN") == " "
    assert scanner.feed("hello ENX END tail") == ""
    assert scanner.stopped
    assert scanner.feed("hello ENX END tail", final=True) == ""


def test_stop_scanner_never_splits_a_utf8_character():
    scanner = StopScanner(())
    assert scanner.feed("caf\ufffd") == "caf"
    assert scanner.feed("café") == "é"
    assert scanner.feed("café!", final=True) == "!"


def test_stub_streams_fixed_tokens_and_resumes_where_told():
    stub = StubBackend(tokens=6, rate=0)
    pieces, stats = _run(stub, "p", GenerationParams(max_tokens=100))
    assert "".join(pieces) == " t0 t1 t2 t3 t4 t5"
    assert (stats.completion_tokens, stats.finish_reason) == (6, "stop")
    pieces, stats = _run(stub, "p t0 t1", GenerationParams(max_tokens=3, resumed_tokens=2))
    assert "".join(pieces) == " t2 t3 t4"
    assert stats.finish_reason == "length"


def test_unknown_or_incomplete_backend_choices_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown backend"):
        load_backend("tensorrt", model=None, model_name=None, cache_dir=tmp_path)
    with pytest.raises(UserError, match="needs --model"):
        load_backend("transformers", model=None, model_name=None, cache_dir=tmp_path)
    with pytest.raises(UserError, match="no config.json"):
        load_backend("transformers", model=str(tmp_path), model_name=None, cache_dir=tmp_path)


def test_vllm_is_only_used_when_installed(tmp_path):
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match="vllm is not installed"):
        load_backend("vllm", model=str(tmp_path), model_name=None, cache_dir=tmp_path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("final")
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
                         pad_token_id=3, use_cache=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return TransformersBackend(folder, "tiny")


def test_the_tiny_model_loads_with_its_context_and_eos(tiny):
    assert tiny.context_length == 128
    assert 2 in tiny.eos_ids
    assert tiny.encode("ab") == [1, *tiny.tokenizer("ab", add_special_tokens=False)["input_ids"]]


def test_greedy_decoding_matches_a_full_forward_pass(tiny):
    import torch

    pieces, stats = _run(tiny, "USER: hi ASSISTANT:", GenerationParams(max_tokens=8,
                                                                         temperature=0))
    assert (stats.completion_tokens, stats.finish_reason) == (8, "length")
    ids = tiny.encode("USER: hi ASSISTANT:")
    with torch.inference_mode():  # the same tokens without the KV cache, one by one
        for _ in range(8):
            ids.append(int(tiny.model(torch.tensor([ids])).logits[0, -1].argmax()))
    expected = tiny.tokenizer.decode(ids[-8:], skip_special_tokens=True)
    assert "".join(pieces) == expected


def test_generation_stops_at_eos(tiny):
    import torch

    hook = tiny.model.lm_head.register_forward_hook(
        lambda module, args, out: out + torch.nn.functional.one_hot(
            torch.tensor(2), out.shape[-1]) * 1e4 * (args[0].shape[1] == 1))
    try:  # the prompt pass is untouched; from the first cached step on, EOS wins
        pieces, stats = _run(tiny, "hi", GenerationParams(max_tokens=50, temperature=0))
    finally:
        hook.remove()
    assert (stats.completion_tokens, stats.finish_reason) == (1, "stop")
    assert len("".join(pieces)) <= 1


def test_stop_strings_cut_the_text(tiny):
    full, _ = _run(tiny, "abc", GenerationParams(max_tokens=12, temperature=0))
    text = "".join(full)
    stop = text[4:6]
    cut, stats = _run(tiny, "abc", GenerationParams(max_tokens=12, temperature=0, stop=(stop,)))
    assert "".join(cut) == text[:text.index(stop)]
    assert stats.finish_reason == "stop"


def test_seeded_sampling_repeats(tiny):
    params = GenerationParams(max_tokens=10, temperature=1.0, top_p=0.8, seed=3)
    assert _run(tiny, "x", params)[0] == _run(tiny, "x", params)[0]


def test_closing_the_stream_stops_the_decode_thread(tiny):
    import threading

    async def first_piece_only():
        stats = GenerationStats()
        stream = tiny.generate("x", GenerationParams(max_tokens=100, temperature=0), stats)
        async for _ in stream:
            break
        await stream.aclose()
        await asyncio.sleep(0.3)
        return stats

    stats = asyncio.run(first_piece_only())
    assert stats.completion_tokens < 100
    assert not [t for t in threading.enumerate() if t.name == "vops-generate"]
