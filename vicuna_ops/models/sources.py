"""A model folder named by a path or a bucket URI, as a local folder.

A path is used where it is. A bucket URI (s3://, gs://, file://) is downloaded into a scratch
folder first (disk, not memory: each object streams to a file); its first object is fetched
before anything else, so an unreachable bucket fails at once, in one line.
"""

from __future__ import annotations

from pathlib import Path

from vicuna_ops.errors import UserError

BUCKET_SCHEMES = ("s3://", "gs://", "file://")


def is_uri(spec: str) -> bool:
    return spec.startswith(BUCKET_SCHEMES)


def local_folder(spec: str, scratch: Path, what: str) -> Path:
    """``spec``'s files in a local folder (``scratch`` when it had to be downloaded)."""
    if not is_uri(spec):
        folder = Path(spec).expanduser()
        if not folder.exists():
            raise UserError(f"{what} {spec} does not exist",
                            hint="pass an HF model folder (a path or a bucket URI)")
        if not folder.is_dir():
            raise UserError(f"{what} {spec} is not a folder",
                            hint="pass the folder that holds config.json and the weights")
        return folder
    from vicuna_ops.storage import open_store

    store = open_store(spec)
    objects = [info for info in store.list("") if not info.is_dir]
    if not objects:
        raise UserError(f"{what} {spec} holds no files",
                        hint="pass the folder that holds config.json and the weights")
    for info in objects:
        store.get_file(info.key, scratch / info.key)
    return scratch
