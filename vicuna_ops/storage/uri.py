"""Storage URIs and object keys: parsing, validation, joining. Pure; no I/O.

Three schemes::

    /abs/path, rel/path, ~/path, file:///abs/path   -> StorageURI('file', None, '/abs/path')
    s3://bucket[/prefix]                            -> StorageURI('s3', 'bucket', 'prefix')
    gs://bucket[/prefix]                            -> StorageURI('gs', 'bucket', 'prefix')

A remote prefix never has a leading or trailing slash, and empty segments collapse
(``s3://b//runs/`` is ``s3://b/runs``). A local prefix is the absolute, normalised path.
``file://`` URIs are taken literally: no percent-decoding, so ``url_for`` round-trips.

Keys are ``/``-separated and relative to a store's root; ``.`` and ``..`` segments, empty
segments and leading slashes are refused, so a key can never leave its root.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from vicuna_ops.errors import UserError

SCHEMES = ("file", "s3", "gs")

_URI_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# 's3:bucket', 'gs:/bucket': a known scheme with the slashes missing is a typo, not a path.
_HALF_URI = re.compile(r"^(s3|gs|file):/?(?!/)", re.IGNORECASE)
_SCHEME_TYPOS = {"gcs": "gs", "s3a": "s3", "s3n": "s3", "local": "file"}

# S3: 3-63 chars of lowercase letters, digits, dots and dashes; starts and ends with a letter or
# digit; not an IP address. GCS also allows underscores (and up to 222 chars with dots).
_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_GS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_IP_LIKE = re.compile(r"^\d+\.\d+\.\d+\.\d+$")


@dataclass(frozen=True)
class StorageURI:
    """A parsed root: ``scheme``, ``bucket`` (None for file) and ``prefix``."""

    scheme: str
    bucket: str | None
    prefix: str

    @property
    def uri(self) -> str:
        """The canonical string form; ``parse_uri(x.uri) == x``."""
        if self.scheme == "file":
            return "file://" + self.prefix
        tail = f"/{self.prefix}" if self.prefix else ""
        return f"{self.scheme}://{self.bucket}{tail}"

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    def child(self, *parts: str) -> StorageURI:
        """The URI ``parts`` below this one; each part may hold ``/`` and is checked like a key."""
        rel = join_keys(*parts)
        if not rel:
            return self
        if self.scheme == "file":
            base = self.prefix.rstrip("/")
            return StorageURI("file", None, f"{base}/{rel}")
        prefix = f"{self.prefix}/{rel}" if self.prefix else rel
        return StorageURI(self.scheme, self.bucket, prefix)

    def __str__(self) -> str:
        return self.uri


def parse_uri(uri: str) -> StorageURI:
    """Parse a path or ``file://``, ``s3://``, ``gs://`` URI; UserError naming it when malformed."""
    if not isinstance(uri, str):
        raise UserError(f"invalid storage URI {uri!r}: expected a string", hint=_FORMS)
    text = uri.strip()
    if not text:
        raise UserError("empty storage URI", hint=_FORMS)
    if "\x00" in text or "\n" in text or "\r" in text:
        raise UserError(f"invalid storage URI {uri!r}: control characters", hint=_FORMS)
    match = _URI_SCHEME.match(text)
    if match is None:
        if _HALF_URI.match(text):
            raise UserError(f"invalid storage URI {uri!r}: missing '//' after the scheme",
                            hint=_FORMS)
        return _local(text, uri)
    scheme = match.group(1).lower()
    rest = text[match.end():]
    if scheme == "file":
        return _file_uri(rest, uri)
    if scheme not in SCHEMES:
        better = _SCHEME_TYPOS.get(scheme)
        hint = f"did you mean {better}://?" if better else _FORMS
        raise UserError(f"unsupported storage scheme {scheme + '://'!r} in {uri!r}", hint=hint)
    bucket, _, path = rest.partition("/")
    if not bucket:
        raise UserError(f"invalid storage URI {uri!r}: no bucket name",
                        hint=f"write {scheme}://BUCKET[/PREFIX]")
    _check_bucket(scheme, bucket, uri)
    return StorageURI(scheme, bucket, _normalise_prefix(path, uri))


