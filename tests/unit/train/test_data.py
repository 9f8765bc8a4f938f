"""Conversations -> tokenized samples, the seeded epoch order and the collator."""

from __future__ import annotations

import json

import pytest

from vicuna_ops.errors import DataError
from vicuna_ops.template import IGNORE_INDEX
from vicuna_ops.tokenizer import build_tiny_tokenizer
from vicuna_ops.train.builtin_data import tiny_chat
from vicuna_ops.train.data import (
    ConversationDataset,
    DataPosition,
    EpochShuffleSampler,
    PadCollator,
    epoch_order,
    load_conversations,
    tokenize_records,
)

GOOD = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}
OPENAI = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant",
                                                              "content": "4"}]}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def test_builtin_set_is_deterministic_and_valid(tokenizer):
    first, second = tiny_chat(64), tiny_chat(64)
    assert first == second and first != tiny_chat(64, seed=7)
    samples, stats = tokenize_records(first, tokenizer, 512)
    assert stats.used == 64 and not stats.skipped and stats.truncated == 0
    assert all(s.trainable_tokens > 0 for s in samples)
    # multi-turn: some conversations carry two assistant replies, each closed by </s>
    eos = tokenizer.eos_token_id
    assert max(sum(1 for t in s.labels if t == eos) for s in samples) == 2


def test_malformed_records_are_skipped_with_counts(tmp_path, tokenizer):
    lines = [json.dumps(GOOD), "{not json", json.dumps(OPENAI), json.dumps({"id": "x"}),
             json.dumps({"conversations": [{"from": "gpt", "value": "first"}]}),
             json.dumps([{"from": "human", "value": "bare list"}, {"from": "gpt", "value": "ok"}]),
             json.dumps({"conversations": [{"from": "human", "value": 3}]}), ""]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines))
    dataset, stats = load_conversations(str(path), tokenizer, 256)
    assert len(dataset) == stats.used == 3
    assert stats.records == 7 and stats.skipped_total == 4
    assert stats.skipped["invalid JSON"] == 1
    assert stats.skipped["record has no 'conversations' or 'messages'"] == 1
    assert "expected a USER turn, got 'gpt'" in stats.skipped
    assert "4 skipped" in stats.summary()


def test_json_array_and_truncation_are_counted(tmp_path, tokenizer):
    long = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a" * 400}]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps([GOOD, long]))
    dataset, stats = load_conversations(f"file://{path}", tokenizer, 200)
    assert stats.truncated == 1 and len(dataset[1]["input_ids"]) == 200


def test_a_reply_cut_off_entirely_is_skipped_and_nothing_usable_is_a_data_error(tmp_path,
                                                                               tokenizer):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    with pytest.raises(DataError) as caught:
        load_conversations(str(path), tokenizer, 20)  # the system prompt alone is longer
    assert "no assistant tokens within max_length" in caught.value.message


def test_epoch_order_is_a_pure_permutation_per_epoch():
    assert epoch_order(50, 42, 0) == epoch_order(50, 42, 0)
    assert sorted(epoch_order(50, 42, 0)) == list(range(50))
    assert epoch_order(50, 42, 0) != epoch_order(50, 42, 1)
    assert epoch_order(50, 42, 0) != epoch_order(50, 43, 0)
    sampler = EpochShuffleSampler(50, 42)
    sampler.set_epoch(1)
    assert list(sampler) == epoch_order(50, 42, 1) and len(sampler) == 50


def test_data_position_counts_samples_with_a_short_last_batch():
    # 10 samples, batch 4: epochs are 3 steps (4 + 4 + 2)
    assert DataPosition.at(0, 10, 4) == DataPosition(0, 0, 0)
    assert DataPosition.at(2, 10, 4) == DataPosition(0, 8, 8)
    assert DataPosition.at(3, 10, 4) == DataPosition(1, 0, 10)
    assert DataPosition.at(4, 10, 4) == DataPosition(1, 4, 14)


def test_collator_pads_right_and_masks(tokenizer):
    samples, _ = tokenize_records([GOOD, OPENAI], tokenizer, 512)
    dataset = ConversationDataset(samples)
    batch = PadCollator(tokenizer.pad_token_id, multiple_of=8)([dataset[0], dataset[1]])
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and width >= max(len(s.input_ids) for s in samples)
    short = min(range(2), key=lambda i: len(samples[i].input_ids))
    n = len(samples[short].input_ids)
    assert batch["attention_mask"][short, :n].all() and not batch["attention_mask"][short, n:].any()
    assert (batch["input_ids"][short, n:] == tokenizer.pad_token_id).all()
    assert (batch["labels"][short, n:] == IGNORE_INDEX).all()


def test_fingerprint_changes_with_the_data(tokenizer):
    a, _ = tokenize_records([GOOD, OPENAI], tokenizer, 512)
    b, _ = tokenize_records([OPENAI, GOOD], tokenizer, 512)
    assert ConversationDataset(a).fingerprint() == ConversationDataset(list(a)).fingerprint()
    assert ConversationDataset(a).fingerprint() != ConversationDataset(b).fingerprint()
