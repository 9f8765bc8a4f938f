"""The pure parts of ``vops train --local``: the child command, event lines, the summary."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from vicuna_ops.storage import open_store
from vicuna_ops.train.args import EXIT_PREEMPTED, parse_args
from vicuna_ops.train.local import _summarize, child_command
from vicuna_ops.train.progress import Reporter, parse_event


def test_child_command_is_the_node_command_and_parses_back():
    command = child_command(Path("/r/recipe.yaml"), "/tmp/b", "demo", Path("/w"), data=None,
                            max_steps=12, max_cost=None)
    assert command[:3] == [sys.executable, "-m", "vicuna_ops.train"]
    args = parse_args(command[3:], env={})
    assert (args.recipe, args.run_id, args.bucket, args.max_steps, args.progress) == (
        "/r/recipe.yaml", "demo", "/tmp/b", 12, True)
    assert args.max_cost is None and args.data is None


def test_events_round_trip_and_other_lines_are_ignored():
    out = io.StringIO()
    Reporter(enabled=True, json_events=True, out=out, err=io.StringIO()).event(
        {"event": "step", "step": 3})
    event = parse_event(out.getvalue())
    assert event["event"] == "step" and event["step"] == 3 and "ts" in event
    assert parse_event("{'loss': 1.0}") is None and parse_event("@vops {broken") is None


def test_a_closed_reader_does_not_stop_the_training():
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    reporter = Reporter(enabled=True, json_events=True, out=Closed(), err=Closed())
    reporter.event({"event": "step"})
    reporter.log("still fine")
    assert reporter.json_events is False


def test_summary_maps_exit_codes_to_ledger_statuses(tmp_path):
    store = open_store(str(tmp_path)).child("r")
    steps = [{"event": "step", "step": s, "ts": 100.0 + s, "tokens": 1000 * s, "loss": 2.0}
             for s in (1, 2, 3)]
    preempted = _summarize([*steps, {"event": "end", "status": "preempted", "steps": 3}], "r",
                           store, EXIT_PREEMPTED, 5.0, tmp_path / "log")
    assert preempted["status"] == "preempted" and preempted["final"] is None
    assert preempted["tokens_per_s"] == 1000.0 and preempted["steps"] == 3
    budget = _summarize([{"event": "end", "status": "budget-stopped", "steps": 7}], "r", store,
                        0, 1.0, tmp_path / "log")
    assert budget["status"] == "budget-stopped"
    killed = _summarize(steps, "r", store, -9, 1.0, tmp_path / "log")
    assert killed["status"] == "failed" and killed["steps"] == 3
    done = _summarize([{"event": "end", "status": "finished", "steps": 3}], "r", store, 0, 1.0,
                      tmp_path / "log")
    assert done["status"] == "succeeded" and done["final"] == f"file://{tmp_path}/r/final/"
