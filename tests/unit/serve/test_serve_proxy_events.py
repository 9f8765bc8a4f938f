"""The proxy's view of a relayed SSE event: the text it adds and whether it ends the answer."""

from __future__ import annotations

import json

from vicuna_ops.serve import protocol
from vicuna_ops.serve.proxy import _event_text


def _event(obj) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def test_text_and_finish_of_chat_and_completion_events():
    assert _event_text(_event(protocol.chat_chunk("r", "m", {"content": " t3"}))) == (" t3", False)
    assert _event_text(_event(protocol.chat_chunk("r", "m", {}, "stop"))) == ("", True)
    assert _event_text(_event(protocol.completion_chunk("r", "m", "x", "length"))) == ("x", True)
    assert _event_text(_event(protocol.usage_chunk("r", "m", True, 1, 2))) == ("", False)


def test_odd_events_add_nothing():
    for raw in (protocol.DONE_EVENT, b": keep-alive\n\n", b"data: {not json}\n\n",
                b'data: {"choices": "x"}\n\n'):
        assert _event_text(raw) == ("", False)
