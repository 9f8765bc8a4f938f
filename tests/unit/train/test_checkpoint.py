"""The checkpoint protocol on a local store: publish order, restore with fallback, pruning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vicuna_ops import layout
from vicuna_ops.storage import open_store
from vicuna_ops.train import checkpoint
from vicuna_ops.train.manifest import Manifest, ManifestError, build_manifest, verify_local


def make_checkpoint(root: Path, step: int) -> Path:
    folder = root / f"local-{step}"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(bytes([step % 256]) * 1000)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (folder / "sub" / "rng.pth").write_bytes(b"rng" * step)
    return folder


@pytest.fixture
def store(tmp_path):
    return open_store(str(tmp_path / "bucket")).child("run-1")


def publish(store, tmp_path, *steps):
    for step in steps:
        checkpoint.publish_checkpoint(store, make_checkpoint(tmp_path / "src", step), step,
                                      {"step": step})


def test_publish_writes_files_then_manifest_then_latest(store, tmp_path, monkeypatch):
    calls = []
    real_put_file, real_put_bytes = store.put_file, store.put_bytes
    store.put_file = lambda key, path, sha256=None: (calls.append(key),
                                                      real_put_file(key, path, sha256))
    store.put_bytes = lambda key, data: (calls.append(key), real_put_bytes(key, data))
    monkeypatch.setattr(checkpoint, "SMALL_FILE", 500)  # the weights go by put_file
    result = checkpoint.publish_checkpoint(store, make_checkpoint(tmp_path, 7), 7, {"x": 1})
    assert calls[-2:] == ["step_00000007/MANIFEST.json", "LATEST"]
    assert sorted(calls[:-2]) == ["step_00000007/model.safetensors",
                                  "step_00000007/sub/rng.pth", "step_00000007/trainer_state.json"]
    assert store.get_bytes("LATEST") == b"step_00000007"
    manifest = Manifest.from_json(store.get_bytes("step_00000007/MANIFEST.json"))
    assert manifest.step == 7 and manifest.meta == {"x": 1} and len(manifest.files) == 3
    assert result.bytes == manifest.total_bytes and result.files == 3


def test_restore_takes_the_newest_verified(store, tmp_path):
    publish(store, tmp_path, 10, 20)
    restored = checkpoint.restore_newest(store, tmp_path / "dl")
    assert restored.step == 20 and restored.skipped == []
    assert (restored.path / "sub" / "rng.pth").read_bytes() == b"rng" * 20
    verify_local(restored.path, restored.manifest)


@pytest.mark.parametrize("damage", ["flip-byte", "no-manifest", "missing-file", "bad-manifest",
                                    "wrong-size"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous(store, tmp_path, damage):
    publish(store, tmp_path, 10, 20)
    target = store.path_for("step_00000020/model.safetensors")
    if damage == "flip-byte":
        data = bytearray(target.read_bytes())
        data[500] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "no-manifest":
        store.delete("step_00000020/MANIFEST.json")
    elif damage == "missing-file":
        store.delete("step_00000020/sub/rng.pth")
    elif damage == "bad-manifest":
        store.put_bytes("step_00000020/MANIFEST.json", b"{half a manif")
    else:
        target.write_bytes(b"short")
    logs = []
    restored = checkpoint.restore_newest(store, tmp_path / "dl", logs.append)
    assert restored.step == 10
    assert len(restored.skipped) == 1 and restored.skipped[0].startswith("step_00000020")
    assert any("does not verify" in line for line in logs)
    assert not (tmp_path / "dl" / "step_00000020").exists()  # the bad download is cleaned up


def test_latest_pointing_at_a_missing_folder_is_only_a_hint(store, tmp_path):
    publish(store, tmp_path, 10)
    store.put_bytes(layout.LATEST, b"step_00000090")
    logs = []
    assert checkpoint.restore_newest(store, tmp_path / "dl", logs.append).step == 10
    assert "LATEST names step_00000090" in logs[0]


def test_half_written_newer_folder_is_ignored_and_nothing_verified_means_none(store, tmp_path):
    assert checkpoint.restore_newest(store, tmp_path / "dl") is None
    store.put_bytes("step_00000030/model.safetensors", b"partial")
    assert checkpoint.restore_newest(store, tmp_path / "dl") is None
    publish(store, tmp_path, 20)
    assert checkpoint.restore_newest(store, tmp_path / "dl").step == 20


def test_republishing_a_step_replaces_stale_files(store, tmp_path):
    store.put_bytes("step_00000020/stale.bin", b"from a killed attempt")
    store.put_bytes("step_00000020/MANIFEST.json", b"stale")
    publish(store, tmp_path, 20)
    names = {info.key for info in store.list("step_00000020/")}
    assert "step_00000020/stale.bin" not in names
    assert checkpoint.restore_newest(store, tmp_path / "dl").step == 20


def test_prune_keeps_newest_k_and_drops_older_half_written(store, tmp_path):
    publish(store, tmp_path, 10, 20, 30)
    store.put_bytes("step_00000015/model.safetensors", b"half")  # older, never finished
    store.put_bytes("step_00000040/model.safetensors", b"half")  # newer: a killed attempt's
    left = checkpoint.prune(store, keep=2)
    assert left == {"step_00000040", "step_00000030", "step_00000020"}
    left = [c.folder for c in checkpoint.list_candidates(store)]
    assert left == ["step_00000040", "step_00000030", "step_00000020"]


def test_final_manifest_requires_every_file(store, tmp_path):
    assert checkpoint.final_manifest(store) is None
    checkpoint.publish_final(store, make_checkpoint(tmp_path, 3), {"steps": 3})
    assert checkpoint.final_manifest(store).meta["steps"] == 3
    assert not store.exists(layout.LATEST)  # final/ is not a checkpoint
    store.delete("final/sub/rng.pth")
    assert checkpoint.final_manifest(store) is None


def test_verify_final_checks_every_digest_and_discard_removes_it(store, tmp_path):
    assert checkpoint.verify_final(store) == (None, None)  # no final/: nothing wrong
    folder = make_checkpoint(tmp_path, 3)
    checkpoint.publish_final(store, folder, {"steps": 3})
    manifest, problem = checkpoint.verify_final(store)
    assert problem is None and manifest.meta["steps"] == 3
    path = store.path_for("final/sub/rng.pth")
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01  # same size: only the digest can tell
    path.write_bytes(bytes(data))
    assert checkpoint.final_manifest(store) is not None  # sizes alone still agree
    assert checkpoint.verify_final(store) == (None, "sub/rng.pth fails its checksum")
    checkpoint.discard_final(store)
    assert store.list("final") == [] and checkpoint.verify_final(store) == (None, None)


def test_manifest_parsing_rejects_what_it_cannot_trust(tmp_path):
    good = build_manifest(make_checkpoint(tmp_path, 1), 1, 0.0)
    assert Manifest.from_json(good.to_json()) == good
    body = json.loads(good.to_json())
    for bad in ({**body, "version": 9}, {**body, "files": {}},
                {**body, "files": {"../escape": {"size": 1, "sha256": "0" * 64}}},
                {**body, "files": {"a": {"size": -1, "sha256": "0" * 64}}}):
        with pytest.raises(ManifestError):
            Manifest.from_json(json.dumps(bad).encode())
    with pytest.raises(ManifestError):
        good.check_listing({"model.safetensors": 1000})
