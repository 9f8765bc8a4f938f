"""What every store shares: the ``Store`` interface, key checks, error boundary, atomic local
writes, checksums and the one retry helper.

A backend implements the underscore methods (``_put_bytes``, ``_get_file``, ...) and
``_translate``; the public methods here validate keys, run the backend call inside the error
boundary (foreign exceptions become ``StorageError`` ``from`` the original) and make
``get_file`` atomic: the backend writes a temp file beside the destination, which is renamed
over it only once the download verified, and removed otherwise.

Conditional writes (``put_if_absent``, ``put_if_version``, ``delete_if_version``): the one
primitive a lease needs. Each is a single compare-and-swap on the store itself (local: a file
lock beside the object; S3: ``If-None-Match: *`` / ``If-Match: <etag>``; GCS:
``ifGenerationMatch``), so of two racing writers exactly one succeeds.

Checksums: remote backends record the SHA-256 of every object they write in the object's user
metadata (``SHA256_META``) and verify it on ``get_bytes``, ``get_file`` and at the end of an
``open_read`` stream; objects written by other tools (no such metadata) are checked against
their size and whatever the cloud library verifies natively.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import hashlib
import io
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from vicuna_ops.errors import ObjectNotFound, StorageError, VopsError
from vicuna_ops.storage.uri import StorageURI, check_key, check_prefix

SHA256_META = "vops-sha256"
TEMP_MARKER = ".vops-tmp-"
CHUNK = 1 << 20

T = TypeVar("T")


@dataclass(frozen=True, order=True)
class ObjectInfo:
    """One listing entry: ``key`` relative to the store's root ('dir/' for a folder), ``size``."""

    key: str
    size: int

    @property
    def is_dir(self) -> bool:
        return self.key.endswith("/")


