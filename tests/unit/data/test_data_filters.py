"""Each filter's edge cases, and the language guess it relies on."""

from __future__ import annotations

import pytest

from vicuna_ops.data import filters
from vicuna_ops.data.language import LANGUAGES, UNKNOWN, detect_language

H, G, S = "human", "gpt", "system"


def turns(*roles: str) -> list[tuple[str, str]]:
    return [(role, f"{role} {i}") for i, role in enumerate(roles)]


# -- role order ----------------------------------------------------------------------------


@pytest.mark.parametrize("roles, kept, leading, trailing", [
    ((H, G), (H, G), False, False),
    ((H, G, H, G), (H, G, H, G), False, False),
    ((G, H, G), (H, G), True, False),  # the scrape lost the user's first message
    ((H, G, H), (H, G), False, True),  # an unanswered last question
    ((G, H, G, H), (H, G), True, True),
    ((S, H, G), (H, G), False, False),
    ((S, G, H, G, H), (H, G), True, True),
])
def test_role_order_repairs(roles, kept, leading, trailing):
    repair = filters.repair_role_order(turns(*roles))
    assert repair.turns is not None
    assert tuple(role for role, _ in repair.turns) == kept
    assert (repair.dropped_leading, repair.dropped_trailing) == (leading, trailing)
    assert repair.system == ("system 0" if roles[0] == S else None)


@pytest.mark.parametrize("roles", [
    (H, H, G),  # two questions in a row
    (H, G, G),  # two replies in a row: dropping a trailing *human* does not help
    (G, G, H, G),  # two leading replies: only one may go
    (H, G, S, H, G),  # a system message in the middle
    (H, H),
])
def test_role_order_rejects_what_one_drop_at_each_end_cannot_fix(roles):
    assert filters.repair_role_order(turns(*roles)).turns is None


@pytest.mark.parametrize("roles", [(), (H,), (G,), (G, H)])
def test_a_lone_turn_repairs_to_nothing_which_is_too_short_not_out_of_order(roles):
    assert filters.repair_role_order(turns(*roles)).turns == []


# -- empty turns ---------------------------------------------------------------------------


def test_empty_reply_cuts_with_its_question():
    conv = [(H, "q1"), (G, "a1"), (H, "q2"), (G, "  \n"), (H, "q3"), (G, "a3")]
    assert filters.cut_at_empty_turn(conv) == ([(H, "q1"), (G, "a1")], True)


def test_empty_question_cuts_there():
    conv = [(H, "q1"), (G, "a1"), (H, ""), (G, "a2")]
    assert filters.cut_at_empty_turn(conv) == ([(H, "q1"), (G, "a1")], True)


def test_empty_first_reply_leaves_nothing():
    assert filters.cut_at_empty_turn([(H, "q"), (G, "")]) == ([], True)


def test_no_empty_turn_no_cut():
    conv = [(H, "q"), (G, "a")]
    assert filters.cut_at_empty_turn(conv) == (conv, False)


# -- length --------------------------------------------------------------------------------


def test_too_short_by_exchanges_and_by_characters():
    conv = [(H, "abc"), (G, "de")]
    assert not filters.too_short(conv, min_turns=1, min_chars=5)
    assert filters.too_short(conv, min_turns=1, min_chars=6)
    assert filters.too_short(conv, min_turns=2, min_chars=0)
    assert filters.too_short([], min_turns=0, min_chars=1)
    assert not filters.too_short([], min_turns=0, min_chars=0)


# -- language ------------------------------------------------------------------------------


@pytest.mark.parametrize("language, keep, skip, allowed", [
    ("en", set(), set(), True),
    ("en", {"en"}, set(), True),
    ("zh", {"en"}, set(), False),
    ("zh", set(), {"zh"}, False),
    ("unknown", {"en"}, set(), False),
    ("unknown", {"en", "unknown"}, set(), True),
    ("ko", set(), {"zh", "ja"}, True),
])
def test_language_allowed(language, keep, skip, allowed):
    assert filters.language_allowed(language, frozenset(keep), frozenset(skip)) is allowed


