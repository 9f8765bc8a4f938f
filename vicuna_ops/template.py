"""The Vicuna v1.1 conversation template, shared by training, data preparation and serving.

    <system> USER: <u1> ASSISTANT: <a1></s>USER: <u2> ASSISTANT: <a2></s>...

Training tokenizes the template piece by piece and concatenates, so the loss mask (labels
-100 everywhere but the assistant replies and their ``</s>``) is exact by construction rather
than recovered from token offsets afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

SYSTEM_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
USER, ASSISTANT = "USER", "ASSISTANT"
IGNORE_INDEX = -100

# ShareGPT ("from") and OpenAI ("role") spellings of the two speakers.
_ROLE_ALIASES = {
    "human": USER, "user": USER,
    "gpt": ASSISTANT, "assistant": ASSISTANT, "chatgpt": ASSISTANT, "bard": ASSISTANT,
}


class InvalidConversation(ValueError):
    """A record that is not a usable conversation; the message says why."""


@dataclass(frozen=True)
class Turn:
    role: str  # USER or ASSISTANT
    text: str


@dataclass(frozen=True)
class Piece:
    text: str
    trainable: bool  # an assistant reply: its tokens and the </s> after it carry the loss


def parse_turns(messages: Any) -> tuple[str, list[Turn]]:
    """ShareGPT ``[{from, value}]`` or OpenAI ``[{role, content}]`` -> (system prompt, turns).

    Turns must alternate USER, ASSISTANT, starting with USER. A leading system message
    replaces the default system prompt.
    """
    if not isinstance(messages, list) or not messages:
        raise InvalidConversation("conversation is not a non-empty list")
    system = SYSTEM_PROMPT
    turns: list[Turn] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidConversation(f"turn {index} is not an object")
        role = message.get("from", message.get("role"))
        text = message.get("value", message.get("content"))
        if not isinstance(role, str) or not isinstance(text, str):
            raise InvalidConversation(f"turn {index} needs string 'from' and 'value'")
        if role == "system":
            if index != 0:
                raise InvalidConversation(f"turn {index}: system message after the first turn")
            system = text
            continue
        if role not in _ROLE_ALIASES:
            raise InvalidConversation(f"turn {index}: unknown role {role!r}")
        expected = USER if len(turns) % 2 == 0 else ASSISTANT
        if _ROLE_ALIASES[role] != expected:
            raise InvalidConversation(f"turn {index}: expected a {expected} turn, got {role!r}")
        turns.append(Turn(_ROLE_ALIASES[role], text))
    if not turns:
        raise InvalidConversation("conversation has no turns")
    return system, turns


def pieces(system: str, turns: Sequence[Turn]) -> list[Piece]:
    """Split a conversation into prompt pieces and trainable assistant replies.

    The prompt piece ends with ``ASSISTANT:``; the reply starts with its space, which is
    exactly what a model sees at inference time after ``render_prompt``. An empty reply is an
    open one, as in FastChat's template: the prompt stays ``... ASSISTANT:`` with nothing
    after it and nothing is labelled (no ``" </s>"`` to learn).
    """
    out: list[Piece] = []
    prompt = system + " "
    for turn in turns:
        if turn.role == USER:
            prompt += f"{USER}: {turn.text} {ASSISTANT}:"
        elif turn.text:
            out.append(Piece(prompt, trainable=False))
            out.append(Piece(" " + turn.text, trainable=True))
            prompt = ""
    if prompt:
        out.append(Piece(prompt, trainable=False))
    return out


def render_prompt(system: str, turns: Sequence[Turn]) -> str:
    """The text a model continues to produce the next assistant reply (serving)."""
    text = system + " "
    for turn in turns:
        if turn.role == USER:
            text += f"{USER}: {turn.text} {ASSISTANT}:"
        elif turn.text:  # an empty reply stays open, as in pieces()
            text += f" {turn.text}</s>"
    if not turns or (turns[-1].role != USER and turns[-1].text):
        raise InvalidConversation("the last message must be from the user")
    return text


@dataclass(frozen=True)
class TokenizedConversation:
    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def trainable_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def tokenize(tokenizer: Any, system: str, turns: Sequence[Turn], max_length: int | None = None
             ) -> TokenizedConversation:
    """Token ids and labels for one conversation; ``</s>`` closes every assistant reply.

    ``tokenizer`` is any HF tokenizer (fast or slow) with ``eos_token_id``.
    """
    input_ids: list[int] = []
    labels: list[int] = []
    if getattr(tokenizer, "bos_token_id", None) is not None:
        input_ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
    for piece in pieces(system, turns):
        ids = tokenizer(piece.text, add_special_tokens=False)["input_ids"]
        if piece.trainable:
            ids = [*ids, tokenizer.eos_token_id]
        input_ids.extend(ids)
        labels.extend(ids if piece.trainable else [IGNORE_INDEX] * len(ids))
    truncated = max_length is not None and len(input_ids) > max_length
    if truncated:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return TokenizedConversation(input_ids, labels, truncated)


def count_tokens(tokenizer: Any, system: str, turns: Iterable[Turn]) -> int:
    """Length in tokens of a conversation in the template, as training will see it."""
    return len(tokenize(tokenizer, system, list(turns)).input_ids)