@dataclass(frozen=True)
class Versioned:
    """An object's bytes and the store's version of them (S3 ETag, GCS generation, local
    SHA-256): what a conditional write compares against."""

    data: bytes
    version: str


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a backend tries before giving up; mapped onto botocore / google-api-core."""

    attempts: int = 4  # botocore 'standard': backoff ~ rand*1 + rand*2 + rand*4 s at most
    deadline_s: float = 10.0  # google-api-core Retry timeout
    connect_s: float = 3.0
    read_s: float = 60.0


DATA_POLICY = RetryPolicy()
# ``check()`` is a probe: answer in a few seconds even when the endpoint is down.
PROBE_POLICY = RetryPolicy(attempts=2, deadline_s=3.0, connect_s=2.0, read_s=10.0)


class Store(abc.ABC):
    """An object store rooted at a URI. Keys are '/'-separated and relative to the root."""

    def __init__(self, root: StorageURI) -> None:
        self._root = root

    # -- addressing ------------------------------------------------------------------------

    @property
    def root(self) -> StorageURI:
        return self._root

    @property
    def uri(self) -> str:
        return self._root.uri

    def child(self, *parts: str) -> Store:
        """The same store rooted ``parts`` lower; shares the backend's client."""
        clone = copy.copy(self)
        clone._root = self._root.child(*parts)
        return clone

    def url_for(self, key: str) -> str:
        return self._root.child(check_key(key)).uri

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    # -- public operations -----------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> None:
        check_key(key)
        with self._boundary("write", key):
            self._put_bytes(key, bytes(data))

    def get_bytes(self, key: str) -> bytes:
        check_key(key)
        with self._boundary("read", key):
            return self._get_bytes(key)

    def put_file(self, key: str, path: str | Path, sha256: str | None = None) -> None:
        """Upload a file (multipart when large). ``sha256``: its digest when the caller already
        has it (a checkpoint manifest does), which saves reading the file twice."""
        check_key(key)
        source = Path(path)
        if not source.is_file():
            raise StorageError(f"cannot upload {source} to {self.url_for(key)}: not a file",
                               hint="pass the path of an existing regular file")
        with self._boundary("write", key):
            self._put_file(key, source, sha256)

    def get_file(self, key: str, path: str | Path) -> None:
        """Download to ``path`` atomically: a verified temp file renamed over it, or nothing."""
        check_key(key)
        dest = Path(path)
        with self._boundary("read", key):
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_target(dest) as tmp:
                self._get_file(key, tmp)

    def open_read(self, key: str) -> BinaryIO:
        """A streaming, buffered reader (a context manager); errors while reading translate too."""
        check_key(key)
        with self._boundary("read", key):
            return self._open_read(key)

    def list(self, prefix: str = "", recursive: bool = True) -> list[ObjectInfo]:
        """Objects under folder ``prefix`` ('a/b' and 'a/b/' alike), sorted by key.

        Non-recursive lists immediate children only; sub-folders appear as keys ending in '/'.
        """
        folder = check_prefix(prefix)
        with self._boundary("list", folder):
            return sorted(self._list(folder, recursive))

    def exists(self, key: str) -> bool:
        check_key(key)
        with self._boundary("read", key):
            return self._exists(key)

    def delete(self, key: str) -> None:
        """Delete one object; a missing key is not an error."""
        check_key(key)
        with self._boundary("delete", key):
            self._delete(key)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under folder ``prefix`` ('' = the whole root); returns the count."""
        folder = check_prefix(prefix)
        with self._boundary("delete", folder):
            return self._delete_prefix(folder)

    def read_versioned(self, key: str) -> Versioned | None:
        """The object and its version, or None when there is none."""
        check_key(key)
        with self._boundary("read", key):
            return self._read_versioned(key)

    def put_if_absent(self, key: str, data: bytes) -> str | None:
        """Create ``key`` only if no object is there; its new version, or None if one was."""
        check_key(key)
        with self._boundary("write", key):
            return self._put_if_absent(key, bytes(data))

    def put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        """Replace ``key`` only if it is still at ``version``; the new version, or None."""
        check_key(key)
        with self._boundary("write", key):
            return self._put_if_version(key, bytes(data), version)

    def delete_if_version(self, key: str, version: str) -> bool:
        """Delete ``key`` only if it is still at ``version``; whether it was deleted."""
        check_key(key)
        with self._boundary("delete", key):
            return self._delete_if_version(key, version)

    def check(self) -> None:
        """Cheap probe that the root is reachable and readable; StorageError with a hint if not."""
        with self._boundary("reach", ""):
            self._check()

    # -- backend interface -----------------------------------------------------------------

    @abc.abstractmethod
    def _put_bytes(self, key: str, data: bytes) -> None: ...

    @abc.abstractmethod
    def _get_bytes(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def _put_file(self, key: str, source: Path, sha256: str | None) -> None: ...

    @abc.abstractmethod
    def _get_file(self, key: str, tmp: Path) -> None:
        """Write the object to ``tmp`` (already created, empty) and verify it."""

    @abc.abstractmethod
    def _open_read(self, key: str) -> BinaryIO: ...

    @abc.abstractmethod
    def _list(self, folder: str, recursive: bool) -> list[ObjectInfo]: ...

    @abc.abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def _delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def _delete_prefix(self, folder: str) -> int: ...

    @abc.abstractmethod
    def _check(self) -> None: ...

    @abc.abstractmethod
    def _read_versioned(self, key: str) -> Versioned | None: ...

    @abc.abstractmethod
    def _put_if_absent(self, key: str, data: bytes) -> str | None: ...

    @abc.abstractmethod
    def _put_if_version(self, key: str, data: bytes, version: str) -> str | None: ...

    @abc.abstractmethod
    def _delete_if_version(self, key: str, version: str) -> bool: ...

    def _translate(self, exc: Exception, action: str, target: str) -> StorageError | None:
        """Map a foreign exception to a StorageError, or None to let it through (a bug)."""
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return StorageError(f"cannot {action} {self._target_url(target)}: network error "
                                f"({type(exc).__name__})", hint="check the network and retry")
        if isinstance(exc, OSError):
            reason = exc.strerror or type(exc).__name__
            where = f" ({exc.filename})" if exc.filename else ""
            return StorageError(f"cannot {action} {self._target_url(target)}: {reason}{where}",
                                hint="check the local path, its permissions and free disk space")
        return None

    # -- helpers for backends ----------------------------------------------------------------

    def _target_url(self, target: str) -> str:
        return self._root.child(target).uri if target else self.uri

    def _not_found(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"no object at {self.url_for(key)}",
                              hint="check the key; list the folder to see what exists")

    def _reader(self, key: str, read: Callable[[int], bytes], close: Callable[[], None],
                expected_sha256: str | None) -> BinaryIO:
        raw = _TranslatingReader(self, key, read, close, expected_sha256)
        return io.BufferedReader(raw, buffer_size=CHUNK)  # type: ignore[return-value]

    @contextlib.contextmanager
    def _boundary(self, action: str, target: str) -> Iterator[None]:
        try:
            yield
        except VopsError:
            raise
        except Exception as exc:
            error = self._translate(exc, action, target)
            if error is None:
                raise
            raise error from exc


class _TranslatingReader(io.RawIOBase):
    """Raw stream over a backend's body: translates read errors, checks SHA-256 at EOF."""

    def __init__(self, store: Store, key: str, read: Callable[[int], bytes],
                 close: Callable[[], None], expected_sha256: str | None) -> None:
        self._store, self._key, self._read, self._close = store, key, read, close
        self._expected = expected_sha256
        self._hash = hashlib.sha256() if expected_sha256 else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        with self._store._boundary("read", self._key):
            data = self._read(len(buffer))
        if self._hash is not None:
            if data:
                self._hash.update(data)
            else:
                actual, self._hash = self._hash.hexdigest(), None
                verify_sha256(self._expected, actual, self._store.url_for(self._key))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._close()
        super().close()


