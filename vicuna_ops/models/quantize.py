"""``vops quantize``: a trained model to 4-bit weights, calibrated on the run's own data.

    model (path or bucket URI) ──► calibrate on train.jsonl (Vicuna v1.1 template, as trained)
        ──► llm-compressor GPTQ/AWQ (compressor.py) ──► compressed-tensors checkpoint
        ──► reloaded with transformers and scored on eval.jsonl ──► quantize.json + MANIFEST.json
        ──► published to --out (path or bucket URI) only when whole (publish.py)

The report (printed, and kept as ``quantize.json`` beside the weights) gives the weight bytes
before and after and the perplexity of the assistant tokens of ``eval.jsonl`` before and
after. The "after" number comes from the checkpoint *as written*, loaded back through
transformers, so it also proves the output loads.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vicuna_ops.errors import UserError
from vicuna_ops.models import calibration, compressor
from vicuna_ops.models.publish import Destination
from vicuna_ops.models.sources import local_folder

REPORT = "quantize.json"
CALIBRATION_SAMPLES = 256  # conversations; GPTQ/AWQ papers and llm-compressor use 128-512
EVAL_SAMPLES = 200  # conversations of eval.jsonl scored before and after
MAX_LENGTH = 2048  # tokens per sample, or the model's context if shorter

Progress = Callable[[str], None]


def check_request(method: str, bits: int) -> None:
    """Flags that need no file: one line each, before anything is read or downloaded."""
    if method not in compressor.METHODS:
        raise UserError(f"unknown --method {method!r}",
                        hint=f"use one of: {', '.join(compressor.METHODS)}")
    if bits not in compressor.BITS:
        raise UserError(f"--bits {bits} is not supported",
                        hint="use --bits 4 (what GPTQ/AWQ checkpoints for vLLM hold)")


def quantize(model: str, method: str, bits: int, calibration_uri: str, out: str,
             progress: Progress = lambda _message: None) -> dict[str, Any]:
    """Quantize ``model`` to ``out``; the report (also written to ``out/quantize.json``)."""
    check_request(method, bits)
    destination = Destination(out)
    compressor.require_library()
    files = calibration.data_files(calibration_uri)
    with tempfile.TemporaryDirectory(prefix="vops-quantize-") as scratch_name:
        scratch = Path(scratch_name)
        source = local_folder(model, scratch / "model", "--model")
        if not (source / "config.json").is_file():
            raise UserError(f"--model {model} has no config.json",
                            hint="pass an HF model folder (the final/ that training wrote)")
        tokenizer = _tokenizer(source, model)
        max_length = min(MAX_LENGTH, _context(source))
        # the data before the weights: a bad --calibration costs seconds, not a model load
        calib = _samples(files.train, tokenizer, max_length, CALIBRATION_SAMPLES)
        held_out = (_samples(files.eval, tokenizer, max_length, EVAL_SAMPLES)
                    if files.eval else [])
        float_model = _load(source, model)
        before = _score(float_model, source, model, held_out)
        progress(f"calibrating {method} on {len(calib)} conversations of {files.train}")
        build = destination.staging(scratch)
        try:
            group = compressor.compress(float_model, method, bits, calib, max_length, build)
            del float_model
            tokenizer.save_pretrained(build)
            progress("reloading the quantized checkpoint to score it")
            after = _score(None, build, out, held_out)
            report = _report(method, bits, group, files, calib, before, after,
                             _weight_bytes(source), _weight_bytes(build), model)
            (build / REPORT).write_text(json.dumps(report, indent=1) + "\n")
            destination.publish(build, meta={"quantize": {"method": method, "bits": bits}})
        except BaseException:
            destination.discard(build)
            raise
    progress(f"wrote {out}")
    return report


def _tokenizer(folder: Path, spec: str) -> Any:
    from vicuna_ops import adaptors

    try:
        return adaptors.transformers().AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the tokenizer of {spec}: {str(exc).splitlines()[0]}",
                        hint="the model folder needs its tokenizer files") from exc


def _load(folder: Path, spec: str, *, gpu: bool = False) -> Any:
    """The model in its own dtype: in CPU memory to calibrate (llm-compressor moves one layer
    at a time to the GPU, so a 13B model calibrates on a 24 GB card), spread over the GPU
    (and CPU memory beyond it) with ``gpu`` to score it."""
    from vicuna_ops import adaptors

    transformers = adaptors.transformers()
    where = {"device_map": "auto"} if gpu else {}
    try:
        loaded = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype="auto",
                                                                   **where)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the model in {spec}: {str(exc).splitlines()[0]}",
                        hint="pass an HF causal-LM folder (config.json and safetensors)"
                        ) from exc
    return loaded.eval()


def _score(loaded: Any, folder: Path, spec: str, samples: list[dict[str, Any]]
           ) -> calibration.Perplexity | None:
    """Perplexity of ``samples`` under the model in ``folder`` (``loaded`` reused on a
    CPU-only machine); None without samples."""
    if not samples:
        return None
    from vicuna_ops import adaptors

    gpu = adaptors.torch().cuda.is_available()
    if loaded is None or gpu:
        loaded = _load(folder, spec, gpu=gpu)
    return calibration.perplexity(loaded, samples)


def _context(folder: Path) -> int:
    from vicuna_ops.models.context import context_length

    try:
        config = json.loads((folder / "config.json").read_text())
    except ValueError as exc:
        raise UserError(f"{folder / 'config.json'} is not valid JSON",
                        hint="pass an HF model folder") from exc
    return context_length(config)


def _samples(uri: str, tokenizer: Any, max_length: int, count: int) -> list[dict[str, Any]]:
    from vicuna_ops.train.data import load_conversations

    dataset, _stats = load_conversations(uri, tokenizer, max_length)
    return calibration.pick(dataset, count)


def _weight_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.glob("*.safetensors"))


def _report(method: str, bits: int, group: int, files: calibration.DataFiles,
            calib: list[dict[str, Any]], before: calibration.Perplexity | None,
            after: calibration.Perplexity | None, size_before: int, size_after: int,
            model: str) -> dict[str, Any]:
    report: dict[str, Any] = {
        "model": model, "method": method, "bits": bits, "group_size": group,
        "format": "compressed-tensors (pack-quantized)", "library": compressor.library_versions(),
        "calibration": {"data": files.train, "conversations": len(calib),
                        "tokens": sum(len(sample["input_ids"]) for sample in calib)},
        "weight_bytes": {"before": size_before, "after": size_after,
                         "ratio": round(size_after / size_before, 4) if size_before else None},
        "perplexity": None,
    }
    if before is not None and after is not None:
        report["perplexity"] = {
            "data": files.eval, "over": "assistant tokens", "conversations": before.conversations,
            "tokens": before.tokens, "before": round(before.value, 4),
            "after": round(after.value, 4),
            "change_pct": round(100 * (after.value / before.value - 1), 2)}
    return report
