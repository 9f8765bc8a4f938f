"""Splitting at turn boundaries, with lengths checked against the trainer's own tokenization."""

from __future__ import annotations

import random

import pytest

from vicuna_ops.data.split import TokenCounter, split_conversation
from vicuna_ops.template import ASSISTANT, SYSTEM_PROMPT, USER, Turn, count_tokens

H, G = "human", "gpt"


@pytest.fixture(params=["tiny", "word"])
def tokenizer(request):
    """Both a byte-level tokenizer with a BOS and a word-level one without: different
    vocabularies give different lengths for the same text, and the split must follow."""
    return request.getfixturevalue(request.param)


def template_turns(turns):
    return [Turn(USER if role == H else ASSISTANT, text) for role, text in turns]


def true_length(tokenizer, system, turns) -> int:
    return count_tokens(tokenizer, system, template_turns(turns))


def conversation(exchanges: int, words: int = 6, seed: int = 0):
    rng = random.Random(seed)
    vocab = "the question is what answer a of to and hello world how why".split()
    out = []
    for i in range(exchanges):
        out.append((H, " ".join(rng.choice(vocab) for _ in range(rng.randint(1, words))) + "?"))
        out.append((G, " ".join(rng.choice(vocab) for _ in range(rng.randint(1, words))) + "."))
    return out


