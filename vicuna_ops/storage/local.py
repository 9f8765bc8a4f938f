"""``file://`` store: a folder on a local or mounted filesystem.

Writes go to a temp file in the destination folder, are fsynced and renamed into place, so a
reader sees the old object or the new one, never half of one. Folders are created on write and
pruned when their last object is deleted, so listings match an object store's (no empty
'dirs'); the temp files are never listed. There is no recorded checksum: the bytes on disk are
the only copy.

Conditional writes hold an exclusive ``flock`` on a hidden lock file beside the object (never
listed) while they compare and write; the version is the SHA-256 of the bytes. Locks are
advisory and local: good for one machine's processes, not for a folder shared over NFS.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vicuna_ops.errors import StorageError
from vicuna_ops.storage.base import (
    CHUNK,
    TEMP_MARKER,
    ObjectInfo,
    Store,
    Versioned,
    atomic_target,
    sha256_bytes,
)
from vicuna_ops.storage.uri import StorageURI


class LocalStore(Store):
    def __init__(self, root: StorageURI) -> None:
        if root.scheme != "file":
            raise ValueError(f"LocalStore needs a file:// root, got {root.uri}")
        super().__init__(root)

    @property
    def path(self) -> Path:
        """The root folder (it may not exist yet)."""
        return Path(self._root.prefix)

    def path_for(self, key: str) -> Path:
        return self.path.joinpath(*key.split("/"))

    # -- objects -----------------------------------------------------------------------------

    def _put_bytes(self, key: str, data: bytes) -> None:
        target = self._prepare(key)
        with atomic_target(target) as tmp:
            tmp.write_bytes(data)

    def _get_bytes(self, key: str) -> bytes:
        return self._existing(key).read_bytes()

    def _put_file(self, key: str, source: Path, sha256: str | None) -> None:
        target = self._prepare(key)
        with atomic_target(target) as tmp:
            shutil.copyfile(source, tmp)

    def _get_file(self, key: str, tmp: Path) -> None:
        shutil.copyfile(self._existing(key), tmp)

    def _open_read(self, key: str) -> BinaryIO:
        return open(self._existing(key), "rb", buffering=CHUNK)

    def _exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def _delete(self, key: str) -> None:
        path = self.path_for(key)
        if path.is_dir():
            return  # a folder is not an object; delete_prefix removes folders
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        self._prune(path.parent)

    # -- conditional writes ------------------------------------------------------------------

    def _read_versioned(self, key: str) -> Versioned | None:
        try:
            data = self.path_for(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None
        return Versioned(data, sha256_bytes(data))

    def _put_if_absent(self, key: str, data: bytes) -> str | None:
        with self._locked(key) as target:
            if target.exists():
                return None
            with atomic_target(target) as tmp:
                tmp.write_bytes(data)
        return sha256_bytes(data)

    def _put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        with self._locked(key) as target:
            current = self._read_versioned(key)
            if current is None or current.version != version:
                return None
            with atomic_target(target) as tmp:
                tmp.write_bytes(data)
        return sha256_bytes(data)

    def _delete_if_version(self, key: str, version: str) -> bool:
        with self._locked(key) as target:
            current = self._read_versioned(key)
            if current is None or current.version != version:
                return False
            target.unlink()
        return True

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[Path]:
        target = self._prepare(key)
        lock_path = target.with_name(f"{TEMP_MARKER}{target.name}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield target
        finally:
            os.close(fd)  # closing releases the lock

    # -- folders -----------------------------------------------------------------------------

    def _list(self, folder: str, recursive: bool) -> list[ObjectInfo]:
        base = self.path_for(folder) if folder else self.path
        lead = f"{folder}/" if folder else ""
        if not base.is_dir():
            return []
        if recursive:
            return [ObjectInfo(lead + rel, size) for rel, size in _walk_files(base)]
        entries = []
        with os.scandir(base) as scan:
            for entry in scan:
                if entry.name.startswith(TEMP_MARKER):
                    continue
                if entry.is_dir():
                    if _has_files(Path(entry.path)):
                        entries.append(ObjectInfo(f"{lead}{entry.name}/", 0))
                elif entry.is_file():
                    entries.append(ObjectInfo(lead + entry.name, entry.stat().st_size))
        return entries

    def _delete_prefix(self, folder: str) -> int:
        base = self.path_for(folder) if folder else self.path
        if base.resolve() in (Path("/"), Path.home().resolve()):
            raise StorageError(f"refusing to delete everything under {base}",
                               hint="root the store at a dedicated folder")
        if not base.is_dir():
            return 0
        count = sum(1 for _ in _walk_files(base))
        if folder:
            shutil.rmtree(base)
            self._prune(base.parent)
        else:  # keep the root folder itself
            for entry in list(base.iterdir()):
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        return count

    def _check(self) -> None:
        probe = self.path
        while not probe.exists():
            if probe.parent == probe:
                break
            probe = probe.parent
        if not probe.is_dir():
            raise StorageError(f"cannot use {self.uri}: {probe} is not a folder",
                               hint="pick a root under an existing folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise StorageError(f"cannot write under {self.uri}: {probe} is not writable",
                               hint="check the folder's permissions or pick another root")

    # -- internals ---------------------------------------------------------------------------

    def _existing(self, key: str) -> Path:
        path = self.path_for(key)
        if not path.is_file():
            raise self._not_found(key)
        return path

    def _prepare(self, key: str) -> Path:
        path = self.path_for(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise StorageError(f"cannot write {self.url_for(key)}: a parent of it is an object",
                               hint="a key cannot be both an object and a folder on a "
                                    "local store") from exc
        if path.is_dir():
            raise StorageError(f"cannot write {self.url_for(key)}: it is a folder",
                               hint="a key cannot be both an object and a folder on a "
                                    "local store")
        return path

    def _prune(self, folder: Path) -> None:
        """Remove empty folders from ``folder`` up to (not including) the root."""
        root = self.path
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


def _walk_files(base: Path) -> list[tuple[str, int]]:
    """(path relative to ``base`` with '/' separators, size) of every file under it."""
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_MARKER)]
        rel_dir = os.path.relpath(dirpath, base)
        for name in filenames:
            if name.startswith(TEMP_MARKER):
                continue
            full = os.path.join(dirpath, name)
            with contextlib.suppress(FileNotFoundError):  # deleted while we walk
                size = os.stat(full).st_size
                rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
                found.append((rel, size))
    return found


def _has_files(folder: Path) -> bool:
    for _dirpath, _dirnames, filenames in os.walk(folder):
        if any(not name.startswith(TEMP_MARKER) for name in filenames):
            return True
    return False
