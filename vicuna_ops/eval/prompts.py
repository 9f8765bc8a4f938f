"""The judge's prompts, written for vops. ``PROMPT_VERSION`` is part of every judgment's key:
change a prompt, bump it, and the next ``vops eval judge`` asks again instead of mixing
verdicts given to different prompts.

The judged reply is always the last thing shown: for a two-turn question the judge sees the
whole conversation and rates the reply to the second message.
"""

from __future__ import annotations

PROMPT_VERSION = "vops-judge-1"

PAIRWISE_SYSTEM = (
    "You are an impartial and careful judge of AI assistants. You will see a user's question "
    "and the replies of two assistants, A and B{reference_note}. Decide which reply serves "
    "the user better: correctness first, then helpfulness, relevance, depth and clarity. "
    "The order in which the replies appear, their length and the assistants' names must not "
    "sway you. Explain your reasoning briefly, then end with your verdict in exactly this "
    "format: [[A]] if A is better, [[B]] if B is better, [[C]] for a tie."
)

SINGLE_SYSTEM = (
    "You are an impartial and careful judge of an AI assistant. You will see a user's "
    "question and the assistant's reply{reference_note}. Rate the reply for correctness, "
    "helpfulness, relevance, depth and clarity on a scale from 1 (useless) to 10 (excellent). "
    "Explain your rating briefly, then end with it in exactly this format: [[rating]], for "
    "example [[6]]."
)

_REFERENCE_NOTE = (", with a reference answer that is known to be correct: check the replies "
                   "against it")
_TURN_NOTE = ("This is a conversation of two user messages. Judge only the assistant's reply "
              "to the second message, in the context of the whole conversation.\n\n")


def _system(template: str, reference: str | None) -> str:
    return template.format(reference_note=_REFERENCE_NOTE if reference else "")


def _conversation(turns: list[str], replies: list[str], who: str) -> str:
    lines = []
    for user, reply in zip(turns, replies):
        lines.append(f"### User:\n{user}\n\n### {who}:\n{reply}")
    return "\n\n".join(lines)


def pairwise(turns: list[str], reply_a: list[str], reply_b: list[str], turn: int,
             reference: str | None) -> list[dict[str, str]]:
    """Messages asking which of A and B answered turn ``turn`` (1-based) better."""
    shown = turns[:turn]
    parts = [_TURN_NOTE] if turn > 1 else []
    if turn == 1:
        parts.append(f"[Question]\n{shown[0]}\n\n")
        if reference:
            parts.append(f"[Reference answer]\n{reference}\n\n")
        parts.append(f"[Assistant A's reply]\n{reply_a[0]}\n[End of A's reply]\n\n"
                     f"[Assistant B's reply]\n{reply_b[0]}\n[End of B's reply]")
    else:
        if reference:
            parts.append(f"[Reference answer to the second message]\n{reference}\n\n")
        parts.append(f"[Conversation with assistant A]\n"
                     f"{_conversation(shown, reply_a[:turn], 'Assistant A')}\n"
                     f"[End of conversation with A]\n\n"
                     f"[Conversation with assistant B]\n"
                     f"{_conversation(shown, reply_b[:turn], 'Assistant B')}\n"
                     f"[End of conversation with B]")
    return [{"role": "system", "content": _system(PAIRWISE_SYSTEM, reference)},
            {"role": "user", "content": "".join(parts)}]


def single(turns: list[str], replies: list[str], turn: int,
           reference: str | None) -> list[dict[str, str]]:
    """Messages asking for a 1-10 rating of the reply to turn ``turn`` (1-based)."""
    parts = [_TURN_NOTE] if turn > 1 else []
    if reference:
        label = "Reference answer" if turn == 1 else "Reference answer to the second message"
        parts.append(f"[{label}]\n{reference}\n\n")
    if turn == 1:
        parts.append(f"[Question]\n{turns[0]}\n\n[Assistant's reply]\n{replies[0]}\n"
                     "[End of the reply]")
    else:
        parts.append(f"[Conversation]\n{_conversation(turns[:turn], replies[:turn], 'Assistant')}"
                     "\n[End of conversation]")
    return [{"role": "system", "content": _system(SINGLE_SYSTEM, reference)},
            {"role": "user", "content": "".join(parts)}]
