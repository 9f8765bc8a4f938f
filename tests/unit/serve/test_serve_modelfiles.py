"""``--model``: local folders are checked; bucket URIs are downloaded once, completely."""

from __future__ import annotations

import pytest

from vicuna_ops.errors import UserError
from vicuna_ops.serve import modelfiles


def _model(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"\0" * 1000)
    (folder / "tokenizer.json").write_text("{}")


def test_a_local_folder_is_used_in_place(tmp_path):
    _model(tmp_path / "final")
    assert modelfiles.resolve_model(str(tmp_path / "final"), tmp_path / "cache") == tmp_path / "final"


@pytest.mark.parametrize("make, needle", [(lambda p: None, "does not exist"),
                                          (lambda p: p.mkdir(), "no config.json")])
def test_a_folder_that_is_not_a_model_is_a_user_error(tmp_path, make, needle):
    make(tmp_path / "x")
    with pytest.raises(UserError, match=needle):
        modelfiles.resolve_model(str(tmp_path / "x"), tmp_path / "cache")


def test_a_bucket_model_is_downloaded_once(tmp_path):
    _model(tmp_path / "bucket" / "run" / "final")
    uri = (tmp_path / "bucket" / "run" / "final").as_uri()
    seen = []
    local = modelfiles.resolve_model(uri, tmp_path / "cache", progress=seen.append)
    assert (local / "model.safetensors").read_bytes() == b"\0" * 1000
    assert len(seen) == 3
    again = modelfiles.resolve_model(uri, tmp_path / "cache", progress=seen.append)
    assert again == local and len(seen) == 3  # complete marker matches: no download
    (tmp_path / "bucket" / "run" / "final" / "model.safetensors").write_bytes(b"\1" * 2000)
    modelfiles.resolve_model(uri, tmp_path / "cache", progress=seen.append)
    assert (local / "model.safetensors").read_bytes() == b"\1" * 2000  # changed: fetched again


def test_an_empty_bucket_prefix_is_a_user_error(tmp_path):
    (tmp_path / "bucket").mkdir()
    with pytest.raises(UserError, match="no model files"):
        modelfiles.resolve_model((tmp_path / "bucket").as_uri(), tmp_path / "cache")


@pytest.mark.parametrize("spec, name", [("s3://b/runs/r1/final", "r1"), ("/m/vicuna-7b", "vicuna-7b"),
                                        ("gs://b/x/final/", "x"), ("final", "final")])
def test_default_model_names(spec, name):
    assert modelfiles.default_model_name(spec) == name
