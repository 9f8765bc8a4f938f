"""Stream ShareGPT records out of a JSON list or a JSON-lines file, one record at a time.

A ShareGPT dump is often one JSON list of several hundred MB, so nothing here holds the whole
file: a JSON list is parsed element by element with ``json.JSONDecoder.raw_decode`` over a
sliding text buffer, a JSONL file line by line. Either may be gzip-compressed (detected from
the magic bytes, not the name).

Every record carries where it came from (source, 1-based line, 0-based item) so the report can
point at a malformed one. Malformation never stops the reader: a line that is not JSON, an
element of a list that does not parse, stray text between elements or a file cut short each
come out as a ``RawRecord`` with ``error`` set, and reading goes on where it can resync.

Bytes that are not valid UTF-8 are replaced by U+FFFD and counted (``BadBytes``), so one bad
byte costs one character, not a conversation.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import re
import zlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterator, NamedTuple

# Text read per step; a JSON-list element that does not fit is retried with twice the text.
CHUNK_CHARS = 1 << 20
# No real conversation is this large; past it the element is reported, not buffered further.
MAX_RECORD_CHARS = 64 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = "\ufeff"


class Where(NamedTuple):
    """Where a record starts: the input's URI, its 1-based line and its 0-based item index."""

    source: str
    line: int
    item: int

    def describe(self) -> str:
        return f"{self.source}:{self.line} (item {self.item})"


class RawRecord(NamedTuple):
    """One record as read. Exactly one of ``line`` (JSONL bytes, parsed later in a worker),
    ``value`` (an already parsed JSON-list element) or ``error`` (why it cannot be read) is
    meaningful; ``kind`` says which."""

    where: Where
    kind: str  # "line" | "value" | "error"
    payload: Any
    size: int = 0  # characters or bytes it took in the file (to size work batches)


class BadBytes:
    """Counts bytes that were not valid UTF-8 (each replaced with U+FFFD)."""

    def __init__(self) -> None:
        self.count = 0

    def handler(self, exc: UnicodeDecodeError) -> tuple[str, int]:
        self.count += exc.end - exc.start
        return "\ufffd" * (exc.end - exc.start), exc.end


_HANDLER_SEQ = iter(range(1 << 62))


def register_counter(counter: BadBytes) -> str:
    """Register ``counter`` as a codec error handler; returns the name to pass as ``errors=``."""
    name = f"vops-data-bad-bytes-{next(_HANDLER_SEQ)}"
    codecs.register_error(name, counter.handler)
    return name


@dataclass
class ReadStats:
    """What one input yielded, for the report (bytes are of the stored, maybe gzipped, file)."""

    source: str
    format: str = "empty"  # "json" | "jsonl" | "empty", with "+gzip" when compressed
    records: int = 0
    bytes_read: int = 0
    bad_utf8_bytes: int = 0
    warnings: list[str] | None = None

    def warn(self, message: str) -> None:
        self.warnings = [*(self.warnings or []), message]


class _CountingReader(io.RawIOBase):
    """Raw view of any ``read(n)`` stream that counts the bytes it hands out (for progress)."""

    def __init__(self, stream: BinaryIO, stats: ReadStats) -> None:
        self._stream, self._stats = stream, stats

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        self._stats.bytes_read += len(data)
        return len(data)


class _GzipGuard(io.RawIOBase):
    """A gzip stream whose corruption or truncation ends the input with a warning instead of
    an exception: the records before the damage are still read, the one cut is reported."""

    def __init__(self, unzipped: gzip.GzipFile, stats: ReadStats) -> None:
        self._unzipped, self._stats, self._done = unzipped, stats, False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._done:
            return 0
        try:
            data = self._unzipped.read1(len(buffer))
        except (EOFError, OSError, zlib.error) as exc:  # BadGzipFile is an OSError
            self._done = True
            self._stats.warn(f"{self._stats.source}: the gzip stream is cut short or corrupt "
                             f"({exc or type(exc).__name__}); reading stopped there")
            return 0
        buffer[: len(data)] = data
        return len(data)


