"""Streaming reader: JSON lists and JSONL, record locations, and every way a file can be broken."""

from __future__ import annotations

import gzip
import io
import json

import pytest

from vicuna_ops.data import reader
from vicuna_ops.data.reader import ReadStats, read_records


def records(data: bytes | str, **kwargs):
    raw = data.encode() if isinstance(data, str) else data
    stats = ReadStats("mem://x")
    return list(read_records(io.BytesIO(raw), "mem://x", stats, **kwargs)), stats


def conv(i: int, text: str = "hi") -> dict:
    return {"id": f"c{i}", "conversations": [{"from": "human", "value": f"{text} {i}"},
                                             {"from": "gpt", "value": "ok"}]}


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny read sizes, so elements straddle buffer refills and compaction happens often."""
    monkeypatch.setattr(reader, "CHUNK_CHARS", 7)


def test_jsonl_lines_carry_line_numbers_and_skip_blank_lines():
    text = json.dumps(conv(0)) + "\n\n  \n" + json.dumps(conv(1)) + "\nnot json\n"
    out, stats = records(text)
    assert [(r.where.line, r.where.item, r.kind) for r in out] == [
        (1, 0, "line"), (4, 1, "line"), (5, 2, "line")]
    assert stats.format == "jsonl" and stats.records == 3
    assert json.loads(out[1].payload) == conv(1)


def test_jsonl_with_bom_and_crlf():
    text = "\ufeff" + json.dumps(conv(0)) + "\r\n" + json.dumps(conv(1)) + "\r\n"
    out, _ = records(text.encode("utf-8"))
    assert [json.loads(r.payload.decode("utf-8-sig")) for r in out] == [conv(0), conv(1)]


def test_invalid_utf8_in_a_line_is_replaced_and_counted():
    line = json.dumps(conv(0)).encode().replace(b"hi", b"h\xff\xfei")
    text, bad = reader.decode_line(line)
    assert bad == 2 and "h\ufffd\ufffdi" in text
    assert reader.decode_line("caf\u00e9 \ufffd".encode()) == ("caf\u00e9 \ufffd", 0)


@pytest.mark.parametrize("indent", [None, 2])
def test_json_list_streams_elements_across_tiny_chunks(small_chunks, indent):
    items = [conv(i, "x" * (i * 13)) for i in range(30)]
    out, stats = records(json.dumps(items, indent=indent))
    assert [r.payload for r in out] == items
    assert stats.format == "json" and stats.records == 30 and not stats.warnings
    if indent:  # line numbers point at each element's first line
        lines = json.dumps(items, indent=indent).splitlines()
        for record in out:
            assert lines[record.where.line - 1].strip() == "{"
    assert [r.where.item for r in out] == list(range(30))


def test_number_split_across_a_chunk_boundary_is_read_whole(small_chunks):
    out, _ = records("[123456789012, 7, " + json.dumps(conv(0)) + "]")
    assert [r.payload for r in out] == [123456789012, 7, conv(0)]


def test_broken_element_is_reported_and_reading_resyncs(small_chunks):
    good = [json.dumps(conv(i)) for i in range(3)]
    broken = '{"id": "bad", "conversations": [1, 2] oops}'
    text = f"[\n{good[0]},\n{broken},\n{good[1]},\n{good[2]}\n]"
    out, stats = records(text)
    assert [r.kind for r in out] == ["value", "error", "value", "value"]
    assert out[1].where.line == 3 and out[1].where.item == 1
    assert "not valid JSON" in out[1].payload and "line 3" in out[1].payload
    assert [r.payload for r in out if r.kind == "value"] == [conv(0), conv(1), conv(2)]
    assert not stats.warnings


def test_truncated_file_reports_the_cut_element():
    text = "[" + json.dumps(conv(0)) + ", " + json.dumps(conv(1))[:25]
    out, stats = records(text)
    assert [r.kind for r in out] == ["value", "error"]
    assert "truncated" in out[1].payload
    assert any("no closing" in w for w in stats.warnings)


def test_missing_closing_bracket_after_a_complete_element_is_a_warning():
    out, stats = records("[" + json.dumps(conv(0)) + ",\n")
    assert [r.kind for r in out] == ["value"]
    assert stats.warnings and "no closing ']'" in stats.warnings[0]


def test_text_after_the_list_and_missing_commas_are_warned_about():
    text = "[" + json.dumps(conv(0)) + " " + json.dumps(conv(1)) + "] trailing"
    out, stats = records(text)
    assert [r.payload for r in out] == [conv(0), conv(1)]
    assert any("missing ','" in w for w in stats.warnings)
    assert any("after the closing" in w for w in stats.warnings)


def test_empty_slot_is_an_error_record():
    out, _ = records("[" + json.dumps(conv(0)) + ",," + json.dumps(conv(1)) + "]")
    assert [r.kind for r in out] == ["value", "error", "value"]


def test_raw_control_characters_inside_strings_are_accepted():
    text = '[{"id": "t", "conversations": [{"from": "human", "value": "a\tb\nc"}]}]'
    out, _ = records(text)
    assert out[0].payload["conversations"][0]["value"] == "a\tb\nc"


def test_invalid_utf8_in_a_json_list_is_replaced_and_counted():
    raw = ("[" + json.dumps(conv(0)) + "]").encode().replace(b"hi", b"h\xffi")
    out, stats = records(raw)
    assert out[0].payload["conversations"][0]["value"] == "h\ufffdi 0"
    assert stats.bad_utf8_bytes == 1


@pytest.mark.parametrize("as_list", [True, False])
def test_gzip_is_detected_from_the_bytes(as_list):
    items = [conv(0), conv(1)]
    text = json.dumps(items) if as_list else "".join(json.dumps(i) + "\n" for i in items)
    out, stats = records(gzip.compress(text.encode()))
    payloads = [r.payload if r.kind == "value" else json.loads(r.payload) for r in out]
    assert payloads == items
    assert stats.format.endswith("+gzip")


@pytest.mark.parametrize("text", ["", "   \n\n"])
def test_empty_file_yields_nothing_and_says_so(text):
    out, stats = records(text)
    assert out == [] and stats.format == "empty" and stats.warnings


def test_element_over_the_size_cap_is_reported_not_buffered(monkeypatch):
    monkeypatch.setattr(reader, "MAX_RECORD_CHARS", 200)
    monkeypatch.setattr(reader, "CHUNK_CHARS", 16)
    huge = json.dumps(conv(1, "y" * 1000))
    out, _ = records("[" + json.dumps(conv(0)) + ", " + huge[:-1] + ' "unterminated')
    assert [r.kind for r in out] == ["value", "error"]


def test_bytes_read_are_counted_for_progress():
    text = json.dumps([conv(i) for i in range(5)])
    _, stats = records(text)
    assert stats.bytes_read == len(text)
