import pytest

from vicuna_ops.eval.verdicts import parse_pairwise, parse_rating


@pytest.mark.parametrize("text, verdict", [
    ("A is clearer. [[A]]", "A"), ("[[B]]", "B"), ("so: [[C]]", "C"),
    ("[[ a ]]", "A"), ("[[Assistant B]]", "B"), ("[[Tie]]", "C"), ("**[[A]]**", "A"),
    ("I pick [A].", "A"), ("Final verdict: B", "B"), ("verdict is tie", "C"),
    ("[[A]] ... as said, [[A]]", "A"),
])
def test_pairwise_verdicts_and_near_misses(text, verdict):
    assert parse_pairwise(text) == verdict


@pytest.mark.parametrize("text", [
    "", "Both are good.", "[[D]]", "[[A]] or maybe [[B]]", "[A] vs [B]", "[[A]][[C]]",
])
def test_pairwise_parse_failures(text):
    assert parse_pairwise(text) is None


def test_strict_verdict_wins_over_loose_mentions():
    assert parse_pairwise("Unlike [B], A explains it. [[A]]") == "A"


@pytest.mark.parametrize("text, rating", [
    ("[[7]]", 7.0), ("[[ 8.5 ]]", 8.5), ("[[9/10]]", 9.0), ("score [6]", 6.0),
    ("Rating: 7/10", 7.0), ("[[1]]", 1.0), ("[[10]]", 10.0),
])
def test_ratings(text, rating):
    assert parse_rating(text) == rating


@pytest.mark.parametrize("text", ["[[0]]", "[[11]]", "[[7]] then [[8]]", "good", "[[seven]]"])
def test_rating_parse_failures(text):
    assert parse_rating(text) is None
