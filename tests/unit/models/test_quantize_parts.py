"""The pure parts of ``vops quantize``: flags, the group size, where eval.jsonl is found, the
seeded calibration pick and perplexity over the assistant tokens only."""

from __future__ import annotations

import math

import pytest
import torch

from vicuna_ops.errors import UserError
from vicuna_ops.models.calibration import data_files, perplexity, pick
from vicuna_ops.models.compressor import group_size
from vicuna_ops.models.quantize import check_request
from vicuna_ops.template import IGNORE_INDEX


@pytest.mark.parametrize(("method", "bits", "needle"), [("gptq4", 4, "unknown --method"),
                                                        ("awq", 8, "--bits 8")])
def test_bad_flags_are_user_errors(method, bits, needle):
    with pytest.raises(UserError, match=needle):
        check_request(method, bits)
    check_request("gptq", 4)
    check_request("awq", 4)


def _mlp(width: int, inner: int, vocab: int = 260) -> torch.nn.Module:
    model = torch.nn.Module()
    model.up_proj = torch.nn.Linear(width, inner)
    model.down_proj = torch.nn.Linear(inner, width)
    model.lm_head = torch.nn.Linear(width + 3, vocab)  # never quantized: its width is ignored
    return model


@pytest.mark.parametrize(("width", "inner", "size"), [(4096, 11008, 128), (64, 128, 64),
                                                      (96, 160, 32)])
def test_group_size_is_the_largest_that_divides_every_layer(width, inner, size):
    assert group_size(_mlp(width, inner)) == size


def test_a_model_no_group_size_fits_is_a_user_error():
    with pytest.raises(UserError, match="no 4-bit group size"):
        group_size(_mlp(72, 144))


def test_eval_jsonl_is_found_beside_the_calibration_data(tmp_path):
    (tmp_path / "train.jsonl").write_text("{}\n")
    assert data_files(str(tmp_path / "train.jsonl")).eval is None
    (tmp_path / "eval.jsonl").write_text("{}\n")
    for given in (str(tmp_path), f"{tmp_path}/", str(tmp_path / "train.jsonl")):
        files = data_files(given)
        assert (files.train, files.eval) == (f"{tmp_path}/train.jsonl", f"{tmp_path}/eval.jsonl")
    (tmp_path / "eval.jsonl").unlink()
    assert data_files(str(tmp_path / "train.jsonl")).eval is None
    assert data_files("builtin:tiny-chat").eval is None
    other = data_files(f"file://{tmp_path}/mine.jsonl")
    assert other.train == f"file://{tmp_path}/mine.jsonl" and other.eval is None


def test_the_calibration_pick_is_seeded_and_bounded():
    samples = [{"input_ids": [i]} for i in range(50)]
    first, again = pick(samples, 10), pick(samples, 10)
    assert first == again and len(first) == 10 and first != samples[:10]
    assert sorted(s["input_ids"][0] for s in pick(samples, 99)) == list(range(50))


class Uniform(torch.nn.Module):
    """Equal logits everywhere: every token has probability 1/vocab."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        logits = torch.zeros(*input_ids.shape, self.vocab) + self.anchor

        class Out:
            pass

        out = Out()
        out.logits = logits
        return out


def test_perplexity_scores_only_the_assistant_tokens():
    sample = {"input_ids": [1, 5, 6, 7, 8, 2],
              "labels": [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 7, 8, 2]}
    result = perplexity(Uniform(260), [sample, sample])
    assert result.value == pytest.approx(260.0) and result.tokens == 6
    assert result.conversations == 2
    assert math.isnan(perplexity(Uniform(4), []).value)
