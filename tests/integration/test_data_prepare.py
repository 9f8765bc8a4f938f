"""``vops data prepare`` end to end: real files, real buckets (moto S3, GCS emulator), real
tokenizers, worker processes; outputs read back the way the trainer reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vicuna_ops.cli.app import main
from vicuna_ops.storage import open_store
from vicuna_ops.template import count_tokens, parse_turns
from vicuna_ops.tokenizer import load_tokenizer

HTML_REPLY = (
    '<div class="markdown prose w-full break-words dark:prose-invert light"><p>Like this:</p>'
    '<pre><div class="bg-black mb-4 rounded-md"><div class="flex items-center relative '
    'text-gray-200 bg-gray-800 px-4 py-2 text-xs font-sans"><span class="">python</span>'
    '<button class="flex ml-auto gap-2"><svg stroke="currentColor"><path d="M1 1"></path>'
    '</svg>Copy code</button></div><div class="p-4 overflow-y-auto"><code class="!whitespace-pre '
    'hljs language-python"><span class="hljs-built_in">print</span>(<span class="hljs-string">'
    '"hi"</span>)\n</code></div></div></pre></div>')


def conv(rid: str, *texts: str, roles: tuple[str, ...] | None = None) -> dict:
    roles = roles or tuple("human" if i % 2 == 0 else "gpt" for i in range(len(texts)))
    return {"id": rid, "conversations": [{"from": r, "value": t} for r, t in zip(roles, texts)]}


def mixed_records() -> list[str]:
    """One of everything, with the outcome each should have."""
    long_turns = [f"question number {i} about lists?" if i % 2 == 0 else
                  f"answer number {i}: " + "details " * 30 for i in range(12)]
    return [
        json.dumps(conv("html", "1 / 1How do I print in Python?", HTML_REPLY)),  # kept
        "this line is not JSON",  # malformed
        json.dumps({"id": "typed", "conversations": [{"from": "human", "value": 5}]}),  # malformed
        json.dumps(conv("order", "a", "b", roles=("human", "human"))),  # role_order
        json.dumps(conv("empty", "question?", " ")),  # empty_reply
        json.dumps(conv("short", "hi")),  # too_short (only a question)
        json.dumps(conv("blocked", "hi there", "As an AI language model I can't")),  # blocklist
        json.dumps(conv("html", "another", "conversation")),  # duplicate_id
        json.dumps(conv("copy", "1 / 1How do I print in Python?", HTML_REPLY)),  # dup exchange
        json.dumps(conv("long", *long_turns)),  # kept, split
        json.dumps(conv("eos", "what does </s> mean?", "it ends a sequence </s>")),  # kept
        "",
        json.dumps(conv("huge", "tell me everything", "x" * 5000)),  # too_long (dropped)
    ]


def run(*args: str, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "prepare", *args])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_trainable(records: list[dict], tokenizer, max_length: int) -> None:
    """Every output record parses the way the trainer parses it and fits."""
    for record in records:
        system, turns = parse_turns(record["conversations"])
        assert count_tokens(tokenizer, system, turns) <= max_length
        assert record["conversations"][0]["from"] in ("human", "system")


@pytest.fixture
def mixed(tmp_path: Path) -> tuple[Path, Path]:
    source = tmp_path / "sharegpt.jsonl"
    source.write_text("\n".join(mixed_records()) + "\n")
    blocklist = tmp_path / "blocklist.txt"
    blocklist.write_text("# phrases\nas an AI language model\n")
    return source, blocklist


def test_prepare_end_to_end_counts_add_up(tmp_path, mixed, capsys):
    source, blocklist = mixed
    out = tmp_path / "prepared"
    code, stdout, stderr = run(str(source), "--out", str(out), "--tokenizer", "builtin:tiny",
                               "--max-length", "512", "--blocklist", str(blocklist),
                               "--eval-ratio", "0", "--workers", "1", "--json",
                               capsys=capsys)
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report == json.loads((out / "report.json").read_text())
    assert report["balanced"] and report["records_in"] == 12
    assert report["kept"] == 3
    assert {k: v for k, v in report["left_out"].items() if v} == {
        "malformed": 2, "role_order": 1, "empty_reply": 1, "too_short": 1, "blocklist": 1,
        "too_long": 1, "duplicate_id": 1, "duplicate_exchange": 1}
    assert [(p["line"], p["item"]) for p in report["problems"]] == [(2, 1), (3, 2)]
    assert "'value' is a number" in report["problems"][1]["detail"]
    changes = report["changes"]
    assert changes["html_turns_converted"] == 1 and changes["copy_code_removed"] == 1
    assert changes["page_counters_removed"] == 1
    assert changes["special_tokens_neutralized"] == 2 and changes["conversations_split"] == 1

    train = read_jsonl(out / "train.jsonl")
    assert read_jsonl(out / "eval.jsonl") == []
    assert_trainable(train, load_tokenizer("builtin:tiny"), 512)
    ids = [r["id"] for r in train]
    assert ids[0] == "html" and ids[-1] == "eos"
    long_ids = [i for i in ids if i.startswith("long")]
    assert len(long_ids) > 1 and long_ids == [f"long_{k}" for k in range(len(long_ids))]
    assert report["splits"]["train"]["segments"] == len(train)
    html = train[0]["conversations"]
    assert html[0]["value"] == "How do I print in Python?"
    assert html[1]["value"] == 'Like this:\n\n```python\nprint("hi")\n```'
    # no turn of the split conversation was lost
    long_texts = [t["value"] for r in train if r["id"].startswith("long")
                  for t in r["conversations"]]
    original = json.loads(mixed_records()[9])["conversations"]
    assert long_texts == [t["value"].strip() for t in original]  # turns are stripped
    assert train[-1]["conversations"][1]["value"] == "it ends a sequence < /s>"


def test_table_report_by_default(tmp_path, mixed, capsys):
    source, _ = mixed
    code, stdout, stderr = run(str(source), "--out", str(tmp_path / "o"), "--tokenizer",
                               "builtin:tiny", "--max-length", "512", "--workers", "1",
                               capsys=capsys)
    assert code == 0, stderr
    assert "records in" in stdout and "malformed" in stdout and "train" in stdout
    assert "not valid JSON" in stderr  # the first malformed records are shown


def test_worker_processes_give_the_same_output_as_one(tmp_path, capsys):
    items = [conv(f"c{i}", f"question {i}? " * (i % 7 + 1), f"answer {i}. " * (i % 13 + 1),
                  "and then?", "<div><p>more</p></div>") for i in range(300)]
    items.insert(50, conv("c3", "dup id", "x"))
    source = tmp_path / "list.json"
    source.write_text(json.dumps(items, indent=1))
    outputs = []
    for workers in ("1", "2"):
        out = tmp_path / f"out{workers}"
        code, stdout, stderr = run(str(source), "--out", str(out), "--tokenizer",
                                   "builtin:tiny", "--max-length", "256", "--eval-ratio",
                                   "0.2", "--workers", workers, "--json", capsys=capsys)
        assert code == 0, stderr
        report = json.loads(stdout)
        assert report["balanced"] and report["records_in"] == 301
        assert report["left_out"]["duplicate_id"] == 1
        outputs.append([(out / name).read_bytes() for name in ("train.jsonl", "eval.jsonl")])
    assert outputs[0] == outputs[1]


def test_malformed_elements_of_a_json_list_are_located(tmp_path, capsys):
    good = [json.dumps(conv(f"g{i}", "hello there?", "hi!" * (i + 1))) for i in range(3)]
    text = "[\n" + good[0] + ",\n" + '{"id": "x", "conversations": [oops]},\n' + \
        good[1] + ",\n" + '"a string",\n' + good[2] + "\n]\n"
    source = tmp_path / "broken.json"
    source.write_text(text)
    code, stdout, _ = run(str(source), "--out", str(tmp_path / "o"), "--tokenizer",
                          "builtin:tiny", "--workers", "1", "--json", capsys=capsys)
    assert code == 0
    report = json.loads(stdout)
    assert report["kept"] == 3 and report["left_out"]["malformed"] == 2
    assert [(p["line"], p["item"]) for p in report["problems"]] == [(3, 1), (5, 3)]
    assert "not valid JSON" in report["problems"][0]["detail"]
    assert "not a string" in report["problems"][1]["detail"] or \
        "JSON object" in report["problems"][1]["detail"]


# -- errors: one line, exit 2, nothing written ---------------------------------------------


def one_line_error(code: int, stdout: str, stderr: str, *needles: str) -> None:
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in stderr and stdout == ""


def test_missing_input_is_one_line(tmp_path, capsys):
    result = run(str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"), "--tokenizer",
                 "builtin:tiny", capsys=capsys)
    one_line_error(*result, "no input", "nope.jsonl")
    assert not (tmp_path / "o").exists()


def test_unwritable_output_is_one_line(tmp_path, mixed, capsys):
    source, _ = mixed
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = run(str(source), "--out", str(blocker / "sub"), "--tokenizer", "builtin:tiny",
                 capsys=capsys)
    one_line_error(*result, "a-file")


def test_existing_output_needs_overwrite(tmp_path, mixed, capsys):
    source, _ = mixed
    out = tmp_path / "o"
    args = (str(source), "--out", str(out), "--tokenizer", "builtin:tiny", "--workers", "1")
    assert run(*args, capsys=capsys)[0] == 0
    before = (out / "train.jsonl").read_bytes()
    one_line_error(*run(*args, capsys=capsys), "already exists", "--overwrite")
    assert (out / "train.jsonl").read_bytes() == before
    assert run(*args, "--overwrite", capsys=capsys)[0] == 0


@pytest.mark.parametrize("extra, needle", [
    (["--tokenizer", "/no/such/tokenizer"], "does not exist"),
    (["--tokenizer", "builtin:huge"], "unknown builtin tokenizer"),
    (["--tokenizer", "builtin:tiny", "--keep-lang", "en,klingon"], "klingon"),
    (["--tokenizer", "builtin:tiny", "--on-long-turn", "squash"], "--on-long-turn"),
    (["--tokenizer", "builtin:tiny", "--eval-ratio", "1.5"], "--eval-ratio"),
    (["--tokenizer", "builtin:tiny", "--max-length", "4"], "--max-length"),
    (["--tokenizer", "builtin:tiny", "--blocklist", "/no/such/list.txt"], "no input"),
])
def test_bad_flags_are_one_line(tmp_path, mixed, capsys, extra, needle):
    source, _ = mixed
    result = run(str(source), "--out", str(tmp_path / "o"), *extra, capsys=capsys)
    one_line_error(*result, needle)
    assert not (tmp_path / "o" / "train.jsonl").exists()


def test_tokenizer_folder_without_tokenizer_files(tmp_path, mixed, capsys):
    source, _ = mixed
    (tmp_path / "empty-tok").mkdir()
    result = run(str(source), "--out", str(tmp_path / "o"), "--tokenizer",
                 str(tmp_path / "empty-tok"), capsys=capsys)
    one_line_error(*result, "no tokenizer files")


# -- buckets -------------------------------------------------------------------------------


def test_read_from_s3_write_to_gcs(s3_bucket, gcs_bucket, capsys):
    records = mixed_records()
    s3 = open_store(s3_bucket)
    s3.put_bytes("raw/part-1.jsonl", ("\n".join(records[:7]) + "\n").encode())
    s3.put_bytes("raw/part-2.json", json.dumps(
        [json.loads(r) for r in records[7:] if r]).encode())
    s3.put_bytes("raw/notes.txt", b"not data")
    out = f"{gcs_bucket}/prepared/v1"
    code, stdout, stderr = run(f"{s3_bucket}/raw", "--out", out, "--tokenizer", "builtin:tiny",
                               "--max-length", "512", "--eval-ratio", "0", "--workers", "1",
                               "--json", capsys=capsys)
    assert code == 0, stderr
    report = json.loads(stdout)
    assert [i["source"] for i in report["inputs"]] == [f"{s3_bucket}/raw/part-1.jsonl",
                                                       f"{s3_bucket}/raw/part-2.json"]
    assert [i["format"] for i in report["inputs"]] == ["jsonl", "json"]
    assert report["balanced"] and report["records_in"] == 12 and report["kept"] == 4
    gcs = open_store(out)
    assert sorted(o.key for o in gcs.list()) == ["eval.jsonl", "report.json", "train.jsonl"]
    train = [json.loads(line) for line in gcs.get_bytes("train.jsonl").decode().splitlines()]
    assert len(train) == report["splits"]["train"]["segments"]
    assert_trainable(train, load_tokenizer("builtin:tiny"), 512)
    assert json.loads(gcs.get_bytes("report.json")) == report


def test_missing_object_in_a_bucket_is_one_line(s3_bucket, tmp_path, capsys):
    result = run(f"{s3_bucket}/raw/none.jsonl", "--out", str(tmp_path / "o"), "--tokenizer",
                 "builtin:tiny", capsys=capsys)
    one_line_error(*result, "no input", "none.jsonl")


# -- tokenizers and the train/eval draw ----------------------------------------------------


def build_bpe_tokenizer(folder: Path) -> Path:
    """A small BPE trained here: merges make a vocabulary unlike the byte-level builtin's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = mixed_records() * 5 + ["question answer details number lists hello there"] * 50
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(corpus, trainer=trainer)
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(folder)
    return folder


