"""Input URIs to the files to read: a file, or every .json/.jsonl(.gz) under a folder/prefix.

Resolved before any work starts, so a missing or unreadable input is one line and exit 2
at once rather than after an hour of processing the inputs before it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from vicuna_ops.errors import ObjectNotFound, StorageError, UserError

DATA_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


@dataclass(frozen=True)
class InputFile:
    uri: str
    store: Any  # vicuna_ops.storage.Store
    key: str
    size: int | None  # bytes as stored; None when the store did not say

    def open(self) -> BinaryIO:
        return self.store.open_read(self.key)


def resolve_inputs(uris: list[str]) -> list[InputFile]:
    """Every input file, in the order given (a folder's files sorted by key)."""
    if not uris:
        raise UserError("no input given", hint="name one or more ShareGPT .json/.jsonl files")
    files: list[InputFile] = []
    for uri in uris:
        files.extend(_resolve(uri))
    seen: set[str] = set()
    for file in files:
        if file.uri in seen:
            raise UserError(f"input {file.uri} is given twice",
                            hint="every record in it would count as a duplicate")
        seen.add(file.uri)
    return files


def _resolve(uri: str) -> list[InputFile]:
    from vicuna_ops.storage import StorageURI, open_store, parse_uri

    root = parse_uri(uri)
    if root.scheme == "file":
        return _resolve_local(Path(root.prefix), uri)
    parent, _, name = root.prefix.rpartition("/")
    if name:
        folder = open_store(StorageURI(root.scheme, root.bucket, parent))
        if folder.exists(name):
            sizes = {o.key: o.size for o in folder.list("", recursive=False)}
            return [InputFile(folder.url_for(name), folder, name, sizes.get(name))]
    store = open_store(root)
    found = [InputFile(store.url_for(o.key), store, o.key, o.size)
             for o in store.list("", recursive=True) if _is_data(o.key)]
    if not found:
        raise ObjectNotFound(f"no input at {root.uri}: no such object, and no .json or .jsonl "
                             "files under it", hint="check the URI; `vops storage ls` shows "
                             "what is there")
    return found


def _resolve_local(path: Path, uri: str) -> list[InputFile]:
    from vicuna_ops.storage import StorageURI, open_store

    if path.is_dir():
        paths = sorted(p for p in path.rglob("*") if p.is_file() and _is_data(p.name))
        if not paths:
            raise ObjectNotFound(f"no .json or .jsonl files under {path}",
                                 hint="name the files, or a folder that holds them")
    elif path.is_file():
        paths = [path]
    else:
        raise ObjectNotFound(f"no input at {uri}: no such file",
                             hint="check the path")
    files = []
    for file in paths:
        if not os.access(file, os.R_OK):
            raise StorageError(f"cannot read {file}: permission denied",
                               hint="check the file's permissions")
        store = open_store(StorageURI("file", None, str(file.parent)))
        files.append(InputFile(store.url_for(file.name), store, file.name, file.stat().st_size))
    return files


def _is_data(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return not name.startswith(".") and name.lower().endswith(DATA_SUFFIXES)
