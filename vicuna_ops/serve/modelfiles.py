"""``--model``: a local HF model folder, or a bucket URI of one, downloaded to a cache.

Training writes ``<bucket>/<run>/final/`` (config, safetensors, tokenizer files); a worker
on a fresh spot node downloads it once into ``<cache>/<hash of the URI>/`` and marks the
copy complete only after every file arrived, so a node preempted mid-download never serves
from a half-copied folder on its next start. A folder with a ``MANIFEST.json`` (training's
``final/``) is served only once every file matches its size and SHA-256 there.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from vicuna_ops.errors import UserError

_COMPLETE = ".vops-complete.json"
_URI_SCHEMES = ("s3://", "gs://", "file://")


def is_bucket_uri(spec: str) -> bool:
    return spec.startswith(_URI_SCHEMES)


def resolve_model(spec: str, cache_dir: Path, *, progress=None) -> Path:
    """A local folder holding the model ``spec`` names; downloads bucket URIs first."""
    if not is_bucket_uri(spec):
        folder = Path(spec).expanduser()
        _check_folder(folder, spec)
        _verify_manifest(folder, spec)
        return folder
    from vicuna_ops.storage import open_store

    store = open_store(spec)
    target = cache_dir / hashlib.sha256(spec.encode()).hexdigest()[:16]
    objects = [o for o in store.list("", recursive=True) if not o.key.endswith("/")]
    if not objects:
        raise UserError(f"no model files under {spec}",
                        hint="point --model at the folder training wrote, e.g. <bucket>/<run>/final/")
    expected: dict[str, object] = {o.key: o.size for o in objects}
    if "MANIFEST.json" in expected:  # a rebuilt final/ of the same sizes is a new copy
        expected["MANIFEST.json"] = hashlib.sha256(store.get_bytes("MANIFEST.json")).hexdigest()
    marker = target / _COMPLETE
    if marker.exists():
        try:
            if json.loads(marker.read_text()) == expected:
                return target
        except ValueError:
            pass
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for index, info in enumerate(objects, 1):
        destination = partial / info.key
        destination.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(info.key, destination)
        if progress:
            progress(f"downloaded {info.key} ({index}/{len(objects)})")
    try:
        _verify_manifest(partial, spec)
    except UserError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    (partial / _COMPLETE).write_text(json.dumps(expected))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    _check_folder(target, spec)
    return target


def _verify_manifest(folder: Path, spec: str) -> None:
    """UserError unless every file training's manifest lists matches its size and SHA-256."""
    from vicuna_ops.train.manifest import Manifest, ManifestError, verify_local

    path = folder / "MANIFEST.json"
    if not path.is_file():
        return  # a model folder from elsewhere (the hub, a conversion): nothing to check
    try:
        verify_local(folder, Manifest.from_json(path.read_bytes()))
    except ManifestError as exc:
        raise UserError(f"model {spec} is corrupt ({exc}); refusing to serve it",
                        hint="rerun the training command: it rebuilds final/ from the newest "
                             "verified checkpoint") from exc


def _check_folder(folder: Path, spec: str) -> None:
    if not folder.is_dir():
        raise UserError(f"model folder {spec} does not exist",
                        hint="pass a local HF model folder or a bucket URI (s3://, gs://)")
    if not (folder / "config.json").exists():
        raise UserError(f"{spec} has no config.json, so it is not an HF model folder",
                        hint="point --model at the folder training wrote, e.g. <bucket>/<run>/final/")


def default_model_name(spec: str) -> str:
    """``.../my-run/final`` -> ``my-run``; a plain folder -> its name."""
    parts = [p for p in spec.rstrip("/").replace("://", "/").split("/") if p]
    if not parts:
        return "model"
    name = parts[-1]
    if name == "final" and len(parts) > 1:
        name = parts[-2]
    return name