def test_a_tokenizer_with_another_vocabulary_splits_differently(tmp_path, mixed, capsys):
    source, _ = mixed
    folder = build_bpe_tokenizer(tmp_path / "bpe")
    segments = {}
    for name, spec in (("tiny", "builtin:tiny"), ("bpe", str(folder))):
        out = tmp_path / name
        code, stdout, stderr = run(str(source), "--out", str(out), "--tokenizer", spec,
                                   "--max-length", "512", "--eval-ratio", "0", "--workers",
                                   "1", "--json", capsys=capsys)
        assert code == 0, stderr
        records = read_jsonl(out / "train.jsonl")
        assert_trainable(records, load_tokenizer(spec), 512)
        assert json.loads(stdout)["balanced"]
        segments[name] = sum(1 for r in records if r["id"].startswith("long"))
    # BPE merges make the same text shorter, so the long conversation needs fewer segments
    assert 1 <= segments["bpe"] < segments["tiny"]


def test_seeded_train_eval_split(tmp_path, capsys):
    items = [conv(f"c{i}", f"question {i}?", "answer. " * (1 + i % 40), "more?", "yes.")
             for i in range(300)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(i) + "\n" for i in items))

    def split(seed: str, name: str) -> tuple[set[str], set[str]]:
        out = tmp_path / name
        code, _, stderr = run(str(source), "--out", str(out), "--tokenizer", "builtin:tiny",
                              "--max-length", "400", "--eval-ratio", "0.25", "--seed", seed,
                              "--workers", "1", "--json", capsys=capsys)
        assert code == 0, stderr
        train = {r["id"] for r in read_jsonl(out / "train.jsonl")}
        evals = {r["id"] for r in read_jsonl(out / "eval.jsonl")}
        return train, evals

    train, evals = split("1", "a")
    assert (train, evals) == split("1", "b")  # same seed, same draw
    assert split("2", "c")[1] != evals
    base = lambda ids: {i.rsplit("_", 1)[0] if i.count("_") else i for i in ids}  # noqa: E731
    assert not base(train) & base(evals)  # segments of one conversation stay together
    assert 40 <= len(base(evals)) <= 110  # about 25% of 300
    assert any("_" in i for i in train | evals)  # some were split


