"""Training data: conversations from a JSON/JSONL object (any storage URI) or a builtin set,
tokenized with the Vicuna template, in a seeded order that resumes at an exact position.

Input records may be ShareGPT (``{"conversations": [{"from", "value"}]}``), OpenAI-style
(``{"messages": [{"role", "content"}]}``) or a bare list of messages. A record that is not a
valid conversation is skipped and counted by reason, never a crash; an over-long one is
truncated to ``max_length`` and counted. Only when nothing usable is left is it a DataError.

Order: epoch ``e`` visits the samples in ``random.Random(f"{seed}:{e}")``'s shuffle of
0..n-1, which depends on nothing but the seed and the epoch. So the position in the data is
just "samples consumed", and a resumed run skips exactly that many (the HF Trainer does the
skipping from its global step; ``DataPosition`` records it in the checkpoint as a check).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from vicuna_ops import template
from vicuna_ops.errors import DataError, UserError
from vicuna_ops.train.builtin_data import BUILTIN_TINY_CHAT, tiny_chat


@dataclass(frozen=True)
class DataStats:
    records: int  # records read
    used: int  # samples in the dataset
    truncated: int  # samples cut to max_length
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    tokens: int = 0  # tokens in the dataset (after truncation)
    trainable_tokens: int = 0  # tokens carrying the loss

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        text = f"{self.used} conversations, {self.tokens} tokens ({self.trainable_tokens} trained)"
        if self.truncated:
            text += f", {self.truncated} truncated"
        if self.skipped:
            reasons = ", ".join(f"{count} {reason}" for reason, count in
                                sorted(self.skipped.items(), key=lambda item: -item[1]))
            text += f", {self.skipped_total} skipped ({reasons})"
        return text


@dataclass(frozen=True)
class DataPosition:
    """Where a run is in its data after ``global_step`` optimizer steps."""

    epoch: int
    samples_in_epoch: int
    samples_total: int

    @staticmethod
    def at(global_step: int, dataset_size: int, global_batch: int) -> DataPosition:
        # Each epoch is ceil(n / batch) steps (the last batch may be short), as the Trainer does.
        steps_per_epoch = max(1, -(-dataset_size // global_batch))
        epoch, step_in_epoch = divmod(global_step, steps_per_epoch)
        in_epoch = min(step_in_epoch * global_batch, dataset_size)
        return DataPosition(epoch, in_epoch, epoch * dataset_size + in_epoch)


def read_records(uri: str) -> tuple[list[Any], Counter[str]]:
    """Raw records of a JSON array or JSONL object at ``uri``, and counts of unreadable lines."""
    if uri == BUILTIN_TINY_CHAT:
        return tiny_chat(), Counter()
    if uri.startswith("builtin:"):
        raise UserError(f"unknown builtin data set {uri!r}", hint=f"use {BUILTIN_TINY_CHAT}")
    raw = _read_object(uri)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{uri} is not UTF-8 text", hint="give a JSON or JSONL file") from exc
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise DataError(f"{uri} is not valid JSON: {exc}",
                            hint="fix the file, or write one conversation per line (JSONL) so "
                                 "a bad record is skipped instead") from exc
        return list(records), Counter()
    records, bad = [], Counter()
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            bad["invalid JSON"] += 1
    return records, bad


def _read_object(uri: str) -> bytes:
    from vicuna_ops.storage import StorageURI, open_store, parse_uri

    parsed = parse_uri(uri)
    parent, _, name = parsed.prefix.rpartition("/")
    if not name:
        raise UserError(f"data URI {uri!r} names a folder", hint="point at a .json/.jsonl file")
    if parsed.scheme == "file":
        parent = parent or "/"
    return open_store(StorageURI(parsed.scheme, parsed.bucket, parent)).get_bytes(name)


def _messages(record: Any) -> Any:
    if isinstance(record, dict):
        for key in ("conversations", "messages", "conversation"):
            if key in record:
                return record[key]
        raise template.InvalidConversation("record has no 'conversations' or 'messages'")
    return record


_TURN_PREFIX = re.compile(r"^turn \d+: ")


def tokenize_records(records: Sequence[Any], tokenizer: Any, max_length: int,
                     already_skipped: Counter[str] | None = None
                     ) -> tuple[list[template.TokenizedConversation], DataStats]:
    samples: list[template.TokenizedConversation] = []
    skipped: Counter[str] = Counter(already_skipped or {})
    truncated = tokens = trainable = 0
    for record in records:
        try:
            system, turns = template.parse_turns(_messages(record))
        except template.InvalidConversation as exc:
            skipped[_TURN_PREFIX.sub("", str(exc))] += 1
            continue
        sample = template.tokenize(tokenizer, system, turns, max_length)
        if sample.trainable_tokens == 0:
            skipped["no assistant tokens within max_length"] += 1
            continue
        samples.append(sample)
        truncated += sample.truncated
        tokens += len(sample.input_ids)
        trainable += sample.trainable_tokens
    total = len(records) + sum((already_skipped or Counter()).values())
    return samples, DataStats(total, len(samples), truncated, dict(skipped), tokens, trainable)


def load_conversations(uri: str, tokenizer: Any, max_length: int
                       ) -> tuple[ConversationDataset, DataStats]:
    """The dataset at ``uri``; DataError when no record is usable."""
    records, bad = read_records(uri)
    samples, stats = tokenize_records(records, tokenizer, max_length, bad)
    if not samples:
        raise DataError(f"no usable conversation in {uri} ({stats.summary()})",
                        hint="records need alternating human/gpt turns, starting with human")
    return ConversationDataset(samples), stats


class ConversationDataset:
    """Map-style dataset of tokenized conversations (a torch Dataset by duck typing)."""

    def __init__(self, samples: Sequence[template.TokenizedConversation]) -> None:
        self._samples = list(samples)

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        sample = self._samples[index]
        return {"input_ids": sample.input_ids, "labels": sample.labels}

    def fingerprint(self) -> str:
        """SHA-256 over every sample's ids and labels: a resume checks it has the same data."""
        digest = hashlib.sha256()
        for sample in self._samples:
            digest.update(len(sample.input_ids).to_bytes(4, "little"))
            digest.update(array("q", sample.input_ids).tobytes())
            digest.update(array("q", sample.labels).tobytes())
        return digest.hexdigest()


def epoch_order(size: int, seed: int, epoch: int) -> list[int]:
    """The sample order of one epoch: a pure function of (size, seed, epoch)."""
    order = list(range(size))
    random.Random(f"vops:{seed}:{epoch}").shuffle(order)
    return order


class EpochShuffleSampler:
    """A torch Sampler over ``epoch_order``; the Trainer calls ``set_epoch`` each epoch.

    It draws nothing from the global RNGs, so restoring them on resume cannot change the order.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(epoch_order(self.size, self.seed, self.epoch))

    def __len__(self) -> int:
        return self.size


class PadCollator:
    """Right-pads a batch to its longest sample (optionally to a multiple, for tensor cores)."""

    def __init__(self, pad_id: int, multiple_of: int = 1) -> None:
        self.pad_id, self.multiple_of = pad_id, multiple_of

    def __call__(self, batch: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        from vicuna_ops import adaptors

        torch = adaptors.torch()
        longest = max(len(item["input_ids"]) for item in batch)
        longest = -(-longest // self.multiple_of) * self.multiple_of
        ids = torch.full((len(batch), longest), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), longest), template.IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for row, item in enumerate(batch):
            n = len(item["input_ids"])
            ids[row, :n] = torch.tensor(item["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.tensor(item["labels"], dtype=torch.long)
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