def read_records(stream: BinaryIO, source: str, stats: ReadStats | None = None
                 ) -> Iterator[RawRecord]:
    """Every record of one input, in file order. ``stats`` is filled in as reading goes."""
    stats = stats or ReadStats(source)
    binary: io.BufferedIOBase = io.BufferedReader(_CountingReader(stream, stats), 1 << 20)
    suffix = ""
    if binary.peek(2)[:2] == _GZIP_MAGIC:
        unzipped = gzip.GzipFile(fileobj=binary, mode="rb")
        binary = io.BufferedReader(_GzipGuard(unzipped, stats), 1 << 20)
        suffix = "+gzip"
    first = _first_significant_byte(binary)
    if first is None:
        stats.format = "empty" + suffix
        stats.warn(f"{source}: no records (the file is empty)")
        return
    bad = BadBytes()
    errors = register_counter(bad)
    try:
        if first == b"[":
            stats.format = "json" + suffix
            text = io.TextIOWrapper(binary, encoding="utf-8", errors=errors, newline="")
            yield from _json_list(text, source, stats)
        else:
            stats.format = "jsonl" + suffix
            yield from _json_lines(binary, source, stats)
    finally:
        stats.bad_utf8_bytes += bad.count


def sniff(stream: BinaryIO) -> str | None:
    """Why the input cannot hold conversations, judged from its first 64 KiB (gunzipped):
    "empty" or "binary" (over 10% control bytes or invalid UTF-8, which JSON text never
    holds outside a damaged line); None if it may."""
    head = stream.read(1 << 16)
    if head[:2] == _GZIP_MAGIC:
        try:
            head = gzip.GzipFile(fileobj=io.BytesIO(head)).read1(1 << 16)
        except (EOFError, OSError, zlib.error):
            return "binary"
    if not head.lstrip(b"\xef\xbb\xbf \t\r\n"):
        # blank so far: empty unless more follows (a huge run of blank lines is no data either)
        return "empty" if len(head) < 1 << 16 else None
    text = head.decode("utf-8", errors="replace")
    odd = sum(1 for char in text if char == "\ufffd" or (char < " " and char not in "\t\r\n"))
    return "binary" if odd * 10 > len(text) else None


def _first_significant_byte(binary: io.BufferedIOBase) -> bytes | None:
    """The first byte that is neither whitespace nor part of a UTF-8 byte-order mark."""
    head = binary.peek(4096)  # type: ignore[attr-defined]
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    while not stripped and head:
        binary.read(len(head))  # all blank so far: consume and look further
        head = binary.peek(4096)  # type: ignore[attr-defined]
        stripped = head.lstrip(b" \t\r\n")
    return stripped[:1] or None


# -- JSON lines --------------------------------------------------------------------------


def _json_lines(binary: io.BufferedIOBase, source: str, stats: ReadStats
                ) -> Iterator[RawRecord]:
    """One record per non-blank line. Lines travel as bytes: decoding and parsing happen in
    the worker processes, where the CPU is."""
    item = 0
    for number, line in enumerate(binary, start=1):
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if not line.strip():
            continue  # blank lines separate nothing and hold nothing
        stats.records += 1
        yield RawRecord(Where(source, number, item), "line", line, len(line))
        item += 1


def decode_line(line: bytes) -> tuple[str, int]:
    """A JSONL line as text, and how many invalid UTF-8 sequences became U+FFFD in it."""
    try:
        return line.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = line.decode("utf-8", errors="replace")
        return text, text.count("\ufffd") - line.count("\ufffd".encode())


# -- JSON list ---------------------------------------------------------------------------

# strict=False: a raw tab or newline inside a string is accepted rather than losing the record.
DECODER = json.JSONDecoder(strict=False)
_WS = re.compile(r"[ \t\r\n]*")
# Tokens that matter for finding where a broken element ends: strings (skipped whole),
# brackets and commas. Anything else inside a broken element is ignored.
_SCAN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},]', re.DOTALL)


