"""safetensors folders, read and written a tensor at a time.

``tensor_index`` reads only the headers (8-byte length + JSON) of every ``*.safetensors`` file:
no torch, no weights in memory. Tensors are read with ``safe_open`` one file at a time, so
only the pages of the file in use are mapped. ``ShardWriter`` holds at most one shard's
tensors before writing them: the peak memory of anything that streams a model through it is
about one shard, not the model.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vicuna_ops.errors import UserError

WEIGHTS_INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str  # safetensors' spelling: BF16, F16, F32, ...
    shape: tuple[int, ...]


def weight_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError(f"no *.safetensors weights in {folder}",
                        hint="pass an HF model folder saved with safetensors (save_pretrained)")
    return files


def read_header(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            (length,) = struct.unpack("<Q", file.read(8))
            if length > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(file.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise UserError(f"{path.name} is not a readable safetensors file: {exc}",
                        hint="the file is damaged or incomplete; fetch it again") from exc
    header.pop("__metadata__", None)
    return header


def tensor_index(folder: Path) -> dict[str, TensorInfo]:
    """Every tensor of the folder: the file holding it, its dtype and shape."""
    index: dict[str, TensorInfo] = {}
    for path in weight_files(folder):
        for name, info in read_header(path).items():
            index[name] = TensorInfo(path, info["dtype"], tuple(info["shape"]))
    return index


def by_file(names: list[str], index: dict[str, TensorInfo]) -> dict[Path, list[str]]:
    groups: dict[Path, list[str]] = {}
    for name in names:
        groups.setdefault(index[name].file, []).append(name)
    return groups


def iter_tensors(path: Path, names: list[str] | None = None) -> Iterator[tuple[str, Any]]:
    """(name, tensor) of one file, in file order, with only this file open."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        for name in names if names is not None else list(handle.keys()):
            yield name, handle.get_tensor(name)


def read_tensors(index: dict[str, TensorInfo], names: list[str]) -> dict[str, Any]:
    """A few tensors by name (each file opened once)."""
    return {name: tensor for path, group in by_file(names, index).items()
            for name, tensor in iter_tensors(path, group)}


def tensor_digest(tensor: Any) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes."""
    import torch

    digest = hashlib.sha256(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
    flat = tensor.detach().contiguous().reshape(-1)
    if flat.numel():
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


class ShardWriter:
    """Collects tensors into shards of about ``budget`` bytes; ``on_shard(path, names)`` gets
    each written file (to upload, rename or list). Shards are ``<prefix>-00001.safetensors``..."""

    def __init__(self, folder: Path, prefix: str, budget: int,
                 on_shard: Callable[[Path, list[str]], None]) -> None:
        self.folder, self.prefix, self.budget, self.on_shard = folder, prefix, budget, on_shard
        self.folder.mkdir(parents=True, exist_ok=True)
        self._tensors: dict[str, Any] = {}
        self._bytes = 0
        self.count = 0

    def add(self, name: str, tensor: Any) -> str:
        """Queue a tensor; the file name it will land in."""
        size = tensor.numel() * tensor.element_size()
        if self._tensors and self._bytes + size > self.budget:
            self.flush()
        self._tensors[name] = tensor.contiguous()
        self._bytes += size
        return self._name(self.count + 1)

    def flush(self) -> None:
        if not self._tensors:
            return
        from safetensors.torch import save_file

        self.count += 1
        path = self.folder / self._name(self.count)
        save_file(self._tensors, str(path), metadata={"format": "pt"})
        names = list(self._tensors)
        self._tensors, self._bytes = {}, 0
        self.on_shard(path, names)

    def _name(self, number: int) -> str:
        return f"{self.prefix}-{number:05d}.safetensors"
