"""One record in, one outcome out: parse, clean, filter, split. Pure apart from the tokenizer.

This is what the worker processes run. Everything that needs to see other records (duplicates,
output ids, the train/eval draw) happens afterwards in the main process, in input order.
"""

from __future__ import annotations

import re
import traceback
from collections import Counter
from dataclasses import dataclass
from typing import Any, NamedTuple

from vicuna_ops.data import filters
from vicuna_ops.data.html import clean_turn
from vicuna_ops.data.language import detect_language
from vicuna_ops.data.reader import RawRecord, Where, decode_line
from vicuna_ops.data.schema import GPT, SYSTEM, Malformed, Message, parse_json, parse_record
from vicuna_ops.data.split import ON_LONG, TokenCounter, split_conversation
from vicuna_ops.errors import UserError
from vicuna_ops.template import SYSTEM_PROMPT

# Reasons a record is left out, in the order they are tried.
WORKER_REASONS = ("malformed", "plugins", "role_order", "empty_reply", "too_short", "language",
                  "blocklist", "too_long", "internal_error")


@dataclass(frozen=True)
class CleanOptions:
    """Everything that decides what happens to one record."""

    max_length: int = 2048
    min_turns: int = 1  # exchanges (question + answer)
    min_chars: int = 1
    keep_langs: frozenset[str] = frozenset()
    skip_langs: frozenset[str] = frozenset()
    blocklist: tuple[str, ...] = filters.DEFAULT_BLOCKLIST
    keep_plugins: bool = False
    on_long_turn: str = "drop"
    neutralize_special_tokens: bool = True

    def __post_init__(self) -> None:
        if self.max_length < 16:
            raise UserError(f"--max-length must be at least 16, not {self.max_length}",
                            hint="the Vicuna recipes use 2048")
        if self.min_turns < 0 or self.min_chars < 0:
            raise UserError("--min-turns and --min-chars cannot be negative")
        if self.on_long_turn not in ON_LONG:
            raise UserError(f"--on-long-turn must be one of {', '.join(ON_LONG)}, "
                            f"not {self.on_long_turn!r}")
        overlap = self.keep_langs & self.skip_langs
        if overlap:
            raise UserError(f"languages both kept and skipped: {', '.join(sorted(overlap))}",
                            hint="name a language in --keep-lang or --skip-lang, not both")


class Outcome(NamedTuple):
    """What became of one record. ``reason`` None means kept."""

    where: Where
    reason: str | None
    detail: str | None = None  # why it is malformed, the blocked phrase, the language, ...
    record_id: str | None = None
    exchange_key: bytes | None = None
    system: str | None = None  # a record's own system prompt (None: the default)
    segments: tuple[tuple[tuple[Message, ...], int], ...] = ()  # (turns, tokens)
    changes: dict[str, int] | None = None


class SpecialTokenGuard:
    """Literal special-token strings in text (``</s>`` in a reply about HTML strikethrough,
    ``<s>``, ``<unk>``, ...) would be read by the tokenizer as the real control tokens: a
    stray ``</s>`` mid-reply teaches the model to stop there. Each gets a space after its
    first character (``</s>`` -> ``< /s>``): still readable, no longer special."""

    def __init__(self, tokens: list[str]) -> None:
        tokens = sorted({t for t in tokens if t and len(t) > 1}, key=len, reverse=True)
        self._regex = re.compile("|".join(map(re.escape, tokens))) if tokens else None

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> SpecialTokenGuard:
        tokens = list(getattr(tokenizer, "all_special_tokens", []) or [])
        decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        tokens += [str(token) for token in decoder.values() if getattr(token, "special", False)]
        return cls(tokens)

    def neutralize(self, text: str) -> tuple[str, int]:
        if self._regex is None:
            return text, 0
        return self._regex.subn(lambda m: f"{m.group()[0]} {m.group()[1:]}", text)


