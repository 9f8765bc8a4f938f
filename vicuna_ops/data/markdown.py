"""A small, fast HTML-to-markdown converter for the markup ChatGPT's page renders.

bs4 + markdownify took 80% of data prep's CPU (a pure-Python parser building a full tree,
then a generic walk). The scraped replies use a small, regular set of tags, so here one C
regex splits the HTML into tags and text, a light tree of lists is built, and a renderer
that knows those tags writes markdown: paragraphs, headings, emphasis, inline code, fenced
code blocks with their language, nested lists, tables, links, images, quotes, KaTeX (its TeX
source). Unknown tags keep their text. Entities are decoded; no markdown escaping (training
text should read ``a_b``, not ``a\\_b``).

    Node = [tag, attrs, children]   children: str (decoded text) or Node
"""

from __future__ import annotations

import re
from collections import Counter
from html import unescape
from typing import Union

Node = list  # [tag: str, attrs: str, children: list[Union[str, Node]]]
Child = Union[str, Node]

_TOKEN = re.compile(r"<!--.*?-->|<(/?)([a-zA-Z][a-zA-Z0-9-]*)((?:[^>\"']|\"[^\"]*\"|'[^']*')*)>"
                    r"|<!?[^<]*|[^<]+", re.DOTALL)
_VOID = frozenset("br hr img input meta link wbr source col area".split())
_DROP = frozenset("button svg script style head title noscript template".split())
_BLOCK = frozenset("p div section article main header footer nav aside figure figcaption "
                   "details summary dl dt dd form fieldset".split())
_INLINE_MARK = {"strong": "**", "b": "**", "em": "*", "i": "*", "del": "~~", "s": "~~"}
_SPACE = re.compile(r"\s+")
# Start tags that end an open element (HTML's implied end tags), up to a scope boundary.
_P_CLOSERS = "p div pre ul ol table blockquote h1 h2 h3 h4 h5 h6 hr section".split()
_CLOSED_BY = {**{tag: frozenset({"p"}) for tag in _P_CLOSERS},
              "li": frozenset({"li"}), "tr": frozenset({"tr"}),
              "td": frozenset({"td", "th"}), "th": frozenset({"td", "th"})}
