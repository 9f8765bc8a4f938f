"""``MANIFEST.json``: the size and SHA-256 of every file of a checkpoint (or of ``final/``).

A folder without a manifest that verifies does not exist as far as resume is concerned. The
manifest is written after every file it lists, so its presence means the upload finished;
its checksums catch a file that was damaged or replaced afterwards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vicuna_ops import layout
from vicuna_ops.storage.base import sha256_file

MANIFEST_VERSION = 1


class ManifestError(ValueError):
    """A manifest that cannot be parsed, or a folder that does not match it."""


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    step: int | None  # None for final/
    files: Mapping[str, FileEntry]  # relative path ('/'-separated) -> entry
    created: float = 0.0
    meta: Mapping[str, Any] = field(default_factory=dict)  # vops_state: data position, ...

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files.values())

    def to_json(self) -> bytes:
        body = {
            "version": MANIFEST_VERSION,
            "step": self.step,
            "created": self.created,
            "files": {name: {"size": e.size, "sha256": e.sha256}
                      for name, e in sorted(self.files.items())},
            "meta": dict(self.meta),
        }
        return json.dumps(body, indent=1, sort_keys=False).encode()

    @staticmethod
    def from_json(raw: bytes) -> Manifest:
        try:
            body = json.loads(raw)
            if body.get("version") != MANIFEST_VERSION:
                raise ManifestError(f"unknown manifest version {body.get('version')!r}")
            files = {}
            for name, entry in body["files"].items():
                size, digest = entry["size"], entry["sha256"]
                if (not isinstance(size, int) or size < 0 or not isinstance(digest, str)
                        or len(digest) != 64 or not _safe_relpath(name)):
                    raise ManifestError(f"bad entry for {name!r}")
                files[name] = FileEntry(size, digest)
            if not files:
                raise ManifestError("manifest lists no files")
            step = body.get("step")
            return Manifest(step=None if step is None else int(step), files=files,
                            created=float(body.get("created") or 0.0),
                            meta=dict(body.get("meta") or {}))
        except ManifestError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"unreadable manifest: {exc}") from exc

    def check_listing(self, sizes: Mapping[str, int]) -> None:
        """ManifestError unless every listed file is present with its recorded size."""
        for name, entry in self.files.items():
            if name not in sizes:
                raise ManifestError(f"{name} is missing")
            if sizes[name] != entry.size:
                raise ManifestError(f"{name} has {sizes[name]} bytes, manifest says {entry.size}")


def _safe_relpath(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def local_files(folder: Path) -> dict[str, Path]:
    """Every regular file under ``folder`` by '/'-separated relative path (manifest excluded)."""
    found = {}
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(folder).as_posix()
            if rel != layout.MANIFEST:
                found[rel] = path
    return dict(sorted(found.items()))


def build_manifest(folder: Path, step: int | None, created: float,
                   meta: Mapping[str, Any] | None = None) -> Manifest:
    files = {rel: FileEntry(path.stat().st_size, sha256_file(path))
             for rel, path in local_files(folder).items()}
    if not files:
        raise ManifestError(f"{folder} holds no files")
    return Manifest(step=step, files=files, created=created, meta=dict(meta or {}))


def verify_local(folder: Path, manifest: Manifest) -> None:
    """ManifestError unless every listed file under ``folder`` has its size and checksum."""
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ManifestError(f"{name} is missing")
        if path.stat().st_size != entry.size:
            raise ManifestError(f"{name} has the wrong size")
        if sha256_file(path) != entry.sha256:
            raise ManifestError(f"{name} fails its checksum")
