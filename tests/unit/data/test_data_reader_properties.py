"""Property tests: the reader terminates on any input and accounts for every record.

Random truncations and corruptions of valid JSON lists and JSONL files, gzipped or not. A
reader that stops making progress on some input (as it once did on ``[{"id": "a"}, }]``)
fails here by the deadline, or by yielding more records than the input has characters.
"""

from __future__ import annotations

import gzip
import io
import json
import signal
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vicuna_ops.data import reader
from vicuna_ops.data.reader import ReadStats, read_records
from vicuna_ops.data.schema import Malformed, parse_json

SETTINGS = settings(max_examples=150, deadline=2000,
                    suppress_health_check=[HealthCheck.too_slow])

text_st = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
record_st = st.builds(
    lambda rid, turns: {"id": rid, "conversations": [
        {"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(turns)]},
    st.text("abc123", min_size=1, max_size=6), st.lists(text_st, max_size=4))
records_st = st.lists(record_st, min_size=1, max_size=8)
# Characters that break JSON structure most often, and a few ordinary ones.
noise_st = st.sampled_from(list('{}[],:"\\ \nx0\x00\xff'))


@contextmanager
def hard_limit(seconds: int = 5):
    """A reader that loops forever fails the test instead of hanging the suite."""
    def expire(*_):
        raise TimeoutError("the reader did not terminate")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def read_all(data: bytes, compress: bool = False):
    if compress:
        data = gzip.compress(data)
    stats = ReadStats("mem://x")
    with hard_limit():
        out = list(read_records(io.BytesIO(data), "mem://x", stats))
    # progress: every record consumes at least one character of the input
    assert len(out) <= len(data) + 1
    assert [r.where.item for r in out] == list(range(len(out)))
    assert stats.records == len(out)
    return out, stats


def json_list(items: list[dict], indent: bool) -> tuple[str, list[tuple[int, int, int]]]:
    """The list's text, and (start, end, line) of each element in it."""
    parts, spans, pos, line = ["[\n"], [], 2, 2
    for index, item in enumerate(items):
        text = json.dumps(item, indent=1 if indent else None)
        if index:
            parts.append(",\n")
            pos, line = pos + 2, line + 1
        spans.append((pos, pos + len(text), line))
        parts.append(text)
        pos, line = pos + len(text), line + text.count("\n")
    parts.append("\n]\n")
    return "".join(parts), spans


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "CHUNK_CHARS", 16)  # elements straddle buffer refills


@SETTINGS
@given(records_st, st.booleans(), st.booleans(), st.data())
def test_truncated_json_list_keeps_every_whole_record_and_reports_the_cut_one(
        items, indent, compress, data):
    text, spans = json_list(items, indent)
    cut = data.draw(st.integers(1, len(text)))
    truncated = text[:cut]
    out, _ = read_all(truncated.encode(), compress)
    whole = [i for i, (_, end, _) in enumerate(spans) if end <= cut]
    assert [(r.kind, r.payload, r.where.line) for r in out[:len(whole)]] == [
        ("value", items[i], spans[i][2]) for i in whole]
    rest = out[len(whole):]
    started = [i for i, (start, end, _) in enumerate(spans) if start < cut < end]
    if started and truncated[spans[started[0]][0]:].strip():
        # the cut element: reported once, where it starts, and nothing after it
        (cut_record,) = rest
        assert cut_record.kind == "error" and "truncated" in cut_record.payload
        assert cut_record.where.line == spans[started[0]][2]
    else:
        assert rest == []


@SETTINGS
@given(records_st, st.booleans(), st.booleans(), st.sampled_from(["insert", "delete",
                                                                    "replace"]),
       noise_st, st.data())
def test_corrupted_json_list_terminates_and_keeps_records_before_the_damage(
        items, indent, compress, how, char, data):
    text, spans = json_list(items, indent)
    at = data.draw(st.integers(1, len(text) - 1))
    broken = {"insert": text[:at] + char + text[at:], "delete": text[:at] + text[at + 1:],
              "replace": text[:at] + char + text[at + 1:]}[how]
    out, _ = read_all(broken.encode("utf-8", "surrogatepass"), compress)
    before = [i for i, (_, end, _) in enumerate(spans) if end <= at]
    assert [(r.kind, r.payload, r.where.line) for r in out[:len(before)]] == [
        ("value", items[i], spans[i][2]) for i in before]
    lines = broken.count("\n") + 1
    for record in out:
        assert 1 <= record.where.line <= lines
        assert record.kind in ("value", "error")


@SETTINGS
@given(records_st, st.booleans(), st.sampled_from(["truncate", "replace", "delete"]),
       noise_st, st.data())
def test_jsonl_every_line_is_one_record_read_or_malformed_with_its_line(
        items, compress, how, char, data):
    lines = [json.dumps(item) for item in items]
    text = "".join(line + "\n" for line in lines)
    at = data.draw(st.integers(0, len(text) - 1))
    broken = {"truncate": text[:at], "delete": text[:at] + text[at + 1:],
              "replace": text[:at] + char + text[at + 1:]}[how]
    out, _ = read_all(broken.encode(), compress)
    expected = [(n, line) for n, line in enumerate(broken.split("\n"), start=1)
                if line.strip()]
    if broken.lstrip().startswith("["):
        return  # the damage turned it into a JSON list: covered above
    assert [r.where.line for r in out] == [n for n, _ in expected]
    for record, (_, line) in zip(out, expected):
        assert record.kind == "line"
        try:
            value = parse_json(record.payload.decode("utf-8", "replace"))
        except Malformed:
            assert line not in lines or line.strip() != line  # only damaged lines fail
        else:
            if line in lines:
                assert value == items[lines.index(line)]


@SETTINGS
@given(st.binary(max_size=300), st.booleans())
def test_arbitrary_bytes_never_raise_or_hang(data, compress):
    out, stats = read_all(data, compress)
    assert stats.format.split("+")[0] in ("json", "jsonl", "empty")


@SETTINGS
@given(records_st, st.data())
def test_truncated_gzip_stream_ends_with_a_warning(items, data):
    text, spans = json_list(items, indent=False)
    packed = gzip.compress(text.encode())
    cut = data.draw(st.integers(0, len(packed) - 1))
    stats = ReadStats("mem://x")
    with hard_limit():
        out = list(read_records(io.BytesIO(packed[:cut]), "mem://x", stats))
    assert len(out) <= len(items)
    values = [r.payload for r in out if r.kind == "value"]
    assert values == items[:len(values)]
    if cut >= 10:  # past the header: the damage is named
        assert any("gzip" in w for w in stats.warnings or [])


@pytest.mark.parametrize("text", ['[{"id": "a"}, }]', "[}", '[{"id": 1},}}},{"id": 2}]',
                                  '[{"id": 1}, x]]', '[,,}', '[{"a": "\\"}'])
def test_known_hangs_terminate(text):
    out, _ = read_all(text.encode())
    assert any(r.kind == "error" for r in out)
