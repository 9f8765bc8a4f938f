"""User and server text comes out literally: Rich's markup (``[bold]``) and emoji codes
(``:x:``, ``:smile:``) in flags, paths, run names and server answers are never rendered.
``vops train --gpus A100:x`` once printed ``A100❌``."""

from __future__ import annotations

import io

import pytest
from fixtures.cli import run_vops
from rich.console import Console

from vicuna_ops.cli import output

NASTY = ("A100:x", "[bold]", ":smile:", "[red]x[/red]", "a:x:b")


def _assert_literal(text: str, needle: str) -> None:
    assert needle in text, f"{needle!r} not shown literally in {text!r}"
    assert "❌" not in text and "😄" not in text


@pytest.mark.parametrize("args, needle", [
    (["train", "--gpus", "A100:x", "--dry-run"], "--gpus A100:x"),
    (["train", "--gpus", "[bold]:smile:", "--dry-run"], "[bold]:smile:"),
    (["status", "[bold]:smile:"], "unknown run '[bold]:smile:'"),
    (["logs", ":x:[red]"], "unknown run ':x:[red]'"),
    (["serve", "--local", "--model", "/no/[bold]/:smile:"], "/no/[bold]/:smile:"),
    (["serve", "--local", "--model", "m", "--backend", ":x:[red]"], ":x:[red]"),
    (["chat", "--endpoint", "[bold]:smile:"], "[bold]:smile:"),
    (["cost", "--since", "[bold]:smile:"], "[bold]:smile:"),
    (["cost", "--plot", "[bold]:x:.xyz"], "[bold]:x:.xyz"),
    (["runs", "--kind", "[bold]:x:"], "[bold]:x:"),
    (["storage", "ls", "s3://[bold]:smile:"], "[bold]:smile:"),
    (["serve", "--[bold]:x:"], "--[bold]:x:"),  # click's usage error quotes the flag
])
def test_every_error_path_shows_user_text_literally(capsys, args, needle):
    code, out, err = run_vops(capsys, *args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: ")
    _assert_literal(err, needle)


def _render(fn, *args, **kwargs) -> str:
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, emoji=False, color_system=None)
    saved = output.stdout, output.stderr
    output.stdout = output.stderr = console
    try:
        result = fn(*args, **kwargs)
        if result is not None:
            console.print(result)
    finally:
        output.stdout, output.stderr = saved
    return buffer.getvalue()


@pytest.mark.parametrize("text", NASTY)
def test_tables_info_and_error_lines_render_text_as_given(text):
    rendered = _render(output.table, f"title {text}", [f"col {text}"], [(text,), (None,)])
    _assert_literal(rendered, f"title {text}")
    _assert_literal(rendered, f"col {text}")
    assert f"│ {text}" in rendered and "│ -" in rendered
    _assert_literal(_render(output.info, f"note {text}", markup=False), f"note {text}")
    _assert_literal(_render(output.error_line, f"bad {text}"), f"error: bad {text}")


def test_the_consoles_never_render_emoji_codes():
    assert output.stdout._emoji is False and output.stderr._emoji is False
    # even a caller that keeps markup on for a styled prefix gets no emoji from user text
    rendered = _render(output.info, f"[yellow]warning:[/] {output.escape('A100:x :smile:')}")
    assert rendered.strip() == "warning: A100:x :smile:"


def test_a_server_error_body_is_shown_literally(capsys):
    from vicuna_ops.cli.serve import _render_controller

    _render_controller({"url": "http://h:1/[bold]", "error": "503 [red]down[/red] :x:"})
    err = capsys.readouterr().err
    _assert_literal(err, "controller http://h:1/[bold]: 503 [red]down[/red] :x:")
