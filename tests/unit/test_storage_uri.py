"""parse_uri, StorageURI and key/prefix checks: pure, no I/O."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vicuna_ops.errors import UserError
from vicuna_ops.storage import StorageURI, check_key, check_prefix, join_keys, parse_uri


@pytest.mark.parametrize(
    ("uri", "scheme", "bucket", "prefix", "canonical"),
    [
        ("s3://bucket", "s3", "bucket", "", "s3://bucket"),
        ("s3://bucket/", "s3", "bucket", "", "s3://bucket"),
        ("s3://bucket/runs/run-1/", "s3", "bucket", "runs/run-1", "s3://bucket/runs/run-1"),
        ("s3://bucket//runs///run-1", "s3", "bucket", "runs/run-1", "s3://bucket/runs/run-1"),
        ("S3://my.bucket-1/a", "s3", "my.bucket-1", "a", "s3://my.bucket-1/a"),
        ("gs://bucket_with_underscore/x", "gs", "bucket_with_underscore", "x",
         "gs://bucket_with_underscore/x"),
        ("gs://b12/a/b/c", "gs", "b12", "a/b/c", "gs://b12/a/b/c"),
        ("  s3://bucket/x  ", "s3", "bucket", "x", "s3://bucket/x"),
        ("file:///abs/path", "file", None, "/abs/path", "file:///abs/path"),
        ("file:///abs/path/", "file", None, "/abs/path", "file:///abs/path"),
        ("file://localhost/abs", "file", None, "/abs", "file:///abs"),
        ("file:///a/../b", "file", None, "/b", "file:///b"),
        ("file:////double", "file", None, "/double", "file:///double"),
        ("file:///", "file", None, "/", "file:///"),
        ("/abs/dir/", "file", None, "/abs/dir", "file:///abs/dir"),
        ("//abs//dir", "file", None, "/abs/dir", "file:///abs/dir"),
    ],
)
def test_parse_good(uri: str, scheme: str, bucket: str | None, prefix: str,
                    canonical: str) -> None:
    parsed = parse_uri(uri)
    assert (parsed.scheme, parsed.bucket, parsed.prefix) == (scheme, bucket, prefix)
    assert parsed.uri == canonical == str(parsed)
    assert parse_uri(parsed.uri) == parsed  # canonical form round-trips


def test_relative_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_uri("data/out").prefix == str(tmp_path / "data" / "out")
    assert parse_uri("./data/../x/").prefix == str(tmp_path / "x")
    assert parse_uri("weird:name").prefix == str(tmp_path / "weird:name")  # not a scheme


def test_home_is_expanded(isolated_home: Path) -> None:
    assert parse_uri("~/ckpt").prefix == str(isolated_home / "ckpt")
    assert parse_uri("~").uri == f"file://{isolated_home}"


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("", ["empty"]),
        ("   ", ["empty"]),
        ("s3://", ["no bucket", "s3://BUCKET"]),
        ("s3:///x", ["no bucket"]),
        ("gs:///x", ["no bucket", "gs://BUCKET"]),
        ("ftp://x", ["unsupported", "ftp://"]),
        ("gcs://bucket", ["unsupported", "did you mean gs://"]),
        ("s3a://bucket", ["did you mean s3://"]),
        ("s3://Bad_Bucket!", ["invalid bucket name", "'Bad_Bucket!'"]),
        ("s3://UPPER", ["invalid bucket name"]),
        ("gs://UPPER/x", ["invalid bucket name"]),
        ("s3://ab", ["invalid bucket name"]),  # too short
        ("s3://" + "a" * 64, ["invalid bucket name"]),  # too long
        ("s3://-bucket", ["invalid bucket name"]),
        ("s3://bucket-", ["invalid bucket name"]),
        ("s3://under_score", ["invalid bucket name"]),  # fine on GCS, not on S3
        ("s3://192.168.1.1", ["invalid bucket name"]),
        ("s3://a..b", ["invalid bucket name"]),
        ("s3://bucket/a/../b", ["'..'"]),
        ("gs://bucket/./b", ["'.'"]),
        ("s3:bucket", ["missing '//'"]),
        ("gs:/bucket/x", ["missing '//'"]),
        ("file://host/x", ["not local", "file:///abs/path"]),
        ("file://", ["no path"]),
        ("s3://bucket/x\ny", ["control characters"]),
    ],
)
def test_parse_bad(uri: str, words: list[str]) -> None:
    with pytest.raises(UserError) as info:
        parse_uri(uri)
    error = info.value
    line = error.one_line()
    assert "\n" not in line
    assert error.hint, "every bad URI comes with a hint"
    for word in words:
        assert word in line
    if uri.strip():
        assert repr(uri) in error.message or repr(uri.strip()) in error.message or \
            uri.strip() in error.message


def test_not_a_string() -> None:
    with pytest.raises(UserError):
        parse_uri(None)  # type: ignore[arg-type]


def test_child_and_join() -> None:
    root = parse_uri("s3://bucket")
    assert root.child("runs", "r1/step_1").uri == "s3://bucket/runs/r1/step_1"
    assert root.child().uri == "s3://bucket"
    assert root.child("runs/").child("/x/".strip("/")).prefix == "runs/x"
    assert parse_uri("file:///").child("a", "b").uri == "file:///a/b"
    assert parse_uri("/tmp/x").child("y").prefix == "/tmp/x/y"
    assert join_keys("a/", "", "b/c") == "a/b/c"
    with pytest.raises(UserError):
        root.child("../escape")
    assert StorageURI("gs", "b12", "").uri == "gs://b12"
    assert parse_uri("file:///x").is_local and not parse_uri("gs://b12").is_local


@pytest.mark.parametrize("key", ["a", "a/b", "step_00000040/model.safetensors", "a b/c%20d",
                                 ".hidden", "a..b", "..a"])
def test_good_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "/abs", "a/", "a//b", ".", "..", "../x", "a/../../x", "a/./b", "a/..", "x\x00y"],
)
def test_bad_keys(key: str) -> None:
    with pytest.raises(UserError) as info:
        check_key(key)
    assert info.value.hint


def test_prefixes() -> None:
    assert check_prefix("") == ""
    assert check_prefix("a/b/") == "a/b"
    assert check_prefix("a") == "a"
    for bad in ("/a", "../a", "a/../b", "a//b", ".."):
        with pytest.raises(UserError):
            check_prefix(bad)


def test_plain_path_equals_file_uri(tmp_path: Path) -> None:
    assert parse_uri(str(tmp_path)) == parse_uri(f"file://{tmp_path}")
    assert os.path.isabs(parse_uri(str(tmp_path)).prefix)
