"""Tokenizers for the data-prep tests, built here from nothing (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vicuna_ops.tokenizer import build_tiny_tokenizer, load_tokenizer


@pytest.fixture(scope="session")
def tiny():
    """The builtin byte-level tokenizer: one token per UTF-8 byte, with <s> and </s>."""
    return build_tiny_tokenizer()


def build_word_tokenizer(folder: Path) -> Path:
    """A word-level tokenizer with a vocabulary unlike the builtin one, and no BOS token:
    whole lowercase words are single tokens, anything else is <unk>. Saved with
    save_pretrained, so it loads the way a user's tokenizer folder does."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ("a an the is of to and in what how why question answer hello world user "
             "assistant chat between curious artificial intelligence gives helpful detailed "
             "polite answers questions s").split()
    vocab = {token: index for index, token in
             enumerate(["<unk>", "</s>", "<pad>", *dict.fromkeys(words), ":", ".", "?", ",",
                        "'", "<", ">", "/"])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>",
                                        eos_token="</s>", pad_token="<pad>")
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def word_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_word_tokenizer(tmp_path_factory.mktemp("word-tokenizer"))


@pytest.fixture(scope="session")
def word(word_tokenizer_dir: Path):
    return load_tokenizer(str(word_tokenizer_dir))