def check_key(key: str) -> str:
    """Validate an object key (``a/b/c``); returns it. UserError on anything that could escape."""
    if not isinstance(key, str) or not key:
        raise UserError(f"invalid object key {key!r}: empty", hint="keys look like 'dir/file'")
    if key.startswith("/"):
        raise UserError(f"invalid object key {key!r}: starts with '/'",
                        hint="keys are relative to the store's root")
    if key.endswith("/"):
        raise UserError(f"invalid object key {key!r}: ends with '/'",
                        hint="an object key names a file, not a folder")
    for part in key.split("/"):
        _check_segment(part, key, "object key")
    return key


def check_prefix(prefix: str) -> str:
    """Validate a folder prefix for listing/deleting; '' is the root. Returned without slashes."""
    if not isinstance(prefix, str):
        raise UserError(f"invalid prefix {prefix!r}", hint="prefixes look like 'dir/sub/'")
    stripped = prefix.strip("/")
    if prefix.startswith("/"):
        raise UserError(f"invalid prefix {prefix!r}: starts with '/'",
                        hint="prefixes are relative to the store's root")
    if not stripped:
        return ""
    for part in stripped.split("/"):
        _check_segment(part, prefix, "prefix")
    return stripped


def join_keys(*parts: str) -> str:
    """Join key fragments with ``/``; each fragment is checked. Empty fragments are skipped."""
    cleaned = [check_prefix(part) for part in parts]
    return "/".join(part for part in cleaned if part)


_FORMS = "use a path, file:///abs/path, s3://bucket[/prefix] or gs://bucket[/prefix]"


def _check_segment(part: str, whole: str, what: str) -> None:
    if part in ("", ".", ".."):
        shown = "an empty segment ('//')" if part == "" else f"a {part!r} segment"
        raise UserError(f"invalid {what} {whole!r}: {shown}",
                        hint=f"a {what} cannot contain '.', '..' or '//'")
    if "\x00" in part or "\n" in part or "\r" in part:
        raise UserError(f"invalid {what} {whole!r}: control characters",
                        hint="use printable characters")


def _check_bucket(scheme: str, bucket: str, uri: str) -> None:
    pattern = _S3_BUCKET if scheme == "s3" else _GS_BUCKET
    if not pattern.match(bucket) or _IP_LIKE.match(bucket) or ".." in bucket:
        rules = "3-63 lowercase letters, digits, dots and dashes" if scheme == "s3" else (
            "3-63 lowercase letters, digits, dashes, underscores and dots")
        raise UserError(f"invalid bucket name {bucket!r} in {uri!r}",
                        hint=f"{scheme} bucket names are {rules}, starting and ending with a "
                             "letter or digit")


def _normalise_prefix(path: str, uri: str) -> str:
    parts = [part for part in path.split("/") if part]
    for part in parts:
        if part in (".", ".."):
            raise UserError(f"invalid storage URI {uri!r}: a {part!r} segment",
                            hint="write the prefix without '.' or '..'")
    return "/".join(parts)


def _local(path: str, uri: str) -> StorageURI:
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):
        raise UserError(f"invalid path {uri!r}: cannot expand {path.split('/')[0]!r}",
                        hint="write the absolute path")
    return StorageURI("file", None, _clean_abs(os.path.abspath(expanded)))


def _file_uri(rest: str, uri: str) -> StorageURI:
    host, slash, path = rest.partition("/")
    if host not in ("", "localhost"):
        raise UserError(f"invalid file URI {uri!r}: host {host!r} is not local",
                        hint="write file:///abs/path (three slashes)")
    if not slash:
        raise UserError(f"invalid file URI {uri!r}: no path", hint="write file:///abs/path")
    return StorageURI("file", None, _clean_abs("/" + path))


def _clean_abs(path: str) -> str:
    """Normalise an absolute path: '..' resolved textually (as for plain paths), no '//'."""
    return os.path.normpath("/" + path.lstrip("/"))
