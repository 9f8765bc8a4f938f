"""Die with the parent: ``Popen(argv, **Lifeline().popen_kwargs(env))``, child runs ``hold()``.

Two layers, because either alone leaves orphans somewhere:

* Linux: the child asks for a signal when its parent dies (``prctl(PR_SET_PDEATHSIG)``, set
  between fork and exec), and exits at once if the parent died before that call.
* Everywhere: a pipe whose write end only the parent holds. The child's ``hold()`` thread
  blocks on the read end; end-of-file means the parent is gone (however it died, ``kill -9``
  included), and the child kills its own process group -- itself and any grandchildren
  (model-loading helpers, vLLM engine processes) -- with SIGKILL.

``popen_kwargs`` starts the child in its own session, so that process group is the child's
alone (a terminal Ctrl-C then reaches only the parent, which stops children in order).
A grandchild that starts its own session escapes the group: its parent should start it
with a ``Lifeline`` of its own.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

ENV = "VOPS_LIFELINE_FD"
_PR_SET_PDEATHSIG = 1


class Lifeline:
    """The parent's end: one pipe for all the children it starts."""

    def __init__(self, death_signal: int = signal.SIGTERM) -> None:
        # os.pipe() fds are non-inheritable; only the read end is passed on (pass_fds), so
        # the write end closes exactly when this process dies.
        self.read_fd, self.write_fd = os.pipe()
        self.death_signal = death_signal

    def popen_kwargs(self, env: dict[str, str] | None = None) -> dict:
        """Keyword arguments for ``subprocess.Popen`` (merge your own ``pass_fds``)."""
        return {"env": {**(os.environ if env is None else env), ENV: str(self.read_fd)},
                "pass_fds": (self.read_fd,), "start_new_session": True,
                "preexec_fn": die_with_parent(self.death_signal)}

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn``: on Linux, receive ``sig`` when the parent dies (no-op elsewhere)."""
    parent = os.getpid()

    def preexec() -> None:
        _set_death_signal(sig)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def hold(on_parent_death: Callable[[], None] | None = None) -> bool:
    """In the child: watch the lifeline (if the parent passed one) from a daemon thread.

    When the parent dies, ``on_parent_death`` runs (default: SIGKILL this process group if
    this process leads it, else this process). Returns whether a lifeline was found."""
    raw = os.environ.pop(ENV, None)
    if raw is None:
        return False
    try:
        fd = int(raw)
        os.fstat(fd)
    except (ValueError, OSError):
        return False
    os.set_inheritable(fd, False)  # our own children get their own lifeline from us
    # The pipe takes over from the parent-death signal: that signal would end this process
    # alone, before the watcher below could take its children (same group) with it.
    _set_death_signal(0)

    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 1):  # EOF: every write end is closed
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        (on_parent_death or _kill_own_group)()

    threading.Thread(target=watch, name="vops-lifeline", daemon=True).start()
    return True


def _set_death_signal(sig: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig))
        except (OSError, AttributeError):
            pass


def _kill_own_group() -> None:
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (a zombie does not count)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is gone too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[:1] != ["Z"]
    except OSError:
        return True
