import json

import pytest

from vicuna_ops.errors import DataError
from vicuna_ops.eval.store import RecordStore, make_key


def test_records_survive_reopening(tmp_path):
    store = RecordStore(tmp_path / "r.jsonl")
    store.append({"key": "a", "v": 1})
    store.append({"key": "b", "v": 2})
    store.append({"key": "a", "v": 3})  # a key already there is kept as it was
    again = RecordStore(tmp_path / "r.jsonl")
    assert [r["v"] for r in again] == [1, 2] and "a" in again and len(again) == 2


def test_a_torn_last_line_is_dropped_and_appending_continues(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"key": "a"}) + "\n" + '{"key": "b", "v"')
    store = RecordStore(path)
    assert list(store.records) == ["a"] and store.dropped_torn_line
    store.append({"key": "b", "v": 2})
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()] == ["a", "b"]


def test_a_bad_line_in_the_middle_is_an_error_naming_it(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"key": "a"}\nnot json\n{"key": "c"}\n')
    with pytest.raises(DataError, match="r.jsonl:2"):
        RecordStore(path)


def test_keys_are_stable_and_distinguish_order():
    assert make_key("pairwise", 1, "x", "y") == make_key("pairwise", "1", "x", "y")
    assert make_key("pairwise", 1, "x", "y") != make_key("pairwise", 1, "y", "x")
