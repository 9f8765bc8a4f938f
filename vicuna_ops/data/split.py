"""Divide a conversation into segments that each fit the model's context, at turn boundaries.

Lengths are exact, not estimated: ``vicuna_ops.template.tokenize`` builds a conversation as
``[bos] + tokens(piece_0) + tokens(piece_1) + ...`` with ``</s>`` after every reply, where
the first prompt piece carries the system prompt and later prompt pieces do not. So the
length of any run of exchanges is a sum of per-piece token counts, and each exchange needs
only two numbers (three when it opens a segment). The pieces' text comes from
``template.pieces`` itself, so a template change cannot make the two disagree; the tests
check every segment against ``template.count_tokens``.

Segments are filled greedily, each starting with a user turn and keeping the system prompt.
An exchange that alone exceeds the limit is either dropped or truncated (``on_long``): the
question keeps at most half the room when the answer needs the rest, and the answer is cut
to fit. Every exchange ends up in exactly one segment, or is counted as dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from vicuna_ops.data.schema import GPT, HUMAN, Message
from vicuna_ops.template import ASSISTANT, USER, Turn, pieces

ON_LONG = ("drop", "truncate")


class TokenCounter:
    """Token counts of template pieces, exactly as ``template.tokenize`` will produce them."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.bos = 1 if getattr(tokenizer, "bos_token_id", None) is not None else 0

    def lengths(self, texts: list[str]) -> list[int]:
        if not texts:
            return []
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def length(self, text: str) -> int:
        return self.lengths([text])[0]


@dataclass(frozen=True)
class Segment:
    turns: list[Message]  # human, gpt, human, gpt, ...
    tokens: int  # its length in the template, bos and every </s> included
    truncated: bool = False


@dataclass(frozen=True)
class SplitResult:
    segments: list[Segment]
    truncated: int  # exchanges cut to fit
    dropped: int  # exchanges too long on their own, left out


def _first_prompt(system: str, question: str) -> str:
    """The prompt piece of an exchange that opens a segment (system prompt included)."""
    return pieces(system, [Turn(USER, question), Turn(ASSISTANT, "")])[0].text


def split_conversation(counter: TokenCounter, system: str, turns: list[Message],
                       max_length: int, on_long: str = "drop") -> SplitResult:
    """``turns`` (human, gpt pairs) as segments of at most ``max_length`` tokens."""
    if on_long not in ON_LONG:
        raise ValueError(f"on_long must be one of {ON_LONG}, not {on_long!r}")
    exchanges = [(turns[i][1], turns[i + 1][1]) for i in range(0, len(turns) - 1, 2)]
    template_turns = [Turn(USER if role == HUMAN else ASSISTANT, text) for role, text in turns]
    lengths = counter.lengths([piece.text for piece in pieces(system, template_turns)])
    # lengths = [first prompt 0, reply 0, prompt 1, reply 1, ...]; replies get their </s>.
    reply = [lengths[2 * i + 1] + 1 for i in range(len(exchanges))]
    later_prompt = [lengths[2 * i] for i in range(len(exchanges))]
    whole = counter.bos + sum(lengths) + len(exchanges)
    if whole <= max_length:
        return SplitResult([Segment(list(turns), whole)], 0, 0)

    segments: list[Segment] = []
    truncated = dropped = 0
    start = 0
    while start < len(exchanges):
        question, answer = exchanges[start]
        first = lengths[0] if start == 0 else counter.length(_first_prompt(system, question))
        used = counter.bos + first + reply[start]
        if used > max_length:
            cut = _truncate(counter, system, question, answer, max_length) \
                if on_long == "truncate" else None
            if cut is None:
                dropped += 1
            else:
                truncated += 1
                segments.append(cut)
            start += 1
            continue
        end = start + 1
        while end < len(exchanges) and used + later_prompt[end] + reply[end] <= max_length:
            used += later_prompt[end] + reply[end]
            end += 1
        segments.append(Segment(list(turns[2 * start: 2 * end]), used))
        start = end
    return SplitResult(segments, truncated, dropped)


def _truncate(counter: TokenCounter, system: str, question: str, answer: str,
              max_length: int) -> Segment | None:
    """One exchange cut to fit ``max_length``; None when not even a little of both fits."""
    room = max_length - counter.bos - 1  # the reply's </s> is always kept
    overhead = counter.length(_first_prompt(system, ""))  # system prompt and role names
    reply_cost = counter.length(" " + answer)
    # The question may use what the answer does not need, but at most half of what is left
    # after the template when both are long.
    prompt_room = overhead + max(room - overhead - reply_cost, (room - overhead) // 2)
    if counter.length(_first_prompt(system, question)) > prompt_room:
        question = _longest_prefix(question, prompt_room,
                                   lambda text: counter.length(_first_prompt(system, text)))
    prompt_cost = counter.length(_first_prompt(system, question))
    answer_room = room - prompt_cost
    if not question.strip() or answer_room <= 0:
        return None
    if reply_cost > answer_room:
        answer = _longest_prefix(answer, answer_room, lambda text: counter.length(" " + text))
    if not answer.strip():
        return None
    tokens = counter.bos + prompt_cost + counter.length(" " + answer) + 1
    return Segment([(HUMAN, question), (GPT, answer)], tokens, truncated=True)


def _longest_prefix(text: str, budget: int, cost: Callable[[str], int]) -> str:
    """The longest prefix of ``text`` (by binary search on characters) whose cost fits.

    Token counts of prefixes are monotonic up to merges at the cut, so the answer fits even
    where it is a character or two short of the true maximum.
    """
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if cost(text[:middle]) <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low]