# -- inputs with no conversation: one line, exit 2, nothing written (issue 13) -------------


@pytest.mark.parametrize("content, needle", [
    (b"", "empty"),
    (b"  \n\n", "empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary"),
    (b"just some notes\nnot json at all\n", "no ShareGPT record"),
    (b'["a", "b"]', "no ShareGPT record"),
])
def test_an_input_with_no_conversation_is_an_error(tmp_path, capsys, content, needle):
    source = tmp_path / "in.jsonl"
    source.write_bytes(content)
    out = tmp_path / "o"
    result = run(str(source), "--out", str(out), "--tokenizer", "builtin:tiny",
                 "--workers", "1", capsys=capsys)
    one_line_error(*result, needle, "in.jsonl")
    assert not out.exists() or not any(out.iterdir())


def test_good_records_beside_bad_lines_go_on(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text("garbage\n" + json.dumps(conv("a", "hello?", "hi")) + "\n\x00\x01\n")
    code, stdout, stderr = run(str(source), "--out", str(tmp_path / "o"), "--tokenizer",
                               "builtin:tiny", "--workers", "1", "--json", capsys=capsys)
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["kept"] == 1 and [p["line"] for p in report["problems"]] == [1, 3]


# -- Vicuna's filters by default (issue 13) ------------------------------------------------


def provenance_records() -> list[str]:
    plugin = conv("plug", "what's the weather?", "Sunny.")
    plugin["plugins"] = ["weather-tool"]
    no_plugin = conv("noplug", "what is 2+2?", "4")
    no_plugin["plugins"] = None
    return [json.dumps(r) for r in (
        plugin, no_plugin,
        conv("prov", "who are you?", "I am ChatGPT, a model by OpenAI."),
        conv("url", "where do I sign up?", "At https://chat.openai.com/auth."),
        conv("said", "what did she say?", "She said hi."),
    )]


@pytest.mark.parametrize("flags, kept, left_out", [
    ((), {"noplug", "said"}, {"plugins": 1, "blocklist": 2}),
    (("--blocklist", "none"), {"noplug", "said", "prov", "url"}, {"plugins": 1}),
    (("--keep-plugins",), {"plug", "noplug", "said"}, {"blocklist": 2}),
    (("--blocklist", "{file}", "--keep-plugins"), {"plug", "noplug", "prov", "url"},
     {"blocklist": 1}),
])
def test_default_blocklist_and_plugin_sessions(tmp_path, capsys, flags, kept, left_out):
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(provenance_records()) + "\n")
    words = tmp_path / "words.txt"
    words.write_text("said\n")
    flags = tuple(str(words) if f == "{file}" else f for f in flags)
    out = tmp_path / "o"
    code, stdout, stderr = run(str(source), "--out", str(out), "--tokenizer", "builtin:tiny",
                               "--eval-ratio", "0", "--workers", "1", "--json", *flags,
                               capsys=capsys)
    assert code == 0, stderr
    report = json.loads(stdout)
    assert {k: v for k, v in report["left_out"].items() if v} == left_out
    assert {r["id"] for r in read_jsonl(out / "train.jsonl")} == kept


