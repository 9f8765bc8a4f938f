"""What ``vops train --local`` checks before it starts anything: a mistake costs one line and
exit 2, and writes nothing (no ledger row, no object in the bucket).

    the data          a builtin set vops knows, a readable local file, or an object that exists
    the bucket        reachable, and writable where that can be checked without writing
    the run           no live trainer holds its lease (``lease.py``)

The recipe was validated when it was loaded. The trainer checks the same things again (a
node starts without this CLI), so these checks only move a failure earlier.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from vicuna_ops.errors import UserError, VopsError


def check_inputs(recipe: Any, run_store: Any, data: str | None) -> None:
    """UserError naming the first problem; returns when training may start."""
    check_data(data or recipe.data.path)
    check_bucket(run_store)
    check_no_live_trainer(run_store)


def check_data(uri: str | None) -> None:
    from vicuna_ops.storage import StorageURI, open_store, parse_uri
    from vicuna_ops.train.builtin_data import BUILTIN_TINY_CHAT

    if not uri:
        raise UserError("no training data", hint="pass --data URI or set data.path in the recipe")
    if uri.startswith("builtin:"):
        if uri != BUILTIN_TINY_CHAT:
            raise UserError(f"unknown builtin data set {uri!r}", hint=f"use {BUILTIN_TINY_CHAT}")
        return
    parsed = parse_uri(uri)
    parent, _, name = parsed.prefix.rpartition("/")
    if not name:
        raise UserError(f"data URI {uri!r} names a folder", hint="point at a .json/.jsonl file")
    if parsed.scheme == "file":
        path = Path(parsed.prefix)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise UserError(f"training data {path} {what}",
                            hint="pass --data with an existing .json/.jsonl file")
        if not os.access(path, os.R_OK):
            raise UserError(f"training data {path} is not readable",
                            hint="check the file's permissions")
        return
    try:
        found = open_store(StorageURI(parsed.scheme, parsed.bucket, parent)).exists(name)
    except VopsError as exc:
        raise UserError(f"cannot read the training data: {exc.message}", hint=exc.hint) from exc
    if not found:
        raise UserError(f"training data {uri} does not exist",
                        hint="check the URI (list the folder to see what is there)")


def check_bucket(run_store: Any) -> None:
    try:
        run_store.check()
    except VopsError as exc:
        raise UserError(exc.message, hint=exc.hint) from exc


def check_no_live_trainer(run_store: Any) -> None:
    from vicuna_ops.train.lease import held_error, is_live, read_lease

    try:
        holder = read_lease(run_store)
    except VopsError as exc:
        raise UserError(f"cannot read the run's lease: {exc.message}", hint=exc.hint) from exc
    now = time.time()
    if holder is not None and is_live(holder, now):
        raise held_error(holder, run_store.uri, now)
