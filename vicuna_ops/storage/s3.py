"""``s3://`` store on boto3 (imported lazily, through ``vicuna_ops.adaptors``).

Endpoint: ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (as boto3 itself reads them), else
``s3.endpoint_url`` in the user config; a custom endpoint (MinIO, moto, R2) gets path-style
addressing. Region: ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, the config, the AWS profile, else
us-east-1 for custom endpoints. botocore retries each request ('standard' mode, a few attempts)
under short connect timeouts, so a dead endpoint fails in seconds; reading a response body,
which botocore does not retry, goes through ``retry_transient``.

What is verified:
  * writes send a CRC32 of every request (part) body, which S3 checks on receipt, and record
    the SHA-256 of the whole object in user metadata ``x-amz-meta-vops-sha256``;
  * ``get_bytes`` / ``open_read`` (single GETs): botocore checks the object's CRC32 when S3
    returns one, and we check the recorded SHA-256 and the length;
  * ``get_file`` (the transfer manager, ranged GETs for large objects, where no per-object
    CRC can be checked): the downloaded file's SHA-256 against the recorded one, and its size.
Objects written by other tools carry no SHA-256; for them only sizes and botocore's CRC
checks apply. (Seen with moto 5.2: it accepts a wrong client CRC32 on upload, and its CRC32 of
a multipart object is not the whole object's; hence the SHA-256 of our own as the end-to-end
check.) Conditional writes send ``If-None-Match: *`` / ``If-Match: <etag>`` (S3 answers 412,
or 409 when two conditional writes collide); the version is the ETag. ``check()`` lists at most one key under the root, so it needs s3:ListBucket.
"""

from __future__ import annotations

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
    retry_transient,
    sha256_bytes,
    sha256_file,
    verify_sha256,
    verify_size,
)
from vicuna_ops.storage.uri import StorageURI

# 16 MiB parts: a 256 MB file goes up as 16 parallel parts (64 MiB gave only 4, measured
# 0.61-0.85 of tuned boto3 on moto; 16 MiB gives 0.99-1.2). boto3 enlarges the parts by
# itself when a file would need more than S3's 10,000 (above ~160 GB).
MULTIPART_CHUNK = 16 << 20
MAX_CONCURRENCY = 10
_CREDENTIALS_HINT = "check AWS credentials (AWS_ACCESS_KEY_ID/AWS_PROFILE)"
_CREDENTIAL_CODES = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId",
                     "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                     "AllAccessDisabled", "AuthorizationHeaderMalformed"}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_LOST_RACE_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_UNAVAILABLE_CODES = {"SlowDown", "503", "ServiceUnavailable", "InternalError", "500",
                      "RequestTimeout"}


