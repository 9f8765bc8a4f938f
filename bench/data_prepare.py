"""Benchmark ``vops data prepare`` against FastChat's cleaning scripts on a scraped dump.

    .venv/bin/python bench/data_prepare.py --conversations 2000
    .venv/bin/python bench/data_prepare.py --conversations 2000 \\
        --fastchat-python /tmp/venv-fastchat/bin/python     # + FastChat, ratios
    .venv/bin/python bench/data_prepare.py --conversations 20000 --skip-fastchat-split

Writes its own seeded ShareGPT-style dump (a JSON list, ~21 KB per conversation like the
real one): ChatGPT-UI markup (``markdown prose`` divs, code blocks whose header carries the
language, an icon and "Copy code", highlight.js spans, tables, lists, entities), regenerate
counters before replies and questions, "CopyN chars / M words" scrape noise, plugin
sessions, replies naming OpenAI/ChatGPT, zero-width replies, duplicates and malformed
records. A 4K BPE tokenizer is trained on it and saved as a user's tokenizer folder.

Runs ``vops data prepare`` (the CLI, default worker count) as a child process and measures
its CPU-seconds and peak RSS over the whole process tree: CPU from the kernel's accounting
of waited-for children (``RUSAGE_CHILDREN``: the workers included, nothing lost between
samples), RSS as the sum over the tree sampled with psutil every 0.1 s. With
``--fastchat-python`` (a venv with ``fschat`` and transformers) it runs FastChat's
``clean_sharegpt`` then ``split_long_conversation`` on the same file less its 0.3% malformed
records (FastChat's scripts crash on those), measured the same way, and prints the ratios.
CPU-seconds, not wall time: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORDS = ("the model data train token batch loss learning rate python function return value "
         "list dict error file server request response memory cloud spot instance checkpoint "
         "gradient layer attention query key cache sequence length vector matrix GPU node "
         "cluster price cost region zone bucket object upload download stream worker process "
         "thread queue result output input format json markdown table code block language "
         "please explain how why what when where which could would should example simple "
         "because first then finally also however therefore about into over under between "
         "we you they it this that these those is are was were be been being have has had").split()
LANGS = ("python", "javascript", "bash", "sql", "rust", "go", "")
PROSE = ('<div class="markdown prose w-full break-words dark:prose-invert light">', "</div>")
COPY_BUTTON = ('<button class="flex ml-auto gap-2"><svg stroke="currentColor" fill="none" '
               'stroke-width="2" viewBox="0 0 24 24" stroke-linecap="round" height="1em" '
               'width="1em" xmlns="http://www.w3.org/2000/svg"><path d="M16 4h2a2 2 0 0 1 2 2v14'
               'a2 2 0 0 1-2 2H6a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2h2"></path><rect x="8" y="2" '
               'width="8" height="4" rx="1" ry="1"></rect></svg>Copy code</button>')


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def _paragraph(rng: random.Random, low: int = 2, high: int = 6) -> str:
    return " ".join(_sentence(rng, rng.randint(8, 22)) for _ in range(rng.randint(low, high)))


def _code(rng: random.Random) -> str:
    """Code as highlight.js renders it on the page: every token in a span."""
    return "\n".join(
        f'<span class="hljs-keyword">def</span> <span class="hljs-title function_">'
        f'{rng.choice(WORDS)}_{i}</span>(<span class="hljs-params">{rng.choice(WORDS)}'
        f'</span>):\n    <span class="hljs-keyword">return</span> {rng.choice(WORDS)} '
        f'&lt; <span class="hljs-number">{rng.randint(0, 99)}</span> '
        f'<span class="hljs-comment"># {rng.choice(WORDS)} &amp; more</span>'
        for i in range(rng.randint(3, 14)))


def _code_block(rng: random.Random) -> str:
    lang = rng.choice(LANGS)
    cls = f" language-{lang}" if lang else ""
    return ('<pre><div class="bg-black mb-4 rounded-md"><div class="flex items-center relative '
            f'text-gray-200 bg-gray-800 px-4 py-2 text-xs font-sans"><span class="">{lang}'
            f'</span>{COPY_BUTTON}</div><div class="p-4 overflow-y-auto"><code '
            f'class="!whitespace-pre hljs{cls}">{_code(rng)}\n</code></div></div></pre>')


def _table(rng: random.Random) -> str:
    cols = rng.randint(2, 4)
    head = "".join(f"<th>{rng.choice(WORDS)}</th>" for _ in range(cols))
    rows = "".join("<tr>" + "".join(f"<td>{rng.choice(WORDS)} {rng.randint(1, 999)}</td>"
                                    for _ in range(cols)) + "</tr>"
                   for _ in range(rng.randint(2, 6)))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _html_reply(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(3, 8)):
        kind = rng.random()
        if kind < 0.45:
            parts.append(f"<p>{_paragraph(rng)} Use <code>{rng.choice(WORDS)}_x</code> and "
                         f"<strong>{rng.choice(WORDS)}</strong> &amp; <em>more</em>, see "
                         f'<a href="https://example.org/{rng.choice(WORDS)}">docs</a>.</p>')
        elif kind < 0.7:
            parts.append(_code_block(rng))
        elif kind < 0.8:
            parts.append(_table(rng))
        else:
            tag = rng.choice(("ol", "ul"))
            items = "".join(f"<li><p>{_sentence(rng, rng.randint(5, 16))}</p></li>"
                            for _ in range(rng.randint(2, 6)))
            parts.append(f"<{tag}>{items}</{tag}>")
    return PROSE[0] + "".join(parts) + PROSE[1]


def conversation(rng: random.Random, index: int) -> dict:
    """One scraped conversation, with the noise and the special cases in realistic shares."""
    turns = []
    for _ in range(rng.choice((1, 1, 2, 2, 3, 3, 4, 5, 6, 8))):
        question = _paragraph(rng, 1, 3)
        roll = rng.random()
        if roll < 0.3:
            question = "1 / 1" + question
        elif roll < 0.4:
            question += f"Copy{len(question)} chars / {question.count(' ') + 1} words"
        turns.append({"from": "human", "value": question})
        reply = _html_reply(rng) if rng.random() < 0.9 else _paragraph(rng)
        if rng.random() < 0.05:
            reply = f"{rng.randint(1, 2)} / 3" + reply  # regenerated reply: counter first
        turns.append({"from": "gpt", "value": reply})
    record: dict = {"id": f"conv{index:08d}", "conversations": turns}
    roll = rng.random()
    if roll < 0.005:
        record["plugins"] = [{"name": "weather"}]
    elif roll < 0.015:
        turns[-1]["value"] = turns[-1]["value"].replace("the", "ChatGPT by OpenAI", 1)
    elif roll < 0.02:
        turns[-1]["value"] = "\u200b"
    elif roll < 0.03 and len(turns) > 2:
        turns.pop(0)  # scraped from the middle: starts with a reply
    return record


MALFORMED = ({"id": "bad-no-conv"}, {"id": "bad-type", "conversations": [{"from": "human",
                                                                            "value": 3}]},
             {"id": "bad-role", "conversations": [{"from": "bing", "value": "x"}]}, "a string",
             {"conversations": []})


def write_dump(path: Path, count: int, seed: int = 0, sane: Path | None = None) -> int:
    """A JSON list of ``count`` records: 1% duplicates, 0.3% malformed. ``sane`` gets the
    same list without the malformed records (FastChat's scripts crash on them)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as out, \
            open(sane or os.devnull, "w", encoding="utf-8") as other:
        out.write("[\n")
        other.write("[\n")
        first = True
        for written in range(count):
            roll = rng.random()
            if roll < 0.003:
                record = rng.choice(MALFORMED)
            elif roll < 0.013 and written > 10:
                record = conversation(random.Random(written // 2), written // 2)
            else:
                record = conversation(rng, written)
            text = json.dumps(record)
            out.write((",\n" if written else "") + text)
            if record not in MALFORMED:
                other.write(("" if first else ",\n") + text)
                first = False
        out.write("\n]\n")
        other.write("\n]\n")
    return count


def train_tokenizer(folder: Path, sample: Path) -> None:
    """A 4K byte-level BPE trained on the dump's first 20 MB, saved as a plain fast tokenizer
    folder that both vops and FastChat's transformers load."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    with open(sample, encoding="utf-8") as file:
        text = file.read(20 << 20)
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=["<unk>", "<s>", "</s>",
                                                                   "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(text.splitlines(), trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>", pad_token="<pad>").save_pretrained(folder)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"  # a name every version knows
    config_path.write_text(json.dumps(config))


class TreeRSS:
    """Peak RSS summed over a process and all its descendants, sampled every 0.1 s."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.root, self.peak, self.procs = psutil.Process(pid), 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                tree = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for proc in tree:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak, self.procs = max(self.peak, total), max(self.procs, len(tree))
            self._stop.wait(0.1)

    def __enter__(self) -> TreeRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(argv: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``argv``; CPU-seconds of its whole tree (kernel accounting) and peak tree RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    with TreeRSS(proc.pid) as rss:
        stdout, stderr = proc.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({proc.returncode}):\n{stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu": cpu, "wall": time.perf_counter() - started, "rss": rss.peak,
            "procs": rss.procs, "stdout": stdout}


def run_vops(dump: Path, out: Path, tokenizer: Path, workers: int) -> dict:
    argv = [sys.executable, "-m", "vicuna_ops", "data", "prepare", str(dump), "--out", str(out),
            "--tokenizer", str(tokenizer), "--max-length", "2048", "--overwrite", "--json"]
    if workers:
        argv += ["--workers", str(workers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = measure(argv, env)
    result["report"] = json.loads(result["stdout"])
    return result


def run_fastchat(python: str, dump: Path, work: Path, tokenizer: Path) -> dict:
    clean, split = work / "fastchat-clean.json", work / "fastchat-split.json"
    first = measure([python, "-m", "fastchat.data.clean_sharegpt", "--in-file", str(dump),
                     "--out-file", str(clean)])
    second = measure([python, "-m", "fastchat.data.split_long_conversation", "--in-file",
                      str(clean), "--out-file", str(split), "--model-name-or-path",
                      str(tokenizer), "--max-length", "2048"])
    segments = len(json.loads(split.read_text()))
    return {"cpu": first["cpu"] + second["cpu"], "wall": first["wall"] + second["wall"],
            "rss": max(first["rss"], second["rss"]), "clean_cpu": first["cpu"],
            "split_cpu": second["cpu"], "segments": segments}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=0, help="0: vops's default")
    parser.add_argument("--fastchat-python", help="python of a venv with fschat installed")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vops-bench-data-"))
    try:
        dump = work / "sharegpt.json"
        write_dump(dump, args.conversations, args.seed, work / "sharegpt-fastchat.json")
        size = dump.stat().st_size
        print(f"dump: {args.conversations:,} conversations, {size / 1e6:.0f} MB "
              f"({size / args.conversations / 1e3:.1f} KB each)")
        train_tokenizer(work / "tokenizer", dump)
        vops = run_vops(dump, work / "out", work / "tokenizer", args.workers)
        report = vops["report"]
        segments = report["splits"]["train"]["segments"] + report["splits"]["eval"]["segments"]
        per = 1000 * vops["cpu"] / args.conversations
        print(f"vops:     {vops['cpu']:6.1f} CPU-s ({per:.2f} CPU-ms/conversation), "
              f"peak RSS {vops['rss'] / 1e9:.2f} GB over {vops['procs']} processes, "
              f"{vops['wall']:.1f}s wall; kept {report['kept']:,}, {segments:,} segments, "
              f"left out {sum(report['left_out'].values()):,}")
        if args.fastchat_python:
            fast = run_fastchat(args.fastchat_python, work / "sharegpt-fastchat.json", work,
                                work / "tokenizer")
            print(f"FastChat: {fast['cpu']:6.1f} CPU-s (clean {fast['clean_cpu']:.1f} + split "
                  f"{fast['split_cpu']:.1f}), peak RSS {fast['rss'] / 1e9:.2f} GB, "
                  f"{fast['wall']:.1f}s wall; {fast['segments']:,} segments")
            print(f"ratio vops/FastChat: CPU-s {vops['cpu'] / fast['cpu']:.2f} (target <= 0.5), "
                  f"peak RSS {vops['rss'] / fast['rss']:.2f}")
        print(f"peak RSS {vops['rss'] / 1e9:.2f} GB (target <= 0.65 GB at 20K conversations)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
