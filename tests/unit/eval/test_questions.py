import pytest

from vicuna_ops.errors import UserError
from vicuna_ops.eval import questions


def test_builtin_set_covers_eight_categories_with_references():
    qs = questions.load("builtin:vops-40")
    assert len(qs) >= 40
    by_category = {}
    for q in qs:
        by_category.setdefault(q.category, []).append(q)
    assert set(by_category) == set(questions.CATEGORY_TEMPERATURE)
    assert all(len(v) >= 5 for v in by_category.values())
    assert sum(len(q.turns) == 2 for q in qs) >= 8
    for category in ("math", "coding", "reasoning"):
        for q in by_category[category]:
            assert q.reference and len(q.reference) == len(q.turns)
            assert q.temperature == 0.0


def test_unknown_builtin_lists_the_known_ones():
    with pytest.raises(UserError) as info:
        questions.load("builtin:nope")
    assert "builtin:vops-40" in info.value.one_line()


@pytest.mark.parametrize("line, where", [
    ('{"question_id": 1, "category": "x", "turns": ["a", "b", "c"]}', "turns"),
    ('{"question_id": 1, "turns": ["a"]}', "category"),
    ('{"question_id": 1, "category": "x", "turns": ["  "]}', "turns"),
    ("not json", "not JSON"),
])
def test_bad_lines_are_named(line, where):
    with pytest.raises(UserError, match=f"f.jsonl:1: {where}"):
        questions.parse_lines([line], "f.jsonl")


def test_repeated_ids_are_refused():
    line = '{"question_id": 1, "category": "x", "turns": ["a"]}'
    with pytest.raises(UserError, match="repeats"):
        questions.parse_lines([line, line.replace('1,', '"1",')], "f.jsonl")
