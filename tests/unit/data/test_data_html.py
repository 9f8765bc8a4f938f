"""Scraped ShareGPT HTML -> markdown: code blocks keep their language, page furniture goes."""

from __future__ import annotations

from collections import Counter

import pytest

from vicuna_ops.data.html import clean_turn, html_to_markdown, looks_like_html

# The 2023 ShareGPT layout: header with the language and a copy button inside <pre>,
# highlight.js spans around every token.
NEW_LAYOUT = (
    '<div class="markdown prose w-full break-words dark:prose-invert light">'
    "<p>Sort it with <code>sorted(a_list)</code>, then <strong>print</strong> it:</p>"
    '<pre><div class="bg-black mb-4 rounded-md"><div class="flex items-center relative '
    'text-gray-200 bg-gray-800 px-4 py-2 text-xs font-sans"><span class="">python</span>'
    '<button class="flex ml-auto gap-2"><svg stroke="currentColor" fill="none" '
    'viewBox="0 0 24 24"><path d="M16 4h2a2 2 0 0 1 2 2v14"></path><rect x="8" y="2"></rect>'
    '</svg>Copy code</button></div><div class="p-4 overflow-y-auto"><code class="!whitespace-pre '
    'hljs language-python"><span class="hljs-keyword">def</span> <span class="hljs-title '
    'function_">top_n</span>(<span class="hljs-params">items, n=<span class="hljs-number">3'
    '</span></span>):\n    <span class="hljs-keyword">return</span> <span class="hljs-built_in">'
    'sorted</span>(items)[:n] * 2  <span class="hljs-comment"># a_b *c*</span>\n</code></div>'
    "</div></pre><ol><li>first</li><li>second</li></ol></div>")
# An older layout: no header div, the language as a bare span, no language- class.
OLD_LAYOUT = ('<div class="markdown prose"><pre><span class="">bash</span><button class="flex">'
              'Copy code</button><code class="!whitespace-pre hljs">ls -la | grep "x"\n</code>'
              "</pre></div>")


def convert(html: str) -> tuple[str, Counter]:
    changes: Counter = Counter()
    return clean_turn(html, True, changes), changes


def test_new_layout_keeps_code_and_language_and_drops_the_header():
    text, changes = convert(NEW_LAYOUT)
    assert "```python\ndef top_n(items, n=3):\n    return sorted(items)[:n] * 2  # a_b *c*\n```" \
        in text
    assert "Copy code" not in text and "pythonCopy" not in text
    assert "`sorted(a_list)`" in text and "**print**" in text
    assert "1. first\n2. second" in text
    assert changes["copy_code_removed"] == 1 and changes["html_turns_converted"] == 1


def test_text_outside_code_is_not_backslash_escaped():
    text, _ = convert('<div><p>use a_b and 2*3 and [x]</p></div>')
    assert text == "use a_b and 2*3 and [x]"


def test_old_layout_language_from_the_header_label():
    text, changes = convert(OLD_LAYOUT)
    assert text == '```bash\nls -la | grep "x"\n```'
    assert changes["copy_code_removed"] == 1


def test_copy_code_glued_as_text_inside_pre_without_code_element():
    text, changes = convert("<div><pre>javascriptCopy codeconsole.log(1);\n</pre></div>")
    assert text == "```javascript\nconsole.log(1);\n```"
    assert changes["copy_code_removed"] == 1


def test_code_block_without_any_language():
    text, _ = convert("<div><pre><code>plain\n  indented\n</code></pre></div>")
    assert text == "```\nplain\n  indented\n```"


def test_tables_headings_links_and_math():
    html = ('<div><h2>Prices</h2><table><thead><tr><th>gpu</th><th>$/h</th></tr></thead>'
            "<tbody><tr><td>A100</td><td>1.1</td></tr></tbody></table>"
            '<p>See <a href="https://x.org">docs</a>. Area is <span class="math math-inline">'
            '<span class="katex"><span class="katex-mathml"><math><semantics><mrow><mi>r</mi>'
            '</mrow><annotation encoding="application/x-tex">\\pi r^2</annotation></semantics>'
            '</math></span><span class="katex-html" aria-hidden="true">πr2</span></span></span>'
            "</p></div>")
    text, _ = convert(html)
    assert "## Prices" in text
    assert "| gpu | $/h |" in text and "| A100 | 1.1 |" in text
    assert "[docs](https://x.org)" in text
    assert "$\\pi r^2$" in text and "πr2" not in text