class S3Store(Store):
    def __init__(self, root: StorageURI) -> None:
        if root.scheme != "s3" or not root.bucket:
            raise ValueError(f"S3Store needs an s3:// root, got {root.uri}")
        super().__init__(root)
        self._clients: dict[RetryPolicy, Any] = {}  # shared with children (copy.copy)
        self._lock = threading.Lock()
        self._bucket_seen = False

    @property
    def bucket(self) -> str:
        return self._root.bucket or ""

    # -- objects -----------------------------------------------------------------------------

    def _put_bytes(self, key: str, data: bytes) -> None:
        self._client().put_object(Bucket=self.bucket, Key=self._name(key), Body=data,
                                  ChecksumAlgorithm="CRC32",
                                  Metadata={SHA256_META: sha256_bytes(data)})

    def _get_bytes(self, key: str) -> bytes:
        def fetch() -> bytes:
            response = self._client().get_object(Bucket=self.bucket, Key=self._name(key),
                                                  ChecksumMode="ENABLED")
            try:
                with response["Body"] as body:
                    data = body.read()
            except Exception as exc:  # the request worked; the body was cut off
                raise _BodyInterrupted(str(exc)) from exc
            url = self.url_for(key)
            verify_size(response.get("ContentLength"), len(data), url)
            verify_sha256(response.get("Metadata", {}).get(SHA256_META), sha256_bytes(data), url)
            return data

        return retry_transient(fetch, is_transient=_is_transient_read)

    def _put_file(self, key: str, source: Path, sha256: str | None) -> None:
        extra = {"Metadata": {SHA256_META: sha256 or sha256_file(source)},
                 "ChecksumAlgorithm": "CRC32"}
        self._client().upload_file(str(source), self.bucket, self._name(key), ExtraArgs=extra,
                                   Config=self._transfer_config())

    def _get_file(self, key: str, tmp: Path) -> None:
        # The recorded checksum comes from this HEAD; an overwrite between it and the download
        # shows up as a mismatch (an error, never a silently mixed file).
        head = self._client().head_object(Bucket=self.bucket, Key=self._name(key))
        self._client().download_file(self.bucket, self._name(key), str(tmp),
                                     Config=self._transfer_config())
        url = self.url_for(key)
        verify_size(head.get("ContentLength"), tmp.stat().st_size, url)
        verify_sha256(head.get("Metadata", {}).get(SHA256_META), sha256_file(tmp), url)

    def _open_read(self, key: str) -> BinaryIO:
        response = self._client().get_object(Bucket=self.bucket, Key=self._name(key),
                                              ChecksumMode="ENABLED")
        body = response["Body"]
        expected = response.get("Metadata", {}).get(SHA256_META)
        return self._reader(key, body.read, body.close, expected)

    def _exists(self, key: str) -> bool:
        botocore = adaptors.require("botocore.exceptions")
        try:
            self._client().head_object(Bucket=self.bucket, Key=self._name(key))
        except botocore.ClientError as exc:
            if _code(exc) not in _NOT_FOUND_CODES:
                raise
            if self._bucket_missing():
                raise self._no_bucket() from exc
            return False
        return True

    def _delete(self, key: str) -> None:
        self._client().delete_object(Bucket=self.bucket, Key=self._name(key))

    # -- conditional writes ------------------------------------------------------------------

    def _read_versioned(self, key: str) -> Versioned | None:
        botocore = adaptors.require("botocore.exceptions")
        try:
            response = self._client().get_object(Bucket=self.bucket, Key=self._name(key))
        except botocore.ClientError as exc:
            if _code(exc) in _NOT_FOUND_CODES:
                return None
            raise
        with response["Body"] as body:
            data = body.read()
        verify_size(response.get("ContentLength"), len(data), self.url_for(key))
        return Versioned(data, response["ETag"])

    def _put_if_absent(self, key: str, data: bytes) -> str | None:
        return self._conditional_put(key, data, IfNoneMatch="*")

    def _put_if_version(self, key: str, data: bytes, version: str) -> str | None:
        return self._conditional_put(key, data, IfMatch=version)

    def _delete_if_version(self, key: str, version: str) -> bool:
        botocore = adaptors.require("botocore.exceptions")
        current = self._read_versioned(key)  # servers without a conditional delete (moto)
        if current is None or current.version != version:
            return False
        try:
            self._client().delete_object(Bucket=self.bucket, Key=self._name(key),
                                         IfMatch=version)
        except botocore.ClientError as exc:
            if _code(exc) in _LOST_RACE_CODES | _NOT_FOUND_CODES:
                return False
            raise
        return True

    def _conditional_put(self, key: str, data: bytes, **condition: str) -> str | None:
        botocore = adaptors.require("botocore.exceptions")
        try:
            response = self._client().put_object(
                Bucket=self.bucket, Key=self._name(key), Body=data, ChecksumAlgorithm="CRC32",
                Metadata={SHA256_META: sha256_bytes(data)}, **condition)
        except botocore.ClientError as exc:
            if _code(exc) in _LOST_RACE_CODES or (
                    "IfMatch" in condition and _code(exc) in _NOT_FOUND_CODES):
                return None
            raise
        return response["ETag"]

    # -- folders -----------------------------------------------------------------------------

    def _list(self, folder: str, recursive: bool) -> list[ObjectInfo]:
        base = self._name(folder) + "/" if folder or self._root.prefix else ""
        cut = len(self._root.prefix) + 1 if self._root.prefix else 0
        kwargs = {"Bucket": self.bucket, "Prefix": base}
        if not recursive:
            kwargs["Delimiter"] = "/"
        entries = []
        for page in self._client().get_paginator("list_objects_v2").paginate(**kwargs):
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):  # skip console-made folder markers
                    entries.append(ObjectInfo(item["Key"][cut:], int(item["Size"])))
            for common in page.get("CommonPrefixes", []):
                entries.append(ObjectInfo(common["Prefix"][cut:], 0))
        return entries

    def _delete_prefix(self, folder: str) -> int:
        keys = [self._name(info.key) for info in self._list(folder, recursive=True)]
        client = self._client()
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start:start + 1000]]
            response = client.delete_objects(Bucket=self.bucket,
                                              Delete={"Objects": batch, "Quiet": True})
            if response.get("Errors"):
                first = response["Errors"][0]
                raise StorageError(
                    f"cannot delete s3://{self.bucket}/{first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message', '')}".strip(),
                    hint=_CREDENTIALS_HINT if first.get("Code") == "AccessDenied" else None)
        return len(keys)

    def _check(self) -> None:
        prefix = self._root.prefix + "/" if self._root.prefix else ""
        self._client(PROBE_POLICY).list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)

    # -- client and errors -------------------------------------------------------------------

    def _name(self, key: str) -> str:
        if not key:
            return self._root.prefix
        return f"{self._root.prefix}/{key}" if self._root.prefix else key

    def _client(self, policy: RetryPolicy = DATA_POLICY) -> Any:
        with self._lock:
            if policy not in self._clients:
                self._clients[policy] = _make_client(policy)
            return self._clients[policy]

    def _transfer_config(self) -> Any:
        transfer = adaptors.require("boto3.s3.transfer")
        return transfer.TransferConfig(multipart_threshold=MULTIPART_CHUNK,
                                       multipart_chunksize=MULTIPART_CHUNK,
                                       max_concurrency=MAX_CONCURRENCY, use_threads=True)

    def _bucket_missing(self) -> bool:
        """A HEAD 404 does not say whether the key or the bucket is missing: ask (once)."""
        if self._bucket_seen:
            return False
        botocore = adaptors.require("botocore.exceptions")
        try:
            self._client().head_bucket(Bucket=self.bucket)
        except botocore.ClientError as exc:
            return _code(exc) in _NOT_FOUND_CODES | {"NoSuchBucket"}
        except Exception:  # unknown: report the original error, not this one
            return False
        self._bucket_seen = True
        return False

    def _no_bucket(self) -> StorageError:
        return StorageError(f"bucket s3://{self.bucket} does not exist ({self.uri})",
                            hint=f"create it (aws s3 mb s3://{self.bucket}) or fix the URI")

    def _translate(self, exc: Exception, action: str, target: str) -> StorageError | None:
        cause = _unwrap(exc)
        module = type(cause).__module__
        if not module.startswith(("botocore", "boto3", "s3transfer", "urllib3")):
            return super()._translate(cause, action, target)
        botocore = adaptors.require("botocore.exceptions")
        where = f"cannot {action} {self._target_url(target)}"
        if isinstance(cause, botocore.ClientError):
            code = _code(cause)
            message = cause.response.get("Error", {}).get("Message") or code
            if code == "NoSuchBucket":
                return self._no_bucket()
            if code == "NoSuchKey" and target:
                return self._not_found(target)
            if code in _NOT_FOUND_CODES and action == "read" and target:
                return self._no_bucket() if self._bucket_missing() else self._not_found(target)
            if code in _CREDENTIAL_CODES:
                return StorageError(f"{where}: access denied ({code})", hint=_CREDENTIALS_HINT)
            hint = "S3 is throttling or unavailable; retry later" if code in _UNAVAILABLE_CODES \
                else None
            return StorageError(f"{where}: {code}: {first_line(message)}", hint=hint)
        if isinstance(cause, (botocore.NoCredentialsError, botocore.PartialCredentialsError,
                              botocore.ProfileNotFound, botocore.CredentialRetrievalError)):
            return StorageError(f"{where}: {first_line(str(cause))}", hint=_CREDENTIALS_HINT)
        if isinstance(cause, botocore.FlexibleChecksumError):
            return StorageError(f"checksum mismatch reading {self._target_url(target)}",
                                hint="the transfer is corrupt; retry")
        if isinstance(cause, (botocore.EndpointConnectionError, botocore.ConnectTimeoutError,
                              botocore.ReadTimeoutError, botocore.ConnectionClosedError)):
            endpoint = _endpoint()
            hint = (f"is the endpoint up? AWS_ENDPOINT_URL={endpoint}" if endpoint
                    else "check network access to S3 (and any HTTPS_PROXY)")
            return StorageError(f"{where}: endpoint unreachable ({type(cause).__name__})",
                                hint=hint)
        return StorageError(f"{where}: {type(cause).__name__}: {first_line(str(cause))}",
                            hint=None)


