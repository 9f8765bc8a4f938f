"""Scraped ChatGPT HTML back to the markdown the model wrote, minus the page's furniture.

ShareGPT pages hold assistant replies as rendered HTML: ``<div class="markdown prose">``
around paragraphs, lists, tables and code blocks whose header carries the language name and a
"Copy code" button. Converted naively, every code block starts with ``pythonCopy code``. Here
the code block header is read for its language and then removed, buttons and icons go, KaTeX
keeps only its TeX source (``vicuna_ops.data.markdown`` does the conversion).

Two artifacts also survive in dumps that were converted to text already, so they are removed
from any turn: a fence opening glued to "Copy code" (```` ```pythonCopy code ````), and the
"1 / 1" regenerate-page counter the site put before a message.

Only assistant turns that *are* HTML are converted: a user asking how to centre a ``<div>``
keeps their question verbatim.
"""

from __future__ import annotations

import re
from collections import Counter

# A reply that is scraped HTML starts with one of these tags (ShareGPT wraps replies in a div).
_HTML_START = re.compile(
    r"^\s*<(div|p|pre|ol|ul|h[1-6]|table|blockquote|span|code|strong|em|b|i|a|br|hr)\b[^>]*>",
    re.IGNORECASE)
_HTML_CLOSE = re.compile(r"</(div|p|pre|ol|ul|h[1-6]|table|blockquote|span|code)\s*>",
                         re.IGNORECASE)

# ```pythonCopy code  /  ```\npythonCopy code  /  ```Copy code  (left by earlier converters)
_GLUED_FENCE = re.compile(r"```[ \t]*\n?[ \t]*([\w+#.-]{0,30}?)[ \t]*(?:Copy code)+[ \t]*\n?")
# "1 / 1", "2 / 3" before a message (the site's regenerate pager, sometimes glued to the
# "Copy" button before it); n <= m, checked below.
_PAGE_COUNTER = re.compile(r"^(?:Copy)?(\d{1,2}) / (\d{1,2})(?!\d)[ \t]*\n?")
# The UI's character counter under a message: "Copy569 chars / 53 words".
_COPY_CHARS = re.compile(r"Copy\d+ chars / \d+ words")
# Characters that show nothing: a turn made only of these (and spaces) is empty.
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u2061\u2062\u2063\u2064"
_EDGE = re.compile(rf"^[\s{INVISIBLE}]+|[\s{INVISIBLE}]+$")


def strip_invisible(text: str) -> str:
    """``text`` without whitespace (NBSP included) or invisible characters at either end."""
    return _EDGE.sub("", text)


def looks_like_html(text: str) -> bool:
    """True for scraped markup such as ``<div class="markdown">...</div>``."""
    return bool(_HTML_START.match(text)) and bool(_HTML_CLOSE.search(text))


def clean_turn(text: str, is_assistant: bool, changes: Counter[str]) -> str:
    """One turn's text, cleaned; what changed is counted in ``changes``.

    Leading noise (spaces, a BOM, zero-width characters, the regenerate counter) goes first,
    so a reply that starts ``2 / 3<div class="markdown">`` is still seen as HTML."""
    text = _strip_leading_noise(text, changes)
    if "Copy" in text:
        text, copied = _COPY_CHARS.subn("", text)
        if copied:
            changes["copy_counters_removed"] += copied
            text = _strip_leading_noise(text, changes)
    if is_assistant and looks_like_html(text):
        text = html_to_markdown(text, changes)
        changes["html_turns_converted"] += 1
    text, glued = _GLUED_FENCE.subn(_fence, text)
    if glued:
        changes["copy_code_removed"] += glued
    return strip_invisible(text)


def _strip_leading_noise(text: str, changes: Counter[str]) -> str:
    text = strip_invisible(text)
    match = _PAGE_COUNTER.match(text)
    if match and 1 <= int(match.group(1)) <= int(match.group(2)):
        text = strip_invisible(text[match.end():])
        changes["page_counters_removed"] += 1
    return text


def _fence(match: re.Match[str]) -> str:
    return f"```{match.group(1)}\n"


# Removed before parsing, with regexes (C speed; the HTML parser is pure Python and its cost
# grows with the number of tags): buttons, icons, and the syntax-highlighting spans that wrap
# every token inside a code block (they carry colour only; the text is kept).
_BUTTON = re.compile(r"<button\b[^>]*>(.*?)</button\s*>", re.IGNORECASE | re.DOTALL)
_SVG = re.compile(r"<svg\b.*?</svg\s*>", re.IGNORECASE | re.DOTALL)
_CODE_BODY = re.compile(r"(<code\b[^>]*>)(.*?)(</code\s*>)", re.IGNORECASE | re.DOTALL)
_SPAN_TAG = re.compile(r"</?span\b[^>]*>", re.IGNORECASE)


def html_to_markdown(html: str, changes: Counter[str] | None = None) -> str:
    """Markdown for one scraped reply (code blocks fenced with their language)."""
    from vicuna_ops.data.markdown import to_markdown

    changes = changes if changes is not None else Counter()
    html = _BUTTON.sub(lambda m: _count_copy(m, changes), html)
    html = _SVG.sub("", html)
    html = _CODE_BODY.sub(lambda m: m.group(1) + _SPAN_TAG.sub("", m.group(2)) + m.group(3),
                          html)
    return to_markdown(html, changes)


def _count_copy(match: re.Match[str], changes: Counter[str]) -> str:
    if "Copy" in match.group(1):
        changes["copy_code_removed"] += 1
    return ""
