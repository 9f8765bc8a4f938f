"""One record through parse, clean, filter and split: each reason, each change, no crash."""

from __future__ import annotations

import json

import pytest

from vicuna_ops.data.process import CleanOptions, Processor, SpecialTokenGuard
from vicuna_ops.data.reader import RawRecord, Where
from vicuna_ops.errors import UserError
from vicuna_ops.template import count_tokens, parse_turns

WHERE = Where("mem://in.jsonl", 7, 3)


def line(value) -> RawRecord:
    text = value if isinstance(value, str) else json.dumps(value)
    return RawRecord(WHERE, "line", text.encode(), len(text))


def conv(*pairs, rid="r1", system=None) -> dict:
    turns = [{"from": "system", "value": system}] if system is not None else []
    for role, text in pairs:
        turns.append({"from": role, "value": text})
    return {"id": rid, "conversations": turns}


QA = (("human", "What is a list in Python?"), ("gpt", "An ordered, mutable sequence."))


@pytest.fixture
def processor(tiny):
    return Processor(CleanOptions(max_length=2048), tiny)


@pytest.mark.parametrize("value, detail", [
    ("{not json", "not valid JSON"),
    ('{"id": "a", "conversations": []} extra', "extra data"),
    ([1, 2], "must be a JSON object, not a list"),
    ({"conversations": []}, "no 'id' field"),
    ({"id": None, "conversations": []}, "'id' is null"),
    ({"id": True, "conversations": []}, "'id' is a boolean"),
    ({"id": " ", "conversations": []}, "'id' is empty"),
    ({"id": "a"}, "no 'conversations' field"),
    ({"id": "a", "conversations": {"from": "human"}}, "'conversations' is an object"),
    ({"id": "a", "conversations": ["hi"]}, "turn 0 is a string, not an object"),
    ({"id": "a", "conversations": [{"value": "hi"}]}, "turn 0 has no 'from' field"),
    ({"id": "a", "conversations": [{"from": "human"}]}, "turn 0 has no 'value' field"),
    ({"id": "a", "conversations": [{"from": "human", "value": ["x"]}]},
     "turn 0: 'value' is a list, not a string"),
    ({"id": "a", "conversations": [{"from": "human", "value": 3}]}, "'value' is a number"),
    ({"id": "a", "conversations": [{"from": "bing", "value": "x"}]}, "unknown speaker 'bing'"),
])
def test_malformed_records_say_why(processor, value, detail):
    outcome = processor.process(line(value))
    assert outcome.reason == "malformed" and detail in outcome.detail
    assert outcome.where == WHERE


def test_malformed_record_keeps_its_id_when_it_has_one(processor):
    outcome = processor.process(line({"id": "abc", "conversations": "x"}))
    assert outcome.reason == "malformed" and outcome.record_id == "abc"


def test_reader_errors_become_malformed_outcomes(processor):
    outcome = processor.process(RawRecord(WHERE, "error", "not valid JSON: boom", 0))
    assert (outcome.reason, outcome.detail) == ("malformed", "not valid JSON: boom")


def test_integer_ids_and_role_aliases_are_accepted(processor):
    value = {"id": 42, "conversations": [{"from": "user", "value": "hi there"},
                                         {"from": "assistant", "value": "hello"}]}
    outcome = processor.process(RawRecord(WHERE, "value", value, 0))
    assert outcome.reason is None and outcome.record_id == "42"
    ((turns, _),) = outcome.segments
    assert [role for role, _ in turns] == ["human", "gpt"]


def test_kept_record_segments_are_exact_and_readable_by_the_trainer(processor, tiny):
    outcome = processor.process(line(conv(*QA, *QA)))
    assert outcome.reason is None
    ((turns, tokens),) = outcome.segments
    messages = [{"from": role, "value": text} for role, text in turns]
    assert tokens == count_tokens(tiny, *parse_turns(messages))
    assert outcome.exchange_key is not None and outcome.system is None


@pytest.mark.parametrize("pairs, reason", [
    ((("human", "a"), ("human", "b"), ("gpt", "c")), "role_order"),
    ((("human", "q"), ("gpt", "  ")), "empty_reply"),
    ((("human", "q"),), "too_short"),
    ((), "too_short"),
])
def test_left_out_reasons(processor, pairs, reason):
    assert processor.process(line(conv(*pairs))).reason == reason


def test_role_order_detail_shows_the_sequence(processor):
    outcome = processor.process(line(conv(("human", "a"), ("human", "b"), ("gpt", "c"))))
    assert outcome.detail == "human human gpt"


def test_html_only_reply_that_converts_to_nothing_is_an_empty_reply(processor):
    pairs = (("human", "draw"), ("gpt", '<div class="markdown"><svg></svg></div>'))
    assert processor.process(line(conv(*pairs))).reason == "empty_reply"


def test_repairs_and_cuts_are_counted_on_kept_records(processor):
    pairs = (("gpt", "hello"), *QA, ("human", "more?"), ("gpt", ""), ("human", "x"))
    outcome = processor.process(line(conv(*pairs)))
    assert outcome.reason is None
    assert outcome.changes == {"dropped_leading_turn": 1, "dropped_trailing_turn": 1,
                               "cut_at_empty_turn": 1}
    ((turns, _),) = outcome.segments
    assert list(turns) == list(QA)


