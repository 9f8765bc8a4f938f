"""Zone candidates across clouds and the on-demand baseline, on SkyPilot's offline catalog.

The candidate list is the whole search space of a managed job (SkyPilot never looks beyond
``resources.ordered``), so a cloud the user asked for must be in it; and the spot saving is
measured against what the same flags with ``--on-demand`` would pay.
"""

from __future__ import annotations

import json

import pytest

from fixtures.cli import run_vops
from vicuna_ops.launch.candidates import Candidate, _cap

BUCKET = "s3://vops-test-bucket/runs"
DATA = "s3://vops-test-bucket/sharegpt/train.jsonl"


def dry_run(capsys, *extra: str, name: str) -> dict:
    code, out, err = run_vops(capsys, "train", "--dry-run", "--json", "--bucket", BUCKET,
                              "--data", DATA, "--name", name, *extra)
    assert code == 0, err
    return json.loads(out)


def clouds_of(plan: dict) -> list[str]:
    return [c["cloud"] for c in plan["candidates"]]


def test_two_clouds_both_reach_the_candidate_list(sky_offline, capsys):
    plan = dry_run(capsys, "--gpus", "A100:8", "--clouds", "aws,gcp", name="two")
    clouds = clouds_of(plan)
    assert len(clouds) == 8 and clouds.count("gcp") >= 2 and clouds.count("aws") >= 2
    prices = [c["spot_price"] for c in plan["candidates"]]
    assert prices == sorted(prices)  # still cheapest first
    # GCP's cheapest A100:8 spot zones are dearer than AWS's 8th: without the per-cloud
    # floor they would all be AWS (that is what --min-per-cloud 0 shows).
    plain = dry_run(capsys, "--gpus", "A100:8", "--clouds", "aws,gcp", "--min-per-cloud", "0",
                    name="plain")
    assert set(clouds_of(plain)) == {"aws"}
    gcp_only = dry_run(capsys, "--gpus", "A100:8", "--clouds", "gcp", name="gcp-only")
    cheapest_gcp = [c["zone"] for c in gcp_only["candidates"][:2]]
    assert [c["zone"] for c in plan["candidates"] if c["cloud"] == "gcp"] == cheapest_gcp


def test_flags_shape_the_list_and_filters_still_apply(sky_offline, capsys):
    plan = dry_run(capsys, "--clouds", "aws,gcp", "--max-candidates", "12",
                   "--min-per-cloud", "4", name="wide")
    clouds = clouds_of(plan)
    assert len(clouds) == 12 and clouds.count("gcp") >= 4 and clouds.count("aws") >= 4
    assert plan["resources"]["max_candidates"] == 12
    assert plan["resources"]["min_per_cloud"] == 4
    narrow = dry_run(capsys, "--clouds", "aws,gcp", "--regions", "us-east-1,europe-west4",
                     name="narrow")
    assert {c["region"] for c in narrow["candidates"]} == {"us-east-1", "europe-west4"}
    assert "gcp" in clouds_of(narrow)


@pytest.mark.parametrize("args, words", [
    (["--max-candidates", "0"], "--max-candidates must be at least 1"),
    (["--min-per-cloud", "-1"], "--min-per-cloud must be 0 or more"),
    (["--clouds", "aws,gcp", "--max-candidates", "3"], "more than --max-candidates 3"),
])
def test_bad_counts_are_one_line_errors(sky_offline, capsys, args, words):
    code, out, err = run_vops(capsys, "train", "--dry-run", "--bucket", BUCKET, "--data", DATA,
                              "--name", "bad", *args)
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1


def test_local_refuses_the_cloud_only_candidate_flags(capsys, tmp_path):
    code, _, err = run_vops(capsys, "train", "--local", "--bucket", str(tmp_path),
                            "--max-candidates", "4")
    assert code == 2 and "--max-candidates does not apply to --local" in err


