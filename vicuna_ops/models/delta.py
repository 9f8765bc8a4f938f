"""Delta weights: ``target - base`` as safetensors shards, and back.

``make_delta`` streams the target a file at a time, subtracts the base tensor of the same name
and writes the differences through a ``ShardWriter`` (one shard in memory at most), uploading
each shard as it is written; ``delta.json`` (the manifest) goes last, so a delta without one
is incomplete and ``apply_delta`` refuses it.

Precision: the delta is kept one step wider than the target (float32 for bf16/fp16 weights,
float64 for float32 ones), so ``base + delta`` rounds back to the target bit for bit. Every
tensor is checked when it is made; the rare one that would not round-trip (an element whose
base and target differ by more than 2^16 in magnitude), one whose shape changed (a resized
vocabulary) or one the base lacks is stored whole (``kind: full``).

The manifest records the base's per-tensor SHA-256 (of each tensor the delta adds to), its
names, dtypes and shapes, the shard checksums, and the target's config and tokenizer files.
``apply_delta`` checks names, shapes and dtypes before any work and each digest as it goes:
a different base is one line (exit 2), and the output folder is only renamed into place once
everything verified.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vicuna_ops.errors import UserError
from vicuna_ops.models.sources import is_uri, local_folder
from vicuna_ops.models.tensors import (ShardWriter, TensorInfo, by_file, iter_tensors,
                                       read_tensors, tensor_digest, tensor_index)

MANIFEST = "delta.json"
FORMAT = "vops-delta/1"
FILES = "files"  # the target's non-weight files, under the delta's files/
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "chat_template.jinja")
MODEL_FILES = ("config.json", "generation_config.json")
WIDER = {"BF16": "F32", "F16": "F32", "F32": "F64"}
STOP_TOKEN = "</s>"  # the v1.1 template ends every reply with it

Progress = Callable[[str], None]


def make_delta(base: str, target: str, out: str, progress: Progress = lambda _: None
               ) -> dict[str, Any]:
    """Write ``target - base`` to ``out`` (a path or bucket URI); the manifest, as a dict."""
    import torch

    from vicuna_ops.storage import open_store
    from vicuna_ops.storage.base import sha256_file

    store = open_store(out)
    if store.list(""):
        raise UserError(f"--out {out} is not empty", hint="choose a new folder or prefix")
    uploaded: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vops-delta-") as scratch_name:
        scratch = Path(scratch_name)
        base_dir = local_folder(base, scratch / "base", "base")
        target_dir = local_folder(target, scratch / "target", "target")
        base_index, target_index = tensor_index(base_dir), tensor_index(target_dir)
        budget = max(path.stat().st_size for path in {i.file for i in target_index.values()})
        shards: list[dict[str, Any]] = []

        def publish(path: Path, names: list[str]) -> None:
            digest = sha256_file(path)
            store.put_file(path.name, path, sha256=digest)
            uploaded.append(path.name)
            shards.append({"file": path.name, "sha256": digest, "bytes": path.stat().st_size,
                           "tensors": len(names)})
            progress(f"wrote {path.name} ({path.stat().st_size:,} bytes)")
            path.unlink()

        writer = ShardWriter(scratch / "out", "delta", budget, publish)
        tensors: dict[str, dict[str, Any]] = {}
        try:
            for path, names in by_file(list(target_index), target_index).items():
                for name, wanted in iter_tensors(path, names):
                    info = target_index[name]
                    entry, stored = _delta_entry(torch, name, wanted, info,
                                                 base_index.get(name), base_index)
                    entry["shard"] = writer.add(name, stored)
                    tensors[name] = entry
            writer.flush()
            files = _copy_files(store, target_dir, base_dir, uploaded)
            manifest = {
                "format": FORMAT, "base": base, "target": target,
                "max_shard_bytes": budget, "shards": shards, "tensors": tensors,
                "base_tensors": {name: {"dtype": i.dtype, "shape": list(i.shape)}
                                 for name, i in base_index.items()},
                "files": files,
                "tokenizer": sorted(name for name in files if name in TOKENIZER_FILES),
            }
            store.put_bytes(MANIFEST, json.dumps(manifest, indent=1).encode())
        except BaseException:
            for key in uploaded:  # no half delta left behind (it has no manifest anyway)
                try:
                    store.delete(key)
                except Exception:  # noqa: BLE001 - the original error is the one to show
                    pass
            raise
    kinds = [entry["kind"] for entry in tensors.values()]
    progress(f"delta: {len(shards)} shard(s), {kinds.count('delta')} differences, "
             f"{kinds.count('full')} whole tensor(s)")
    return manifest


def _delta_entry(torch: Any, name: str, wanted: Any, info: TensorInfo,
                 base_info: TensorInfo | None, base_index: dict[str, TensorInfo]
                 ) -> tuple[dict[str, Any], Any]:
    entry: dict[str, Any] = {"dtype": info.dtype, "shape": list(info.shape)}
    wide = WIDER.get(info.dtype)
    if base_info is None or base_info.shape != info.shape or wide is None:
        entry["kind"] = "full"
        return entry, wanted
    base = read_tensors(base_index, [name])[name]
    wide_dtype = _torch_dtype(torch, wide)
    delta = torch.empty(wanted.shape, dtype=wide_dtype)
    for rows in _chunks(wanted.shape):  # a few MB of wide temporaries at a time
        part = delta[rows]
        part.copy_(wanted[rows]).sub_(base[rows].to(wide_dtype))
        back = (base[rows].to(wide_dtype) + part).to(wanted.dtype)
        if not _bitwise_equal(torch, back, wanted[rows]):
            entry["kind"] = "full"
            return entry, wanted
    entry.update(kind="delta", delta_dtype=wide, base_dtype=base_info.dtype,
                 base_sha256=tensor_digest(base))
    return entry, delta


def apply_delta(base: str, delta: str, out: str, progress: Progress = lambda _: None
                ) -> dict[str, Any]:
    """``base + delta`` as an HF model folder at ``out`` (a path or bucket URI)."""
    from vicuna_ops.errors import ObjectNotFound
    from vicuna_ops.storage import open_store

    store = open_store(delta)
    try:
        manifest = json.loads(store.get_bytes(MANIFEST))
    except ObjectNotFound as exc:
        raise UserError(f"no {MANIFEST} under {delta}: not a delta, or its upload never "
                        "finished", hint="pass the --out of a `vops delta make` that "
                                         "succeeded") from exc
    except ValueError as exc:
        raise UserError(f"{delta}/{MANIFEST} is not valid JSON",
                        hint="make the delta again") from exc
    if manifest.get("format") != FORMAT:
        raise UserError(f"{delta} is not a vops delta ({manifest.get('format')!r})",
                        hint=f"expected format {FORMAT}")
    out_store = open_store(out) if is_uri(out) else None
    if out_store is not None and out_store.list(""):
        raise UserError(f"--out {out} is not empty", hint="choose a new folder or prefix")
    final = None if out_store is not None else Path(out).expanduser()
    if final is not None and final.exists() and any(final.iterdir() if final.is_dir() else [0]):
        raise UserError(f"--out {out} already exists", hint="choose a new folder")
    with tempfile.TemporaryDirectory(prefix="vops-apply-") as scratch_name:
        scratch = Path(scratch_name)
        base_dir = local_folder(base, scratch / "base", "base")
        base_index = tensor_index(base_dir)
        _check_base_layout(manifest, base_index, base)
        if final is not None:  # built beside the destination, renamed into place at the end
            final.parent.mkdir(parents=True, exist_ok=True)
            build = Path(tempfile.mkdtemp(prefix=f".{final.name}.vops-tmp-", dir=final.parent))
        else:
            build = scratch / "model"
        try:
            _build(manifest, store, base_index, base, build, scratch, progress)
            if final is not None:
                if final.exists():
                    final.rmdir()  # empty (checked above)
                os.replace(build, final)
            else:
                _upload_folder(build, out_store)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
    progress(f"applied: {len(manifest['tensors'])} tensors -> {out}")
    return manifest


def _check_base_layout(manifest: dict[str, Any], base_index: dict[str, TensorInfo],
                       base: str) -> None:
    """Names, shapes and dtypes from the headers alone: a different model fails in a second."""
    made = manifest.get("base", "?")
    for name, entry in manifest["tensors"].items():
        if entry["kind"] != "delta":
            continue
        info = base_index.get(name)
        if info is None or list(info.shape) != entry["shape"] or \
                info.dtype != entry["base_dtype"]:
            found = "missing" if info is None else f"{info.dtype} {list(info.shape)}"
            raise UserError(
                f"base {base} is not the model this delta was made against: tensor {name} is "
                f"{found}, the delta expects {entry['base_dtype']} {entry['shape']}",
                hint=f"pass the base the delta was made from ({made})")


def _build(manifest: dict[str, Any], store: Any, base_index: dict[str, TensorInfo],
           base: str, build: Path, scratch: Path, progress: Progress) -> None:
    import torch

    from vicuna_ops.storage.base import sha256_file

    written: list[tuple[Path, list[str]]] = []
    writer = ShardWriter(build, "model", int(manifest["max_shard_bytes"]),
                         lambda path, names: written.append((path, names)))
    for shard in manifest["shards"]:
        path = scratch / "shards" / shard["file"]
        store.get_file(shard["file"], path)
        if sha256_file(path) != shard["sha256"]:
            raise UserError(f"delta shard {shard['file']} is corrupt (its SHA-256 does not "
                            "match the manifest)", hint="fetch or make the delta again")
        for name, stored in iter_tensors(path):
            entry = manifest["tensors"][name]
            if entry["kind"] == "delta":
                original = read_tensors(base_index, [name])[name]
                if tensor_digest(original) != entry["base_sha256"]:
                    raise UserError(
                        f"base {base} is not the model this delta was made against: tensor "
                        f"{name} differs", hint=f"pass the base the delta was made from "
                                                f"({manifest.get('base', '?')})")
                result = torch.empty(stored.shape, dtype=_torch_dtype(torch, entry["dtype"]))
                for rows in _chunks(stored.shape):
                    result[rows] = stored[rows] + original[rows].to(stored.dtype)
                stored = result
            writer.add(name, stored)
        path.unlink()
        progress(f"applied {shard['file']}")
    writer.flush()
    _name_shards(build, written)
    for name, entry in manifest["files"].items():
        dest = build / name
        store.get_file(f"{FILES}/{name}", dest)
        if sha256_file(dest) != entry["sha256"]:
            raise UserError(f"delta file {name} is corrupt", hint="make the delta again")
    set_stop_token(build)


def set_stop_token(folder: Path) -> None:
    """``</s>`` as the tokenizer's eos and generation's stop token (config and
    generation_config): without it a Vicuna model never stops."""
    from vicuna_ops import adaptors

    transformers = adaptors.transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise UserError(f"the delta's tokenizer cannot be loaded: {str(exc).splitlines()[0]}",
                        hint="make the delta from a target folder with tokenizer files"
                        ) from exc
    stop = tokenizer.convert_tokens_to_ids(STOP_TOKEN)
    if stop is None or stop == tokenizer.unk_token_id:
        raise UserError(f"the tokenizer has no {STOP_TOKEN} token",
                        hint="the Vicuna v1.1 template ends every reply with </s>")
    if tokenizer.eos_token != STOP_TOKEN:
        tokenizer.eos_token = STOP_TOKEN
        tokenizer.save_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    config["eos_token_id"] = stop
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    path = folder / "generation_config.json"
    generation = json.loads(path.read_text()) if path.exists() else {}
    generation["eos_token_id"] = stop
    for key in ("bos_token_id", "pad_token_id"):
        value = getattr(tokenizer, key, None)
        if value is not None:
            generation.setdefault(key, value)
    path.write_text(json.dumps(generation, indent=2))


def _name_shards(build: Path, written: list[tuple[Path, list[str]]]) -> None:
    """HF's names: model.safetensors, or model-0000i-of-0000N.safetensors plus the index."""
    if len(written) == 1:
        written[0][0].rename(build / "model.safetensors")
        return
    weight_map, total = {}, 0
    for number, (path, names) in enumerate(written, start=1):
        name = f"model-{number:05d}-of-{len(written):05d}.safetensors"
        total += path.stat().st_size
        path.rename(build / name)
        weight_map.update({tensor: name for tensor in names})
    (build / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def _copy_files(store: Any, target_dir: Path, base_dir: Path,
                uploaded: list[str]) -> dict[str, dict[str, Any]]:
    """The target's config and tokenizer files (the base's tokenizer if the target has none)."""
    from vicuna_ops.storage.base import sha256_file

    has_tokenizer = any((target_dir / name).is_file() for name in TOKENIZER_FILES)
    files = {}
    for name in (*MODEL_FILES, *TOKENIZER_FILES):
        source = target_dir / name
        if not source.is_file() and name in TOKENIZER_FILES and not has_tokenizer:
            source = base_dir / name
        if not source.is_file():
            continue
        digest = sha256_file(source)
        store.put_file(f"{FILES}/{name}", source, sha256=digest)
        uploaded.append(f"{FILES}/{name}")
        files[name] = {"sha256": digest, "bytes": source.stat().st_size,
                       "from": "target" if source.parent == target_dir else "base"}
    if "config.json" not in files:
        raise UserError("the target has no config.json", hint="pass an HF model folder")
    return files


def _upload_folder(folder: Path, store: Any) -> None:
    """A built model to a bucket, MANIFEST.json last (what `vops serve` verifies)."""
    import time

    from vicuna_ops.train.manifest import build_manifest

    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        store.put_file(path.relative_to(folder).as_posix(), path)
    manifest = build_manifest(folder, None, time.time())
    store.put_bytes("MANIFEST.json", manifest.to_json())


def _chunks(shape: Any, elements: int = 1 << 20) -> list[Any]:
    """Row blocks of about ``elements`` values (the whole tensor when it is 0-d)."""
    if not len(shape):
        return [...]
    per_row = max(1, int(__import__("math").prod(shape[1:])))
    step = max(1, elements // per_row)
    return [slice(start, start + step) for start in range(0, shape[0], step)] or [...]


def _torch_dtype(torch: Any, name: str) -> Any:
    return {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32,
            "F64": torch.float64}[name]


def _bitwise_equal(torch: Any, left: Any, right: Any) -> bool:
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}[right.element_size()]
    return bool(torch.equal(left.contiguous().view(ints), right.contiguous().view(ints)))
