"""``vops eval`` end to end against scripted OpenAI-compatible stubs (uvicorn on loopback):
answering (multi-turn, resumable), judging (fair, always-first, malformed, 429, dying
judge), the report and the judge's cost in ``vops cost``."""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest

from fixtures.cli import run_vops
from fixtures.network import closed_port, start_service

HERE = Path(__file__).resolve().parent
QUALITY = "alpha:9,beta:5,gamma:2"
QUESTIONS = [
    {"question_id": 1, "category": "math", "turns": ["2+2?", "and 3+3?"], "reference": ["4", "6"]},
    {"question_id": 2, "category": "writing", "turns": ["A haiku about rain."]},
    {"question_id": 3, "category": "coding", "turns": ["Reverse a list in Python."],
     "reference": ["xs[::-1]"]},
    {"question_id": "q4", "category": "roleplay", "turns": ["Be a pirate.", "Now sing."]},
]
TURNS = sum(len(q["turns"]) for q in QUESTIONS)  # 6


def start_stub(log_dir: Path, role: str, **env: str):
    argv = lambda port: [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE),  # noqa: E731
                         "eval_stub:app", "--host", "127.0.0.1", "--port", str(port),
                         "--log-level", "warning"]
    stub_env = {**os.environ, "STUB_ROLE": role, "STUB_QUALITY": QUALITY,
                **{f"STUB_{k.upper()}": v for k, v in env.items()}}
    return start_service(f"eval-stub-{role}", argv, log_dir, env=stub_env)


def stub_stats(stub) -> dict:
    with urllib.request.urlopen(stub.url + "/stats", timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def answer_stub(tmp_path_factory):
    stub = start_stub(tmp_path_factory.mktemp("logs"), "answer", length="beta:300")
    yield stub
    stub.stop()


@pytest.fixture(scope="module")
def answered(tmp_path_factory, answer_stub) -> Path:
    """An eval folder with the answers of alpha, beta and gamma (made once per module)."""
    folder = tmp_path_factory.mktemp("answered")
    qfile = folder.parent / "questions.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    from vicuna_ops.cli.app import main

    for model in ("alpha", "beta", "gamma"):
        with pytest.raises(SystemExit) as exit_info:
            main(["eval", "answer", "--endpoint", answer_stub.url, "--model", model,
                  "--questions", str(qfile), "--out", str(folder), "--concurrency", "4"])
        assert exit_info.value.code == 0
    return folder


@pytest.fixture
def eval_dir(answered, tmp_path) -> Path:
    folder = tmp_path / "eval"
    shutil.copytree(answered, folder)
    return folder


def judge(capsys, folder: Path, stub, *extra: str) -> tuple[int, str, str]:
    return run_vops(capsys, "eval", "judge", "--out", str(folder), "--judge-endpoint", stub.url,
                    "--judge-model", "stub-judge", *extra)


def report(capsys, folder: Path) -> dict:
    code, out, err = run_vops(capsys, "eval", "report", "--out", str(folder), "--json")
    assert code == 0, err
    return json.loads(out)


# ------------------------------------------------------------------ answer
def test_answer_builtin_set_turn_by_turn_and_a_rerun_sends_nothing(capsys, answer_stub,
                                                                   tmp_path):
    before = stub_stats(answer_stub)["requests"]
    args = ("eval", "answer", "--endpoint", answer_stub.url, "--model", "alpha",
            "--questions", "builtin:vops-40", "--out", str(tmp_path), "--concurrency", "8")
    code, _, err = run_vops(capsys, *args)
    assert code == 0, err
    records = [json.loads(line) for line in (tmp_path / "answers" / "alpha.jsonl").open()]
    assert len(records) == 40
    two_turn = [r for r in records if len(r["turns"]) == 2]
    assert len(two_turn) >= 8
    sent = stub_stats(answer_stub)["requests"] - before
    assert sent == 40 + len(two_turn)
    # the second turn was asked with the first reply in the context (the stub numbers turns)
    assert all("turn 2" in r["turns"][1] and "turn 1" in r["turns"][0] for r in two_turn)
    assert all(r["token_counts"][0]["completion_tokens"] > 0 for r in records)
    by_category = {r["category"]: r["temperature"] for r in records}
    assert by_category["math"] == by_category["coding"] == by_category["reasoning"] == 0.0
    assert by_category["writing"] == 0.7

    code, _, err = run_vops(capsys, *args)
    assert code == 0, err
    assert stub_stats(answer_stub)["requests"] - before == sent  # nothing sent the second time
    assert "40 of 40 done (40 before, 0 now)" in err


def test_answer_unknown_model_is_one_line_exit_2(capsys, answer_stub, tmp_path):
    code, _, err = run_vops(capsys, "eval", "answer", "--endpoint", answer_stub.url, "--model",
                            "nope", "--questions", "builtin:vops-40", "--out", str(tmp_path))
    assert code == 2
    assert err.strip().count("\n") == 0 and "does not serve model 'nope'" in err


def test_answer_dead_endpoint_is_one_line_exit_2(capsys, tmp_path):
    code, _, err = run_vops(capsys, "eval", "answer", "--endpoint",
                            f"http://127.0.0.1:{closed_port()}", "--model", "m", "--questions",
                            "builtin:vops-40", "--out", str(tmp_path), "--retries", "0")
    assert code == 2
    assert err.startswith("error: cannot reach") and err.strip().count("\n") == 0


def test_bad_question_file_names_the_line(capsys, tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"question_id": 1, "category": "math", "turns": ["a"]}\n'
                   '{"question_id": 2, "category": "math", "turns": []}\n')
    code, _, err = run_vops(capsys, "eval", "answer", "--endpoint", "http://127.0.0.1:9",
                            "--model", "m", "--questions", str(bad), "--out", str(tmp_path))
    assert code == 2 and f"{bad}:2: turns" in err


