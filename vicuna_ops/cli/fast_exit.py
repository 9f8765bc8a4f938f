"""Leave the process without Python's slow teardown once SkyPilot has been imported.

Tearing down the ~1,500 modules that ``import sky`` loads (and the objects they hold) takes
0.7-1.0 s here: a third of a ``vops train --dry-run``. After a command has finished there
is nothing left to do but exit, so the console script runs the atexit handlers, flushes the
standard streams and calls ``os._exit``. It falls back to a normal exit while any
non-daemon thread is still alive (normal shutdown would wait for it) and in processes that
never imported SkyPilot, where teardown is cheap.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading

# Modules whose teardown is the slow part; a process without them exits normally.
HEAVY_MODULES = ("sky",)


def exit_code(code: object) -> int:
    """``SystemExit.code`` as the process's exit status (a message means 1, as Python does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_now(code: int) -> None:
    """Exit with ``code``, skipping module teardown when that is safe and worth it."""
    if not any(name in sys.modules for name in HEAVY_MODULES) or _other_live_threads():
        sys.exit(code)
    _run_atexit_handlers()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be written anyway
            pass
    os._exit(code)


def _other_live_threads() -> bool:
    main = threading.main_thread()
    return any(t is not main and t.is_alive() and not t.daemon for t in threading.enumerate())


def _run_atexit_handlers() -> None:
    # CPython's own hook: the handlers registered by SkyPilot and its dependencies run as
    # they would at a normal exit.
    run = getattr(atexit, "_run_exitfuncs", None)
    if run is not None:
        run()
