"""Tokenizers: the project's own tiny byte-level tokenizer, or any HF tokenizer by path/name.

``builtin:tiny`` is built in memory from nothing (256 byte tokens plus <unk> <s> </s> <pad>),
so tests and the local demo never download a tokenizer, and the result is identical on every
machine.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from vicuna_ops.errors import UserError

BUILTIN_TINY = "builtin:tiny"
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")


def load_tokenizer(spec: str) -> Any:
    """``builtin:tiny``, a local HF tokenizer folder, or a hub id (only if cached/online)."""
    if spec == BUILTIN_TINY:
        return build_tiny_tokenizer()
    if spec.startswith("builtin:"):
        raise UserError(f"unknown builtin tokenizer {spec!r}", hint=f"use {BUILTIN_TINY}")
    from vicuna_ops import adaptors

    transformers = adaptors.transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(spec)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load tokenizer {spec!r}: {str(exc).splitlines()[0]}",
                        hint="pass a local folder with tokenizer files, or builtin:tiny") from exc
    if tokenizer.eos_token_id is None:
        raise UserError(f"tokenizer {spec!r} has no end-of-sequence token",
                        hint="the Vicuna template ends each reply with </s>")
    return tokenizer


def tiny_core() -> Any:
    """The builtin tokenizer's Rust core (``tokenizers`` only: data prep counts tokens with
    it without importing transformers)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    byte_tokens = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *byte_tokens])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return core


@lru_cache(maxsize=1)
def build_tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer with no merges: every UTF-8 byte is one token."""
    from vicuna_ops import adaptors

    transformers = adaptors.transformers()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tiny_core(), unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        pad_token="<pad>", model_max_length=1 << 20,
    )
