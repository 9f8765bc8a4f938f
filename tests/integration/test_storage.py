"""The Store contract on every backend: a local folder, moto's S3 server, gcp-storage-emulator."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fixtures.network import closed_port
from fixtures.services import gcs_admin_client, s3_admin_client

from vicuna_ops.errors import ObjectNotFound, StorageError
from vicuna_ops.storage import ObjectInfo, Store, open_store, parse_uri
from vicuna_ops.storage.base import SHA256_META, TEMP_MARKER, retry_transient

MB = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(8 * MB):
            digest.update(chunk)
    return digest.hexdigest()


def write_random_file(path: Path, size: int, seed: int = 0) -> str:
    """``size`` pseudo-random bytes written in 8 MB chunks; returns their SHA-256."""
    rng, digest = random.Random(seed), hashlib.sha256()
    with open(path, "wb") as file:
        left = size
        while left:
            chunk = rng.randbytes(min(8 * MB, left))
            file.write(chunk)
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if TEMP_MARKER in p.name]


@pytest.fixture
def store(any_bucket: str) -> Store:
    """A store rooted below the bucket, so prefixes are exercised too."""
    return open_store(any_bucket).child("root")


# -- objects -------------------------------------------------------------------------------


def test_bytes_round_trip(store: Store) -> None:
    payloads = {"a.bin": bytes(range(256)) * 10, "empty": b"", "dir/with space/x.txt": b"hi"}
    for key, data in payloads.items():
        store.put_bytes(key, data)
    for key, data in payloads.items():
        assert store.get_bytes(key) == data
    store.put_bytes("a.bin", b"overwritten")
    assert store.get_bytes("a.bin") == b"overwritten"
    store.put_bytes("view", memoryview(b"from a memoryview"))  # bytes-like is fine
    assert store.get_bytes("view") == b"from a memoryview"


def test_uri_and_child(store: Store, any_bucket: str) -> None:
    assert store.uri == parse_uri(any_bucket).child("root").uri
    assert store.url_for("a/b.txt") == store.uri + "/a/b.txt"
    child = store.child("runs", "r1")
    child.put_bytes("LATEST", b"step_00000001")
    assert child.uri == store.uri + "/runs/r1"
    assert store.get_bytes("runs/r1/LATEST") == b"step_00000001"
    assert open_store(child.url_for("LATEST").rsplit("/", 1)[0]).get_bytes("LATEST") == \
        b"step_00000001"


@pytest.mark.slow
def test_large_file_round_trip(store: Store, tmp_path: Path) -> None:
    """200 MB: multipart / resumable upload, transfer-manager download, streamed read."""
    size = 200 * MB
    source, dest = tmp_path / "big.in", tmp_path / "out" / "big.out"
    expected = write_random_file(source, size)
    started = time.monotonic()
    store.put_file("ckpt/model.bin", source)
    store.get_file("ckpt/model.bin", dest)
    elapsed = time.monotonic() - started
    assert dest.stat().st_size == size
    assert sha256_of(dest) == expected
    assert store.list("ckpt") == [ObjectInfo("ckpt/model.bin", size)]
    digest, chunks = hashlib.sha256(), 0
    with store.open_read("ckpt/model.bin") as stream:
        while chunk := stream.read(4 * MB):
            digest.update(chunk)
            chunks += 1
    assert digest.hexdigest() == expected and chunks == 50
    assert not leftovers(tmp_path)
    print(f"\n{store.uri}: 200 MB put_file+get_file in {elapsed:.1f}s")


def test_get_file_replaces_existing_destination(store: Store, tmp_path: Path) -> None:
    dest = tmp_path / "nested" / "dir" / "out.txt"
    store.put_bytes("x", b"new")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"old content")
    store.get_file("x", dest)
    assert dest.read_bytes() == b"new"
    store.get_file("x", str(tmp_path / "fresh" / "made.txt"))  # parents created, str accepted
    assert (tmp_path / "fresh" / "made.txt").read_bytes() == b"new"
    assert not leftovers(tmp_path)


def test_put_file_small_and_missing_source(store: Store, tmp_path: Path) -> None:
    small = tmp_path / "small.json"
    small.write_text('{"step": 1}')
    store.put_file("small.json", small)
    assert store.get_bytes("small.json") == b'{"step": 1}'
    with pytest.raises(StorageError, match="not a file"):
        store.put_file("x", tmp_path / "does-not-exist")


def test_open_read_streams(store: Store) -> None:
    data = os.urandom(3 * MB + 17)
    store.put_bytes("stream.bin", data)
    with store.open_read("stream.bin") as stream:
        assert stream.read(10) == data[:10]
        assert stream.read(MB) == data[10:MB + 10]
        rest = stream.read()
    assert data[:MB + 10] + rest == data
    assert stream.closed
    with store.open_read("stream.bin") as stream:
        lines = b"".join(iter(lambda: stream.read(65536), b""))
    assert lines == data


def test_missing_key(store: Store, tmp_path: Path) -> None:
    store.put_bytes("present", b"x")  # the bucket exists; only the key is missing
    dest = tmp_path / "dest"
    dest.write_bytes(b"keep me")
    for call in (lambda: store.get_bytes("nope/missing"),
                 lambda: store.get_file("nope/missing", dest),
                 lambda: store.open_read("nope/missing")):
        with pytest.raises(ObjectNotFound) as info:
            call()
        assert store.url_for("nope/missing") in info.value.one_line()
    assert dest.read_bytes() == b"keep me"
    assert not leftovers(tmp_path)
    assert store.exists("present") and not store.exists("nope/missing")
    store.delete("nope/missing")  # not an error
    assert store.list("nope") == []


def test_bad_keys_are_refused(store: Store) -> None:
    from vicuna_ops.errors import UserError

    for bad in ("../escape", "a/../../b", "/abs", "", "dir/"):
        with pytest.raises(UserError):
            store.put_bytes(bad, b"x")
    with pytest.raises(UserError):
        store.list("../up")


# -- folders -------------------------------------------------------------------------------


def _populate(store: Store) -> None:
    for key in ("top.txt", "a/1", "a/2", "a/sub/3", "a/sub/deeper/4", "ab/5", "b/6"):
        store.put_bytes(key, key.encode())


def test_list_recursive_and_not(store: Store) -> None:
    assert store.list() == []
    _populate(store)
    keys = [info.key for info in store.list()]
    assert keys == ["a/1", "a/2", "a/sub/3", "a/sub/deeper/4", "ab/5", "b/6", "top.txt"]
    assert store.list("a/sub")[0] == ObjectInfo("a/sub/3", len(b"a/sub/3"))
    assert [i.key for i in store.list("a")] == ["a/1", "a/2", "a/sub/3", "a/sub/deeper/4"]
    assert [i.key for i in store.list("a/")] == [i.key for i in store.list("a")]
    assert [i.key for i in store.list(recursive=False)] == ["a/", "ab/", "b/", "top.txt"]
    children = store.list("a", recursive=False)
    assert [i.key for i in children] == ["a/1", "a/2", "a/sub/"]
    assert [i.is_dir for i in children] == [False, False, True]
    assert store.list("nothing-here") == [] and store.list("a/1") == []  # folders, not keys
    assert [i.key for i in store.child("a").list(recursive=False)] == ["1", "2", "sub/"]


def test_exists_and_delete(store: Store) -> None:
    _populate(store)
    assert store.exists("a/1") and not store.exists("a")  # a folder is not an object
    store.delete("a/1")
    assert not store.exists("a/1")
    store.delete("a/1")
    store.delete("b/6")
    assert [i.key for i in store.list(recursive=False)] == ["a/", "ab/", "top.txt"]


def test_delete_prefix(store: Store) -> None:
    _populate(store)
    assert store.delete_prefix("a") == 4  # 'ab/5' is not under folder 'a'
    assert [i.key for i in store.list()] == ["ab/5", "b/6", "top.txt"]
    assert store.delete_prefix("a/") == 0
    assert store.delete_prefix("missing") == 0
    assert store.delete_prefix("") == 3
    assert store.list() == []


# -- failures --------------------------------------------------------------------------------


def test_check_ok(store: Store) -> None:
    store.check()
    _populate(store)
    store.check()


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_unreachable_endpoint_fails_fast(scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    if scheme == "s3":
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env_name = "AWS_ENDPOINT_URL"
    else:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        env_name = "STORAGE_EMULATOR_HOST"
    store = open_store(f"{scheme}://vops-unreachable/x")
    for call, limit in ((store.check, 6.0), (lambda: store.get_bytes("k"), 15.0)):
        started = time.monotonic()
        with pytest.raises(StorageError) as info:
            call()
        elapsed = time.monotonic() - started
        line = info.value.one_line()
        assert elapsed < limit, f"took {elapsed:.1f}s: {line}"
        assert "\n" not in line and "unreachable" in line
        assert f"{env_name}={endpoint}" in line
        assert not isinstance(info.value, ObjectNotFound)


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_nonexistent_bucket(scheme: str, request: pytest.FixtureRequest) -> None:
    request.getfixturevalue("s3_server" if scheme == "s3" else "gcs_server")
    store = open_store(f"{scheme}://vops-no-such-bucket-{os.getpid()}/runs")
    calls = {"check": store.check, "get_bytes": lambda: store.get_bytes("k"),
             "exists": lambda: store.exists("k"), "put_bytes": lambda: store.put_bytes("k", b""),
             "list": store.list}
    for name, call in calls.items():
        with pytest.raises(StorageError) as info:
            call()
        error = info.value
        assert not isinstance(error, ObjectNotFound), name
        assert "does not exist" in error.message and "create it" in (error.hint or ""), name
        assert error.__cause__ is not None, f"{name}: the foreign error is chained"


def test_s3_missing_credentials(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageError) as info:
        open_store("s3://vops-any-bucket").check()
    assert "AWS_ACCESS_KEY_ID" in (info.value.hint or "")


def test_gcs_missing_credentials(no_network: None) -> None:
    with pytest.raises(StorageError) as info:
        open_store("gs://vops-any-bucket").check()
    assert "GOOGLE_APPLICATION_CREDENTIALS" in (info.value.hint or "")


def test_local_root_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    store = open_store(str(tmp_path / "plain" / "root"))
    with pytest.raises(StorageError, match="not a folder"):
        store.check()
    with pytest.raises(StorageError):
        store.put_bytes("k", b"x")


def test_local_key_both_object_and_folder(tmp_path: Path) -> None:
    store = open_store(str(tmp_path))
    store.put_bytes("a", b"x")
    with pytest.raises(StorageError) as info:
        store.put_bytes("a/b", b"y")
    assert "object and a folder" in info.value.one_line()
    store.put_bytes("c/d", b"x")
    with pytest.raises(StorageError) as info:
        store.put_bytes("c", b"y")
    assert "it is a folder" in info.value.one_line()


# -- corruption ------------------------------------------------------------------------------


def _corrupt_remotely(root: str, name: str, data: bytes, recorded: bytes) -> None:
    """Store ``data`` under ``name`` with the checksum of ``recorded``: corruption at rest."""
    sha = hashlib.sha256(recorded).hexdigest()
    bucket = parse_uri(root).bucket
    if root.startswith("s3://"):
        s3_admin_client(os.environ["AWS_ENDPOINT_URL"]).put_object(
            Bucket=bucket, Key=name, Body=data, Metadata={SHA256_META: sha})
    else:
        blob = gcs_admin_client(os.environ["STORAGE_EMULATOR_HOST"]).bucket(bucket).blob(name)
        blob.metadata = {SHA256_META: sha}
        blob.upload_from_string(data)


# A local store keeps no checksum (the bytes on disk are the only copy): remote stores only.


def test_recorded_checksum_mismatch_is_detected(remote_bucket: str, tmp_path: Path) -> None:
    store = open_store(remote_bucket)
    good = os.urandom(2 * MB)
    bad = bytearray(good)
    bad[MB] ^= 0xFF
    _corrupt_remotely(remote_bucket, "ckpt/weights.bin", bytes(bad), recorded=good)
    dest = tmp_path / "weights.bin"
    dest.write_bytes(b"previous download")
    for call in (lambda: store.get_bytes("ckpt/weights.bin"),
                 lambda: store.get_file("ckpt/weights.bin", dest),
                 lambda: store.open_read("ckpt/weights.bin").read()):
        with pytest.raises(StorageError, match="checksum mismatch") as info:
            call()
        assert "\n" not in info.value.one_line()
    assert dest.read_bytes() == b"previous download"
    assert not leftovers(tmp_path)


def test_corrupted_transfer_is_detected(remote_bucket: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The client library's download returns damaged bytes it did not notice."""
    store = open_store(remote_bucket)
    store.put_bytes("model.bin", os.urandom(MB))

    def flip_a_byte(path: str) -> None:
        with open(path, "r+b") as file:
            file.seek(12345)
            byte = file.read(1)
            file.seek(12345)
            file.write(bytes([byte[0] ^ 0x01]))

    if remote_bucket.startswith("s3://"):
        client = store._client()  # white box: the store's own boto3 client
        real = client.download_file

        def damaged(bucket, key, filename, **kwargs):
            real(bucket, key, filename, **kwargs)
            flip_a_byte(filename)

        monkeypatch.setattr(client, "download_file", damaged)
    else:
        from google.cloud.storage import Blob

        real = Blob.download_to_filename

        def damaged(self, filename, *args, **kwargs):
            real(self, filename, *args, **kwargs)
            flip_a_byte(filename)

        monkeypatch.setattr(Blob, "download_to_filename", damaged)
    dest = tmp_path / "model.bin"
    with pytest.raises(StorageError, match="checksum mismatch"):
        store.get_file("model.bin", dest)
    assert not dest.exists()
    assert not leftovers(tmp_path)


