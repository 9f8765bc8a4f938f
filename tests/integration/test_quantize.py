"""``vops quantize`` on a tiny LLaMA built from a config, on CPU, through llm-compressor:
GPTQ and AWQ int4 checkpoints that transformers loads back (the CPU serving backend), with the
report's size ratio and perplexity checked against the files and an independent reload; the
same from and to buckets (file://, moto S3, the GCS emulator); bad input is one line and
exit 2 with nothing at --out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures.cli import run_vops
from fixtures.network import closed_port
from safetensors import safe_open
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from vicuna_ops.models.calibration import perplexity
from vicuna_ops.models.quantize import quantize
from vicuna_ops.storage import open_store
from vicuna_ops.tokenizer import build_tiny_tokenizer
from vicuna_ops.train.builtin_data import tiny_chat
from vicuna_ops.train.data import load_conversations
from vicuna_ops.train.manifest import Manifest, verify_local

pytestmark = pytest.mark.timeout(180)

HIDDEN, INTERMEDIATE = 128, 256  # both multiples of 128: the standard group size applies


def save_model(folder: Path, hidden: int = HIDDEN, intermediate: int = INTERMEDIATE) -> Path:
    tokenizer = build_tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden,
                         intermediate_size=intermediate, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                         pad_token_id=3, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_data(folder: Path) -> Path:
    """A ``vops data prepare``-shaped folder: 8 conversations to calibrate on (a CPU with two
    shared cores runs AWQ's grid search over them), 6 held out."""
    records = tiny_chat()
    folder.mkdir(parents=True)
    for name, part in (("train.jsonl", records[:8]), ("eval.jsonl", records[100:106])):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    return folder


def upload(folder: Path, uri: str) -> str:
    store = open_store(uri)
    for path in folder.iterdir():
        store.put_file(path.name, path)
    return uri


def held_out(model_dir: Path, data: Path) -> list[dict]:
    dataset, _ = load_conversations(str(data / "eval.jsonl"), build_tiny_tokenizer(), 256)
    return [dataset[index] for index in range(len(dataset))]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("quantize")
    return save_model(root / "model"), save_data(root / "data")


@pytest.fixture(scope="module")
def gptq(inputs, tmp_path_factory) -> tuple[Path, dict]:
    model, data = inputs
    out = tmp_path_factory.mktemp("gptq") / "out"
    report = quantize(str(model), "gptq", 4, str(data / "train.jsonl"), str(out))
    return out, report


def test_gptq_writes_a_compressed_int4_checkpoint_with_a_manifest(inputs, gptq):
    model, _ = inputs
    out, report = gptq
    quant = json.loads((out / "config.json").read_text())["quantization_config"]
    weights = quant["config_groups"]["group_0"]["weights"]
    assert quant["quant_method"] == "compressed-tensors" and quant["format"] == "pack-quantized"
    assert (weights["num_bits"], weights["group_size"], weights["symmetric"]) == (4, 128, True)
    assert quant["ignore"] == ["lm_head"] and report["group_size"] == 128
    manifest = Manifest.from_json((out / "MANIFEST.json").read_bytes())
    verify_local(out, manifest)
    assert {"model.safetensors", "quantize.json", "tokenizer.json"} <= set(manifest.files)
    assert json.loads((out / "quantize.json").read_text()) == report
    with safe_open(str(out / "model.safetensors"), framework="pt") as handle:
        packed = handle.get_tensor("model.layers.0.self_attn.q_proj.weight_packed")
    assert packed.dtype == torch.int32 and packed.shape == (HIDDEN, HIDDEN // 8)  # 8 per int32
    sizes = report["weight_bytes"]
    assert sizes["before"] == (model / "model.safetensors").stat().st_size
    assert sizes["after"] == (out / "model.safetensors").stat().st_size
    # fp32 Linear weights become 4 bits (+ a scale per 128): only the embeddings stay wide
    assert 0.2 < sizes["ratio"] < 0.35 and sizes["ratio"] == round(sizes["after"] /
                                                                    sizes["before"], 4)
    assert not list(out.parent.glob(".out.vops-tmp-*"))


def test_the_checkpoint_loads_in_transformers_and_its_perplexity_is_the_reports(inputs, gptq):
    model_dir, data = inputs
    out, report = gptq
    samples = held_out(model_dir, data)
    original = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ppl = report["perplexity"]
    assert ppl["over"] == "assistant tokens" and ppl["conversations"] == len(samples) == 6
    assert ppl["before"] == pytest.approx(perplexity(original, samples).value, rel=1e-4)
    after = perplexity(loaded, samples)
    assert ppl["after"] == pytest.approx(after.value, rel=1e-4) and ppl["tokens"] == after.tokens
    assert ppl["change_pct"] == pytest.approx(100 * (ppl["after"] / ppl["before"] - 1), abs=0.02)
    # really 4-bit: each row's group of 128 inputs holds at most 16 distinct values
    dense = loaded.model.layers[1].mlp.down_proj.weight.detach()
    assert max(len(torch.unique(row[i:i + 128])) for row in dense
               for i in range(0, dense.shape[1], 128)) <= 16
    wide = original.model.layers[1].mlp.down_proj.weight.detach()
    assert 0 < (dense - wide).norm() / wide.norm() < 0.2


def test_the_cpu_serving_backend_loads_it_and_generates(gptq):
    import asyncio

    from vicuna_ops.serve.backends import (
        GenerationParams,
        GenerationStats,
        TransformersBackend,
    )

    backend = TransformersBackend(gptq[0], "tiny-int4")
    stats = GenerationStats()

    async def run() -> str:
        params = GenerationParams(max_tokens=6, temperature=0.0)
        return "".join([text async for text in backend.generate("USER: hi ASSISTANT:", params,
                                                                stats)])

    asyncio.run(run())
    assert stats.completion_tokens > 0 and backend.context_length == 256


def test_awq_on_cpu_writes_asymmetric_int4_that_loads(inputs, tmp_path):
    model, data = inputs
    # a fresh process, as a user runs it: the library sets up its logging at import, and
    # --json's stdout must still hold nothing but the report
    done = subprocess.run([sys.executable, "-m", "vicuna_ops", "quantize", "--model", str(model),
                           "--method", "awq", "--bits", "4", "--calibration", str(data),
                           "--out", str(tmp_path / "awq"), "--json"],
                          capture_output=True, text=True, timeout=150, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["method"] == "awq" and report["calibration"]["conversations"] == 8
    assert report["perplexity"]["data"].endswith("eval.jsonl")  # found beside the folder's
    weights = json.loads((tmp_path / "awq" / "config.json").read_text())[
        "quantization_config"]["config_groups"]["group_0"]["weights"]
    assert weights["symmetric"] is False and weights["num_bits"] == 4
    with safe_open(str(tmp_path / "awq" / "model.safetensors"), framework="pt") as handle:
        assert "model.layers.0.mlp.up_proj.weight_zero_point" in handle.keys()  # noqa: SIM118
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "awq").eval()
    assert report["perplexity"]["after"] == pytest.approx(
        perplexity(loaded, held_out(model, data)).value, rel=1e-4)


def test_a_64_wide_model_gets_groups_of_64(tmp_path, inputs):
    _, data = inputs
    model = save_model(tmp_path / "narrow", hidden=64, intermediate=128)  # recipes/tiny.yaml
    report = quantize(str(model), "gptq", 4, str(data / "train.jsonl"), str(tmp_path / "out"))
    weights = json.loads((tmp_path / "out" / "config.json").read_text())[
        "quantization_config"]["config_groups"]["group_0"]["weights"]
    assert report["group_size"] == weights["group_size"] == 64


def test_from_and_to_buckets(s3_bucket, gcs_bucket, inputs, tmp_path):
    """One run, every backend: the model from GCS, the data from file://, the output to S3."""
    from vicuna_ops.serve.modelfiles import resolve_model

    model, data = inputs
    model_uri = upload(model, f"{gcs_bucket}/runs/demo/final")
    data_uri = upload(data, f"file://{tmp_path}/bucket/data")
    out_uri = f"{s3_bucket}/runs/demo/int4"
    report = quantize(model_uri, "gptq", 4, f"{data_uri}/train.jsonl", out_uri)
    assert report["perplexity"]["data"] == f"{data_uri}/eval.jsonl"
    keys = {info.key for info in open_store(out_uri).list("")}
    assert {"MANIFEST.json", "model.safetensors", "config.json", "quantize.json"} <= keys
    folder = resolve_model(out_uri, tmp_path / "cache")  # what `vops serve` does: verifies
    loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert report["perplexity"]["after"] == pytest.approx(
        perplexity(loaded, held_out(model, data)).value, rel=1e-4)


def test_bad_input_is_one_line_exit_2_and_nothing_at_out(inputs, tmp_path, capsys, monkeypatch):
    model, data = inputs
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("x")
    (tmp_path / "junk.jsonl").write_text('{"conversations": []}\nnot json\n')
    out = str(tmp_path / "out")
    base = ["quantize", "--model", str(model), "--bits", "4", "--calibration",
            str(data / "train.jsonl")]
    cases = [
        (["quantize", "--model", str(model), "--method", "gptq4", "--bits", "4",
          "--calibration", str(data), "--out", out], "unknown --method 'gptq4'"),
        ([*base, "--method", "gptq", "--bits", "3", "--out", out], "--bits 3"),
        ([*base, "--method", "gptq", "--out", str(tmp_path / "taken")], "already exists"),
        (["quantize", "--model", str(tmp_path / "nope"), "--method", "gptq", "--calibration",
          str(data), "--out", out], "does not exist"),
        (["quantize", "--model", str(data), "--method", "gptq", "--calibration", str(data),
          "--out", out], "has no config.json"),
        (["quantize", "--model", str(model), "--method", "awq", "--calibration",
          str(tmp_path / "missing.jsonl"), "--out", out], "missing.jsonl"),
        (["quantize", "--model", str(model), "--method", "gptq", "--calibration",
          str(tmp_path / "junk.jsonl"), "--out", out], "no usable conversation"),
    ]
    for args, needle in cases:
        code, _, err = run_vops(capsys, *args)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and needle in lines[0], (args, err)
        assert not (tmp_path / "out").exists()
        assert not list(tmp_path.glob(".out.vops-tmp-*"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    code, _, err = run_vops(capsys, *base, "--method", "gptq", "--out", "s3://vops-gone/q")
    assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_without_llm_compressor_the_command_says_what_to_install(inputs, tmp_path):
    model, data = inputs
    code = ("import sys\n"
            "class NotInstalled:\n"  # an import finder that knows no llmcompressor
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.partition('.')[0] == 'llmcompressor':\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, NotInstalled())\n"
            "from vicuna_ops.cli.app import main\n"
            f"main(['quantize', '--model', {str(model)!r}, '--method', 'gptq', '--bits', '4',"
            f" '--calibration', {str(data)!r}, '--out', {str(tmp_path / 'out')!r}])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "vicuna-ops[quantize]" in lines[0] and not (tmp_path / "out").exists()
