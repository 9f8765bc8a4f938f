"""Read the judge's verdict out of its text.

The asked-for format is ``[[A]]`` / ``[[B]]`` / ``[[C]]`` (tie) and ``[[rating]]``. Judges
miss it in small ways, so these count too: any case and inner spaces (``[[ a ]]``),
``[[Assistant A]]``, ``[[Tie]]``, ``[[7/10]]``, ``[[7.5]]``; and, only when no double-bracket
verdict is present at all, a single-bracket ``[A]`` / ``[7]`` or a ``Verdict: A`` /
``Rating: 7/10`` line. A text naming two different verdicts, a rating outside 1-10, or none
at all is a parse failure (``None``): counted, never scored.
"""

from __future__ import annotations

import re

_CHOICE = r"\s*(?:assistant\s+)?(a|b|c|tie)\s*"
_PAIR_STRICT = re.compile(r"\[\[" + _CHOICE + r"\]\]", re.IGNORECASE)
_PAIR_LOOSE = [
    re.compile(r"(?<!\[)\[" + _CHOICE + r"\](?!\])", re.IGNORECASE),
    re.compile(r"(?:final\s+)?verdict\s*(?:is)?\s*[:=]?\s*\**\s*(?:assistant\s+)?(a|b|c|tie)\b",
               re.IGNORECASE),
]
_NUMBER = r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*10\s*)?"
_RATING_STRICT = re.compile(r"\[\[" + _NUMBER + r"\]\]")
_RATING_LOOSE = [
    re.compile(r"(?<!\[)\[" + _NUMBER + r"\](?!\])"),
    re.compile(r"rating\s*(?:is)?\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?", re.IGNORECASE),
]


def parse_pairwise(text: str) -> str | None:
    """'A', 'B', 'C' (tie) or None."""
    for pattern in [_PAIR_STRICT, *_PAIR_LOOSE]:
        found = {_choice(m) for m in pattern.findall(text or "")}
        if found:
            return found.pop() if len(found) == 1 else None
    return None


def parse_rating(text: str) -> float | None:
    """A rating in [1, 10], or None."""
    for pattern in [_RATING_STRICT, *_RATING_LOOSE]:
        found = {float(m) for m in pattern.findall(text or "")}
        if found:
            if len(found) != 1:
                return None
            value = found.pop()
            return value if 1 <= value <= 10 else None
    return None


def _choice(token: str) -> str:
    token = token.strip().lower()
    return "C" if token in ("c", "tie") else token.upper()