# -- plumbing --------------------------------------------------------------------------------


def test_open_store_accepts_a_path(tmp_path: Path) -> None:
    store = open_store(tmp_path / "root")
    store.put_bytes("k", b"v")
    assert (tmp_path / "root" / "k").read_bytes() == b"v"
    assert store.uri == f"file://{tmp_path}/root"


def test_environment_is_isolated(isolated_home: Path) -> None:
    """conftest's autouse isolation: no real home, credentials, endpoints or proxies."""
    import boto3

    assert Path(os.path.expanduser("~")) == isolated_home
    assert not any(os.environ.get(name) for name in ("HTTP_PROXY", "HTTPS_PROXY", "https_proxy",
                                                     "http_proxy", "ALL_PROXY"))
    assert boto3.session.Session().get_credentials() is None
    assert not Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"]).exists()
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    assert "AWS_ENDPOINT_URL" not in os.environ and "STORAGE_EMULATOR_HOST" not in os.environ


def test_importing_storage_loads_no_cloud_sdk() -> None:
    code = ("import sys, vicuna_ops.storage as s; s.open_store('/tmp'); "
            "s.open_store('s3://bucket'); s.open_store('gs://bucket'); "
            "bad = [m for m in ('boto3', 'botocore', 'google.cloud.storage') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_retry_transient_backs_off_then_gives_up() -> None:
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("reset")
        return "ok"

    def permanent() -> None:
        calls.append(1)
        raise ValueError("permanent")

    def transient(exc: Exception) -> bool:
        return isinstance(exc, ConnectionResetError)

    assert retry_transient(flaky, is_transient=transient, sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2 and 0 < sleeps[0] <= 0.25 < sleeps[1] * 2
    calls.clear()
    with pytest.raises(ValueError):
        retry_transient(permanent, is_transient=transient, sleep=sleeps.append)
    assert len(calls) == 1  # not transient: no retry
    calls.clear()
    with pytest.raises(ConnectionResetError):
        retry_transient(lambda: flaky() and flaky() and permanent(), is_transient=transient,
                        attempts=2, sleep=sleeps.append)


def test_put_file_records_a_digest_the_caller_already_has(any_bucket, tmp_path: Path) -> None:
    """A checkpoint's manifest has hashed every file: put_file takes that digest instead of
    reading the file again, and reads still verify against it."""
    import hashlib

    from vicuna_ops.storage import open_store

    store = open_store(any_bucket)
    source = tmp_path / "blob.bin"
    source.write_bytes(b"x" * 100_000)
    store.put_file("k/blob.bin", source, sha256=hashlib.sha256(b"x" * 100_000).hexdigest())
    store.get_file("k/blob.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == b"x" * 100_000
    if not any_bucket.startswith("file://"):  # a wrong digest is caught on read, not trusted
        from vicuna_ops.errors import StorageError

        store.put_file("k/lie.bin", source, sha256="0" * 64)
        with pytest.raises(StorageError):
            store.get_file("k/lie.bin", tmp_path / "lie.bin")
        assert not (tmp_path / "lie.bin").exists()
