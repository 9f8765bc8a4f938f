"""Data prep counts tokens without transformers, exactly as the trainer's tokenizer does."""

from __future__ import annotations

import sys

import pytest

from vicuna_ops.data.tokens import resolve
from vicuna_ops.errors import UserError
from vicuna_ops.tokenizer import load_tokenizer

TEXTS = ["Hello world, what is the question?", " a </s> b <s> <unk>", "", "日本語 é \u200b",
         "USER: hi ASSISTANT:"]


@pytest.mark.parametrize("which", ["builtin", "word"])
def test_counts_and_special_ids_match_transformers(which, word_tokenizer_dir):
    spec_name = "builtin:tiny" if which == "builtin" else str(word_tokenizer_dir)
    spec = resolve(spec_name)
    ours, theirs = spec.load(), load_tokenizer(spec_name)
    assert ours(TEXTS)["input_ids"] == theirs(TEXTS, add_special_tokens=False)["input_ids"]
    assert (ours.bos_token_id, ours.eos_token_id) == (theirs.bos_token_id, theirs.eos_token_id)
    assert set(theirs.all_special_tokens) <= set(ours.all_special_tokens)


def test_resolving_a_plain_folder_does_not_import_transformers(word_tokenizer_dir):
    import subprocess

    code = ("import sys; from vicuna_ops.data.tokens import resolve; "
            f"resolve({str(word_tokenizer_dir)!r}).load(); "
            "print('transformers' in sys.modules, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False False"


def test_a_broken_tokenizer_folder_is_a_user_error(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "TokenizersBackend"}')
    (tmp_path / "tokenizer.json").write_text('{"version": "1.0", "model": 3}')
    with pytest.raises(UserError, match="cannot load tokenizer"):
        resolve(str(tmp_path))