def test_saving_is_against_the_cheapest_on_demand_zone_of_every_requested_cloud(
        sky_offline, capsys):
    spot = dry_run(capsys, "--gpus", "A100:8", "--clouds", "aws,gcp", name="spot")
    ondemand = dry_run(capsys, "--gpus", "A100:8", "--clouds", "aws,gcp", "--on-demand",
                       name="od")
    first = ondemand["candidates"][0]
    est = spot["estimate"]
    assert est["ondemand_zone"] == f"{first['cloud']}/{first['region']}/{first['zone']}"
    assert est["ondemand_hourly"] == pytest.approx(first["ondemand_price"], abs=1e-4)
    # ... which is cheaper than every spot candidate's own on-demand price here.
    assert est["ondemand_hourly"] < min(c["ondemand_price"] for c in spot["candidates"])
    hours = est["hours"]
    assert est["ondemand_cost"] == pytest.approx(hours * first["ondemand_price"], abs=0.01)
    assert est["saving"] == pytest.approx(1 - est["cost"] / est["ondemand_cost"], abs=1e-4)
    code, out, _ = run_vops(capsys, "train", "--dry-run", "--gpus", "A100:8", "--clouds",
                            "aws,gcp", "--bucket", BUCKET, "--data", DATA, "--name", "human")
    assert code == 0 and est["ondemand_zone"] in out.replace("\n", "")
    assert "--min-per-cloud 2" in out


def test_cap_reserves_each_clouds_cheapest_places_then_fills_by_price():
    aws = [Candidate("aws", f"r{i}", f"r{i}a", "p4d", 1 + i, 20) for i in range(8)]
    gcp = [Candidate("gcp", f"g{i}", f"g{i}a", "a2", 50 + i, 30) for i in range(3)]
    ordered = aws + gcp
    taken = _cap(ordered, cap=8, per_region=3, min_per_cloud=2)
    assert [c.cloud for c in taken] == ["aws"] * 6 + ["gcp"] * 2
    assert [c.spot_price for c in taken] == sorted(c.spot_price for c in taken)
    assert [c.cloud for c in _cap(ordered, cap=8, per_region=3)] == ["aws"] * 8
    # a cloud with fewer zones than the floor gives what it has; the rest is by price
    assert [c.cloud for c in _cap(ordered, cap=8, per_region=3, min_per_cloud=5)
            ].count("gcp") == 3


def test_the_estimate_is_sized_from_report_json_beside_the_data(sky_offline, capsys,
                                                                  s3_server):
    from vicuna_ops import adaptors

    s3 = adaptors.boto3().client("s3")
    s3.create_bucket(Bucket="vops-test-bucket")
    s3.put_object(Bucket="vops-test-bucket", Key="sharegpt/report.json",
                  Body=json.dumps({"splits": {"train": {"tokens": 30_000_000}}}))
    plan = dry_run(capsys, "--gpus", "A100:8", name="sized")
    est = plan["estimate"]
    assert "report.json: 30,000,000 training tokens x 3 epochs" in est["basis"]
    rate = float(est["basis"].split(" at ")[1].split(" tokens/s")[0].replace(",", ""))
    assert est["hours"] == pytest.approx(90_000_000 / (rate * 8) / 3600, rel=1e-3)
    assert est["cost"] == pytest.approx(est["hours"] * plan["candidates"][0]["spot_price"],
                                        abs=0.02)
    short = dry_run(capsys, "--gpus", "A100:8", "--max-steps", "10", name="short")
    assert short["estimate"]["hours"] < est["hours"] / 10
    assert "10 steps x 128 sequences" in short["estimate"]["basis"]


