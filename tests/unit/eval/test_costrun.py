"""The judge's spend as a ledger run, and how ``vops cost`` prices it."""

import json

import pytest

from vicuna_ops.cost.collect import run_costs
from vicuna_ops.errors import UserError
from vicuna_ops.eval import costrun
from vicuna_ops.ledger import Ledger


def write_judgments(folder, usages):
    path = folder / "judgments" / "single.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        for i, (tokens_in, tokens_out) in enumerate(usages):
            handle.write(json.dumps({"key": f"k{i}-{tokens_in}", "judge_model": "judge-x",
                                     "usage": {"prompt_tokens": tokens_in,
                                               "completion_tokens": tokens_out}}) + "\n")


@pytest.mark.parametrize("text", ["2", "a,b", "1,2,3", "-1,2"])
def test_bad_price_is_a_user_error(text):
    with pytest.raises(UserError, match="is not IN,OUT"):
        costrun.parse_price(text)


def test_eval_run_costs_its_tokens_and_is_updated_not_doubled(tmp_path):
    folder = tmp_path / "my eval"
    write_judgments(folder, [(1_000_000, 0), (0, 500_000)])
    first = costrun.record(folder, "judge-x", "http://j", (3.0, 12.0), started=1.0)
    assert first["cost_usd"] == pytest.approx(3.0 + 6.0)
    write_judgments(folder, [(500_000, 0)])  # a resumed run judged one more
    again = costrun.record(folder, "judge-x", "http://j", (3.0, 12.0), started=2.0)
    assert again["run_id"] == first["run_id"] and again["judgments"] == 3
    with Ledger() as ledger:
        runs, problems = run_costs(ledger)
        kinds = [r["kind"] for r in ledger.list_runs()]
    assert kinds == ["eval"] and problems == []
    (run,) = runs
    assert run.cost == pytest.approx(10.5) and run.node_hours == 0
    assert run.segments[0].segment_id == "judge" and "1,500,000 input" in run.segments[0].notes[0]


def test_run_id_fits_the_ledger_rules(tmp_path):
    from vicuna_ops.config import RUN_ID_PATTERN

    rid = costrun.run_id(tmp_path / "Some Folder!", "gpt-4o/2024")
    assert RUN_ID_PATTERN.match(rid), rid
