"""Recipe -> model and Trainer settings; the in-memory snapshot against the Trainer's save."""

from __future__ import annotations

import json

import pytest

from vicuna_ops.errors import ConfigError, UserError
from vicuna_ops.recipe import load_recipe
from vicuna_ops.tokenizer import build_tiny_tokenizer

torch = pytest.importorskip("torch")

from vicuna_ops.train import snapshot  # noqa: E402
from vicuna_ops.train.builtin_data import tiny_chat  # noqa: E402
from vicuna_ops.train.data import ConversationDataset, PadCollator, tokenize_records  # noqa: E402
from vicuna_ops.train.model import build_model, resolve_attn_implementation  # noqa: E402
from vicuna_ops.train.args import World  # noqa: E402
from vicuna_ops.train.trainer import (  # noqa: E402
    VopsTrainer,
    accumulation_steps,
    fsdp_settings,
    training_arguments,
    use_bf16,
)


def test_vicuna_recipe_settings_on_eight_gpus():
    recipe = load_recipe("vicuna-7b")
    assert accumulation_steps(recipe, 8) == 8  # 128 = 2 per device x 8 GPUs x 8
    enabled, config = fsdp_settings(recipe, 8)
    assert enabled and config["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert config["state_dict_type"] == "FULL_STATE_DICT"  # rank 0 holds whole checkpoints
    assert config["reshard_after_forward"] and config["activation_checkpointing"]
    assert fsdp_settings(recipe, 1) == (False, None)  # one process: plain training
    assert not use_bf16(recipe, cuda=False)  # no bf16 on a CPU


def test_batch_that_does_not_divide_is_a_config_error():
    recipe = load_recipe("vicuna-7b")
    with pytest.raises(ConfigError) as caught:
        accumulation_steps(recipe, 3)
    assert "global_batch_size 128" in caught.value.message


def test_attention_choice():
    assert resolve_attn_implementation("auto", cuda=False) == "sdpa"
    assert resolve_attn_implementation("eager", cuda=False) == "eager"
    with pytest.raises(UserError):
        resolve_attn_implementation("flash_attention_2", cuda=False)


def test_world_comes_from_torchrun_env():
    assert World.from_env({}) == World(0, 0, 1)
    world = World.from_env({"RANK": "9", "LOCAL_RANK": "1", "WORLD_SIZE": "16"})
    assert world == World(9, 1, 16) and not world.is_main


@pytest.fixture(scope="module")
def tiny_trainer(tmp_path_factory):
    recipe = load_recipe("tiny")
    tokenizer = build_tiny_tokenizer()
    samples, _ = tokenize_records(tiny_chat(32), tokenizer, 256)
    args = training_arguments(recipe, output_dir=tmp_path_factory.mktemp("hf"), max_steps=2,
                              world=World(0, 0, 1), cuda=False)
    model = build_model(recipe, tokenizer, attn_implementation="sdpa")
    trainer = VopsTrainer(model=model, args=args, train_dataset=ConversationDataset(samples),
                          data_collator=PadCollator(tokenizer.pad_token_id),
                          sampler_seed=1, checkpointer=None)
    trainer.train()
    return trainer, recipe, tokenizer


def test_tiny_model_is_the_same_on_every_build():
    recipe = load_recipe("tiny")
    tokenizer = build_tiny_tokenizer()
    before = torch.random.get_rng_state()
    one = build_model(recipe, tokenizer, attn_implementation="sdpa")
    two = build_model(recipe, tokenizer, attn_implementation="sdpa")
    assert torch.equal(before, torch.random.get_rng_state())  # the global RNG is untouched
    for (name, a), (_, b) in zip(one.state_dict().items(), two.state_dict().items()):
        assert torch.equal(a, b), name
    assert one.config.vocab_size == len(tokenizer) == 260


def test_snapshot_writes_what_the_trainers_own_save_writes(tiny_trainer, tmp_path):
    trainer, _recipe, _tok = tiny_trainer
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    snap = snapshot.capture(trainer)
    trainer.args.output_dir = str(theirs)
    trainer._save_checkpoint(trainer.model, None)  # checkpointer=None: the plain HF save
    snapshot.write(snap, ours)
    hf = theirs / "checkpoint-2"

    from safetensors.torch import load_file

    a, b = load_file(ours / "model.safetensors"), load_file(hf / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    opt_a = torch.load(ours / "optimizer.pt", weights_only=True)
    opt_b = torch.load(hf / "optimizer.pt", weights_only=True)
    assert opt_a["param_groups"] == opt_b["param_groups"]
    for index, state in opt_a["state"].items():
        for key, value in state.items():
            assert torch.equal(value, opt_b["state"][index][key]), (index, key)
    assert torch.load(ours / "scheduler.pt") == torch.load(hf / "scheduler.pt")
    rng_a = torch.load(ours / "rng_state.pth", weights_only=False)
    rng_b = torch.load(hf / "rng_state.pth", weights_only=False)
    assert torch.equal(rng_a["cpu"], rng_b["cpu"]) and rng_a["python"] == rng_b["python"]
    state_a = json.loads((ours / "trainer_state.json").read_text())
    state_b = json.loads((hf / "trainer_state.json").read_text())
    for key in ("global_step", "epoch", "max_steps", "num_input_tokens_seen", "log_history"):
        assert state_a[key] == state_b[key], key
    assert {p.name for p in ours.iterdir()} <= {p.name for p in hf.iterdir()}


def test_snapshot_is_a_private_copy(tiny_trainer):
    trainer, _recipe, _tok = tiny_trainer
    snap = snapshot.capture(trainer)
    name, param = next(iter(trainer.model.named_parameters()))
    with torch.no_grad():
        param.add_(1.0)
    try:
        assert not torch.equal(snap.model_state[name], param.detach())
    finally:
        with torch.no_grad():
            param.sub_(1.0)
    assert snap.nbytes > 3 * 4 * sum(p.numel() for p in trainer.model.parameters()) * 0.99