def _record_history(zone: str, hours: float, preemptions: int, cloud: str = "aws") -> None:
    from vicuna_ops.ledger import Ledger

    with Ledger() as ledger:
        run = f"hist-{zone}"
        ledger.add_run(run, "train", "succeeded", data={"recipe": "other"})
        per = hours / (preemptions + 1)
        for i in range(preemptions + 1):
            status = "preempted" if i < preemptions else "finished"
            ledger.upsert_segment(run, f"s{i}", 0, per * 3600, {
                "cloud": cloud, "zone": zone, "use_spot": True, "kind": "train",
                "status": status, "start": 0.0, "heartbeat": per * 3600})


def test_preemption_history_reorders_the_zones_by_default(sky_offline, capsys):
    before = dry_run(capsys, "--clouds", "aws", name="no-history")
    assert before["order"]["order"] == "price"
    first = before["candidates"][0]["zone"]
    _record_history(first, hours=10, preemptions=40)  # cheap, and preempted every 15 min
    after = dry_run(capsys, "--clouds", "aws", name="with-history")
    assert after["order"]["order"] == "expected" and after["order"]["zones_with_history"] == 1
    zones = [c["zone"] for c in after["candidates"]]
    assert zones[0] != first and first in zones
    values = [c["expected_hourly"] for c in after["candidates"]]
    assert values == sorted(values)
    flaky = next(c for c in after["candidates"] if c["zone"] == first)
    assert flaky["preemption_rate"] > 1.0
    # SkyPilot's optimizer follows the new order
    assert after["placement"]["zone"] == zones[0]
    price = dry_run(capsys, "--clouds", "aws", "--order", "price", name="by-price")
    assert price["candidates"][0]["zone"] == first
    code, out, _ = run_vops(capsys, "train", "--dry-run", "--clouds", "aws", "--bucket",
                            BUCKET, "--data", DATA, "--name", "human-order")
    assert code == 0 and "$/useful h" in out and "preemption history" in out
    code, _, err = run_vops(capsys, "train", "--dry-run", "--order", "random", "--bucket",
                            BUCKET, "--data", DATA, "--name", "bad-order")
    assert code == 2 and "--order 'random'" in err


def test_gpus_auto_trains_on_the_cheapest_per_token_gpus_that_hold_the_model(sky_offline,
                                                                                capsys):
    from vicuna_ops.launch.workload import ASSUMED_TOKENS_PER_S

    plan = dry_run(capsys, "--gpus", "auto", "--recipe", "vicuna-13b", name="auto")
    auto = plan["gpus_auto"]
    assert plan["resources"]["gpus"] == auto["gpus"]
    assert {c["spot_price"] for c in plan["candidates"][:1]} == {auto["choice"]["spot_price"]}

    def per_token(choice):
        name, _, count = choice["gpus"].partition(":")
        return choice["spot_price"] / (ASSUMED_TOKENS_PER_S[name] * int(count))

    assert per_token(auto["choice"]) <= per_token(auto["runner_up"])
    need = float(auto["need"].split("= ")[1].split(" GiB")[0])
    assert need <= auto["choice"]["memory_gib"] * 0.9
    code, _, err = run_vops(capsys, "train", "--dry-run", "--gpus", "auto", "--recipe", "tiny",
                            "--bucket", BUCKET, "--data", DATA, "--name", "auto-tiny")
    assert code == 2 and "model.params_b" in err


@pytest.mark.parametrize("precision, low, high", [("int4", 20, 30), ("bf16", 30, 200)])
def test_gpus_auto_for_a_13b_server_by_precision(sky_offline, precision, low, high):
    from vicuna_ops.launch import gpu_fit

    shape = gpu_fit.shape_from_config({
        "hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 40,
        "intermediate_size": 13824, "vocab_size": 32000}, precision)
    best, runner_up, need = gpu_fit.choose(lambda count: gpu_fit.serve_need(shape, 2048, 4),
                                           (1,), ("aws", "gcp"))
    assert low <= best.memory_gib <= high and best.gpus.endswith(":1")
    assert gpu_fit.fits(need, best.memory_gib)
    assert runner_up is not None and runner_up.spot_price >= best.spot_price
