"""Rendering shared by every command: data to stdout (a Rich table or JSON), messages to
stderr, so ``vops ... --json | jq`` always sees clean JSON.

User and server text never passes through Rich's markup or emoji rendering (``--gpus A100:x``
once printed ``A100❌``): both consoles have emoji off, ``error_line`` and ``table`` cells
and titles are plain ``Text``, and ``info``'s ``markup=False`` prints a line literally. A
caller that styles part of a message with markup escapes the rest with ``escape``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

# Piped or captured output gets wide tables rather than columns squeezed to 80 characters.
_WIDTH = None if sys.stdout.isatty() else 220
stdout = Console(soft_wrap=True, width=_WIDTH, emoji=False)
stderr = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else 220,
                 emoji=False)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    """Cells and title are shown as they are (run names, paths, server text: no markup)."""
    out = Table(title=None if title is None else Text(title), title_justify="left",
                header_style="bold")
    for column in columns:
        out.add_column(Text(column))
    for row in rows:
        out.add_row(*(cell if isinstance(cell, Text) else Text("-" if cell is None else
                                                               str(cell)) for cell in row))
    return out


def info(message: str | Text, *, markup: bool = True) -> None:
    """A message on stderr. ``markup=False``: printed exactly as given."""
    stderr.print(message, highlight=False, markup=markup)


def error_line(message: str) -> None:
    """``error: <message>``, the message exactly as given (it quotes user input)."""
    stderr.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False)


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def when(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
