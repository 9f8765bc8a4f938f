"""URI-addressed object storage: local folders, S3 and GCS behind one small interface.

    store = open_store("s3://bucket/runs/run-1")      # or gs://..., file:///..., a plain path
    store.put_file("step_00000040/model.safetensors", path)
    store.child("step_00000040").list()

Importing this package loads neither boto3 nor google-cloud-storage; a backend's client
library is imported when its first store is opened (``vicuna_ops.adaptors``).

    uri.py     parse_uri / StorageURI, key and prefix checks (pure)
    base.py    Store interface, error boundary, checksums, atomic local writes, retry helper
    local.py   file://        s3.py   s3://        gcs.py   gs://
"""

from __future__ import annotations

import os

from vicuna_ops.storage.base import ObjectInfo, Store
from vicuna_ops.storage.uri import StorageURI, check_key, check_prefix, join_keys, parse_uri

__all__ = [
    "ObjectInfo",
    "StorageURI",
    "Store",
    "check_key",
    "check_prefix",
    "join_keys",
    "open_store",
    "parse_uri",
]


def open_store(uri: str | os.PathLike[str] | StorageURI) -> Store:
    """A store rooted at ``uri`` (a ``Path`` is a local root). No network until first use."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    root = uri if isinstance(uri, StorageURI) else parse_uri(uri)
    if root.scheme == "file":
        from vicuna_ops.storage.local import LocalStore

        return LocalStore(root)
    if root.scheme == "s3":
        from vicuna_ops.storage.s3 import S3Store

        return S3Store(root)
    from vicuna_ops.storage.gcs import GCSStore

    return GCSStore(root)
