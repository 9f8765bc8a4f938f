"""``vops delta make`` to a bucket and ``apply`` from it (file://, moto S3, the GCS emulator),
to a local folder and back to a bucket that ``vops serve`` can verify; an unreachable bucket
is one line and exit 2, with nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures.cli import run_vops
from fixtures.network import closed_port
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM

from vicuna_ops.models.delta import apply_delta, make_delta
from vicuna_ops.storage import open_store
from vicuna_ops.tokenizer import build_tiny_tokenizer

pytestmark = pytest.mark.timeout(180)


def save_model(folder: Path, *, nudge: bool) -> Path:
    config = LlamaConfig(vocab_size=260, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=128, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    if nudge:
        with torch.no_grad():
            for param in model.parameters():
                param.add_(torch.randn_like(param) * 1e-2)
    model.save_pretrained(folder, max_shard_size="40KB")
    build_tiny_tokenizer().save_pretrained(folder)
    return folder


def weights(folder: Path) -> dict[str, bytes]:
    found = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            found.update({name: handle.get_tensor(name).view(torch.uint8).numpy().tobytes()
                          for name in handle.keys()})
    return found


def upload(folder: Path, uri: str) -> str:
    store = open_store(uri)
    for path in folder.iterdir():
        store.put_file(path.name, path)
    return uri


def test_make_to_a_bucket_and_apply_from_it(any_bucket, tmp_path):
    base = save_model(tmp_path / "base", nudge=False)
    target = save_model(tmp_path / "target", nudge=True)
    base_uri = upload(base, any_bucket.rstrip("/") + "/base")
    delta_uri = any_bucket.rstrip("/") + "/delta"
    manifest = make_delta(base_uri, str(target), delta_uri)
    keys = {info.key for info in open_store(delta_uri).list("")}
    assert "delta.json" in keys and len([k for k in keys if k.startswith("delta-")]) > 3
    assert "files/tokenizer.json" in keys and manifest["base"] == base_uri

    apply_delta(base_uri, delta_uri, str(tmp_path / "local"))
    assert weights(tmp_path / "local") == weights(target)

    out_uri = any_bucket.rstrip("/") + "/applied"
    apply_delta(str(base), delta_uri, out_uri)
    applied = open_store(out_uri)
    listed = {info.key for info in applied.list("")}
    assert {"MANIFEST.json", "config.json", "generation_config.json",
            "model.safetensors.index.json"} <= listed
    assert json.loads(applied.get_bytes("generation_config.json"))["eos_token_id"] == 2
    fetched = tmp_path / "fetched"
    for key in listed:
        applied.get_file(key, fetched / key)
    assert weights(fetched) == weights(target)


def test_an_unreachable_bucket_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    base = save_model(tmp_path / "base", nudge=False)
    delta = tmp_path / "delta"
    make_delta(str(base), str(base), str(delta))  # a real (all-zero) delta
    capsys.readouterr()
    for args in (["make", "--base", str(base), "--target", str(base), "--out",
                  "s3://vops-unreachable/delta"],
                 ["apply", "--base", str(base), "--delta", "s3://vops-unreachable/delta",
                  "--out", str(tmp_path / "out")],
                 ["apply", "--base", "s3://vops-unreachable/base", "--delta", str(delta),
                  "--out", str(tmp_path / "out")]):
        code, _, err = run_vops(capsys, "delta", *args)
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "AWS_ENDPOINT_URL=http://127.0.0.1" in lines[0], err
        assert not (tmp_path / "out").exists()
