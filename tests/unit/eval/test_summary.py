"""Combining the two seat orders of a pairwise judgment."""

from vicuna_ops.eval.summary import combine, pairwise_section


def judged(qid, first, second, winner, *, turn=1, failure=False, lens=(100, 100)):
    return {"question_id": qid, "turn": turn, "category": "math", "model_a": first,
            "model_b": second, "winner": None if failure else winner,
            "parse_failure": failure, "len_a": lens[0], "len_b": lens[1],
            "judge_model": "j"}


def test_agreeing_orders_stand_and_disagreeing_ones_are_ties():
    records = [judged(1, "x", "y", "x"), judged(1, "y", "x", "x"),   # consistent: x
               judged(2, "x", "y", "x"), judged(2, "y", "x", "y")]   # always-first: tie
    verdicts, counts = combine(records)
    assert [v["outcome"] for v in verdicts] == ["a", "tie"]
    assert counts == {"compared": 2, "inconsistent": 1}


def test_parse_failures_and_missing_orders_are_not_scored():
    records = [judged(1, "x", "y", "x"), judged(1, "y", "x", None, failure=True),
               judged(2, "x", "y", "y")]
    verdicts, counts = combine(records)
    assert verdicts == [] and counts == {"unscored": 1, "incomplete": 1}
    section = pairwise_section(records, rounds=10, seed=0)
    assert section["parse_failures"] == 1 and section["position_inconsistent"] is None
    assert section["models"]["x"]["wins"] == 0


def test_always_first_judge_is_fully_inconsistent():
    records = []
    for qid in range(5):
        records += [judged(qid, "x", "y", "x"), judged(qid, "y", "x", "y")]
    section = pairwise_section(records, rounds=10, seed=0)
    assert section["position_inconsistent"] == 1.0
    assert section["models"]["x"]["ties"] == 5 and section["models"]["x"]["win_rate"] == 0.5