def test_no_runs_of_blank_lines_remain():
    text = html_to_markdown("<div><p>a</p><br><br><br><p>b</p></div>")
    assert "\n\n\n" not in text


@pytest.mark.parametrize("text", [
    "How do I centre a <div> in CSS?",
    "<div>hello</div> why is this not centred?",
    "plain answer",
    "<notatag>",
])
def test_user_text_and_non_html_replies_are_kept_verbatim(text):
    assert clean_turn(text, False, Counter()) == text.strip()
    if not looks_like_html(text):
        assert clean_turn(text, True, Counter()) == text.strip()


def test_user_turn_that_looks_like_html_is_still_not_converted():
    html = "<div><p>my page</p></div>"
    assert clean_turn(html, False, Counter()) == html


@pytest.mark.parametrize("raw, expected, removed", [
    ("1 / 1Write a poem", "Write a poem", 1),
    ("2 / 3\nWrite a poem", "Write a poem", 1),
    ("  1 / 1 Tell me", "Tell me", 1),
    ("3 / 2 is a fraction", "3 / 2 is a fraction", 0),  # n > m: not a page counter
    ("1/2 cup of flour", "1/2 cup of flour", 0),  # no spaces: not the site's counter
    ("0 / 1 items", "0 / 1 items", 0),
    ("Page 1 / 1", "Page 1 / 1", 0),  # only at the very start
    ("1 / 100 chance", "1 / 100 chance", 0),
])
def test_page_counters(raw, expected, removed):
    changes: Counter = Counter()
    assert clean_turn(raw, False, changes) == expected
    assert changes["page_counters_removed"] == removed


@pytest.mark.parametrize("raw, expected", [
    ("```pythonCopy code\nprint(1)\n```", "```python\nprint(1)\n```"),
    ("```\npythonCopy code\nprint(1)\n```", "```python\nprint(1)\n```"),
    ("Text\n```Copy code\nls\n```", "Text\n```\nls\n```"),
    ("```c++Copy code\nint x;\n```", "```c++\nint x;\n```"),
])
def test_copy_code_glued_to_fences_in_already_converted_text(raw, expected):
    changes: Counter = Counter()
    assert clean_turn(raw, True, changes) == expected
    assert changes["copy_code_removed"] == 1


def test_the_words_copy_code_in_prose_survive():
    text = "Use the Copy code button."
    assert clean_turn(text, True, Counter()) == text


# -- issue 13: leading noise, scrape counters, invisible characters -------------------------


@pytest.mark.parametrize("prefix", ["2 / 3", "1 / 1\n", "\ufeff", "\u200b  ", "Copy2 / 2",
                                    " 3 / 3  "])
def test_html_after_leading_noise_is_still_converted(prefix):
    changes: Counter = Counter()
    text = clean_turn(prefix + OLD_LAYOUT, True, changes)
    assert text == '```bash\nls -la | grep "x"\n```'
    assert changes["html_turns_converted"] == 1


@pytest.mark.parametrize("is_assistant", [False, True])
def test_copy_chars_counter_is_removed_in_both_roles(is_assistant):
    changes: Counter = Counter()
    raw = "Summarise this text please.Copy569 chars / 53 words"
    assert clean_turn(raw, is_assistant, changes) == "Summarise this text please."
    assert changes["copy_counters_removed"] == 1


def test_html_entities_are_decoded():
    assert convert("<div><p>a &amp; b &lt;tag&gt; &#39;q&#39;</p></div>")[0] == "a & b <tag> 'q'"


@pytest.mark.parametrize("raw", ["\u200b", "\u00a0", "\ufeff\u2060 \u200c\u200d", " \n"])
def test_invisible_only_turns_clean_to_empty(raw):
    assert clean_turn(raw, True, Counter()) == ""