# ------------------------------------------------------------------ judge
def test_fair_judge_orders_models_and_a_rerun_sends_nothing(capsys, eval_dir, tmp_path):
    stub = start_stub(tmp_path, "fair")
    try:
        code, _, err = judge(capsys, eval_dir, stub, "--mode", "pairwise", "--concurrency", "8")
        assert code == 0, err
        expected = 3 * TURNS * 2  # 3 pairs, every turn, both orders
        assert stub_stats(stub)["requests"] == expected
        code, _, err = judge(capsys, eval_dir, stub, "--mode", "pairwise")
        assert code == 0, err
        assert stub_stats(stub)["requests"] == expected
    finally:
        stub.stop()
    pairwise = report(capsys, eval_dir)["pairwise"]
    models = pairwise["models"]
    assert list(models) == ["alpha", "beta", "gamma"]  # best first
    assert models["alpha"]["wins"] == 2 * TURNS and models["alpha"]["losses"] == 0
    assert models["gamma"]["win_rate"] == 0.0
    lo, hi = models["alpha"]["ci95"]
    assert lo <= models["alpha"]["rating"] <= hi and models["beta"]["ci95"][1] < hi
    assert pairwise["position_inconsistent"] == 0.0
    assert pairwise["parse_failures"] == 0 and pairwise["judgments"] == expected
    assert set(models["alpha"]) >= {"wins", "losses", "ties", "win_rate", "lc_win_rate",
                                    "rating", "ci95"}


def test_always_first_judge_gives_only_ties(capsys, eval_dir, tmp_path):
    stub = start_stub(tmp_path, "first")
    try:
        code, _, err = judge(capsys, eval_dir, stub, "--mode", "pairwise")
        assert code == 0, err
    finally:
        stub.stop()
    pairwise = report(capsys, eval_dir)["pairwise"]
    assert pairwise["position_inconsistent"] == 1.0
    for model in pairwise["models"].values():
        assert model["wins"] == model["losses"] == 0 and model["ties"] == 2 * TURNS
        assert model["win_rate"] == 0.5


def test_malformed_verdicts_are_counted_never_scored(capsys, eval_dir, tmp_path):
    stub = start_stub(tmp_path, "malformed")
    try:
        code, _, err = judge(capsys, eval_dir, stub, "--mode", "pairwise", "--baseline", "beta")
        assert code == 0, err
        garbage = stub_stats(stub)["garbage"]
    finally:
        stub.stop()
    pairwise = report(capsys, eval_dir)["pairwise"]
    assert pairwise["judgments"] == 2 * TURNS * 2  # alpha-beta and gamma-beta only
    assert 0 < garbage < pairwise["judgments"]
    assert pairwise["parse_failures"] == garbage
    scored = sum(m["wins"] + m["losses"] + m["ties"] for m in pairwise["models"].values())
    assert scored == 2 * pairwise["verdicts"] == 2 * (2 * TURNS - pairwise["unscored_pairs"])