def _make_client(policy: RetryPolicy) -> Any:
    boto3 = adaptors.boto3()
    botocore_config = adaptors.require("botocore.config")
    endpoint = _endpoint()
    settings = load_config().s3
    config = botocore_config.Config(
        connect_timeout=policy.connect_s,
        read_timeout=policy.read_s,
        retries={"mode": "standard", "max_attempts": policy.attempts},
        max_pool_connections=2 * MAX_CONCURRENCY,
        request_checksum_calculation="when_supported",
        response_checksum_validation="when_supported",
        s3={"addressing_style": "path"} if endpoint else None,
    )
    session = boto3.session.Session()
    region = (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
              or settings.region or session.region_name or ("us-east-1" if endpoint else None))
    return session.client("s3", endpoint_url=endpoint, region_name=region, config=config)


def _endpoint() -> str | None:
    return (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            or load_config().s3.endpoint_url or None)


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unwrap(exc: BaseException) -> BaseException:
    """boto3 wraps transfer errors (S3UploadFailedError, RetriesExceededError), and so do we
    (_BodyInterrupted): find the error that says what happened."""
    seen = 0
    wrappers = ("S3UploadFailedError", "RetriesExceededError", "_BodyInterrupted")
    while type(exc).__name__ in wrappers and seen < 5:
        inner = getattr(exc, "last_exception", None) or exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc, seen = inner, seen + 1
    return exc


class _BodyInterrupted(Exception):
    """Reading a response body failed after botocore's (retried) request succeeded."""


def _is_transient_read(exc: Exception) -> bool:
    cause = exc.__cause__
    return isinstance(exc, _BodyInterrupted) and type(cause).__name__ in (
        "ResponseStreamingError", "ReadTimeoutError", "IncompleteReadError",
        "ConnectionClosedError", "ProtocolError")