class Processor:
    """Turns raw records into outcomes with one tokenizer and one set of options."""

    def __init__(self, options: CleanOptions, tokenizer: Any) -> None:
        self.options = options
        self.counter = TokenCounter(tokenizer)
        self.blocklist = filters.Blocklist(options.blocklist)
        self.guard = SpecialTokenGuard.for_tokenizer(tokenizer) \
            if options.neutralize_special_tokens else SpecialTokenGuard([])

    def process(self, raw: RawRecord) -> Outcome:
        try:
            return self._process(raw)
        except Malformed as exc:
            return Outcome(raw.where, "malformed", str(exc))
        except Exception as exc:  # a bug must cost one record, not the run; it is listed
            frames = traceback.extract_tb(exc.__traceback__)
            where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
            detail = f"{type(exc).__name__}: {exc}{where}"
            return Outcome(raw.where, "internal_error", detail)

    def _process(self, raw: RawRecord) -> Outcome:
        changes: Counter[str] = Counter()
        if raw.kind == "error":
            raise Malformed(raw.payload)
        value = raw.payload
        if raw.kind == "line":
            text, bad = decode_line(value)
            if bad:
                changes["invalid_utf8_replaced"] += bad
            value = parse_json(text)
        try:
            record = parse_record(value)
        except Malformed as exc:
            return Outcome(raw.where, "malformed", str(exc), _id_if_any(value))
        where, rid = raw.where, record.id
        if record.plugins and not self.options.keep_plugins:
            return Outcome(where, "plugins", None, rid)

        messages = [self._clean(role, text, changes) for role, text in record.messages]
        repair = filters.repair_role_order(messages)
        if repair.turns is None:
            return Outcome(where, "role_order", _role_sequence(messages), rid)
        changes["dropped_leading_turn"] += repair.dropped_leading
        changes["dropped_trailing_turn"] += repair.dropped_trailing
        turns, was_cut = filters.cut_at_empty_turn(repair.turns)
        if not turns:
            return Outcome(where, "empty_reply" if was_cut else "too_short", None, rid)
        changes["cut_at_empty_turn"] += was_cut
        options = self.options
        if filters.too_short(turns, options.min_turns, options.min_chars):
            return Outcome(where, "too_short", None, rid)
        if options.keep_langs or options.skip_langs:
            language = detect_language(filters.language_sample(turns))
            if not filters.language_allowed(language, options.keep_langs, options.skip_langs):
                return Outcome(where, "language", language, rid)
        blocked = self.blocklist.first_match(turns)
        if blocked is not None:
            return Outcome(where, "blocklist", blocked, rid)

        system = repair.system
        split = split_conversation(self.counter, SYSTEM_PROMPT if system is None else system,
                                   turns, options.max_length, options.on_long_turn)
        changes["exchanges_truncated"] += split.truncated
        changes["exchanges_dropped_too_long"] += split.dropped
        if not split.segments:
            return Outcome(where, "too_long", f"{split.dropped} exchange(s) over the limit", rid)
        if len(split.segments) > 1:
            changes["conversations_split"] += 1
        return Outcome(where, None, None, rid, filters.first_exchange_key(turns), system,
                       tuple((tuple(s.turns), s.tokens) for s in split.segments),
                       {k: v for k, v in changes.items() if v})

    def _clean(self, role: str, text: str, changes: Counter[str]) -> Message:
        if role != SYSTEM:
            text = clean_turn(text, role == GPT, changes)
        text, neutralized = self.guard.neutralize(text)
        if neutralized:
            changes["special_tokens_neutralized"] += neutralized
        return role, text


def _id_if_any(value: Any) -> str | None:
    """A malformed record's id, when it has a usable one, to help find it."""
    record_id = value.get("id") if isinstance(value, dict) else None
    if isinstance(record_id, bool) or not isinstance(record_id, (str, int)) or record_id == "":
        return None
    return str(record_id)


def _role_sequence(messages: list[Message]) -> str:
    """``human gpt gpt human``: enough to see where the order breaks."""
    names = [role for role, _ in messages[:12]]
    return " ".join(names) + (" ..." if len(messages) > 12 else "")

