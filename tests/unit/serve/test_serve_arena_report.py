"""``vops arena report``: finds the votes where ``vops serve --local`` keeps them, prints the
ratings as a table or JSON, and answers a wrong path in one line (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vicuna_ops.serve.arena import ArenaStore, Contestant
from vicuna_ops.template import SYSTEM_PROMPT


def run_vops(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vicuna_ops", *args], capture_output=True,
                          text=True, timeout=120)


def _fill(path: Path, outcomes: list[str]) -> None:
    settings = {"temperature": 0.7, "top_p": 1.0, "max_tokens": 64}
    store = ArenaStore(path)
    for outcome in outcomes:
        battle = store.create("p", SYSTEM_PROMPT, Contestant("good", settings, "good"),
                              Contestant("bad", settings, "bad"))
        store.record_reply(battle.battle_id, "a", "A", stopped=False)
        store.record_reply(battle.battle_id, "b", "B", stopped=False)
        store.vote(battle.battle_id, outcome)
    store.create("unvoted", SYSTEM_PROMPT, Contestant("good", settings, "good"),
                 Contestant("bad", settings, "bad"))
    store.close()


def test_report_reads_a_local_deployments_votes_by_port():
    state = Path(os.environ["VOPS_HOME"]) / "serve" / "local-8123"
    _fill(state / "arena.db", ["a"] * 8 + ["b"] * 2 + ["tie", "bothbad"])
    result = run_vops("arena", "report", "--port", "8123", "--json", "--rounds", "200")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["votes"] == 12  # the unvoted battle is not a vote
    assert summary["outcomes"] == {"a": 8, "b": 2, "tie": 1, "bothbad": 1}
    good, bad = summary["models"]["good"], summary["models"]["bad"]
    assert list(summary["models"]) == ["good", "bad"] and good["rating"] > bad["rating"]
    assert (good["wins"], good["losses"], good["ties"], good["both_bad"]) == (8, 2, 1, 1)
    assert good["win_rate"] == round(9 / 12, 4)
    assert good["ci95"][0] <= good["rating"] <= good["ci95"][1]

    table = run_vops("arena", "report", "--db", str(state / "arena.db"), "--rounds", "50")
    assert table.returncode == 0, table.stderr
    assert "good" in table.stdout and "95% CI" in table.stdout and "12 vote(s)" in table.stdout


def test_report_without_votes_says_so(tmp_path):
    ArenaStore(tmp_path / "arena.db").close()
    result = run_vops("arena", "report", "--db", str(tmp_path / "arena.db"))
    assert result.returncode == 0 and "no votes yet" in result.stderr


def test_a_missing_or_foreign_database_is_one_line_and_exit_2(tmp_path):
    state = Path(os.environ["VOPS_HOME"]) / "serve" / "local-9001"
    _fill(state / "arena.db", ["a"])
    missing = run_vops("arena", "report")  # port 8000 by default: nothing there
    assert missing.returncode == 2
    [line] = missing.stderr.strip().splitlines()
    assert "no Arena votes database" in line and str(state / "arena.db") in line

    foreign = tmp_path / "notes.db"
    foreign.write_text("not a database at all " * 100)
    result = run_vops("arena", "report", "--db", str(foreign))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "cannot read the Arena votes" in line and "Traceback" not in result.stderr
