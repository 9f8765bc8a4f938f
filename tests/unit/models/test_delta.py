"""``vops delta make`` / ``apply`` on tiny LLaMAs built from a config and saved in several
shards: bit-exact round trips (fp32 and bf16), the stop token, a wrong or damaged input is one
line and exit 2 with nothing left behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from fixtures.cli import run_vops
from vicuna_ops.models.delta import apply_delta, make_delta
from vicuna_ops.tokenizer import build_tiny_tokenizer


def save_model(folder: Path, *, seed: int, dtype=torch.float32, vocab: int = 260,
               tokenizer: bool = True, nudge: int | None = None) -> Path:
    """A tiny LLaMA in ~6 shards; ``nudge``: the base with seed ``nudge`` plus small changes
    (what fine-tuning does), so most of the delta is real differences."""
    config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
                         pad_token_id=3, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(dtype)
    if nudge is not None:
        torch.manual_seed(nudge)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 1e-3)
    model.save_pretrained(folder, max_shard_size="40KB")
    if tokenizer:
        build_tiny_tokenizer().save_pretrained(folder)
    return folder


def state(folder: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            tensors.update({name: handle.get_tensor(name) for name in handle.keys()})
    return tensors


def assert_bit_exact(left: Path, right: Path) -> None:
    a, b = state(left), state(right)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert torch.equal(a[name].view(torch.uint8) if a[name].dim() else a[name],
                           b[name].view(torch.uint8) if b[name].dim() else b[name]), name


@pytest.mark.parametrize("dtype, wide", [(torch.float32, "F64"), (torch.bfloat16, "F32")])
def test_round_trip_is_bit_exact_in_several_shards(tmp_path, dtype, wide):
    base = save_model(tmp_path / "base", seed=0, dtype=dtype, tokenizer=False)
    target = save_model(tmp_path / "target", seed=0, dtype=dtype, nudge=1)
    assert len(list(target.glob("*.safetensors"))) > 3
    manifest = make_delta(str(base), str(target), str(tmp_path / "delta"))
    assert len(manifest["shards"]) > 3
    kinds = {entry["kind"] for entry in manifest["tensors"].values()}
    assert kinds == {"delta"}
    assert {entry["delta_dtype"] for entry in manifest["tensors"].values()} == {wide}
    assert all(len(entry["base_sha256"]) == 64 for entry in manifest["tensors"].values())
    assert "tokenizer.json" in manifest["tokenizer"]
    out = tmp_path / "applied"
    apply_delta(str(base), str(tmp_path / "delta"), str(out))
    assert_bit_exact(out, target)
    assert json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == 2  # </s>
    assert json.loads((out / "tokenizer_config.json").read_text())["eos_token"] == "</s>"
    loaded = LlamaForCausalLM.from_pretrained(out)
    assert loaded.generation_config.eos_token_id == 2
    assert not list(tmp_path.glob(".applied*"))  # no temp folder left beside it


def test_a_tokenizer_without_eos_gets_the_stop_token(tmp_path):
    base = save_model(tmp_path / "base", seed=0, tokenizer=False)
    target = save_model(tmp_path / "target", seed=0, nudge=1)
    config = json.loads((target / "tokenizer_config.json").read_text())
    config.pop("eos_token", None)
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    (target / "generation_config.json").unlink(missing_ok=True)
    make_delta(str(base), str(target), str(tmp_path / "delta"))
    apply_delta(str(base), str(tmp_path / "delta"), str(tmp_path / "out"))
    assert json.loads((tmp_path / "out" / "generation_config.json").read_text())[
        "eos_token_id"] == 2
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())[
        "eos_token"] == "</s>"


def test_resized_vocabulary_and_far_apart_values_are_stored_whole_and_still_exact(tmp_path):
    base = save_model(tmp_path / "base", seed=0, dtype=torch.bfloat16, tokenizer=False)
    target = save_model(tmp_path / "target", seed=0, dtype=torch.bfloat16, vocab=261, nudge=1)
    # one weight moved from ~1e3 to ~1e-3: its float32 difference would not round back
    path = next(p for p in target.glob("*.safetensors")
                if "model.norm.weight" in safe_open(str(p), "pt").keys())
    tensors = state_of(path)
    base_norm = state(base)["model.norm.weight"].clone()
    base_norm[0] = 1000.0
    tensors["model.norm.weight"][0] = 1.0e-3 + 1e-7
    save_file(tensors, str(path), metadata={"format": "pt"})
    base_path = next(p for p in base.glob("*.safetensors")
                     if "model.norm.weight" in safe_open(str(p), "pt").keys())
    base_tensors = state_of(base_path)
    base_tensors["model.norm.weight"] = base_norm
    save_file(base_tensors, str(base_path), metadata={"format": "pt"})
    manifest = make_delta(str(base), str(target), str(tmp_path / "delta"))
    full = {name for name, e in manifest["tensors"].items() if e["kind"] == "full"}
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"} == full
    apply_delta(str(base), str(tmp_path / "delta"), str(tmp_path / "out"))
    assert_bit_exact(tmp_path / "out", target)


def state_of(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as handle:
        return {name: handle.get_tensor(name).clone() for name in handle.keys()}


@pytest.fixture
def made(tmp_path):
    base = save_model(tmp_path / "base", seed=0, tokenizer=False)
    target = save_model(tmp_path / "target", seed=0, nudge=1)
    make_delta(str(base), str(target), str(tmp_path / "delta"))
    return base, tmp_path / "delta"


def _refused(capsys, tmp_path, *args) -> str:
    capsys.readouterr()  # what building the models printed
    code, out, err = run_vops(capsys, "delta", *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if "vops-tmp" in p.name]
    return lines[0]


def test_a_wrong_base_is_one_line_and_exit_2(made, tmp_path, capsys):
    _, delta = made
    other = save_model(tmp_path / "other", seed=5, tokenizer=False)  # same shapes, other values
    line = _refused(capsys, tmp_path, "apply", "--base", str(other), "--delta", str(delta),
                    "--out", str(tmp_path / "out"))
    assert "is not the model this delta was made against" in line and "differs" in line
    smaller = tmp_path / "smaller"
    smaller.mkdir()
    model = LlamaForCausalLM(LlamaConfig(vocab_size=260, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4))
    model.save_pretrained(smaller)
    line = _refused(capsys, tmp_path, "apply", "--base", str(smaller), "--delta", str(delta),
                    "--out", str(tmp_path / "out"))
    assert "the delta expects F32" in line


def test_a_corrupt_shard_and_missing_inputs_are_one_line(made, tmp_path, capsys):
    base, delta = made
    shard = sorted(delta.glob("delta-*.safetensors"))[-1]
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    line = _refused(capsys, tmp_path, "apply", "--base", str(base), "--delta", str(delta),
                    "--out", str(tmp_path / "out"))
    assert "is corrupt" in line
    line = _refused(capsys, tmp_path, "apply", "--base", str(tmp_path / "nope"), "--delta",
                    str(delta), "--out", str(tmp_path / "out"))
    assert "does not exist" in line
    line = _refused(capsys, tmp_path, "apply", "--base", str(base), "--delta",
                    str(tmp_path / "base"), "--out", str(tmp_path / "out"))
    assert "delta.json" in line
    line = _refused(capsys, tmp_path, "make", "--base", str(tmp_path / "nope"), "--target",
                    str(base), "--out", str(tmp_path / "out"))
    assert "does not exist" in line
    line = _refused(capsys, tmp_path, "make", "--base", str(base), "--target", str(base),
                    "--out", str(delta))
    assert "not empty" in line


def test_cli_make_and_apply(tmp_path, capsys):
    base = save_model(tmp_path / "base", seed=0, tokenizer=False)
    target = save_model(tmp_path / "target", seed=0, nudge=1)
    code, out, err = run_vops(capsys, "delta", "make", "--base", str(base), "--target",
                              str(target), "--out", str(tmp_path / "d"), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["shards"] > 3 and summary["full_tensors"] == 0
    code, out, err = run_vops(capsys, "delta", "apply", "--base", str(base), "--delta",
                              str(tmp_path / "d"), "--out", str(tmp_path / "m"))
    assert code == 0, err
    assert_bit_exact(tmp_path / "m", target)