# -- checksums ---------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(8 * CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(expected: str | None, actual: str, url: str) -> None:
    """StorageError when a recorded checksum does not match; nothing to do without one."""
    if expected and expected.lower() != actual:
        raise StorageError(
            f"checksum mismatch reading {url}: recorded sha256 {expected[:16]}..., "
            f"got {actual[:16]}...",
            hint="the object or the transfer is corrupt; retry, and re-upload it if it persists",
        )


def first_line(text: str, limit: int = 300) -> str:
    """A foreign error's text as one short line, for a StorageError message."""
    lines = text.strip().splitlines()
    return " ".join(lines[0].split())[:limit] if lines else ""


def verify_size(expected: int | None, actual: int, url: str) -> None:
    if expected is not None and expected != actual:
        raise StorageError(f"truncated read of {url}: expected {expected} bytes, got {actual}",
                           hint="the transfer was cut short; retry")


# -- local atomic writes -----------------------------------------------------------------


@contextlib.contextmanager
def atomic_target(dest: Path) -> Iterator[Path]:
    """Yield a temp path beside ``dest``; on success fsync and rename it over ``dest``.

    On any exception the temp file is removed and ``dest`` is left as it was.
    """
    fd, name = tempfile.mkstemp(prefix=f"{TEMP_MARKER}{dest.name}.", dir=dest.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(dest.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename durable (best effort: not every filesystem lets a folder be fsynced)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- retries -----------------------------------------------------------------------------


def retry_transient(call: Callable[[], T], *, is_transient: Callable[[Exception], bool],
                    attempts: int = DATA_POLICY.attempts, base_delay: float = 0.25,
                    max_delay: float = 4.0, sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``call``, retrying transient failures with jittered exponential backoff.

    For the few calls the cloud libraries do not retry themselves (reading a response body
    after the request succeeded). The last failure propagates unchanged.
    """
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1))
            sleep(delay * random.uniform(0.5, 1.0))
    raise AssertionError("unreachable")  # pragma: no cover
