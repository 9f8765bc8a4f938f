"""The HTML-to-markdown converter on the markup ChatGPT's page renders, and on junk."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vicuna_ops.data.markdown import to_markdown


@pytest.mark.parametrize("html, expected", [
    ("<ul><li>a<ul><li>b</li><li>c</li></ul></li><li>d</li></ul>", "- a\n  - b\n  - c\n- d"),
    ('<ol start="3"><li><p>x</p></li><li><p>y</p></li></ol>', "3. x\n4. y"),
    ("<blockquote><p>one</p><p>two</p></blockquote>", "> one\n>\n> two"),
    ('<p><img src="a.png" alt="pic"> <a href="https://x.org?a=1&amp;b=2">q</a></p>',
     "![pic](a.png) [q](https://x.org?a=1&b=2)"),
    ("<p>a <strong> b </strong>c</p>", "a **b** c"),
    ("<p>x<br>y</p><hr><p>z</p>", "x\ny\n\n---\n\nz"),
    ("<div><p>unclosed <em>em<p>next</div>", "unclosed *em*\n\nnext"),
    ("<p>a</b></i> b</p>", "a b"),  # stray closing tags are ignored
    ("<custom-tag>kept text</custom-tag>", "kept text"),
    ("<pre><code>a<br>b &lt;c&gt;</code></pre>", "```\na\nb <c>\n```"),
    ("<p>use <code>`x`</code></p>", "use `` `x` ``"),
    ("<table><tr><td>a</td><td>b|c</td></tr><tr><td>1</td></tr></table>",
     "| a | b\\|c |\n| --- | --- |\n| 1 |  |"),
    ('<span class="katex-display"><span class="katex"><annotation encoding="application/x-tex">'
     "x^2</annotation></span></span>", "$$x^2$$"),
    ("<script>alert(1)</script><p>ok</p><!-- note -->", "ok"),
])
def test_conversions(html, expected):
    assert to_markdown(html) == expected


@settings(max_examples=200, deadline=1000)
@given(st.text(alphabet=st.sampled_from(list("<>/=\"' abcdiv&;#!-pre\ncode")), max_size=200))
def test_any_text_converts_without_error(text):
    assert isinstance(to_markdown(text), str)
