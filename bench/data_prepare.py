"""Benchmark ``vops data prepare``: throughput on 2 cores and peak memory on a ~1 GB input.

    .venv/bin/python bench/data_prepare.py                  # both parts
    .venv/bin/python bench/data_prepare.py --skip-memory    # throughput only
    .venv/bin/python bench/data_prepare.py --conversations 20000 --memory-gb 0.2  # quick look

1. Throughput: a synthetic ShareGPT dump of 100K multi-turn conversations (assistant turns as
   scraped HTML with code blocks and copy buttons, "1 / 1" counters, some long enough to
   split, a few malformed lines and duplicates) through the whole pipeline with one worker
   (the same-run baseline) and with two; prints conversations/s for each and the ratio, and
   beside them the cores each run actually obtained and its CPU-ms per conversation (summed
   over the process tree), since on a shared machine the wall-clock ratio measures the
   neighbours as much as the code.
2. Memory: a ~1 GB JSON-list dump through the pipeline with two workers, in a child process
   whose tree (main + workers) is sampled every 0.2 s; prints the peak RSS sum (and PSS, which
   counts pages shared after fork once) and peak/1 GB as the ratio.

The tokenizer is a byte-level BPE (4K vocab) trained here on the synthetic text and saved as
a local HF tokenizer folder, as a user's would be. Generated files live under /tmp and are
deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("the model data train token batch loss learning rate python function return value "
         "list dict error file server request response memory cloud spot instance checkpoint "
         "gradient layer attention query key cache sequence length vector matrix GPU node "
         "cluster price cost region zone bucket object upload download stream worker process "
         "thread queue result output input format json markdown table code block language "
         "please explain how why what when where which could would should example simple").split()
LANGS = ("python", "javascript", "bash", "sql", "rust", "go", "")


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def _paragraph(rng: random.Random) -> str:
    return " ".join(_sentence(rng, rng.randint(6, 18)) for _ in range(rng.randint(1, 4)))


def _code(rng: random.Random) -> str:
    """Code as highlight.js renders it on the page: every token in a span."""
    lines = [f'<span class="hljs-variable">{rng.choice(WORDS)}_{i}</span> = '
             f'<span class="hljs-title function_">{rng.choice(WORDS)}</span>('
             f'<span class="hljs-number">{rng.randint(0, 99)}</span>)'
             for i in range(rng.randint(2, 12))]
    return "\n".join(lines)


def _html_reply(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 5)):
        kind = rng.random()
        if kind < 0.5:
            parts.append(f"<p>{_paragraph(rng)} Use <code>{rng.choice(WORDS)}_x</code>.</p>")
        elif kind < 0.75:
            lang = rng.choice(LANGS)
            cls = f" language-{lang}" if lang else ""
            parts.append(
                '<pre><div class="bg-black mb-4 rounded-md"><div class="flex items-center '
                f'relative text-gray-200 bg-gray-800 px-4 py-2 text-xs font-sans"><span>{lang}'
                '</span><button class="flex ml-auto gap-2"><svg stroke="currentColor" '
                'fill="none"><path d="M16 4h2a2"></path></svg>Copy code</button></div><div '
                f'class="p-4 overflow-y-auto"><code class="!whitespace-pre hljs{cls}">'
                f"{_code(rng)}\n</code></div></div></pre>")
        else:
            items = "".join(f"<li>{_sentence(rng, rng.randint(3, 10))}</li>"
                            for _ in range(rng.randint(2, 5)))
            parts.append(f"<ol>{items}</ol>")
    return ('<div class="markdown prose w-full break-words dark:prose-invert light">'
            + "".join(parts) + "</div>")


def conversation(rng: random.Random, index: int, long_share: float = 0.05) -> dict:
    exchanges = rng.randint(8, 20) if rng.random() < long_share else rng.randint(1, 4)
    turns = []
    for _ in range(exchanges):
        question = _paragraph(rng)
        if rng.random() < 0.3:
            question = "1 / 1" + question
        turns.append({"from": "human", "value": question})
        reply = _html_reply(rng) if rng.random() < 0.8 else _paragraph(rng)
        turns.append({"from": "gpt", "value": reply})
    return {"id": f"conv{index:08d}", "conversations": turns}


def write_dump(path: Path, *, count: int | None = None, target_bytes: int | None = None,
               seed: int = 0, as_list: bool = True) -> int:
    """Write a synthetic dump; returns the number of records. Stops at ``count`` records or
    ``target_bytes`` bytes. 0.2% malformed lines, 1% duplicates."""
    rng = random.Random(seed)
    written = size = 0
    with open(path, "w", encoding="utf-8") as out:
        out.write("[\n" if as_list else "")
        while (count is None or written < count) and (target_bytes is None or
                                                      size < target_bytes):
            if rng.random() < 0.002:
                line = '{"id": "broken", "conversations": [{"from": 3}]}'
            elif written > 10 and rng.random() < 0.01:
                line = json.dumps(conversation(random.Random(written // 2), written // 2))
            else:
                line = json.dumps(conversation(rng, written))
            sep = ",\n" if as_list and written else ""
            out.write(sep + line if as_list else line + "\n")
            size += len(line) + 2
            written += 1
        out.write("\n]\n" if as_list else "")
    return written


def train_tokenizer(folder: Path, sample: Path) -> None:
    """A 4K byte-level BPE trained on the first 20 MB of ``sample``, saved with save_pretrained."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    with open(sample, encoding="utf-8") as file:
        text = file.read(20 << 20)
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(text.splitlines(), trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>", pad_token="<pad>").save_pretrained(folder)


class TreeSampler:
    """Samples a process and all its descendants every 0.2 s: peak summed RSS and PSS, and
    CPU seconds used during the run. The machine may be shared, so the CPU figures say how
    many cores the run actually got, which the wall-clock rate alone hides."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self._cpu_start = {p.pid: sum(p.cpu_times()[:2]) for p in self._tree()}
        self._cpu_last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _tree(self) -> list:
        return [self.root, *self.root.children(recursive=True)]

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            self.sample(psutil)
            self._stop.wait(0.2)

    def sample(self, psutil) -> None:
        rss = pss = 0
        procs = self._tree()
        for proc in procs:
            try:
                info = proc.memory_full_info()
                self._cpu_last[proc.pid] = sum(proc.cpu_times()[:2])
            except psutil.Error:
                continue
            rss, pss = rss + info.rss, pss + info.pss
        self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
        self.peak_procs = max(self.peak_procs, len(procs))

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def cpu_seconds(self) -> float:
        return sum(last - self._cpu_start.get(pid, 0.0) for pid, last in self._cpu_last.items())


def run_prepare(dump: Path, out: Path, tokenizer: Path, workers: int) -> dict:
    from vicuna_ops.data import PrepareOptions, prepare

    load_before = os.getloadavg()[0]
    with TreeSampler(os.getpid()) as sampler:
        started = time.perf_counter()
        report = prepare([str(dump)], str(out), str(tokenizer),
                         PrepareOptions(workers=workers, overwrite=True))
        elapsed = time.perf_counter() - started
    return {"records": report.records_in, "kept": report.kept, "seconds": elapsed,
            "rate": report.records_in / elapsed, "balanced": report.balanced,
            "segments": report.splits["train"].segments + report.splits["eval"].segments,
            "cores": sampler.cpu_seconds / elapsed,
            "cpu_ms": 1000 * sampler.cpu_seconds / report.records_in,
            "load": (load_before + os.getloadavg()[0]) / 2}


def throughput(work: Path, tokenizer: Path, conversations: int) -> None:
    dump = work / "sharegpt-100k.json"
    t0 = time.perf_counter()
    count = write_dump(dump, count=conversations, seed=1)
    print(f"generated {count:,} conversations, {dump.stat().st_size / 1e6:.0f} MB "
          f"in {time.perf_counter() - t0:.0f}s")
    single = run_prepare(dump, work / "out1", tokenizer, workers=1)
    double = run_prepare(dump, work / "out2", tokenizer, workers=2)
    same = all((work / "out1" / name).read_bytes() == (work / "out2" / name).read_bytes()
               for name in ("train.jsonl", "eval.jsonl"))
    for name, result in (("1 worker ", single), ("2 workers", double)):
        print(f"{name}: {result['rate']:8.0f} conversations/s  ({result['seconds']:.1f}s, "
              f"{result['kept']:,} kept, {result['segments']:,} segments, "
              f"counts add up: {result['balanced']})")
        print(f"           cores obtained {result['cores']:.2f}, {result['cpu_ms']:.2f} CPU-ms "
              f"per conversation, load average {result['load']:.1f} on "
              f"{os.cpu_count()} cores")
    print(f"ratio 2 workers / 1 worker: {double['rate'] / single['rate']:.2f}x  "
          f"(identical output: {same}); cores obtained: "
          f"{double['cores'] / single['cores']:.2f}x")
    dump.unlink()


_CHILD = """
import sys, json
sys.path.insert(0, {root!r})
from vicuna_ops.data import PrepareOptions, prepare
report = prepare([{dump!r}], {out!r}, {tok!r}, PrepareOptions(workers=2, overwrite=True))
print(json.dumps({{"records": report.records_in, "kept": report.kept,
                  "balanced": report.balanced, "seconds": report.seconds}}))
"""


def memory(work: Path, tokenizer: Path, gigabytes: float) -> None:
    dump = work / "sharegpt-1gb.json"
    t0 = time.perf_counter()
    count = write_dump(dump, target_bytes=int(gigabytes * 1e9), seed=2)
    size = dump.stat().st_size
    print(f"generated {count:,} conversations, {size / 1e9:.2f} GB in "
          f"{time.perf_counter() - t0:.0f}s")
    code = _CHILD.format(root=str(ROOT), dump=str(dump), out=str(work / "out-mem"),
                         tok=str(tokenizer))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    with TreeSampler(child.pid) as sampler:
        stdout, _ = child.communicate()
    result = json.loads(stdout.strip().splitlines()[-1])
    print(f"1 GB run: {result['records']:,} records in {result['seconds']:.0f}s "
          f"({size / 1e6 / result['seconds']:.1f} MB/s, counts add up: {result['balanced']})")
    print(f"peak RSS summed over the process tree ({sampler.peak_procs} processes: main, "
          f"2 workers, forkserver, resource tracker): {sampler.peak_rss / 2**20:.0f} MiB; "
          f"PSS (shared pages counted once): {sampler.peak_pss / 2**20:.0f} MiB")
    print(f"ratio peak RSS / 1 GiB: {sampler.peak_rss / 2**30:.2f}  (must stay < 1)")
    dump.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--memory-gb", type=float, default=1.0)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vops-bench-data-", dir="/tmp"))
    try:
        sample = work / "sample.json"
        write_dump(sample, count=5000, seed=3)
        train_tokenizer(work / "tokenizer", sample)
        sample.unlink()
        if not args.skip_throughput:
            throughput(work, work / "tokenizer", args.conversations)
        if not args.skip_memory:
            memory(work, work / "tokenizer", args.memory_gb)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
