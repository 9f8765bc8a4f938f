"""vops serve --gpus auto: the cheapest spot GPU that holds the model, from its config.json in
the bucket (moto S3), on SkyPilot's offline catalog."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fixtures.cli import run_vops

LLAMA_13B = {"architectures": ["LlamaForCausalLM"], "hidden_size": 5120,
             "num_hidden_layers": 40, "num_attention_heads": 40, "intermediate_size": 13824,
             "vocab_size": 32000, "max_position_embeddings": 2048, "torch_dtype": "bfloat16"}
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128}


@pytest.fixture
def models(s3_server):
    from vicuna_ops import adaptors

    s3 = adaptors.boto3().client("s3")
    s3.create_bucket(Bucket="vops-auto")
    for name, config in (("bf16", LLAMA_13B), ("int4", {**LLAMA_13B, "quantization_config": GPTQ})):
        s3.put_object(Bucket="vops-auto", Key=f"models/{name}/config.json",
                      Body=json.dumps(config))
    return "s3://vops-auto/models"


def plan(capsys, model: str, *extra: str, name: str) -> dict:
    code, out, err = run_vops(capsys, "serve", "--model", model, "--clouds", "aws,gcp",
                              "--gpus", "auto", "--bucket", "s3://vops-auto/serve", "--name",
                              name, "--dry-run", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_a_13b_model_lands_on_a_24_gb_gpu_in_4_bit_and_on_a_larger_one_in_bf16(
        sky_offline, capsys, models):
    small = plan(capsys, f"{models}/int4", name="int4")
    big = plan(capsys, f"{models}/bf16", name="bf16")
    assert small["gpus_auto"]["precision"] == "int4" and big["gpus_auto"]["precision"] == "bf16"
    assert 20 <= small["gpus_auto"]["choice"]["memory_gib"] <= 24
    assert big["gpus_auto"]["choice"]["memory_gib"] > 30
    for chosen in (small, big):
        auto = chosen["gpus_auto"]
        assert chosen["gpus"] == auto["gpus"] and auto["gpus"].endswith(":1")
        assert auto["runner_up"]["spot_price"] >= auto["choice"]["spot_price"]
        need = float(auto["need"].split("= ")[1].split(" GiB")[0])
        assert need <= auto["choice"]["memory_gib"] * 0.9
        worker = yaml.safe_load(Path(chosen["worker_yamls"][0]).read_text())
        assert worker["resources"]["accelerators"] == auto["gpus"]
        assert worker["envs"]["VOPS_MAX_MODEL_LEN"] == "2048"  # the model's own context


def test_a_longer_context_or_more_concurrency_needs_a_bigger_gpu(sky_offline, capsys, models):
    base = plan(capsys, f"{models}/int4", name="base")
    long = plan(capsys, f"{models}/int4", "--max-model-len", "4096", "--max-concurrency", "8",
                name="long")
    assert long["gpus_auto"]["choice"]["memory_gib"] > base["gpus_auto"]["choice"]["memory_gib"]
    assert long["max_model_len"] == 4096


def test_the_plan_shows_the_arithmetic_and_mistakes_are_one_line(sky_offline, capsys, models):
    code, out, err = run_vops(capsys, "serve", "--model", f"{models}/int4", "--clouds",
                              "aws,gcp", "--gpus", "auto", "--bucket", "s3://vops-auto/serve",
                              "--name", "human", "--dry-run")
    assert code == 0, err
    text = (out + err).replace("\n", " ")
    assert "KV cache" in text and "runner-up" in text and "--gpus auto" in text
    code, _, err = run_vops(capsys, "serve", "--model", f"{models}/missing", "--clouds", "aws",
                            "--gpus", "auto", "--bucket", "s3://vops-auto/serve", "--name",
                            "nope", "--dry-run")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "config.json" in errors[0]
    code, _, err = run_vops(capsys, "serve", "--local", "--backend", "stub",
                            "--max-model-len", "4096")
    assert code == 2 and "--max-model-len" in err