# -- scraped HTML after a regenerate counter, invisible replies (issue 13) -----------------


def test_counter_before_html_and_invisible_replies(tmp_path, capsys):
    records = [
        conv("counter", "Copy1 / 2How do I print?Copy24 chars / 5 words",
             "2 / 3" + HTML_REPLY.replace("Like this:", "Like this &amp; that:")),
        conv("zw", "anything?", "\u200b"),
        conv("nbsp", "anything else?", "\u00a0\ufeff \u2060"),
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "o"
    code, stdout, stderr = run(str(source), "--out", str(out), "--tokenizer", "builtin:tiny",
                               "--eval-ratio", "0", "--workers", "2", "--json", capsys=capsys)
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["left_out"]["empty_reply"] == 2 and report["kept"] == 1
    (record,) = read_jsonl(out / "train.jsonl")
    question, answer = (t["value"] for t in record["conversations"])
    assert question == "How do I print?"
    assert answer == 'Like this & that:\n\n```python\nprint("hi")\n```'


# -- a killed run takes its workers with it and leaves nothing behind (issue 13) -----------


def start_busy_run(tmp_path: Path):
    """``vops data prepare`` with two workers on an input big enough to take seconds, once
    its workers and temp folder exist: (process, its descendants, args, env, temp root)."""
    import os
    import subprocess
    import sys
    import time

    import psutil

    source = tmp_path / "big.jsonl"
    with source.open("w") as file:
        for i in range(4000):
            file.write(json.dumps(conv(f"c{i}", f"question {i}?", HTML_REPLY * 3)) + "\n")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    args = [sys.executable, "-m", "vicuna_ops", "data", "prepare", "--tokenizer",
            "builtin:tiny", "--workers", "2"]
    proc = subprocess.Popen([*args, str(source), "--out", str(tmp_path / "o")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    tree: list[psutil.Process] = []
    while time.monotonic() < deadline:
        tree = psutil.Process(proc.pid).children(recursive=True)
        if len(tree) >= 2 and list(tmp.glob("vops-data-*/train.jsonl")):
            break
        assert proc.poll() is None, "finished before it could be stopped"
        time.sleep(0.05)
    assert len(tree) >= 2, "no worker processes seen"
    time.sleep(0.5)  # let the workers get busy
    return proc, tree, args, env, tmp


def test_ctrl_c_exits_130_and_leaves_nothing(tmp_path):
    import os
    import signal

    import psutil

    proc, tree, _, _, tmp = start_busy_run(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    _, alive = psutil.wait_procs(tree, timeout=5)
    assert not alive
    assert not list(tmp.glob("vops-data-*")) and not (tmp_path / "o" / "train.jsonl").exists()


def test_kill_9_takes_the_workers_and_the_next_run_removes_the_temp_folder(tmp_path):
    import os
    import signal
    import subprocess

    import psutil

    proc, tree, args, env, tmp = start_busy_run(tmp_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        gone, alive = psutil.wait_procs(tree, timeout=5)
        assert not alive, f"still alive 5 s after kill -9: {[p.pid for p in alive]}"
    finally:
        proc.kill()
    (stale,) = list(tmp.glob("vops-data-*"))  # the killed run could not remove its own
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps(conv("a", "hello?", "hi")) + "\n")
    done = subprocess.run([*args, str(small), "--out", str(tmp_path / "o2")], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not stale.exists() and not list(tmp.glob("vops-data-*"))
