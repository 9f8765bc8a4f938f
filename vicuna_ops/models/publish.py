"""A model folder built in a scratch place, published to a path or a bucket only when whole.

The same protocol as checkpoints (vicuna_ops/train/manifest.py): ``MANIFEST.json`` lists the
size and SHA-256 of every file and is written last, so a folder without one never counts as a
model (`vops serve` verifies it). A local ``--out`` is built beside its destination and renamed
into place in one step; a bucket gets every file, then the manifest.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vicuna_ops.errors import UserError
from vicuna_ops.models.sources import is_uri

MANIFEST = "MANIFEST.json"


class Destination:
    """Where a model goes: checked free before the work starts, filled when it is done."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.store: Any = None
        self.final: Path | None = None
        if is_uri(out):
            from vicuna_ops.storage import open_store

            self.store = open_store(out)
            if self.store.list(""):  # also the first call: an unreachable bucket fails here
                raise UserError(f"--out {out} is not empty",
                                hint="choose a new folder or bucket prefix")
        else:
            self.final = Path(out).expanduser()
            if self.final.exists() and (not self.final.is_dir() or any(self.final.iterdir())):
                raise UserError(f"--out {out} already exists",
                                hint="choose a new folder (or remove the old one)")

    def staging(self, scratch: Path) -> Path:
        """An empty folder to build in: beside a local destination (same file system, so the
        final rename is atomic), else in ``scratch``."""
        if self.final is None:
            build = scratch / "out"
            build.mkdir()
            return build
        self.final.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{self.final.name}.vops-tmp-",
                                     dir=self.final.parent))

    def publish(self, build: Path, meta: Mapping[str, Any] | None = None) -> None:
        """``MANIFEST.json`` into ``build``, then ``build`` to the destination."""
        from vicuna_ops.train.manifest import build_manifest

        manifest = build_manifest(build, None, time.time(), meta)
        (build / MANIFEST).write_bytes(manifest.to_json())
        if self.final is not None:
            if self.final.exists():
                self.final.rmdir()  # empty: checked when the work started
            os.replace(build, self.final)
            return
        uploaded: list[str] = []
        try:
            for name in manifest.files:
                self.store.put_file(name, build / name, sha256=manifest.files[name].sha256)
                uploaded.append(name)
            self.store.put_bytes(MANIFEST, manifest.to_json())
        except BaseException:
            for name in uploaded:  # without a manifest they are no model anyway: tidy up
                with contextlib.suppress(Exception):  # the first error is the one to report
                    self.store.delete(name)
            raise

    def discard(self, build: Path) -> None:
        """A failed build leaves nothing behind (a bucket got nothing before ``publish``)."""
        shutil.rmtree(build, ignore_errors=True)
