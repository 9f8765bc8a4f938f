"""The Vicuna v1.1 template on an open (empty) last reply matches FastChat's rendering."""

from __future__ import annotations

from vicuna_ops.template import (ASSISTANT, IGNORE_INDEX, SYSTEM_PROMPT, USER, Turn, pieces,
                                 render_prompt, tokenize)

TURNS = [Turn(USER, "hi"), Turn(ASSISTANT, "hello"), Turn(USER, "ok"), Turn(ASSISTANT, "")]
# FastChat's vicuna_v1.1: sep " ", sep2 "</s>", a None/empty message renders as "ROLE:".
FASTCHAT = f"{SYSTEM_PROMPT} USER: hi ASSISTANT: hello</s>USER: ok ASSISTANT:"


def test_open_last_reply_renders_the_generation_prompt():
    text = "".join(piece.text + ("</s>" if piece.trainable else "")
                   for piece in pieces(SYSTEM_PROMPT, TURNS))
    assert text == FASTCHAT
    assert render_prompt(SYSTEM_PROMPT, TURNS) == FASTCHAT
    assert render_prompt(SYSTEM_PROMPT, TURNS[:3]) == FASTCHAT


def test_only_non_empty_replies_and_their_eos_are_labelled(tiny):
    sample = tokenize(tiny, SYSTEM_PROMPT, TURNS)
    labelled = [token for token, label in zip(sample.input_ids, sample.labels)
                if label != IGNORE_INDEX]
    assert labelled == tiny(" hello", add_special_tokens=False)["input_ids"] + \
        [tiny.eos_token_id]
    assert sample.input_ids[-1] != tiny.eos_token_id  # ends "ASSISTANT:", open
    assert tiny.decode(sample.input_ids[1:]) == FASTCHAT


def test_closed_conversation_is_unchanged(tiny):
    closed = [*TURNS[:3], Turn(ASSISTANT, "bye")]
    assert render_prompt(SYSTEM_PROMPT, closed[:3]) + " bye</s>" == "".join(
        piece.text + ("</s>" if piece.trainable else "")
        for piece in pieces(SYSTEM_PROMPT, closed))
