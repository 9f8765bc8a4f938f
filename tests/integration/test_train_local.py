"""``run_local`` (what ``vops train --local`` calls): a real child training process, the
ledger row, the summary, a rerun of a finished run, and a failure."""

from __future__ import annotations

import pytest

from vicuna_ops.errors import UserError, VopsError
from vicuna_ops.ledger import Ledger
from vicuna_ops.recipe import load_recipe
from vicuna_ops.storage import open_store
from vicuna_ops.train.local import run_local

pytestmark = pytest.mark.slow


def quick_tiny():
    tiny = load_recipe("tiny")
    train = tiny.train.model_copy(update={"global_batch_size": 4, "per_device_batch_size": 4,
                                          "max_steps": 8, "checkpoint_every_steps": 4})
    return tiny.model_copy(update={"train": train})


def test_local_run_trains_records_and_reruns_as_finished(tmp_path, capsys):
    bucket = str(tmp_path / "bucket")
    summary = run_local(quick_tiny(), bucket, "demo", data=None, max_steps=None, max_cost=None,
                        json_output=False)
    assert summary["status"] == "succeeded" and summary["steps"] == 8
    assert summary["final"] == f"file://{tmp_path}/bucket/demo/final/"
    assert summary["checkpoints"] == [f"file://{tmp_path}/bucket/demo/step_00000004/"]
    assert summary["tokens_per_s"] > 0 and summary["loss"] > 0
    [segment] = summary["segments"]
    assert (segment["status"], segment["first_step"], segment["steps"]) == ("finished", 0, 8)
    assert summary["data"]["uri"] == "builtin:tiny-chat" and summary["data"]["used"] == 512
    final = open_store(bucket).child("demo", "final")
    names = {info.key for info in final.list()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "MANIFEST.json"} <= names
    out = capsys.readouterr().out
    assert "succeeded demo: 8 steps" in out and "final weights: file://" in out
    assert f"next: vops serve --local --model {tmp_path}/bucket/demo/final --port 8000" in out
    assert not (tmp_path / "bucket" / "demo" / "LEASE").exists()  # released on a clean exit

    with Ledger() as ledger:
        row = ledger.get_run("demo")
        assert (row["kind"], row["status"], row["bucket"]) == ("train", "succeeded",
                                                               f"file://{tmp_path}/bucket")
        assert row["data"]["steps"] == 8 and row["data"]["recipe"] == "tiny"
        segments = ledger.segments("demo")
        assert len(segments) == 1 and segments[0]["data"]["status"] == "finished"

    again = run_local(quick_tiny(), bucket, "demo", data=None, max_steps=None, max_cost=None,
                      json_output=True)
    assert again["status"] == "succeeded" and again["steps"] == 8
    assert again["resumed_from"] is None and again["loss"] is None  # nothing was retrained
    with Ledger() as ledger:
        assert [e["kind"] for e in ledger.events("demo")] == ["train-resumed"]


def test_a_failed_training_raises_one_error_and_marks_the_ledger(tmp_path):
    unusable = tmp_path / "unusable.jsonl"
    unusable.write_text('{"conversations": [{"from": "gpt", "value": "no human turn"}]}\n')
    with pytest.raises(VopsError) as caught:
        run_local(quick_tiny(), str(tmp_path / "bucket"), "broken",
                  data=str(unusable), max_steps=2, max_cost=None, json_output=True)
    assert "training of 'broken' failed (exit 2)" in caught.value.message
    assert "no usable conversation" in caught.value.message  # the child's own one-line error
    assert "train.log" in caught.value.hint
    with Ledger() as ledger:
        assert ledger.get_run("broken")["status"] == "failed"


