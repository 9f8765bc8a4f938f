"""The terminal chat loop: history, /reset, /exit, and errors that do or do not end it."""

from __future__ import annotations

import pytest

from vicuna_ops.errors import ServeError, UserError
from vicuna_ops.serve.client import ChatClient, chat_loop


class FakeClient:
    def __init__(self, fail: list | None = None) -> None:
        self.calls: list[list[dict]] = []
        self.fail = fail or []

    def stream_chat(self, messages, **kw):
        self.calls.append([dict(m) for m in messages])
        if self.fail:
            raise self.fail.pop(0)
        yield "hel"
        yield "lo"


def _run(client, lines, **kw):
    feed = iter(lines)
    out: list[str] = []

    def read(prompt):
        try:
            return next(feed)
        except StopIteration:
            raise EOFError from None

    turns = chat_loop(client, read, out.append, **kw)
    return turns, "".join(out)


def test_history_grows_and_reset_forgets():
    client = FakeClient()
    turns, out = _run(client, ["hi", "", "again", "/reset", "new"], system="Be brief.")
    assert turns == 3 and out.count("hello") == 3
    assert client.calls[1] == [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "hi"},
                               {"role": "assistant", "content": "hello"},
                               {"role": "user", "content": "again"}]
    assert client.calls[2] == [{"role": "system", "content": "Be brief."},
                               {"role": "user", "content": "new"}]


def test_exit_stops():
    assert _run(FakeClient(), ["/exit", "never"])[0] == 0


def test_a_transient_error_is_shown_and_the_chat_goes_on():
    client = FakeClient(fail=[ServeError("the stream broke")])
    turns, out = _run(client, ["one", "two"])
    assert turns == 1 and "[error: the stream broke]" in out
    assert client.calls[1] == [{"role": "user", "content": "two"}]  # the failed turn is gone


def test_a_user_error_ends_the_chat():
    with pytest.raises(UserError):
        _run(FakeClient(fail=[UserError("bad key")]), ["one"])


def test_endpoint_must_be_http():
    with pytest.raises(UserError, match="not an http"):
        ChatClient("localhost:8000")
    assert ChatClient("http://h:1/v1/").base == "http://h:1"
