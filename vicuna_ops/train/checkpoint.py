"""The checkpoint protocol on a run's store (``<bucket>/<run-id>/``).

Publish (one writer: global rank 0 of the current attempt)::

    1. every file of step_NNNNNNNN/          (a stale manifest of that name is deleted first)
    2. step_NNNNNNNN/MANIFEST.json           size + sha256 of each file
    3. LATEST                                "step_NNNNNNNN"
    4. prune: keep the newest K complete checkpoints; drop older and half-written folders

Restore: newest step folder first (not LATEST, which is only a hint and may lag or point at a
folder that is gone); a candidate counts only if its manifest parses, every file is listed
with its recorded size, and every downloaded file matches its checksum. Otherwise fall back to
the next older one. ``final/`` follows the same rule with its own manifest: a reader checks
every file's size and SHA-256 (``verify_final``), and a rerun that finds it corrupt removes it
and rebuilds it from the newest checkpoint that verifies.

Why not SkyPilot's example (rsync of the newest local folder every 10 minutes): it can copy a
checkpoint that is still being written, and resume picks "the highest-numbered folder", so a
half-uploaded one wins.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vicuna_ops import layout
from vicuna_ops.errors import StorageError
from vicuna_ops.storage.base import sha256_bytes, sha256_file
from vicuna_ops.train.manifest import (
    FileEntry,
    Manifest,
    ManifestError,
    local_files,
    verify_local,
)

Log = Callable[[str], None]
UPLOAD_WORKERS = 4  # files in parallel; each big file is also multipart-parallel in the store
# Below this a file goes up as one PUT from memory: a multipart transfer's setup costs more
# CPU than the bytes (a checkpoint has several small files: config, states, RNG, scheduler).
SMALL_FILE = 8 << 20


@dataclass(frozen=True)
class Published:
    step: int | None
    folder: str
    files: int
    bytes: int
    seconds: float


@dataclass(frozen=True)
class Candidate:
    step: int
    folder: str
    sizes: dict[str, int] = field(default_factory=dict)  # relative path -> size, manifest incl.

    @property
    def has_manifest(self) -> bool:
        return layout.MANIFEST in self.sizes


@dataclass(frozen=True)
class Restored:
    step: int
    path: Path  # local folder with the verified files
    manifest: Manifest
    skipped: list[str]  # one line per newer candidate that did not verify


def publish_folder(store: Any, local_dir: Path, folder: str, step: int | None,
                   meta: dict[str, Any] | None = None, *, latest: bool = True,
                   fresh: bool = False) -> Published:
    """Upload ``local_dir`` as ``folder`` (files, then manifest, then LATEST).

    ``fresh``: the caller knows no folder of that name exists (it listed the run since).
    Each file is hashed and then uploaded by one task, the tasks in parallel, so hashing one
    file overlaps uploading another (hashlib and sockets both let go of the GIL).
    """
    started = time.monotonic()
    created = time.time()
    if not fresh:
        # A folder of this name may remain from an attempt killed mid-upload (or a corrupt
        # one we fell back from). Its manifest goes first: it never vouches for a mix.
        store.delete(f"{folder}/{layout.MANIFEST}")
        store.delete_prefix(folder)
    paths = local_files(local_dir)
    if not paths:
        raise ManifestError(f"{local_dir} holds no files")

    def hash_and_upload(rel: str, path: Path) -> FileEntry:
        size = path.stat().st_size
        if size < SMALL_FILE:
            data = path.read_bytes()
            store.put_bytes(f"{folder}/{rel}", data)
            return FileEntry(len(data), sha256_bytes(data))
        entry = FileEntry(size, sha256_file(path))
        # the store records the same digest: no second pass over a multi-GB file
        store.put_file(f"{folder}/{rel}", path, sha256=entry.sha256)
        return entry

    workers = max(1, min(UPLOAD_WORKERS, len(paths)))
    with ThreadPoolExecutor(workers, thread_name_prefix="vops-upload") as pool:
        futures = {rel: pool.submit(hash_and_upload, rel, path) for rel, path in paths.items()}
        files = {rel: future.result() for rel, future in futures.items()}
    manifest = Manifest(step=step, files=files, created=created, meta=dict(meta or {}))
    store.put_bytes(f"{folder}/{layout.MANIFEST}", manifest.to_json())
    if latest:
        store.put_bytes(layout.LATEST, folder.encode())
    return Published(step, folder, len(paths), manifest.total_bytes,
                     time.monotonic() - started)


def publish_checkpoint(store: Any, local_dir: Path, step: int,
                       meta: dict[str, Any] | None = None, *, fresh: bool = False) -> Published:
    return publish_folder(store, local_dir, layout.checkpoint_dir(step), step, meta,
                          fresh=fresh)


def list_candidates(store: Any) -> list[Candidate]:
    """Every step_NNNNNNNN folder with its files' sizes, newest first."""
    by_step: dict[int, dict[str, int]] = {}
    for info in store.list("", recursive=True):
        head, _, rest = info.key.partition("/")
        step = layout.step_of(head)
        if step is None or not rest:
            continue
        by_step.setdefault(step, {})[rest] = info.size
    return [Candidate(step, layout.checkpoint_dir(step), sizes)
            for step, sizes in sorted(by_step.items(), reverse=True)]