@pytest.mark.parametrize("data, expected", [
    ("missing.jsonl", "does not exist"),
    ("folder.jsonl", "is a folder"),
    ("builtin:nope", "unknown builtin data set"),
])
def test_bad_data_is_refused_before_anything_starts(tmp_path, data, expected):
    (tmp_path / "folder.jsonl").mkdir()
    bucket = tmp_path / "bucket"
    uri = data if data.startswith("builtin:") else str(tmp_path / data)
    with pytest.raises(UserError) as caught:
        run_local(quick_tiny(), str(bucket), "bad", data=uri, max_steps=2, max_cost=None,
                  json_output=True)
    assert expected in caught.value.message
    with Ledger() as ledger:
        assert not ledger.has_run("bad")
    assert not bucket.exists()


def test_missing_bucket_object_and_unwritable_bucket_are_refused_first(tmp_path, s3_bucket):
    with pytest.raises(UserError) as caught:
        run_local(quick_tiny(), s3_bucket, "bad", data=f"{s3_bucket}/data/none.jsonl",
                  max_steps=2, max_cost=None, json_output=True)
    assert f"training data {s3_bucket}/data/none.jsonl does not exist" in caught.value.message
    assert open_store(s3_bucket).list() == []
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("x")  # a bucket under a file cannot be written, even by root
    with pytest.raises(UserError) as caught:
        run_local(quick_tiny(), str(not_a_folder / "bucket"), "bad", data=None, max_steps=2,
                  max_cost=None, json_output=True)
    assert "is not a folder" in caught.value.message
    with Ledger() as ledger:
        assert not ledger.has_run("bad")


def test_same_name_in_another_bucket_is_refused(tmp_path):
    with Ledger() as ledger:
        ledger.add_run("taken", "train", "succeeded", bucket="s3://elsewhere/taken")
    with pytest.raises(VopsError) as caught:
        run_local(quick_tiny(), str(tmp_path / "bucket"), "taken", data=None, max_steps=None,
                  max_cost=None, json_output=True)
    assert "already exists" in caught.value.message


def test_a_corrupt_final_is_refused_by_serve_and_rebuilt_by_a_rerun(tmp_path):
    from vicuna_ops.serve.modelfiles import resolve_model

    bucket = tmp_path / "bucket"
    run_local(quick_tiny(), str(bucket), "demo", data=None, max_steps=None, max_cost=None,
              json_output=True)
    weights = bucket / "demo" / "final" / "model.safetensors"
    good = weights.read_bytes()
    corrupt = bytearray(good)
    for offset in (len(good) // 3, len(good) // 2, len(good) - 5):  # same size, 3 bytes off
        corrupt[offset] ^= 0xFF
    weights.write_bytes(bytes(corrupt))

    for spec in (str(bucket / "demo" / "final"), f"file://{bucket}/demo/final"):
        with pytest.raises(UserError) as caught:
            resolve_model(spec, tmp_path / "cache")
        assert "model.safetensors fails its checksum" in caught.value.message
        assert "refusing to serve it" in caught.value.one_line()
    assert not list((tmp_path / "cache").glob("*"))  # nothing half-verified left to serve

    again = run_local(quick_tiny(), str(bucket), "demo", data=None, max_steps=None,
                      max_cost=None, json_output=True)
    assert again["final_rebuilt"] == "model.safetensors fails its checksum"
    assert again["status"] == "succeeded" and again["steps"] == 8
    assert again["resumed_from"] == 4  # from the newest verified checkpoint, not from scratch
    assert weights.read_bytes() == good  # exact resume: the same bytes as the first final
    assert resolve_model(str(bucket / "demo" / "final"), tmp_path / "cache").is_dir()


def test_max_cost_on_a_local_run_is_said_once_not_ignored_silently(tmp_path, capsys):
    summary = run_local(quick_tiny(), str(tmp_path / "bucket"), "priced", data=None,
                        max_steps=2, max_cost=0.01, json_output=True)
    assert summary["status"] == "succeeded" and summary["steps"] == 2  # $0 never runs out
    err = capsys.readouterr().err
    assert err.count("local runs are not priced") == 1, err
    assert "--max-cost 0.01 has no effect" in err
