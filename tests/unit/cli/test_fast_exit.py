"""The console script's fast exit: same exit code, output and atexit work as a normal exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from vicuna_ops.cli.fast_exit import exit_code

# A child process that pretends SkyPilot is loaded, leaves unflushed output and an atexit
# handler behind, then exits through fast_exit.
CHILD = textwrap.dedent("""
    import atexit, sys, threading, time, types
    from pathlib import Path
    from vicuna_ops.cli import fast_exit

    marker, heavy, thread = Path(sys.argv[1]), sys.argv[2] == "heavy", sys.argv[3] == "thread"
    if heavy:
        sys.modules["sky"] = types.ModuleType("sky")
    atexit.register(lambda: marker.with_suffix(".atexit").write_text("ran"))
    if thread:  # a non-daemon thread still working: the exit must wait for it
        threading.Thread(target=lambda: (time.sleep(0.3),
                                         marker.with_suffix(".thread").write_text("done"))).start()
    sys.stdout.write("partial line without newline")
    sys.stderr.write("to stderr")
    fast_exit.exit_now(3)
""")


@pytest.mark.parametrize("heavy", ["heavy", "light"])
@pytest.mark.parametrize("thread", ["thread", "nothread"])
def test_exit_keeps_code_output_atexit_and_threads(tmp_path, heavy, thread):
    marker = tmp_path / "m"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(marker), heavy, thread],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == "partial line without newline"
    assert proc.stderr == "to stderr"
    assert marker.with_suffix(".atexit").read_text() == "ran"
    if thread == "thread":
        assert marker.with_suffix(".thread").read_text() == "done"


def test_exit_code_follows_python_rules(capsys):
    assert exit_code(None) == 0
    assert exit_code(2) == 2
    assert exit_code("a message") == 1
    assert capsys.readouterr().err == "a message\n"