_SCOPE = frozenset("ul ol table tbody thead tfoot tr td th blockquote div pre".split())
_CLASS = re.compile(r"""\bclass\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", re.IGNORECASE)
_ATTR = {name: re.compile(rf"""\b{name}\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""",
                          re.IGNORECASE) for name in ("href", "src", "alt", "start", "encoding")}
_LANGUAGE_CLASS = re.compile(r"^(?:language|lang)-([\w+#.-]+)$")
_LANGUAGE_NAME = re.compile(r"^[\w+#.-]{1,30}$")
_BLANK_RUNS = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")


def parse(html: str) -> Node:
    """A tree of the HTML; unbalanced markup closes what it must, as browsers do."""
    root: Node = ["", "", []]
    stack = [root]
    for match in _TOKEN.finditer(html):
        tag = match.group(2)
        if tag is None:
            text = match.group()
            if not text.startswith("<!--"):
                stack[-1][2].append(unescape(text) if "&" in text else text)
            continue
        tag = tag.lower()
        if match.group(1):  # closing tag: pop to the matching open one, if any
            for depth in range(len(stack) - 1, 0, -1):
                if stack[depth][0] == tag:
                    del stack[depth:]
                    break
            continue
        closes = _CLOSED_BY.get(tag)
        if closes is not None:  # "<p>a<p>b", "<li>a<li>b": the open one ends here
            for depth in range(len(stack) - 1, 0, -1):
                name = stack[depth][0]
                if name in closes:
                    del stack[depth:]
                    break
                if name in _SCOPE:
                    break
        node: Node = [tag, match.group(3), []]
        stack[-1][2].append(node)
        if tag not in _VOID and not match.group(3).rstrip().endswith("/"):
            stack.append(node)
    return root


def attr(node: Node, name: str) -> str | None:
    match = _ATTR[name].search(node[1]) if name in _ATTR else None
    if match is None:
        return None
    value = next(g for g in match.groups() if g is not None)
    return unescape(value) if "&" in value else value


def classes(node: Node) -> list[str]:
    match = _CLASS.search(node[1])
    return next(g for g in match.groups() if g is not None).split() if match else []


def text_of(node: Node) -> str:
    """All text under ``node``, verbatim (``<br>`` as a newline)."""
    out: list[str] = []
    _collect(node, out)
    return "".join(out)


def _collect(node: Node, out: list[str]) -> None:
    for child in node[2]:
        if isinstance(child, str):
            out.append(child)
        elif child[0] == "br":
            out.append("\n")
        elif child[0] not in _DROP:
            _collect(child, out)


def to_markdown(html: str, changes: Counter[str] | None = None) -> str:
    renderer = _Renderer(changes if changes is not None else Counter())
    text = renderer.blocks(parse(html)[2])
    return _BLANK_RUNS.sub("\n\n", text).strip()


class _Renderer:
    def __init__(self, changes: Counter[str]) -> None:
        self.changes = changes

    def blocks(self, children: list[Child]) -> str:
        """Children of a block container: inline runs and blocks, blocks on their own."""
        out: list[str] = []
        for child in children:
            part = _SPACE.sub(" ", child) if isinstance(child, str) else self.node(child)
            if part[:1] == " " and out and out[-1][-1:] in (" ", "\n"):
                part = part[1:]  # one space between inline runs, as a browser shows it
            if part:
                out.append(part)
        return "".join(out)

    def inline(self, children: list[Child]) -> str:
        return self.blocks(children)

    def node(self, node: Node) -> str:
        tag, _, children = node
        if tag in _DROP:
            return ""
        if tag in _BLOCK:
            return f"\n\n{self.blocks(children).strip()}\n\n"
        if tag in _INLINE_MARK:
            return _wrap(self.inline(children), _INLINE_MARK[tag])
        if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            text = _SPACE.sub(" ", self.inline(children)).strip()
            return f"\n\n{'#' * int(tag[1])} {text}\n\n" if text else ""
        method = getattr(self, f"tag_{tag}", None)
        if method is not None:
            return method(node)
        return self.blocks(children)  # span, sup, sub, unknown: their content

    # -- inline ------------------------------------------------------------------------------

    def tag_br(self, node: Node) -> str:
        return "\n"

    def tag_hr(self, node: Node) -> str:
        return "\n\n---\n\n"

    def tag_code(self, node: Node) -> str:
        text = text_of(node)
        if not text:
            return ""
        if "`" not in text:
            return f"`{text}`"
        pad = " " if text[0] == "`" or text[-1] == "`" else ""  # CommonMark's rule
        return f"``{pad}{text}{pad}``"

    def tag_a(self, node: Node) -> str:
        text = self.inline(node[2]).strip()
        href = attr(node, "href")
        if not href or href.startswith("javascript:"):
            return text
        return f"[{text or href}]({href})"

    def tag_img(self, node: Node) -> str:
        src = attr(node, "src")
        return f"![{attr(node, 'alt') or ''}]({src})" if src else ""

    def tag_span(self, node: Node) -> str:
        if "katex" in classes(node):
            tex = _find(node, lambda n: n[0] == "annotation" and
                        attr(n, "encoding") == "application/x-tex")
            if tex is not None:
                return f"${text_of(tex)}$"
        if "katex-display" in classes(node):
            inner = self.blocks(node[2]).strip()
            if inner.startswith("$") and not inner.startswith("$$"):
                return f"\n\n${inner}$\n\n"
        return self.blocks(node[2])

    # -- blocks ------------------------------------------------------------------------------

    def tag_pre(self, node: Node) -> str:
        code = _find(node, lambda n: n[0] == "code")
        language = ""
        if code is not None:
            for css in classes(code):
                match = _LANGUAGE_CLASS.match(css)
                if match:
                    language = match.group(1)
                    break
            header = _without(node, code)
            if not language:
                language = _header_language(header)
            if "Copy code" in text_of(header):
                self.changes["copy_code_removed"] += 1
            body = text_of(code)
        else:
            body = text_of(node)
        body = body.strip("\n")
        return f"\n\n```{language}\n{body}\n```\n\n"

    def tag_blockquote(self, node: Node) -> str:
        inner = _BLANK_RUNS.sub("\n\n", self.blocks(node[2])).strip()
        return "\n\n" + "\n".join(f"> {line}".rstrip() for line in inner.split("\n")) + "\n\n"

    def tag_ul(self, node: Node) -> str:
        return self._list(node, ordered=False)

    def tag_ol(self, node: Node) -> str:
        return self._list(node, ordered=True)

    def _list(self, node: Node, ordered: bool) -> str:
        start = attr(node, "start")
        number = int(start) if start and start.isdigit() else 1
        items = []
        for child in node[2]:
            if isinstance(child, str) or child[0] != "li":
                continue
            marker = f"{number}. " if ordered else "- "
            number += 1
            body = _BLANK_RUNS.sub("\n\n", self.blocks(child[2])).strip()
            body = re.sub(r"\n\n+", "\n", body) if "```" not in body else body
            pad = " " * len(marker)
            lines = body.split("\n")
            items.append(marker + lines[0] + "".join(
                f"\n{pad}{line}" if line else "\n" for line in lines[1:]))
        return "\n\n" + "\n".join(items) + "\n\n" if items else ""

    def tag_li(self, node: Node) -> str:  # an <li> outside a list
        return f"\n- {self.blocks(node[2]).strip()}\n"

    def tag_table(self, node: Node) -> str:
        rows: list[list[str]] = []
        header_rows = 0
        for row, in_head in _rows(node):
            cells = [_SPACE.sub(" ", self.inline(cell[2])).strip().replace("|", "\\|")
                     for cell in row[2] if not isinstance(cell, str) and cell[0] in ("td", "th")]
            if cells:
                if in_head or (not rows and all(c[0] == "th" for c in row[2]
                                                if not isinstance(c, str))):
                    header_rows += 1
                rows.append(cells)
        if not rows:
            return ""
        width = max(len(r) for r in rows)
        lines = ["| " + " | ".join(r + [""] * (width - len(r))) + " |" for r in rows]
        lines.insert(max(1, header_rows) if header_rows else 1, "| " + " | ".join(
            ["---"] * width) + " |")
        return "\n\n" + "\n".join(lines) + "\n\n"


def _wrap(text: str, mark: str) -> str:
    stripped = text.strip()
    if not stripped:
        return text
    lead = " " if text[0].isspace() else ""
    trail = " " if text[-1].isspace() else ""
    return f"{lead}{mark}{stripped}{mark}{trail}"


def _find(node: Node, test) -> Node | None:
    for child in node[2]:
        if isinstance(child, str):
            continue
        if test(child):
            return child
        found = _find(child, test)
        if found is not None:
            return found
    return None


def _without(node: Node, skip: Node) -> Node:
    """``node`` with ``skip`` (somewhere under it) left out: a code block's header."""
    children: list[Child] = []
    for child in node[2]:
        if child is skip:
            continue
        children.append(child if isinstance(child, str) else _without(child, skip))
    return [node[0], node[1], children]


def _header_language(header: Node) -> str:
    """The language label of a code block's header: its first span whose text is a name."""
    found = _find(header, lambda n: n[0] == "span" and
                  bool(_LANGUAGE_NAME.match(text_of(n).strip())))
    return text_of(found).strip() if found is not None else ""


def _rows(node: Node, in_head: bool = False):
    for child in node[2]:
        if isinstance(child, str):
            continue
        if child[0] == "tr":
            yield child, in_head
        elif child[0] in ("thead", "tbody", "tfoot"):
            yield from _rows(child, child[0] == "thead")
