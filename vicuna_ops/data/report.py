"""The data-prep report: every record accounted for, every change counted.

    records_in == kept + sum(left_out.values())

holds by construction (each record is counted once, in ``record_kept`` or ``record_left_out``)
and is checked before the report is written. Malformed records and internal errors are
listed with their source, line and item; other reasons keep a few example ids each. The
report is written as ``report.json`` beside the output and printed (table or ``--json``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vicuna_ops.data.reader import ReadStats, Where

REASONS = ("malformed", "plugins", "role_order", "empty_reply", "too_short", "language",
           "blocklist", "too_long", "duplicate_id", "duplicate_exchange", "internal_error")
REASON_HELP = {
    "malformed": "not JSON, or fields missing or of the wrong type",
    "plugins": "a tool-using session (a 'plugins' field); --keep-plugins keeps them",
    "role_order": "turns not in user/assistant order, and no repair sufficed",
    "empty_reply": "nothing left after cutting at the first empty turn",
    "too_short": "fewer exchanges or characters than --min-turns / --min-chars",
    "language": "language not kept by --keep-lang / --skip-lang",
    "blocklist": "contains a --blocklist phrase (default: OpenAI, ChatGPT)",
    "too_long": "every exchange alone longer than --max-length (--on-long-turn drop)",
    "duplicate_id": "same id as a conversation kept earlier",
    "duplicate_exchange": "same first question and answer as one kept earlier",
    "internal_error": "a bug in vops; the record is listed, please report it",
}
LISTED_REASONS = ("malformed", "internal_error")
MAX_LISTED = 10_000  # problems listed in full; beyond this only counted
EXAMPLES_PER_REASON = 5
SPLITS = ("train", "eval")


@dataclass
class SplitCounts:
    conversations: int = 0
    segments: int = 0
    tokens: int = 0
    max_tokens: int = 0


@dataclass
class Report:
    """Counts of one ``vops data prepare`` run."""

    output: str
    settings: dict[str, Any]
    inputs: list[ReadStats] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    records_in: int = 0
    kept: int = 0
    left_out: Counter[str] = field(default_factory=Counter)
    changes: Counter[str] = field(default_factory=Counter)
    splits: dict[str, SplitCounts] = field(
        default_factory=lambda: {name: SplitCounts() for name in SPLITS})
    problems: list[dict[str, Any]] = field(default_factory=list)
    problems_not_listed: int = 0
    examples: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    # -- counting ----------------------------------------------------------------------------

    def record_left_out(self, reason: str, where: Where, record_id: str | None,
                        detail: str | None) -> None:
        if reason not in REASON_HELP:
            raise ValueError(f"unknown reason {reason!r}")
        self.records_in += 1
        self.left_out[reason] += 1
        if reason in LISTED_REASONS:
            if len(self.problems) < MAX_LISTED:
                self.problems.append({"source": where.source, "line": where.line,
                                      "item": where.item, "reason": reason,
                                      "detail": detail, "id": record_id})
            else:
                self.problems_not_listed += 1
            return
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            label = f"{record_id} ({where.describe()})"
            examples.append(f"{label}: {detail}" if detail else label)

    def record_kept(self, split: str, segment_tokens: list[int], changes: dict[str, int] | None
                    ) -> None:
        self.records_in += 1
        self.kept += 1
        counts = self.splits[split]
        counts.conversations += 1
        counts.segments += len(segment_tokens)
        counts.tokens += sum(segment_tokens)
        counts.max_tokens = max(counts.max_tokens, *segment_tokens)
        if changes:
            self.changes.update(changes)

    # -- checks and output -------------------------------------------------------------------

    @property
    def balanced(self) -> bool:
        return self.records_in == self.kept + sum(self.left_out.values()) and \
            self.records_in == sum(stats.records for stats in self.inputs)

    @property
    def warnings(self) -> list[str]:
        found = [w for stats in self.inputs for w in (stats.warnings or [])]
        if self.left_out["internal_error"]:
            found.append(f"{self.left_out['internal_error']} record(s) hit an internal error "
                         "(listed under problems); please report it")
        if self.problems_not_listed:
            found.append(f"{self.problems_not_listed} more malformed record(s) not listed")
        return found

    def to_dict(self) -> dict[str, Any]:
        rate = self.records_in / self.seconds if self.seconds > 0 else None
        return {
            "output": self.output,
            "files": self.files,
            "records_in": self.records_in,
            "kept": self.kept,
            "left_out": {reason: self.left_out[reason] for reason in REASONS},
            "balanced": self.balanced,
            "splits": {name: vars(counts) for name, counts in self.splits.items()},
            "changes": dict(sorted(self.changes.items())),
            "inputs": [vars(stats) | {"warnings": stats.warnings or []}
                       for stats in self.inputs],
            "settings": self.settings,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(rate, 1) if rate else None,
            "warnings": self.warnings,
            "examples": self.examples,
            "problems": self.problems,
            "problems_not_listed": self.problems_not_listed,
        }


CHANGE_HELP = {
    "html_turns_converted": "assistant turns converted from HTML to markdown",
    "copy_code_removed": "'Copy code' button texts removed from code blocks",
    "page_counters_removed": "'1 / 1' page counters removed",
    "copy_counters_removed": "'Copy569 chars / 53 words' counters removed",
    "special_tokens_neutralized": "literal special tokens (e.g. '</s>') made plain text",
    "invalid_utf8_replaced": "invalid UTF-8 sequences replaced by U+FFFD",
    "dropped_leading_turn": "conversations repaired by dropping a leading assistant turn",
    "dropped_trailing_turn": "conversations repaired by dropping an unanswered last turn",
    "cut_at_empty_turn": "conversations cut at their first empty turn",
    "conversations_split": "conversations split into several segments",
    "exchanges_truncated": "single exchanges over --max-length, truncated",
    "exchanges_dropped_too_long": "single exchanges over --max-length, dropped",
}