def test_min_turns_and_min_chars(tiny):
    strict = Processor(CleanOptions(min_turns=2), tiny)
    assert strict.process(line(conv(*QA))).reason == "too_short"
    assert strict.process(line(conv(*QA, *QA))).reason is None
    chars = Processor(CleanOptions(min_chars=1000), tiny)
    assert chars.process(line(conv(*QA))).reason == "too_short"


def test_language_filter(tiny):
    keep_en = Processor(CleanOptions(keep_langs=frozenset({"en"})), tiny)
    chinese = conv(("human", "请帮我写一个排序函数，谢谢你的帮助"), ("gpt", "好的"))
    outcome = keep_en.process(line(chinese))
    assert (outcome.reason, outcome.detail) == ("language", "zh")
    assert keep_en.process(line(conv(*QA))).reason is None
    skip_zh = Processor(CleanOptions(skip_langs=frozenset({"zh"})), tiny)
    assert skip_zh.process(line(chinese)).reason == "language"


def test_blocklist_filter(tiny):
    blocked = Processor(CleanOptions(blocklist=("as an AI language model",)), tiny)
    pairs = (("human", "hi"), ("gpt", "As an AI language model, I cannot"))
    outcome = blocked.process(line(conv(*pairs)))
    assert (outcome.reason, outcome.detail) == ("blocklist", "As an AI language model")
    assert blocked.process(line(conv(*QA))).reason is None


def test_too_long_when_every_exchange_is_dropped(tiny):
    small = Processor(CleanOptions(max_length=200), tiny)
    huge = conv(("human", "q"), ("gpt", "x" * 500))
    outcome = small.process(line(huge))
    assert outcome.reason == "too_long"
    truncating = Processor(CleanOptions(max_length=200, on_long_turn="truncate"), tiny)
    kept = truncating.process(line(huge))
    assert kept.reason is None and kept.changes["exchanges_truncated"] == 1
    assert kept.segments[0][1] <= 200


def test_long_conversation_is_split_and_counted(tiny):
    processor = Processor(CleanOptions(max_length=260), tiny)
    outcome = processor.process(line(conv(*[QA[i % 2] for i in range(10)])))
    assert outcome.reason is None and len(outcome.segments) > 1
    assert outcome.changes["conversations_split"] == 1
    assert all(tokens <= 260 for _, tokens in outcome.segments)


def test_custom_system_prompt_is_kept_and_used_for_lengths(processor, tiny):
    outcome = processor.process(line(conv(*QA, system="Be terse.")))
    assert outcome.system == "Be terse."
    ((turns, tokens),) = outcome.segments
    messages = [{"from": "system", "value": "Be terse."},
                *({"from": role, "value": text} for role, text in turns)]
    assert tokens == count_tokens(tiny, *parse_turns(messages))


def test_literal_special_tokens_are_neutralized_and_counted(processor, tiny):
    pairs = (("human", "Explain <s> and </s> tags"), ("gpt", "Use <s>strike</s>.</s>"))
    outcome = processor.process(line(conv(*pairs)))
    ((turns, _),) = outcome.segments
    assert turns[0][1] == "Explain < s> and < /s> tags"
    assert turns[1][1] == "Use < s>strike< /s>.< /s>"
    assert outcome.changes["special_tokens_neutralized"] == 5
    # the only EOS tokens left are the template's, one per reply
    from vicuna_ops.template import tokenize
    messages = [{"from": role, "value": text} for role, text in turns]
    ids = tokenize(tiny, *parse_turns(messages)).input_ids
    assert ids.count(tiny.eos_token_id) == 1 and ids.count(tiny.bos_token_id) == 1


def test_special_tokens_can_be_kept(tiny):
    keep = Processor(CleanOptions(neutralize_special_tokens=False), tiny)
    outcome = keep.process(line(conv(("human", "a </s> b"), ("gpt", "ok"))))
    assert outcome.segments[0][0][0][1] == "a </s> b"


def test_guard_of_a_tokenizer_without_bos(word):
    guard = SpecialTokenGuard.for_tokenizer(word)
    assert guard.neutralize("x </s> <unk> <s>") == ("x < /s> < unk> <s>", 2)


def test_invalid_utf8_is_counted_on_the_record(processor):
    raw = json.dumps(conv(*QA)).encode().replace(b"list", b"l\xffst")
    outcome = processor.process(RawRecord(WHERE, "line", raw, len(raw)))
    assert outcome.reason is None and outcome.changes["invalid_utf8_replaced"] == 1


def test_a_bug_costs_one_record_not_the_run(tiny):
    class Exploding:
        def __getattr__(self, name):
            return getattr(tiny, name)

        def __call__(self, *args, **kwargs):
            raise RuntimeError("tokenizer exploded")

    processor = Processor(CleanOptions(), Exploding())
    outcome = processor.process(line(conv(*QA)))
    assert outcome.reason == "internal_error"
    assert "RuntimeError: tokenizer exploded" in outcome.detail


@pytest.mark.parametrize("kwargs, message", [
    ({"max_length": 8}, "--max-length"),
    ({"min_turns": -1}, "negative"),
    ({"on_long_turn": "squash"}, "--on-long-turn"),
    ({"keep_langs": frozenset({"en"}), "skip_langs": frozenset({"en"})}, "both kept"),
])
def test_bad_options_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        CleanOptions(**kwargs)
