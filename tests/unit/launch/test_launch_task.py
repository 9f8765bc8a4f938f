"""Task generation (pure): sky/train.yaml overlaid with a request; the plan's arithmetic."""

from __future__ import annotations

import yaml

from vicuna_ops.launch.candidates import Candidate, _cap
from vicuna_ops.launch.plan import estimate, expected_hours
from vicuna_ops.launch.request import build_request
from vicuna_ops.launch.setup_source import NodeInstall
from vicuna_ops.launch.task import (NODE_RECIPE_PATH, build_train_task, dump_task,
                                    load_template, write_task_yaml)

CANDS = [Candidate("aws", "us-east-1", "us-east-1d", "p4d.24xlarge", 2.4655, 21.957642),
         Candidate("gcp", "europe-west4", "europe-west4-a", "a2-highgpu-8g", 11.9, 29.39),
         Candidate("aws", "us-east-2", "us-east-2a", "p4d.24xlarge", 6.0374, 21.95764)]
INDEX = NodeInstall(mode="index", version="0.1.0", requirement="vicuna-ops[train,s3,gcs]==0.1.0",
                    install_id="0.1.0[train,s3,gcs]", workdir=None)
CHECKOUT = NodeInstall(mode="checkout", version="0.1.0",
                       requirement="~/sky_workdir[train,s3,gcs]",
                       install_id="0.1.0+src.abc[train,s3,gcs]", workdir="/src/vicuna-ops")


def make_request(**overrides):
    args = dict(recipe="vicuna-7b", bucket="s3://my-bucket/runs", gpus="A100:8",
                data="s3://my-bucket/sharegpt.jsonl", name="demo", environ={"HF_TOKEN": "v"})
    return build_request(**{**args, **overrides})


def test_overlay_sets_every_run_value_and_keeps_the_template():
    base = load_template("train")
    req = make_request(envs=["WANDB_MODE=offline"], secrets=["HF_TOKEN"], max_steps=5,
                       max_cost=99.5, num_nodes=2, max_restarts_on_errors=3, use_spot=False)
    task = build_train_task(base, req, CANDS, INDEX, "/home/u/.vops/runs/demo/recipe.yaml")
    res = task["resources"]
    assert task["name"] == "demo" and task["num_nodes"] == 2
    assert res["accelerators"] == "A100:8" and res["use_spot"] is False
    assert res["disk_size"] == 512
    assert res["job_recovery"] == {"strategy": "EAGER_NEXT_REGION", "max_restarts_on_errors": 3,
                                   "recover_on_exit_codes": [75]}
    assert res["ordered"] == [{"infra": "aws/us-east-1/us-east-1d"},
                              {"infra": "gcp/europe-west4/europe-west4-a"},
                              {"infra": "aws/us-east-2/us-east-2a"}]
    envs = task["envs"]
    assert envs["VOPS_RUN_ID"] == "demo" and envs["VOPS_BUCKET"] == "s3://my-bucket/runs"
    assert envs["VOPS_RECIPE"] == NODE_RECIPE_PATH and envs["VOPS_GPUS"] == "A100:8"
    assert envs["VOPS_USE_SPOT"] == "false" and envs["VOPS_DATA"] == "s3://my-bucket/sharegpt.jsonl"
    assert envs["VOPS_MAX_STEPS"] == "5" and envs["VOPS_MAX_COST"] == "99.5"
    assert envs["WANDB_MODE"] == "offline" and envs["VOPS_INSTALL"] == INDEX.requirement
    assert all(isinstance(v, str) for v in envs.values())
    assert task["secrets"] == {"HF_TOKEN": None}  # the name only
    assert task["file_mounts"] == {NODE_RECIPE_PATH: "/home/u/.vops/runs/demo/recipe.yaml"}
    assert "workdir" not in task
    assert "torchrun" in task["run"] and "SKYPILOT_NODE_IPS" in task["run"]
    assert "VOPS_INSTALL_ID" in task["setup"]
    assert base["resources"].get("ordered") is None  # the template was not mutated
    assert list(task)[:3] == ["name", "resources", "num_nodes"]


def test_optional_envs_are_absent_not_empty_and_checkout_sets_workdir():
    task = build_train_task(load_template(), make_request(), CANDS[:1], CHECKOUT, "/r.yaml")
    assert {"VOPS_MAX_STEPS", "VOPS_MAX_COST"}.isdisjoint(task["envs"])
    assert "secrets" not in task
    assert task["workdir"] == "/src/vicuna-ops"
    assert task["envs"]["VOPS_INSTALL"] == "~/sky_workdir[train,s3,gcs]"


def test_written_yaml_reads_back_identically(tmp_path):
    task = build_train_task(load_template(), make_request(secrets=["HF_TOKEN"]), CANDS, INDEX,
                            "/r.yaml")
    path = write_task_yaml(tmp_path / "runs" / "demo", "task", task)
    assert path.name == "task.yaml" and not list(path.parent.glob("*.tmp"))
    assert yaml.safe_load(path.read_text()) == task
    assert "run: |" in dump_task(task)  # scripts stay readable blocks
    assert "HF_TOKEN: null" in path.read_text()


def test_estimate_spot_against_on_demand():
    req = make_request()
    est = estimate(req.recipe, req.gpus, CANDS, use_spot=True)
    assert est.hours == 12 and est.gpu_hours == 96
    assert est.hourly == 2.4655 and est.cost == round(12 * 2.4655, 2)
    assert est.cost_high == round(12 * 11.9, 2)
    assert est.ondemand_cost == round(12 * 21.95764, 2)
    assert est.saving == round(1 - est.cost / est.ondemand_cost, 4) and est.saving > 0.85
    on_demand = estimate(req.recipe, req.gpus, sorted(CANDS, key=lambda c: c.ondemand_price),
                         use_spot=False, num_nodes=2)
    assert on_demand.saving is None and on_demand.hours == 6
    assert on_demand.hourly == round(2 * 21.95764, 4)


def test_expected_hours_scale_with_total_gpus():
    recipe = make_request().recipe  # 12 h on A100:8
    assert expected_hours(recipe, make_request(gpus="A100:4").gpus) == 24
    assert expected_hours(recipe, make_request().gpus, num_nodes=4) == 3


def test_cap_spreads_candidates_over_regions():
    many = [Candidate("aws", "us-east-1", f"us-east-1{z}", "p4d", 1 + i, 20)
            for i, z in enumerate("abcdef")]
    many.append(Candidate("aws", "us-west-2", "us-west-2a", "p4d", 50, 20))
    capped = _cap(many, cap=4, per_region=3)
    assert [c.zone for c in capped] == ["us-east-1a", "us-east-1b", "us-east-1c", "us-west-2a"]
    assert len(_cap(many, cap=2, per_region=3)) == 2
