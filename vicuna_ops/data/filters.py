"""The filters, each a small function named after the reason it reports.

Order matters and is the pipeline's: ``role_order`` (after trying a repair), ``empty_reply``
(cut there), ``too_short``, ``language``, ``blocklist``; then, across records in input order,
``duplicate_id`` and ``duplicate_exchange``. Turns reaching these are cleaned already, so
"empty" means empty after HTML conversion and "duplicate" compares the cleaned text.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Iterable

from vicuna_ops.data.html import strip_invisible
from vicuna_ops.data.schema import GPT, HUMAN, SYSTEM, Message

# -- role order ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleRepair:
    """The turns in human/gpt order (``None`` if no repair suffices) and what was dropped."""

    system: str | None
    turns: list[Message] | None
    dropped_leading: bool = False
    dropped_trailing: bool = False


def repair_role_order(messages: Iterable[Message]) -> RoleRepair:
    """human, gpt, human, gpt, ... with at most a system message first.

    A conversation that starts with the assistant (the user's first message was lost in the
    scrape) loses that leading turn; one that ends with an unanswered user turn loses it. Any
    other break in the alternation (two user turns in a row, a system message in the
    middle) is rejected: guessing which turn to drop would put words in someone's mouth.
    """
    messages = list(messages)
    system = None
    if messages and messages[0][0] == SYSTEM:
        system = messages.pop(0)[1]
    leading = bool(messages) and messages[0][0] != HUMAN
    if leading:
        messages.pop(0)
    trailing = bool(messages) and messages[-1][0] == HUMAN
    if trailing:
        messages.pop()
    in_order = all(role == (HUMAN if index % 2 == 0 else GPT)
                   for index, (role, _) in enumerate(messages))
    if not in_order or len(messages) % 2:  # odd: still ends with an unanswered question
        return RoleRepair(system, None, leading, trailing)
    return RoleRepair(system, messages, leading, trailing)


# -- empty turns ---------------------------------------------------------------------------


def cut_at_empty_turn(turns: list[Message]) -> tuple[list[Message], bool]:
    """The conversation up to its first empty turn: an empty reply goes with the question
    it answers; an empty question with everything after it. Returns (turns, was_cut).
    Empty includes only spaces, NBSPs and invisible characters (``\\u200b``, BOM, ...)."""
    for index, (_, text) in enumerate(turns):
        if not strip_invisible(text):
            return turns[: index - index % 2], True
    return turns, False


# -- length --------------------------------------------------------------------------------


def too_short(turns: list[Message], min_turns: int, min_chars: int) -> bool:
    """Fewer than ``min_turns`` exchanges, or fewer than ``min_chars`` characters in all."""
    return len(turns) // 2 < min_turns or sum(len(text) for _, text in turns) < min_chars


# -- language ------------------------------------------------------------------------------


def language_allowed(language: str, keep: frozenset[str], skip: frozenset[str]) -> bool:
    """With a keep list, only those languages pass; a skip list then removes more."""
    if keep and language not in keep:
        return False
    return language not in skip


def language_sample(turns: list[Message]) -> str:
    """The text the language is guessed from: what the user wrote, replies as a fallback."""
    human = "\n".join(text for role, text in turns if role == HUMAN)
    return human if len(human) >= 40 else "\n".join(text for _, text in turns)


# -- blocklist -----------------------------------------------------------------------------


# What Vicuna's cleaning dropped so the model does not claim to be ChatGPT.
DEFAULT_BLOCKLIST = ("OpenAI", "ChatGPT")


class Blocklist:
    """Case-insensitive phrases; one that starts or ends with a letter only matches where no
    letter touches it (``ai`` does not match ``said``; ``ChatGPT`` matches ``ChatGPT's``,
    ``ChatGPT4`` and ``chat.openai.com``)."""

    def __init__(self, phrases: Iterable[str]) -> None:
        self.phrases = tuple(sorted({p.strip() for p in phrases if p.strip()}, key=len,
                                    reverse=True))
        patterns = [self._pattern(phrase) for phrase in self.phrases]
        self._regex = re.compile("|".join(patterns), re.IGNORECASE) if patterns else None

    @staticmethod
    def _pattern(phrase: str) -> str:
        body = r"\s+".join(re.escape(word) for word in phrase.split())
        letter = r"[^\W\d_]"
        start = f"(?<!{letter})" if re.match(letter, phrase) else \
            r"\b" if re.match(r"\w", phrase) else ""
        end = f"(?!{letter})" if re.search(f"{letter}$", phrase) else \
            r"\b" if re.search(r"\w$", phrase) else ""
        return f"{start}{body}{end}"

    def __bool__(self) -> bool:
        return self._regex is not None

    def first_match(self, turns: list[Message]) -> str | None:
        """The first blocked phrase found in any turn, as written in the text."""
        if self._regex is None:
            return None
        for _, text in turns:
            match = self._regex.search(text)
            if match:
                return match.group()
        return None


def read_blocklist(text: str) -> list[str]:
    """Phrases from a blocklist file: one per line; blank lines and ``#`` comments skipped."""
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


# -- duplicates ----------------------------------------------------------------------------

_SPACE = re.compile(r"\s+")


def first_exchange_key(turns: list[Message]) -> bytes:
    """A digest of the first question and answer, ignoring case and whitespace."""
    digest = hashlib.blake2b(digest_size=16)
    for _, text in turns[:2]:
        digest.update(_SPACE.sub(" ", text).strip().casefold().encode("utf-8", "replace"))
        digest.update(b"\0")
    return digest.digest()


class Duplicates:
    """Ids and first exchanges of the conversations kept so far (digests, not text, so a
    million records cost tens of MB)."""

    def __init__(self) -> None:
        self._ids: set[bytes] = set()
        self._exchanges: set[bytes] = set()

    @staticmethod
    def _id_key(record_id: str) -> bytes:
        return hashlib.blake2b(record_id.encode("utf-8", "replace"), digest_size=16).digest()

    def reason(self, record_id: str, exchange_key: bytes) -> str | None:
        """``duplicate_id``, ``duplicate_exchange`` or None (and then it is remembered)."""
        id_key = self._id_key(record_id)
        if id_key in self._ids:
            return "duplicate_id"
        if exchange_key in self._exchanges:
            return "duplicate_exchange"
        self._ids.add(id_key)
        self._exchanges.add(exchange_key)
        return None