@pytest.mark.parametrize("text, expected", [
    ("How do I sort a list in Python? Please write the code for me.", "en"),
    ("Hola, ¿cómo puedo ordenar una lista en Python? Gracias por la ayuda", "es"),
    ("Bonjour, je voudrais savoir comment trier une liste dans Python", "fr"),
    ("Wie kann ich eine Liste in Python sortieren? Ich verstehe das nicht", "de"),
    ("请帮我写一个排序函数，谢谢", "zh"),
    ("Pythonでリストをソートする方法を教えてください", "ja"),
    ("파이썬에서 리스트를 정렬하는 방법을 알려주세요", "ko"),
    ("Как отсортировать список в Python?", "ru"),
    ("Tôi muốn học lập trình Python, bạn có thể giúp tôi được không", "vi"),
    ("```python\nprint('hello world, how are you')\n```", UNKNOWN),
    ("ok", UNKNOWN),
    ("", UNKNOWN),
])
def test_detect_language(text, expected):
    assert detect_language(text) == expected
    assert expected in LANGUAGES


def test_code_in_an_english_question_does_not_hide_the_english():
    text = "What is wrong with this code? It is not working.\n```js\nconst x = f(y)\n```"
    assert detect_language(text) == "en"


def test_language_sample_prefers_what_the_user_wrote():
    conv = [(H, "Wie kann ich eine Liste in Python sortieren? Das ist die Frage"),
            (G, "You can use sorted() for this, it is the simplest way to do it")]
    assert detect_language(filters.language_sample(conv)) == "de"


# -- blocklist -----------------------------------------------------------------------------


def test_blocklist_whole_words_case_and_spacing():
    blocklist = filters.Blocklist(["as an AI language model", "ai", "OpenAI", "  ", "c++"])
    assert filters.Blocklist([]).first_match([(G, "anything")]) is None
    assert blocklist.first_match([(G, "As an AI\nlanguage   model, I can't")]) == \
        "As an AI\nlanguage   model"
    assert blocklist.first_match([(G, "She said so")]) is None  # 'ai' inside a word
    assert blocklist.first_match([(H, "ask openai")]) == "openai"
    assert blocklist.first_match([(H, "about AI.")]) == "AI"
    assert blocklist.first_match([(H, "I like c++ a lot")]) == "c++"
    assert blocklist.first_match([(H, "I like c++11")]) == "c++"  # ends in '+': no \b


def test_read_blocklist_skips_comments_and_blanks():
    text = "# phrases\nas an AI\n\n  OpenAI  \n   # indented comment\n"
    assert filters.read_blocklist(text) == ["as an AI", "OpenAI"]


# -- duplicates ----------------------------------------------------------------------------


def test_first_exchange_key_ignores_case_and_whitespace_but_not_words():
    base = filters.first_exchange_key([(H, "Hello  there"), (G, "Hi!\n")])
    assert filters.first_exchange_key([(H, "hello there"), (G, "hi!")]) == base
    assert filters.first_exchange_key([(H, "hello there"), (G, "hi!"), (H, "more")]) == base
    assert filters.first_exchange_key([(H, "hello there"), (G, "hey!")]) != base
    # the boundary between question and answer matters
    assert filters.first_exchange_key([(H, "ab"), (G, "c")]) != \
        filters.first_exchange_key([(H, "a"), (G, "bc")])


def test_duplicates_by_id_then_by_first_exchange():
    seen = filters.Duplicates()
    key_a, key_b = b"a" * 16, b"b" * 16
    assert seen.reason("x", key_a) is None
    assert seen.reason("x", key_b) == "duplicate_id"
    assert seen.reason("y", key_a) == "duplicate_exchange"
    assert seen.reason("y", key_b) is None  # rejected ones were not remembered


def test_invisible_only_reply_counts_as_empty():
    from vicuna_ops.data.filters import cut_at_empty_turn

    turns = [("human", "q"), ("gpt", "a"), ("human", "q2"), ("gpt", "\u200b\u00a0")]
    assert cut_at_empty_turn(turns) == (turns[:2], True)


@pytest.mark.parametrize("text, blocked", [
    ("I am ChatGPT.", "ChatGPT"), ("made by openai", "openai"), ("ChatGPT's answer", "ChatGPT"),
    ("try ChatGPT4", "ChatGPT4"[:7]), ("see https://chat.openai.com", "openai"),
    ("OPENAI_API_KEY", "OPENAI"), ("an openairy room", None), ("plain text", None),
])
def test_default_blocklist(text, blocked):
    from vicuna_ops.data.filters import DEFAULT_BLOCKLIST, Blocklist

    assert Blocklist(DEFAULT_BLOCKLIST).first_match([("gpt", text)]) == blocked
