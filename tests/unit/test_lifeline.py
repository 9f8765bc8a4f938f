"""``vicuna_ops.lifeline``: a child (and its own children) die within seconds of a parent
killed with SIGKILL, through the parent-death signal and, without it, through the pipe."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

pytestmark = pytest.mark.timeout(60)

# The parent: starts one child through a Lifeline, prints the child's report, then sleeps.
PARENT = textwrap.dedent("""
    import subprocess, sys
    from vicuna_ops.lifeline import Lifeline
    line = Lifeline()
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]],
                             stdout=subprocess.PIPE, text=True, **line.popen_kwargs())
    print(child.stdout.readline(), end="", flush=True)
    import time; time.sleep(600)
""")

# The child. "hold": holds the lifeline, ignores SIGTERM (only the pipe can end it, as on a
# system without PR_SET_PDEATHSIG) and starts a grandchild, which must die too.
# "signal-only": never calls hold(); the parent-death signal alone must end it.
CHILD = textwrap.dedent("""
    import json, os, signal, subprocess, sys, time
    from vicuna_ops import lifeline
    pids, held = [os.getpid()], None
    if sys.argv[1] == "hold":
        held = lifeline.hold()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        pids.append(grandchild.pid)
    print(json.dumps({"held": held, "pids": pids, "env": os.environ.get(lifeline.ENV)}),
          flush=True)
    time.sleep(600)
""")


def _alive(pids):
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.parametrize("mode", ["hold", "signal-only"])
def test_children_and_grandchildren_die_with_a_killed_parent(mode):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, mode],
                              stdout=subprocess.PIPE, text=True)
    try:
        report = json.loads(parent.stdout.readline())
        if mode == "hold":
            assert report["held"] is True and report["env"] is None  # not leaked onwards
        pids = report["pids"]
        descendants = {p.pid for p in psutil.Process(parent.pid).children(recursive=True)}
        assert set(pids) <= descendants
        assert _alive(pids) == pids
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=5)
        deadline = time.monotonic() + 5
        while _alive(descendants) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _alive(descendants) == [], f"orphans: {_alive(descendants)}"
    finally:
        for pid in _alive([parent.pid]):
            psutil.Process(pid).kill()


def test_hold_without_a_lifeline_does_nothing(monkeypatch):
    from vicuna_ops import lifeline

    monkeypatch.delenv(lifeline.ENV, raising=False)
    assert lifeline.hold() is False
    monkeypatch.setenv(lifeline.ENV, "not-a-number")
    assert lifeline.hold() is False