def read_latest(store: Any) -> str | None:
    try:
        return store.get_bytes(layout.LATEST).decode().strip() or None
    except (StorageError, UnicodeDecodeError):
        return None


def restore_newest(store: Any, dest_root: Path, log: Log = lambda _m: None) -> Restored | None:
    """Download the newest checkpoint that verifies into ``dest_root/<folder>``; None if none."""
    candidates = list_candidates(store)
    latest = read_latest(store)
    if latest and latest not in {c.folder for c in candidates}:
        log(f"LATEST names {latest}, which is not in the bucket; scanning the step folders")
    skipped: list[str] = []
    for candidate in candidates:
        problem = _try_restore(store, candidate, dest_root / candidate.folder)
        if isinstance(problem, Restored):
            return Restored(problem.step, problem.path, problem.manifest, skipped)
        skipped.append(f"{candidate.folder}: {problem}")
        log(f"checkpoint {candidate.folder} does not verify ({problem}); trying an older one")
    return None


def _try_restore(store: Any, candidate: Candidate, dest: Path) -> Restored | str:
    if not candidate.has_manifest:
        return "no MANIFEST.json (upload never finished)"
    try:
        manifest = Manifest.from_json(store.get_bytes(f"{candidate.folder}/{layout.MANIFEST}"))
        if manifest.step != candidate.step:
            raise ManifestError(f"manifest is for step {manifest.step}")
        manifest.check_listing(candidate.sizes)
        if dest.exists():
            shutil.rmtree(dest)
        for name in manifest.files:
            store.get_file(f"{candidate.folder}/{name}", dest / name)
        verify_local(dest, manifest)
        # kept beside the files: the node's other ranks read the run facts from it
        (dest / layout.MANIFEST).write_bytes(manifest.to_json())
    except (ManifestError, StorageError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        return getattr(exc, "message", None) or str(exc)
    return Restored(candidate.step, dest, manifest, [])


def prune(store: Any, keep: int, log: Log = lambda _m: None) -> set[str]:
    """Keep the newest ``keep`` checkpoints that have a manifest; delete the older ones and any
    manifest-less folder older than the newest complete one. Returns the folders left."""
    candidates = list_candidates(store)
    complete = [c for c in candidates if c.has_manifest]
    if not complete:
        return {c.folder for c in candidates}
    kept = {c.folder for c in complete[:keep]}
    newest = complete[0].step
    # A manifest-less folder newer than the newest complete one is left alone: it is what a
    # killed attempt got to, and this run overwrites it when it reaches that step.
    doomed = [c for c in candidates
              if c.folder not in kept and (c.has_manifest or c.step < newest)]
    for candidate in doomed:
        # manifest first: a crash halfway leaves a folder resume ignores, not a broken one
        store.delete(f"{candidate.folder}/{layout.MANIFEST}")
        store.delete_prefix(candidate.folder)
        log(f"deleted {candidate.folder} (keeping the newest {keep})")
    return {c.folder for c in candidates} - {c.folder for c in doomed}


def verify_final(store: Any) -> tuple[Manifest | None, str | None]:
    """``final/``'s manifest when every file it lists is there with its size and SHA-256
    (each read back from the store), else ``(None, problem)``; the problem is None when there
    is no complete ``final/`` at all (never written, or its upload never finished)."""
    manifest = final_manifest(store)
    if manifest is None:
        return None, None
    for name, entry in manifest.files.items():
        digest = hashlib.sha256()
        try:
            with store.open_read(f"{layout.FINAL}/{name}") as reader:
                while chunk := reader.read(8 << 20):
                    digest.update(chunk)
        except StorageError as exc:
            return None, f"{name}: {exc.message}"
        if digest.hexdigest() != entry.sha256:
            return None, f"{name} fails its checksum"
    return manifest, None


def discard_final(store: Any) -> None:
    """Remove a corrupt ``final/``: the manifest first, so no reader trusts the rest."""
    store.delete(f"{layout.FINAL}/{layout.MANIFEST}")
    store.delete_prefix(layout.FINAL)


def final_manifest(store: Any) -> Manifest | None:
    """The manifest of ``final/`` when the final model is fully uploaded (sizes checked only:
    ``verify_final`` checks the bytes)."""
    key = f"{layout.FINAL}/{layout.MANIFEST}"
    try:
        manifest = Manifest.from_json(store.get_bytes(key))
        sizes = {info.key.partition("/")[2]: info.size
                 for info in store.list(layout.FINAL + "/", recursive=True)}
        manifest.check_listing(sizes)
    except (StorageError, ManifestError):
        return None
    return manifest


def publish_final(store: Any, local_dir: Path, meta: dict[str, Any]) -> Published:
    return publish_folder(store, local_dir, layout.FINAL, None, meta, latest=False)
