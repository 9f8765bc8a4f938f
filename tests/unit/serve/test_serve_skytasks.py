"""Spreading replicas over zones and clouds, and the task dicts built from the templates."""

from __future__ import annotations

from vicuna_ops.launch import Candidate, Gpus, NodeInstall, load_template
from vicuna_ops.serve import skytasks
from vicuna_ops.serve.skytasks import ServeRequest


def _cand(cloud, region, zone, price):
    return Candidate(cloud, region, zone, "g6.xlarge", price, price * 3)


CANDIDATES = [  # cheapest first, as zone_candidates returns them
    _cand("aws", "us-east-1", "us-east-1a", 0.20), _cand("aws", "us-east-1", "us-east-1b", 0.21),
    _cand("aws", "us-west-2", "us-west-2a", 0.22), _cand("gcp", "us-central1", "us-central1-a", 0.23),
    _cand("gcp", "us-central1", "us-central1-b", 0.24),
]
INSTALL = NodeInstall(mode="index", version="0.1.0", requirement="vicuna-ops[serve]==0.1.0",
                      install_id="0.1.0[serve]", workdir=None)


def _request(**kw) -> ServeRequest:
    values = dict(name="chat", model="s3://b/r/final", model_name="r", bucket="s3://b/serve",
                  clouds=("aws", "gcp"), replicas=3, gpus=Gpus("L4", 1), use_spot=True,
                  ondemand_fallback=0)
    values.update(kw)
    return ServeRequest(**values)


def test_first_choices_alternate_clouds_then_regions_then_zones():
    lists = skytasks.spread_replicas(CANDIDATES, 4)
    firsts = [c[0].infra for c in lists]
    assert firsts == ["aws/us-east-1/us-east-1a", "gcp/us-central1/us-central1-a",
                      "aws/us-west-2/us-west-2a", "gcp/us-central1/us-central1-b"]
    for ordered in lists:  # every list keeps every zone to fail over to
        assert sorted(c.infra for c in ordered) == sorted(c.infra for c in CANDIDATES)
        assert [c.infra for c in ordered[1:]] == [c.infra for c in CANDIDATES
                                                  if c is not ordered[0]]


def test_more_replicas_than_zones_reuse_zones_evenly():
    firsts = [c[0].infra for c in skytasks.spread_replicas(CANDIDATES[:2], 5)]
    assert firsts.count(CANDIDATES[0].infra) == 3 and firsts.count(CANDIDATES[1].infra) == 2


def test_on_demand_fallback_takes_the_first_replicas():
    request = _request(replicas=3, ondemand_fallback=1)
    assert [request.replica_uses_spot(i) for i in range(3)] == [False, True, True]
    assert _request(use_spot=False).ondemand_replicas == 3


def test_worker_task_overlays_the_template():
    task = skytasks.worker_task(load_template("serve-worker"), _request(), 1, CANDIDATES,
                                INSTALL)
    assert task["name"] == "chat-worker-1"
    assert task["resources"]["ordered"][0] == {"infra": "aws/us-east-1/us-east-1a"}
    assert task["resources"]["accelerators"] == "L4:1" and task["resources"]["use_spot"]
    assert task["secrets"] == {"VOPS_WORKER_TOKEN": None}
    assert task["envs"]["VOPS_INSTALL"] == "vicuna-ops[serve]==0.1.0"
    assert "workdir" not in task and "vops serve worker" in task["run"]
    assert list(task)[:5] == ["name", "resources", "envs", "secrets", "setup"]


def test_controller_task_is_on_demand_on_the_requested_clouds():
    task = skytasks.controller_task(load_template("serve-controller"),
                                    _request(with_api_keys=True, port=9000), INSTALL)
    resources = task["resources"]
    assert resources["use_spot"] is False and resources["ports"] == 9000
    assert resources["any_of"] == [{"infra": "aws"}, {"infra": "gcp"}]
    assert task["secrets"] == {"VOPS_WORKER_TOKEN": None, "VOPS_API_KEYS": None}
    assert task["envs"]["VOPS_API_PORT"] == "9000"