def check_segments(tokenizer, system, result, max_length):
    for segment in result.segments:
        assert segment.tokens == true_length(tokenizer, system, segment.turns)
        assert segment.tokens <= max_length
        roles = [role for role, _ in segment.turns]
        assert roles == [H, G] * (len(roles) // 2) and roles


def test_a_conversation_that_fits_is_one_segment_with_its_exact_length(tokenizer):
    turns = conversation(3)
    whole = true_length(tokenizer, SYSTEM_PROMPT, turns)
    result = split_conversation(TokenCounter(tokenizer), SYSTEM_PROMPT, turns, whole)
    assert len(result.segments) == 1 and result.segments[0].tokens == whole
    assert result.segments[0].turns == turns


def test_one_token_over_the_limit_splits_it(tokenizer):
    turns = conversation(3)
    whole = true_length(tokenizer, SYSTEM_PROMPT, turns)
    result = split_conversation(TokenCounter(tokenizer), SYSTEM_PROMPT, turns, whole - 1)
    assert len(result.segments) == 2
    check_segments(tokenizer, SYSTEM_PROMPT, result, whole - 1)
    assert [t for s in result.segments for t in s.turns] == turns  # no turn lost


def test_segment_boundary_exactly_at_the_limit_and_one_token_short(tokenizer):
    turns = conversation(3, seed=4)
    first_two = true_length(tokenizer, SYSTEM_PROMPT, turns[:4])
    counter = TokenCounter(tokenizer)
    at = split_conversation(counter, SYSTEM_PROMPT, turns, first_two)
    assert at.segments[0].turns == turns[:4] and at.segments[0].tokens == first_two
    short = split_conversation(counter, SYSTEM_PROMPT, turns, first_two - 1)
    assert short.segments[0].turns == turns[:2]
    for result, limit in ((at, first_two), (short, first_two - 1)):
        check_segments(tokenizer, SYSTEM_PROMPT, result, limit)
        assert [t for s in result.segments for t in s.turns] == turns


def test_every_segment_repeats_a_custom_system_prompt(tokenizer):
    system = "You are a pirate. Answer as a pirate would."
    turns = conversation(6, seed=2)
    limit = true_length(tokenizer, system, turns) // 2
    result = split_conversation(TokenCounter(tokenizer), system, turns, limit)
    assert len(result.segments) >= 2
    check_segments(tokenizer, system, result, limit)


@pytest.mark.parametrize("seed", range(12))
def test_random_conversations_and_limits(tokenizer, seed):
    rng = random.Random(seed)
    turns = conversation(rng.randint(1, 12), words=rng.randint(2, 30), seed=seed)
    longest_exchange = max(true_length(tokenizer, SYSTEM_PROMPT, turns[i:i + 2])
                           for i in range(0, len(turns), 2))
    limit = rng.randint(longest_exchange, longest_exchange * 4)
    result = split_conversation(TokenCounter(tokenizer), SYSTEM_PROMPT, turns, limit)
    check_segments(tokenizer, SYSTEM_PROMPT, result, limit)
    assert [t for s in result.segments for t in s.turns] == turns
    assert result.truncated == result.dropped == 0
    # greedy: no segment could have taken the next exchange
    for segment, following in zip(result.segments, result.segments[1:]):
        grown = segment.turns + following.turns[:2]
        assert true_length(tokenizer, SYSTEM_PROMPT, grown) > limit


def huge_turns(where: str):
    filler = " ".join(["hello world"] * 400)
    turns = [(H, "what is it?"), (G, "a question."), (H, "why?"), (G, "the answer.")]
    if where == "answer":
        turns[3] = (G, filler)
    elif where == "question":
        turns[2] = (H, filler)
    else:
        turns[2], turns[3] = (H, filler), (G, filler)
    return turns + [(H, "and the world?"), (G, "hello.")]


@pytest.mark.parametrize("where", ["answer", "question", "both"])
def test_a_single_huge_exchange_is_dropped_and_counted(tokenizer, where):
    turns = huge_turns(where)
    limit = true_length(tokenizer, SYSTEM_PROMPT, turns[:2]) + 40
    result = split_conversation(TokenCounter(tokenizer), SYSTEM_PROMPT, turns, limit, "drop")
    assert result.dropped == 1 and result.truncated == 0
    kept = [t for s in result.segments for t in s.turns]
    assert kept == turns[:2] + turns[4:]  # everything but the huge exchange
    check_segments(tokenizer, SYSTEM_PROMPT, result, limit)


@pytest.mark.parametrize("where", ["answer", "question", "both"])
def test_a_single_huge_exchange_is_truncated_to_fit(tokenizer, where):
    turns = huge_turns(where)
    limit = true_length(tokenizer, SYSTEM_PROMPT, turns[:2]) + 60
    result = split_conversation(TokenCounter(tokenizer), SYSTEM_PROMPT, turns, limit,
                                "truncate")
    assert result.truncated == 1 and result.dropped == 0
    check_segments(tokenizer, SYSTEM_PROMPT, result, limit)
    cut = next(s for s in result.segments if s.truncated)
    assert len(cut.turns) == 2
    (_, question), (_, answer) = cut.turns
    original_question, original_answer = turns[2][1], turns[3][1]
    assert original_question.startswith(question) and original_answer.startswith(answer)
    assert question.strip() and answer.strip()
    if where == "answer":
        assert question == original_question and answer != original_answer
    if where == "both":  # the question gets at most half of the room after the template
        counter = TokenCounter(tokenizer)
        overhead = counter.length(SYSTEM_PROMPT + " USER:  ASSISTANT:")
        room = limit - counter.bos - 1 - overhead
        question_cost = counter.length(SYSTEM_PROMPT + f" USER: {question} ASSISTANT:")
        assert question_cost - overhead <= room // 2 + 1
        assert counter.length(" " + answer) >= room // 2 - 2
    # the exchanges around it are untouched
    assert result.segments[0].turns[:2] == turns[:2]
    assert result.segments[-1].turns[-2:] == turns[-2:]


def test_a_system_prompt_longer_than_the_limit_drops_everything_even_when_truncating(tiny):
    system = "x" * 500
    turns = conversation(2)
    result = split_conversation(TokenCounter(tiny), system, turns, 100, "truncate")
    assert result.segments == [] and result.dropped == 2


def test_unknown_on_long_mode_is_refused(tiny):
    with pytest.raises(ValueError):
        split_conversation(TokenCounter(tiny), SYSTEM_PROMPT, conversation(1), 100, "squash")


def test_literal_special_tokens_are_counted_as_the_template_counts_them(tokenizer):
    """With --keep-special-tokens the text may hold '</s>'; the split must count it exactly
    as the trainer's tokenization does (if template.tokenize ever changes how it calls the
    tokenizer, TokenCounter must follow, and this fails)."""
    turns = [(H, "what is </s> and <s>?"), (G, "the end </s> of a reply </s>")] * 3
    whole = true_length(tokenizer, SYSTEM_PROMPT, turns)
    result = split_conversation(TokenCounter(tokenizer), SYSTEM_PROMPT, turns, whole - 1)
    check_segments(tokenizer, SYSTEM_PROMPT, result, whole - 1)
    assert split_conversation(TokenCounter(tokenizer), SYSTEM_PROMPT, turns,
                              whole).segments[0].tokens == whole
