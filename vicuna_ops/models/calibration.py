"""The conversations a quantizer calibrates on and is judged by, and perplexity over them.

Calibration reads the run's own ``train.jsonl`` (any storage URI, or the folder/prefix that
``vops data prepare`` wrote it to) through the training code, so the samples are the Vicuna
v1.1 template exactly as the model was trained on them. Perplexity is measured on the
``eval.jsonl`` beside it, over the *assistant* tokens only (each reply and its ``</s>``: the
tokens training puts the loss on), so the number is the training objective's, not the prompt
text's.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from vicuna_ops.errors import ObjectNotFound
from vicuna_ops.template import IGNORE_INDEX

TRAIN, EVAL = "train.jsonl", "eval.jsonl"
SEED = 0


@dataclass(frozen=True)
class DataFiles:
    train: str  # the calibration set
    eval: str | None  # its held-out sibling, None when there is none


def data_files(calibration: str) -> DataFiles:
    """``--calibration`` as a file URI plus the ``eval.jsonl`` beside it, if any.

    A URI whose last part is not a JSON(L) file is taken as the folder ``vops data prepare``
    wrote (``train.jsonl`` inside it); ``builtin:`` sets have no eval split.
    """
    if calibration.startswith("builtin:"):
        return DataFiles(calibration, None)
    head, _, name = calibration.rstrip("/").rpartition("/")
    if ".json" not in name:
        head, name = calibration.rstrip("/"), TRAIN
    train = f"{head}/{name}" if head else name
    sibling = f"{head}/{EVAL}" if head else EVAL
    return DataFiles(train, sibling if name != EVAL and _exists(sibling) else None)


def _exists(uri: str) -> bool:
    from vicuna_ops.storage import StorageURI, open_store, parse_uri

    parsed = parse_uri(uri)
    parent, _, name = parsed.prefix.rpartition("/")
    if parsed.scheme == "file":
        parent = parent or "/"
    store = open_store(StorageURI(parsed.scheme, parsed.bucket, parent))
    try:
        return store.exists(name)
    except ObjectNotFound:
        return False


def pick(samples: Any, count: int) -> list[dict[str, list[int]]]:
    """``count`` samples of a ConversationDataset in a seeded order (the same every run)."""
    order = list(range(len(samples)))
    random.Random(SEED).shuffle(order)
    return [samples[index] for index in order[:count]]


@dataclass(frozen=True)
class Perplexity:
    value: float
    tokens: int  # assistant tokens scored
    conversations: int


def perplexity(model: Any, samples: list[dict[str, list[int]]]) -> Perplexity:
    """exp(mean negative log-likelihood) of the assistant tokens, one conversation at a time
    (no padding, so nothing about batching can change the number)."""
    import torch

    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad():
        for sample in samples:
            ids = torch.tensor([sample["input_ids"]], device=device)
            labels = torch.tensor(sample["labels"][1:], device=device)
            logits = model(input_ids=ids).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX,
                                                    reduction="sum")
            total += float(nll)
            count += int((labels != IGNORE_INDEX).sum())
    value = math.exp(total / count) if count else float("nan")
    return Perplexity(value, count, len(samples))
