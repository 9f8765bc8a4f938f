"""``gs://`` store on google-cloud-storage (imported lazily, through ``vicuna_ops.adaptors``).

With ``STORAGE_EMULATOR_HOST`` set (gcp-storage-emulator, fake-gcs-server) the client talks to
it with anonymous credentials; otherwise Application Default Credentials. Project:
``GOOGLE_CLOUD_PROJECT``, else ``gcs.project`` in the user config, else the credentials'.
Every call passes the library's retry with a short deadline and (connect, read) timeouts, so
a dead endpoint fails in seconds; uploads are overwrites of a whole object, so retrying them
is safe.

What is verified:
  * uploads: the library sends a CRC32C (multipart) or compares the server's CRC32C at the end
    of a resumable upload; we record the SHA-256 in metadata ``vops-sha256``;
  * downloads (``get_bytes``, ``get_file``): the library checks CRC32C (``checksum='auto'``)
    when the server sends ``x-goog-hash``; we check size and the recorded SHA-256, and pin the
    generation we read the metadata of, so an overwrite in between cannot mix versions;
  * ``open_read``: the recorded SHA-256 at the end of the stream.

Conditional writes pass ``ifGenerationMatch`` (0: only if absent); the version is the
object's generation. (gcp-storage-emulator ignores preconditions: the tests run it with them.)
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, BinaryIO

from vicuna_ops import adaptors
from vicuna_ops.config import load_config
from vicuna_ops.errors import StorageError
from vicuna_ops.storage.base import (
    DATA_POLICY,
    PROBE_POLICY,
    SHA256_META,
    ObjectInfo,
    RetryPolicy,
    Store,
    Versioned,
    first_line,
    sha256_bytes,
    sha256_file,
    verify_sha256,
    verify_size,
)
from vicuna_ops.storage.uri import StorageURI

UPLOAD_CHUNK = 64 << 20  # resumable upload chunk; a multiple of 256 KiB
READ_CHUNK = 8 << 20  # open_read's ranged GETs
_CREDENTIALS_HINT = ("check GCP credentials (GOOGLE_APPLICATION_CREDENTIALS or "
                     "`gcloud auth application-default login`)")
_EMULATOR_PROJECT = "vops-emulator"


class GCSStore(Store):
    def __init__(self, root: StorageURI) -> None:
        if root.scheme != "gs" or not root.bucket:
            raise ValueError(f"GCSStore needs a gs:// root, got {root.uri}")
        super().__init__(root)
        self._shared: dict[str, Any] = {}  # the client, shared with children (copy.copy)
        self._lock = threading.Lock()
        self._bucket_seen = False

    @property
    def bucket(self) -> str:
        return self._root.bucket or ""

    # -- objects -----------------------------------------------------------------------------

    def _put_bytes(self, key: str, data: bytes) -> None:
        blob = self._bucket().blob(self._name(key))
        blob.metadata = {SHA256_META: sha256_bytes(data)}
        blob.upload_from_string(data, content_type="application/octet-stream",
                                **self._call_args())

    def _get_bytes(self, key: str) -> bytes:
        blob = self._stat(key)
        data = blob.download_as_bytes(checksum="auto", **self._call_args())
        url = self.url_for(key)
        verify_size(blob.size, len(data), url)
        verify_sha256((blob.metadata or {}).get(SHA256_META), sha256_bytes(data), url)
        return data

    def _put_file(self, key: str, source: Path, sha256: str | None) -> None:
        blob = self._bucket().blob(self._name(key), chunk_size=UPLOAD_CHUNK)
        blob.metadata = {SHA256_META: sha256 or sha256_file(source)}
        blob.upload_from_filename(str(source), content_type="application/octet-stream",
                                  **self._call_args())

    def _get_file(self, key: str, tmp: Path) -> None:
        blob = self._stat(key)
        blob.download_to_filename(str(tmp), checksum="auto", **self._call_args())
        url = self.url_for(key)
        verify_size(blob.size, tmp.stat().st_size, url)
        verify_sha256((blob.metadata or {}).get(SHA256_META), sha256_file(tmp), url)

    def _open_read(self, key: str) -> BinaryIO:
        blob = self._stat(key)
        reader = blob.open("rb", chunk_size=READ_CHUNK, **self._call_args())
        expected = (blob.metadata or {}).get(SHA256_META)
        return self._reader(key, reader.read, reader.close, expected)

    def _exists(self, key: str) -> bool:
        not_found = adaptors.require("google.api_core.exceptions").NotFound
        try:
            self._bucket().blob(self._name(key)).reload(**self._call_args())
        except not_found as exc:
            if self._bucket_missing():
                raise self._no_bucket() from exc
            return False
        return True

    def _delete(self, key: str) -> None:
        not_found = adaptors.require("google.api_core.exceptions").NotFound
        try:
            self._bucket().blob(self._name(key)).delete(**self._call_args())
        except not_found as exc:
            if self._bucket_missing():
                raise self._no_bucket() from exc

    # -- conditional writes ------------------------------------------------------------------

    def _read_versioned(self, key: str) -> Versioned | None:
        api = adaptors.require("google.api_core.exceptions")
        blob = self._bucket().get_blob(self._name(key), **self._call_args())
        if blob is None:
            return None
        generation = blob.generation  # a download rewrites it from the response's headers
        try:
            data = blob.download_as_bytes(if_generation_match=generation, **self._call_args())
        except (api.NotFound, api.PreconditionFailed):
            return self._read_versioned(key)  # replaced between the two calls: read the new one
        return Versioned(data, str(generation))

    def _put_if_absent(self, key: str, data: bytes) -> str | None:
        return self._conditional_put(key, data, 0)

    def _put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        return self._conditional_put(key, data, int(version))

    def _delete_if_version(self, key: str, version: str) -> bool:
        api = adaptors.require("google.api_core.exceptions")
        try:
            self._bucket().blob(self._name(key)).delete(if_generation_match=int(version),
                                                        **self._call_args())
        except (api.NotFound, api.PreconditionFailed):
            return False
        return True

    def _conditional_put(self, key: str, data: bytes, generation: int) -> str | None:
        api = adaptors.require("google.api_core.exceptions")
        blob = self._bucket().blob(self._name(key))
        blob.metadata = {SHA256_META: sha256_bytes(data)}
        try:
            blob.upload_from_string(data, content_type="application/octet-stream",
                                    if_generation_match=generation, **self._call_args())
        except api.PreconditionFailed:
            return None
        return str(blob.generation)

    # -- folders -----------------------------------------------------------------------------

    def _list(self, folder: str, recursive: bool) -> list[ObjectInfo]:
        base = self._name(folder) + "/" if folder or self._root.prefix else ""
        cut = len(self._root.prefix) + 1 if self._root.prefix else 0
        pages = self._gcs_client().list_blobs(self.bucket, prefix=base,
                                              delimiter=None if recursive else "/",
                                              **self._call_args())
        entries = [ObjectInfo(blob.name[cut:], int(blob.size or 0))
                   for blob in pages if not blob.name.endswith("/")]
        entries += [ObjectInfo(prefix[cut:], 0) for prefix in pages.prefixes]
        return entries

    def _delete_prefix(self, folder: str) -> int:
        not_found = adaptors.require("google.api_core.exceptions").NotFound
        infos = self._list(folder, recursive=True)
        bucket = self._bucket()
        for info in infos:
            with contextlib.suppress(not_found):  # deleted by someone else meanwhile
                bucket.blob(self._name(info.key)).delete(**self._call_args())
        return len(infos)

    def _check(self) -> None:
        prefix = self._root.prefix + "/" if self._root.prefix else ""
        pages = self._gcs_client().list_blobs(self.bucket, prefix=prefix, max_results=1,
                                              **self._call_args(PROBE_POLICY))
        for _ in pages:
            break

    # -- client and errors -------------------------------------------------------------------

    def _name(self, key: str) -> str:
        if not key:
            return self._root.prefix
        return f"{self._root.prefix}/{key}" if self._root.prefix else key

    def _gcs_client(self) -> Any:
        with self._lock:
            if "client" not in self._shared:
                self._shared["client"] = _make_client()
            return self._shared["client"]

    def _bucket(self) -> Any:
        return self._gcs_client().bucket(self.bucket)

    def _stat(self, key: str) -> Any:
        """The blob with its metadata loaded and its generation pinned; NotFound if missing."""
        blob = self._bucket().blob(self._name(key))
        blob.reload(**self._call_args())
        return blob

    def _call_args(self, policy: RetryPolicy = DATA_POLICY) -> dict[str, Any]:
        retry_module = adaptors.require("google.cloud.storage.retry")
        retry = retry_module.DEFAULT_RETRY.with_delay(initial=0.25, maximum=4.0, multiplier=2.0)
        return {"retry": retry.with_timeout(policy.deadline_s),
                "timeout": (policy.connect_s, policy.read_s)}

    def _bucket_missing(self) -> bool:
        """A 404 on an object does not say whether the bucket exists: ask (once)."""
        if self._bucket_seen:
            return False
        try:
            exists = self._bucket().exists(**self._call_args(PROBE_POLICY))
        except Exception:  # unknown: report the original error, not this one
            return False
        self._bucket_seen = exists
        return not exists

    def _no_bucket(self) -> StorageError:
        return StorageError(f"bucket gs://{self.bucket} does not exist ({self.uri})",
                            hint=f"create it (gcloud storage buckets create gs://{self.bucket}) "
                                 "or fix the URI")

    def _translate(self, exc: Exception, action: str, target: str) -> StorageError | None:
        cause = _unwrap(exc)
        module = type(cause).__module__
        if not module.startswith(("google", "requests", "urllib3")):
            return super()._translate(cause, action, target)
        api = adaptors.require("google.api_core.exceptions")
        where = f"cannot {action} {self._target_url(target)}"
        if isinstance(cause, api.NotFound):
            if action == "read" and target and not self._bucket_missing():
                return self._not_found(target)
            return self._no_bucket()
        if isinstance(cause, (api.Forbidden, api.Unauthorized)) or type(cause).__name__ in (
                "DefaultCredentialsError", "RefreshError"):
            return StorageError(f"{where}: {first_line(str(cause))}", hint=_CREDENTIALS_HINT)
        if type(cause).__name__ == "DataCorruption":
            return StorageError(f"checksum mismatch reading {self._target_url(target)}",
                                hint="the transfer is corrupt; retry")
        if _is_connection_error(cause):
            emulator = os.environ.get("STORAGE_EMULATOR_HOST")
            hint = (f"is the endpoint up? STORAGE_EMULATOR_HOST={emulator}" if emulator
                    else "check network access to storage.googleapis.com (and any HTTPS_PROXY)")
            return StorageError(f"{where}: endpoint unreachable ({type(cause).__name__})",
                                hint=hint)
        if isinstance(cause, api.GoogleAPICallError):
            hint = "GCS is throttling or unavailable; retry later" if (
                cause.code in (429, 500, 502, 503, 504)) else None
            return StorageError(f"{where}: {cause.code} {first_line(cause.message or '')}",
                                hint=hint)
        return StorageError(f"{where}: {type(cause).__name__}: {first_line(str(cause))}")


def _make_client() -> Any:
    storage = adaptors.gcs()
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or load_config().gcs.project
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        anonymous = adaptors.require("google.auth.credentials").AnonymousCredentials()
        return storage.Client(project=project or _EMULATOR_PROJECT, credentials=anonymous)
    return storage.Client(project=project)


def _unwrap(exc: BaseException) -> BaseException:
    """api_core's RetryError (deadline exceeded) wraps the last real error."""
    if type(exc).__name__ == "RetryError" and getattr(exc, "cause", None) is not None:
        return exc.cause  # type: ignore[attr-defined]
    return exc


def _is_connection_error(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"ConnectionError", "Timeout", "TransportError", "ProtocolError",
                         "NewConnectionError", "MaxRetryError"})
