"""``prepare``: inputs -> worker processes -> train.jsonl, eval.jsonl, report.json.

    main process                      worker processes               main process
    read records (streaming) --chunks--> parse, clean, filter, split --> in input order:
                                                                         duplicates, ids,
                                                                         train/eval draw, write

Memory stays bounded whatever the input size: the reader holds one record (or one 1 MB
buffer), at most ``2 x workers`` chunks of a few MB are in flight, outputs go to temp files
that are uploaded at the end, and duplicates are remembered as 16-byte digests. Results come
back in input order, so the output is identical for any number of workers.

Output layout under ``--out`` (a folder or bucket prefix)::

    train.jsonl   ShareGPT records {id, conversations:[{from, value}]}, one per line
    eval.jsonl    the same, for the conversations drawn into eval
    report.json   the counts (written last: its presence means the other two are complete)

A conversation split in several segments gives ids ``<id>_0``, ``<id>_1``, ...; one that
fits keeps its id. All segments of a conversation land on the same side of the train/eval
split, which is drawn per id from ``--seed`` (stable when records are added or removed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from vicuna_ops.data.filters import Duplicates
from vicuna_ops.data.inputs import InputFile, resolve_inputs
from vicuna_ops.data.process import CleanOptions, Outcome, Processor
from vicuna_ops.data.reader import RawRecord, ReadStats, read_records, sniff
from vicuna_ops.data.report import Report
from vicuna_ops.data.schema import to_record
from vicuna_ops.data.tokens import TokenizerSpec, resolve
from vicuna_ops.errors import UserError
from vicuna_ops.lifeline import process_alive

OUTPUT_FILES = ("train.jsonl", "eval.jsonl", "report.json")
CHUNK_RECORDS = 256
CHUNK_BYTES = 2 << 20

if TYPE_CHECKING:
    from vicuna_ops.storage import Store

# (bytes read so far, bytes in all inputs or None, records done)
ProgressFn = Callable[[int, "int | None", int], None]


@dataclass(frozen=True)
class PrepareOptions:
    clean: CleanOptions = field(default_factory=CleanOptions)
    eval_ratio: float = 0.01
    seed: int = 0
    workers: int = 0  # 0: one per available core
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_ratio < 1.0:
            raise UserError(f"--eval-ratio must be in [0, 1), not {self.eval_ratio}")
        if self.workers < 0:
            raise UserError(f"--workers cannot be negative, not {self.workers}")

    @property
    def worker_count(self) -> int:
        if self.workers:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)


def prepare(inputs: list[str], out: str, tokenizer_spec: str,
            options: PrepareOptions | None = None, progress: ProgressFn | None = None
            ) -> Report:
    """Clean, filter and split ``inputs`` into ``out``; returns the report it wrote.

    An input that yields no ShareGPT record at all (empty, binary, not JSON, or only
    malformed records) is a UserError, and nothing is written.
    """
    from vicuna_ops.storage import open_store

    options = options or PrepareOptions()
    check_tokenizer_spec(tokenizer_spec)
    files = resolve_inputs(inputs)
    _check_inputs(files)
    out_store = open_store(out)
    _check_output(out_store, files, options.overwrite)
    spec = resolve(tokenizer_spec)
    settings = {"tokenizer": tokenizer_spec, **_settings(options)}
    report = Report(output=out_store.uri, settings=settings)
    total = sum(f.size for f in files) if all(f.size is not None for f in files) else None
    started = time.monotonic()
    with _work_dir() as tmp:
        paths = {name: Path(tmp) / name for name in OUTPUT_FILES}
        with _Writer(paths) as writer:
            records = _read_all(files, report.inputs)
            done = 0
            batches = _outcomes(options.clean, spec, _chunks(records), options.worker_count)
            for batch in batches:
                for outcome in batch:
                    _account(outcome, report, writer, options)
                done += len(batch)
                if progress is not None:
                    progress(sum(s.bytes_read for s in report.inputs), total, done)
        _check_every_input_had_records(report, writer.usable_sources)
        report.seconds = time.monotonic() - started
        if not report.balanced:  # pragma: no cover - would be a bug in the counting
            raise AssertionError(f"report does not add up: {report.to_dict()}")
        report.files = {name: out_store.url_for(name) for name in OUTPUT_FILES}
        paths["report.json"].write_text(json.dumps(report.to_dict(), indent=2) + "\n")
        # report.json last: its presence marks the output complete (so an old one goes first)
        out_store.delete("report.json")
        for name in OUTPUT_FILES:
            out_store.put_file(name, paths[name])
    return report


WORK_DIR_PREFIX = "vops-data-"


class _work_dir:
    """A private temp folder ``vops-data-<pid>-...``, removed on exit. A run killed with
    SIGKILL cannot remove its own, so each run first removes those whose pid is dead."""

    def __enter__(self) -> str:
        root = Path(tempfile.gettempdir())
        for stale in root.glob(f"{WORK_DIR_PREFIX}*"):
            pid = stale.name[len(WORK_DIR_PREFIX):].split("-", 1)[0]
            if pid.isdigit() and not process_alive(int(pid)) and stale.is_dir() and \
                    stale.stat().st_uid == os.getuid():
                shutil.rmtree(stale, ignore_errors=True)
        self.path = tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{os.getpid()}-")
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _check_inputs(files: list[InputFile]) -> None:
    """Fail before any work on an input that is empty or binary."""
    for file in files:
        with file.open() as stream:
            problem = sniff(stream)
        if problem == "empty":
            raise UserError(f"{file.uri} holds no records: the file is empty",
                            hint="name a ShareGPT .json (a list) or .jsonl file")
        if problem == "binary":
            raise UserError(f"{file.uri} is not JSON or JSONL text (it holds binary data)",
                            hint="name a ShareGPT .json (a list) or .jsonl file, gzipped or not")


def _check_every_input_had_records(report: Report, usable: set[str]) -> None:
    for stats in report.inputs:
        if stats.source in usable:
            continue
        first = next((p for p in report.problems if p["source"] == stats.source), None)
        why = f"line {first['line']}: {first['detail']}" if first else \
            "; ".join(stats.warnings or []) or "no records"
        raise UserError(f"{stats.source} holds no ShareGPT record ({why})",
                        hint="name a ShareGPT .json (a list) or .jsonl file; nothing was "
                             "written")


def check_tokenizer_spec(spec: str) -> None:
    """Catch a mistyped --tokenizer before any work, without loading it (that happens in the
    workers): a builtin name, or a folder with tokenizer files, or a hub id."""
    from vicuna_ops.tokenizer import BUILTIN_TINY

    if spec.startswith("builtin:"):
        if spec != BUILTIN_TINY:
            raise UserError(f"unknown builtin tokenizer {spec!r}", hint=f"use {BUILTIN_TINY}")
        return
    path = Path(spec).expanduser()
    looks_local = spec.startswith((".", "/", "~")) or path.exists()
    if looks_local and not path.is_dir():
        raise UserError(f"tokenizer folder {spec} does not exist",
                        hint="pass a local folder with tokenizer files, or builtin:tiny")
    if path.is_dir() and not any((path / name).exists() for name in _TOKENIZER_FILES):
        raise UserError(f"{spec} holds no tokenizer files ({', '.join(_TOKENIZER_FILES)})",
                        hint="pass the folder save_pretrained wrote, or builtin:tiny")


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def _settings(options: PrepareOptions) -> dict[str, object]:
    clean = asdict(options.clean)
    clean["keep_langs"] = sorted(options.clean.keep_langs)
    clean["skip_langs"] = sorted(options.clean.skip_langs)
    clean["blocklist"] = len(options.clean.blocklist)  # the count, not the phrases
    return {**clean, "eval_ratio": options.eval_ratio, "seed": options.seed,
            "workers": options.worker_count}


def _check_output(store: Store, files: list[InputFile], overwrite: bool) -> None:
    """Refuse to clobber an earlier output or an input; fail now if ``out`` is not writable
    (rather than after hours of work)."""
    targets = {store.url_for(name) for name in OUTPUT_FILES}
    clash = [f.uri for f in files if f.uri in targets]
    if clash:
        raise UserError(f"input {clash[0]} is also an output file",
                        hint="choose another --out")
    if not overwrite:
        existing = [name for name in OUTPUT_FILES if store.exists(name)]
        if existing:
            raise UserError(f"{store.url_for(existing[0])} already exists",
                            hint="pass --overwrite, or choose another --out")
    probe = f".vops-write-probe-{os.getpid()}"
    store.put_bytes(probe, b"")
    store.delete(probe)


# -- reading and batching ------------------------------------------------------------------


def _read_all(files: list[InputFile], stats_out: list[ReadStats]) -> Iterator[RawRecord]:
    for file in files:
        stats = ReadStats(file.uri)
        stats_out.append(stats)
        with file.open() as stream:
            yield from read_records(stream, file.uri, stats)


def _chunks(records: Iterable[RawRecord]) -> Iterator[list[RawRecord]]:
    """Batches of at most CHUNK_RECORDS records or about CHUNK_BYTES of input."""
    chunk: list[RawRecord] = []
    size = 0
    for record in records:
        chunk.append(record)
        size += record.size
        if len(chunk) >= CHUNK_RECORDS or size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


# -- workers -------------------------------------------------------------------------------
#
# Workers are plain child processes (vicuna_ops.data.workers) that die with this one. They
# count tokens with the small ``tokenizers`` library from the spec resolved here, so neither
# they nor this process import transformers (~250 MB and ~2.7 CPU-s per process).


def _outcomes(clean: CleanOptions, spec: TokenizerSpec, chunks: Iterator[list[RawRecord]],
              workers: int) -> Iterator[list[Outcome]]:
    """Outcomes chunk by chunk, in input order, with at most 2 x workers chunks in flight."""
    if workers <= 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        processor = Processor(clean, spec.load())
        for chunk in chunks:
            yield [processor.process(record) for record in chunk]
        return
    from vicuna_ops.data.workers import WorkerPool

    pool = WorkerPool(workers, (clean, spec))
    finished = False
    try:
        yield from pool.map(chunks)
        finished = True
    finally:
        pool.close(kill=not finished)


# -- accounting and writing ----------------------------------------------------------------


def draws_eval(record_id: str, seed: int, ratio: float) -> bool:
    """Whether a conversation goes to eval: a seeded hash of its id, so the draw of one record
    never depends on the others."""
    if ratio <= 0:
        return False
    digest = hashlib.blake2b(f"{seed}\0{record_id}".encode("utf-8", "replace"), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2.0**64 < ratio


class _Writer:
    """Appends records to train/eval temp files and hands out unique output ids."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths
        self.duplicates = Duplicates()
        self._ids: set[bytes] = set()
        self.usable_sources: set[str] = set()  # inputs with at least one record not malformed

    def __enter__(self) -> _Writer:
        self.files = {name: open(self.paths[f"{name}.jsonl"], "w", encoding="utf-8")  # noqa: SIM115
                      for name in ("train", "eval")}
        return self

    def __exit__(self, *exc: object) -> None:
        for file in self.files.values():
            file.close()

    def unique_id(self, wanted: str) -> str:
        """``wanted``, or ``wanted~2``, ``~3``... if an earlier output already used it (a
        record called ``x_0`` next to a record ``x`` split in two)."""
        candidate, n = wanted, 1
        while (key := hashlib.blake2b(candidate.encode("utf-8", "replace"),
                                      digest_size=16).digest()) in self._ids:
            n += 1
            candidate = f"{wanted}~{n}"
        self._ids.add(key)
        return candidate

    def write(self, split: str, record: dict) -> None:
        self.files[split].write(json.dumps(record, ensure_ascii=False) + "\n")


def _account(outcome: Outcome, report: Report, writer: _Writer, options: PrepareOptions
             ) -> None:
    if outcome.reason != "malformed":
        writer.usable_sources.add(outcome.where.source)
    if outcome.reason is not None:
        report.record_left_out(outcome.reason, outcome.where, outcome.record_id, outcome.detail)
        return
    assert outcome.record_id is not None and outcome.exchange_key is not None
    duplicate = writer.duplicates.reason(outcome.record_id, outcome.exchange_key)
    if duplicate is not None:
        report.record_left_out(duplicate, outcome.where, outcome.record_id, None)
        return
    split = "eval" if draws_eval(outcome.record_id, options.seed, options.eval_ratio) \
        else "train"
    several = len(outcome.segments) > 1
    for index, (turns, _tokens) in enumerate(outcome.segments):
        wanted = f"{outcome.record_id}_{index}" if several else outcome.record_id
        new_id = writer.unique_id(wanted)
        if new_id != wanted:
            report.changes["ids_renamed_to_stay_unique"] += 1
        writer.write(split, to_record(new_id, outcome.system, list(turns)))
    report.record_kept(split, [tokens for _, tokens in outcome.segments], outcome.changes)
