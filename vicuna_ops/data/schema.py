"""What a ShareGPT record must look like, and the plain form the rest of data prep works on.

    {"id": "abc", "conversations": [{"from": "human", "value": "..."},
                                    {"from": "gpt", "value": "..."}, ...]}

A record that does not have this shape is *malformed*: the reason names the field, so the
report can say ``data.json:1234 (item 56): turn 3: 'value' is a list, not a string``. Roles
are read in the spellings the training template accepts (human/user, gpt/assistant/chatgpt/
bard, system) and written back as ShareGPT's human/gpt/system. Extra fields are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

HUMAN, GPT, SYSTEM = "human", "gpt", "system"

# Same speakers as vicuna_ops.template accepts, in ShareGPT's spelling.
ROLES = {
    "human": HUMAN, "user": HUMAN,
    "gpt": GPT, "assistant": GPT, "chatgpt": GPT, "bard": GPT,
    "system": SYSTEM,
}

Message = tuple[str, str]  # (role, text): role is HUMAN, GPT or SYSTEM


class Malformed(ValueError):
    """The record is not a ShareGPT conversation; the message says which field and why."""


@dataclass(frozen=True)
class Conversation:
    id: str
    messages: tuple[Message, ...]
    plugins: bool = False  # a tool-using ChatGPT session (a non-empty 'plugins' field)


def parse_json(text: str) -> Any:
    """A JSONL line's value, or Malformed naming the JSON error and its column."""
    from vicuna_ops.data.reader import DECODER

    try:
        value, end = DECODER.raw_decode(text, len(text) - len(text.lstrip()))
    except json.JSONDecodeError as exc:
        raise Malformed(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    if text[end:].strip():
        raise Malformed(f"not valid JSON: extra data after the value (column {end + 1})")
    return value


def parse_record(value: Any) -> Conversation:
    """A record's id and messages, or Malformed."""
    if not isinstance(value, dict):
        raise Malformed(f"a record must be a JSON object, not {_kind(value)}")
    if "id" not in value:
        raise Malformed("no 'id' field")
    record_id = value["id"]
    if isinstance(record_id, bool) or not isinstance(record_id, (str, int)):
        raise Malformed(f"'id' is {_kind(record_id)}, not a string")
    record_id = str(record_id).strip()
    if not record_id:
        raise Malformed("'id' is empty")
    if "conversations" not in value:
        raise Malformed("no 'conversations' field")
    turns = value["conversations"]
    if not isinstance(turns, list):
        raise Malformed(f"'conversations' is {_kind(turns)}, not a list")
    messages = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise Malformed(f"turn {index} is {_kind(turn)}, not an object")
        for field in ("from", "value"):
            if field not in turn:
                raise Malformed(f"turn {index} has no {field!r} field")
            if not isinstance(turn[field], str):
                raise Malformed(f"turn {index}: {field!r} is {_kind(turn[field])}, not a string")
        role = ROLES.get(turn["from"].strip().lower())
        if role is None:
            raise Malformed(f"turn {index}: unknown speaker {turn['from']!r} "
                            f"(expected one of {', '.join(sorted(ROLES))})")
        messages.append((role, turn["value"]))
    plugins = value.get("plugins")
    return Conversation(record_id, tuple(messages), plugins not in (None, "", [], {}, False))


def to_record(record_id: str, system: str | None, turns: list[Message]) -> dict[str, Any]:
    """The ShareGPT record written out (what ``template.parse_turns`` reads back)."""
    conversation = [{"from": SYSTEM, "value": system}] if system is not None else []
    conversation += [{"from": role, "value": text} for role, text in turns]
    return {"id": record_id, "conversations": conversation}


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