class _ListParser:
    """Incremental parser for ``[ elem, elem, ... ]`` over a text stream."""

    def __init__(self, text: io.TextIOBase, source: str, stats: ReadStats) -> None:
        self.text, self.source, self.stats = text, source, stats
        self.buf = ""
        self.pos = 0
        self.line = 1  # line number at self.pos
        self.offset = 0  # characters consumed since the start of the file
        self.eof = False
        self.item = 0

    # buffer management

    def fill(self, at_least: int = CHUNK_CHARS) -> bool:
        """Read more text; False at end of input."""
        if self.eof:
            return False
        if self.pos > CHUNK_CHARS and self.pos * 2 > len(self.buf):
            self.buf = self.buf[self.pos:]
            self.pos = 0
        data = self.text.read(max(at_least, CHUNK_CHARS))
        if not data:
            self.eof = True
            return False
        if not self.buf and self.line == 1 and data.startswith(_UTF8_BOM):
            data = data[1:]
        self.buf += data
        return True

    def advance(self, to: int) -> None:
        self.line += self.buf.count("\n", self.pos, to)
        self.offset += to - self.pos
        self.pos = to

    def skip_ws(self) -> str:
        """Skip whitespace; the next character, or '' at end of input."""
        while True:
            self.advance(_WS.match(self.buf, self.pos).end())  # type: ignore[union-attr]
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.fill():
                return ""

    def where(self) -> Where:
        return Where(self.source, self.line, self.item)

    # elements

    def value(self) -> tuple[str, Any]:
        """Parse the element at ``pos``: ("value", obj) or ("error", reason)."""
        while True:
            pending = len(self.buf) - self.pos
            try:
                obj, end = DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                needs_more = exc.pos >= len(self.buf) - 1 or exc.msg.startswith("Unterminated")
                if needs_more and not self.eof and pending < MAX_RECORD_CHARS:
                    self.fill(pending)  # twice the pending text: linear, not quadratic
                    continue
                if needs_more and self.eof:
                    # The input ends inside this item: all that is left is this item (its
                    # text cannot hold another element that a scan could resync on).
                    return "error", self.skip_to_end(exc)
                return "error", self.skip_broken(exc)
            if end >= len(self.buf) and not self.eof and self.fill():
                continue  # a number or literal may go on in the next chunk: parse again
            self.advance(end)
            return "value", obj

    def skip_to_end(self, exc: json.JSONDecodeError) -> str:
        error_line = self.line + self.buf.count("\n", self.pos, min(exc.pos, len(self.buf)))
        self.advance(len(self.buf))
        return (f"not valid JSON: {exc.msg} (line {error_line}); the file ends inside this "
                "item (truncated?)")

    def skip_broken(self, exc: json.JSONDecodeError) -> str:
        """Move past a broken element to the next ',' or ']' at depth 0; the reason."""
        error_line = self.line + self.buf.count("\n", self.pos, min(exc.pos, len(self.buf)))
        reason = f"not valid JSON: {exc.msg} (line {error_line})"
        end = self.find_end()
        if end is None:
            self.advance(len(self.buf))
            if len(self.buf) - self.pos >= MAX_RECORD_CHARS:
                return f"item larger than {MAX_RECORD_CHARS >> 20} MiB or not valid JSON"
            return f"{reason}; the file ends inside this item (truncated?)"
        # Never stay put: an error that consumed nothing would be reported forever.
        self.advance(max(end, self.pos + 1))
        return reason

    def find_end(self) -> int | None:
        """Index of the ',' or ']' that ends the element at ``pos``, reading more as needed."""
        while True:
            depth = 0
            for match in _SCAN.finditer(self.buf, self.pos):
                token = match.group()
                if token in "[{":
                    depth += 1
                elif token in "]}":
                    if depth == 0:
                        if token == "]":  # the list's own end
                            return match.start()
                        continue  # a stray '}' belongs to the broken element: skip it
                    depth -= 1
                elif token == "," and depth == 0:
                    return match.start()
            if len(self.buf) - self.pos >= MAX_RECORD_CHARS:
                return None
            if not self.fill(len(self.buf) - self.pos):
                return None


def _json_list(text: io.TextIOBase, source: str, stats: ReadStats) -> Iterator[RawRecord]:
    parser = _ListParser(text, source, stats)
    parser.skip_ws()
    parser.advance(parser.pos + 1)  # the '[' seen by the caller
    expect_value = True  # after '[' or ','
    while True:
        char = parser.skip_ws()
        if char == "":
            stats.warn(f"{source}: the JSON list has no closing ']' (the file may be truncated)")
            return
        if char == "]":
            parser.advance(parser.pos + 1)
            if parser.skip_ws():
                stats.warn(f"{source}:{parser.line}: text after the closing ']' was ignored")
            return
        if char == "," and not expect_value:
            parser.advance(parser.pos + 1)
            expect_value = True
            continue
        where = parser.where()
        stats.records += 1
        parser.item += 1
        if not expect_value:
            # Two elements with no comma between them: read the second anyway, but say so.
            stats.warn(f"{source}:{where.line}: missing ',' before item {where.item}")
        if char == ",":  # an empty slot: '[a,,b]'
            parser.advance(parser.pos + 1)
            yield RawRecord(where, "error", "empty item (',,' in the JSON list)")
            expect_value = True
            continue
        start = parser.offset
        kind, payload = parser.value()
        yield RawRecord(where, kind, payload, parser.offset - start)
        expect_value = False
