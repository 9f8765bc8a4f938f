"""Running a FastAPI app under uvicorn with a say in what SIGTERM means.

Plain uvicorn stops listening on the first SIGTERM and then re-raises the signal when it
is done, so the process always dies "killed by SIGTERM". A worker must instead *drain*
first: tell the controller, keep answering its in-flight streams, then exit 0. ``serve``
gives the first SIGTERM/SIGINT to ``on_signal`` (which ends the server itself by setting
``server.should_exit`` when it is ready); a second signal stops at once.

The listening socket is bound by ``listen`` before anything slow (imports, model loading):
a port that cannot be bound is a ``UserError`` at once (exit 2, one line), not uvicorn's
late ``sys.exit(1)`` that a supervisor would restart forever.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
import threading
from typing import Any, Callable, Iterator

from vicuna_ops import adaptors
from vicuna_ops.errors import UserError

log = logging.getLogger("vops.serve")


def listen(host: str, port: int) -> socket.socket:
    """A bound socket for ``serve`` (the same options as uvicorn's own bind)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                        hint="check --host") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = ("another process listens there; pick another --port or stop it"
                if exc.errno == errno.EADDRINUSE else "pick another --port")
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                        hint=hint) from exc
    sock.set_inheritable(True)  # uvicorn's own bind does the same
    return sock


def serve(app: Any, host: str, port: int, *, on_signal: Callable[[Any], None] | None = None,
          graceful_timeout: float | None = 30.0, keep_alive: int = 30,
          sock: socket.socket | None = None) -> None:
    """Run ``app`` until a signal (or ``server.should_exit``); blocks. ``sock``: from
    ``listen`` (bound here otherwise)."""
    sock = sock or listen(host, port)
    uvicorn = adaptors.require("uvicorn")

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if on_signal is None or self.should_exit or getattr(self, "_signalled", False):
                self.force_exit = self.should_exit
                self.should_exit = True
                return
            self._signalled = True
            on_signal(self)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False,
        timeout_graceful_shutdown=graceful_timeout, timeout_keep_alive=keep_alive,
        loop=_best_loop(), http=_best_http(), ws="none", lifespan="on")
    server = _Server(config)
    app.state.server = server
    server.run(sockets=[sock])


def _best_loop() -> str:
    try:
        import uvloop  # noqa: F401
        return "uvloop"
    except ImportError:
        return "asyncio"


def _best_http() -> str:
    try:
        import httptools  # noqa: F401
        return "httptools"
    except ImportError:
        return "h11"


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
