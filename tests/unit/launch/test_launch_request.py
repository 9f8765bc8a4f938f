"""``vops train`` flag checking (pure, no SkyPilot): every mistake is a UserError naming it."""

from __future__ import annotations

import pytest

from vicuna_ops.errors import UserError
from vicuna_ops.launch.accelerators import Gpus, parse_gpus
from vicuna_ops.launch.candidates import parse_clouds, parse_names
from vicuna_ops.launch.request import build_request, default_run_id, parse_envs

BASE = dict(recipe="vicuna-7b", bucket="s3://my-bucket/runs", gpus="A100:8",
            data="s3://my-bucket/sharegpt.jsonl")


def request(**overrides):
    return build_request(**{**BASE, **overrides})


@pytest.mark.parametrize("spec, expected", [("A100:8", Gpus("A100", 8)), ("L4", Gpus("L4", 1)),
                                            (" H100:8 ", Gpus("H100", 8)),
                                            ("A100-80GB:4", Gpus("A100-80GB", 4))])
def test_parse_gpus(spec, expected):
    assert parse_gpus(spec) == expected
    assert str(parse_gpus(spec)) == f"{expected.name}:{expected.count}"


@pytest.mark.parametrize("spec, words", [("A100:0", "at least 1"), ("A100:x", "whole number"),
                                         ("A100:-1", "whole number"), ("A100:1.5", "whole"),
                                         ("", "NAME:COUNT"), (":8", "NAME:COUNT"),
                                         ("A100:8:2", "NAME:COUNT")])
def test_parse_gpus_rejects(spec, words):
    with pytest.raises(UserError, match=words):
        parse_gpus(spec)


def test_clouds_regions_zones():
    assert parse_clouds(None) == ("aws", "gcp")
    assert parse_clouds("GCP, aws,gcp") == ("gcp", "aws")
    with pytest.raises(UserError, match="unsupported cloud 'azure'"):
        parse_clouds("aws,azure")
    with pytest.raises(UserError, match="empty"):
        parse_clouds(" , ")
    assert parse_names("us-east-1,us-west-2", "--regions") == ("us-east-1", "us-west-2")
    assert parse_names(None, "--zones") is None


def test_a_good_request():
    req = request(envs=["WANDB_MODE=offline", "EMPTY="], name="demo-1", max_cost=150,
                  max_steps=10, num_nodes=2)
    assert req.run_id == "demo-1" and req.run_uri == "s3://my-bucket/runs/demo-1"
    assert req.gpus == Gpus("A100", 8) and req.use_spot and req.num_nodes == 2
    assert dict(req.envs) == {"WANDB_MODE": "offline", "EMPTY": ""}
    assert req.recipe.name == "vicuna-7b" and req.max_cost == 150


def test_gpus_default_to_the_recipes_and_run_id_to_recipe_and_time():
    req = request(gpus=None)
    assert req.gpus == Gpus("A100", 8)
    assert req.run_id.startswith("vicuna-7b-") and len(req.run_id) == len("vicuna-7b-") + 15
    assert default_run_id("My Recipe_v2").startswith("my-recipe-v2-")


@pytest.mark.parametrize("overrides, words", [
    ({"bucket": "ftp://x"}, "unsupported storage scheme"),
    ({"bucket": "s3://"}, "no bucket name"),
    ({"bucket": None}, "--bucket is required"),
    ({"bucket": "/tmp/bucket"}, "local path"),
    ({"recipe": "no-such-recipe"}, "unknown recipe"),
    ({"envs": ["NOEQUALS"]}, "not KEY=VALUE"),
    ({"envs": ["1BAD=x"]}, "not a valid environment variable name"),
    ({"envs": ["VOPS_BUCKET=x"]}, "set by vops"),
    ({"clouds": "azure"}, "unsupported cloud"),
    ({"gpus": "A100:0"}, "at least 1"),
    ({"num_nodes": 0}, "--num-nodes"),
    ({"max_restarts_on_errors": -1}, "--max-restarts-on-errors"),
    ({"max_steps": 0}, "--max-steps"),
    ({"max_cost": 0}, "--max-cost"),
    ({"max_cost": float("nan")}, "--max-cost"),
    ({"name": "Bad_Name"}, "invalid run name"),
    ({"data": "./local.jsonl"}, "local path"),
    ({"data": None}, "names no training data"),
    ({"secrets": ["NOT_SET_ANYWHERE_123"]}, "not set in this environment"),
])
def test_bad_flags(overrides, words):
    with pytest.raises(UserError, match=words):
        request(**overrides)


def test_secret_names_come_from_the_environment_and_cannot_double_as_envs():
    env = {"HF_TOKEN": "hf_x"}
    req = request(secrets=["HF_TOKEN", "HF_TOKEN"], environ=env)
    assert req.secret_names == ("HF_TOKEN",)
    with pytest.raises(UserError, match="both an --env and a --secret"):
        request(secrets=["HF_TOKEN"], envs=["HF_TOKEN=x"], environ=env)


def test_default_bucket_from_config_and_builtin_data_is_passed_through():
    req = request(bucket=None, default_bucket="gs://my-bucket/runs", data="builtin:tiny-chat")
    assert req.bucket == "gs://my-bucket/runs" and req.data == "builtin:tiny-chat"
    assert request(recipe="tiny", data=None).data is None  # tiny names its own data


def test_parse_envs_keeps_equals_signs_in_values():
    assert parse_envs(["A=b=c"]) == {"A": "b=c"}