def test_rate_limited_judge_is_retried_with_backoff(capsys, eval_dir, tmp_path):
    stub = start_stub(tmp_path, "flaky429")
    try:
        code, _, err = judge(capsys, eval_dir, stub, "--mode", "single", "--concurrency", "4")
        assert code == 0, err
        stats = stub_stats(stub)
    finally:
        stub.stop()
    assert stats["rate_limited"] == 3 * TURNS and stats["replies"] == 3 * TURNS
    single = report(capsys, eval_dir)["single"]
    assert single["parse_failures"] == 0
    assert {m: v["mean"] for m, v in single["models"].items()} == {"alpha": 9, "beta": 5,
                                                                   "gamma": 2}
    assert set(single["models"]["alpha"]["by_turn"]) == {"1", "2"}
    assert single["models"]["alpha"]["by_category"]["math"] == 9


def test_judge_dying_mid_run_resumes_with_only_the_missing_requests(capsys, eval_dir,
                                                                    tmp_path):
    total = 3 * TURNS * 2
    dying = start_stub(tmp_path, "die_after", die_after="10")
    try:
        code, _, err = judge(capsys, eval_dir, dying, "--mode", "pairwise", "--concurrency", "3",
                             "--retries", "0")
    finally:
        dying.stop()
    assert code == 2 and err.startswith("error: cannot reach"), err
    assert "of 36 saved" in err and "rerun the same command" in err
    saved = sum(1 for _ in (eval_dir / "judgments" / "pairwise.jsonl").open())
    assert saved == 10
    fair = start_stub(tmp_path, "fair")
    try:
        code, _, err = judge(capsys, eval_dir, fair, "--mode", "pairwise")
        assert code == 0, err
        assert stub_stats(fair)["requests"] == total - saved
    finally:
        fair.stop()
    assert report(capsys, eval_dir)["pairwise"]["judgments"] == total


def test_judge_price_puts_the_eval_in_vops_cost(capsys, eval_dir, tmp_path):
    stub = start_stub(tmp_path, "fair")
    try:
        for _ in range(2):  # the second run judges nothing and must not double the cost
            code, _, err = judge(capsys, eval_dir, stub, "--mode", "single", "--judge-price",
                                 "2,8")
            assert code == 0, err
    finally:
        stub.stop()
    records = [json.loads(line) for line in (eval_dir / "judgments" / "single.jsonl").open()]
    tokens_in = sum(r["usage"]["prompt_tokens"] for r in records)
    tokens_out = sum(r["usage"]["completion_tokens"] for r in records)
    expected = (2 * tokens_in + 8 * tokens_out) / 1e6
    code, out, err = run_vops(capsys, "cost", "--json")
    assert code == 0, err
    runs = json.loads(out)["runs"]
    assert len(runs) == 1 and runs[0]["run_id"].startswith("eval-")
    assert runs[0]["cost"] == pytest.approx(expected, abs=1e-6)
    code, out, _ = run_vops(capsys, "cost")
    assert code == 0 and "judge" in out and runs[0]["run_id"] in out


def test_judge_refuses_bad_input_before_any_request(capsys, eval_dir):
    url = f"http://127.0.0.1:{closed_port()}"
    for extra, message in [(["--mode", "duel"], "--mode must be"),
                           (["--judge-price", "2"], "is not IN,OUT"),
                           (["--models", "alpha,zeta"], "no answers from 'zeta'"),
                           (["--models", "alpha"], "needs two models")]:
        code, _, err = run_vops(capsys, "eval", "judge", "--out", str(eval_dir),
                                "--judge-endpoint", url, "--judge-model", "j", *extra)
        assert code == 2 and message in err and err.count("\n") == 1, err


def test_report_tables_and_plot(capsys, eval_dir, tmp_path):
    stub = start_stub(tmp_path, "fair")
    try:
        assert judge(capsys, eval_dir, stub, "--mode", "pairwise")[0] == 0
        assert judge(capsys, eval_dir, stub, "--mode", "single")[0] == 0
    finally:
        stub.stop()
    plot = tmp_path / "ratings.png"
    code, out, err = run_vops(capsys, "eval", "report", "--out", str(eval_dir), "--plot",
                              str(plot))
    assert code == 0, err
    assert plot.read_bytes().startswith(b"\x89PNG")
    for text in ("pairwise", "LC win rate", "95% CI", "single (1-10)", "position-inconsistent",
                 "alpha", "turn 2"):
        assert text in out


def test_report_without_judgments_is_one_line(capsys, eval_dir):
    code, _, err = run_vops(capsys, "eval", "report", "--out", str(eval_dir))
    assert code == 2 and "no judgments" in err
