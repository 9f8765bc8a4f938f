"""Data-prep worker processes: plain child processes fed through pipes, which die with us.

Each worker is ``python -m vicuna_ops.data.workers`` started with a ``Lifeline``: if the
parent dies (``kill -9`` included) its pipe reaches end-of-file and the worker kills itself.
There is no forkserver and no resource tracker to outlive anything, and nothing inherits
the parent's threads (the progress bar) as a fork would.

Protocol, length-prefixed pickles: parent -> worker ``(CleanOptions, TokenizerSpec)`` then
chunks of records; worker -> parent ``("ready" | "error", detail)`` then one
``("ok", outcomes)`` per chunk, in order. Chunks go round-robin, at most two per worker in
flight, so results come back in input order.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
from collections import deque
from typing import IO, Any, Iterable, Iterator

from vicuna_ops import errors
from vicuna_ops.errors import VopsError

_HEADER = struct.Struct("<Q")
IN_FLIGHT_PER_WORKER = 2


def send(stream: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def receive(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


class WorkerDied(VopsError):
    pass


_DIED = ("a data-prep worker process died (out of memory?)",
         "retry with fewer --workers, or check the machine's memory")


class WorkerPool:
    """``count`` workers; ``map`` returns each chunk's outcomes, in order."""

    def __init__(self, count: int, init: tuple[Any, Any]) -> None:
        from vicuna_ops.lifeline import Lifeline

        self.lifeline = Lifeline()
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}  # one core per worker
        self.procs: list[subprocess.Popen] = []
        self._ready: set[int] = set()
        try:
            for _ in range(count):
                proc = subprocess.Popen([sys.executable, "-m", "vicuna_ops.data.workers"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        bufsize=1 << 16, **self.lifeline.popen_kwargs(env))
                self.procs.append(proc)
                send(proc.stdin, init)  # type: ignore[arg-type]
        except BaseException:
            self.close(kill=True)
            raise

    def map(self, chunks: Iterable[list]) -> Iterator[list]:
        pending: deque[subprocess.Popen] = deque()
        for index, chunk in enumerate(chunks):
            proc = self.procs[index % len(self.procs)]
            try:
                send(proc.stdin, chunk)  # type: ignore[arg-type]
            except (BrokenPipeError, OSError):
                raise WorkerDied(*_DIED) from None
            pending.append(proc)
            if len(pending) >= IN_FLIGHT_PER_WORKER * len(self.procs):
                yield self._result(pending.popleft())
        while pending:
            yield self._result(pending.popleft())

    def _result(self, proc: subprocess.Popen) -> list:
        try:
            if proc.pid not in self._ready:
                kind, detail = receive(proc.stdout)  # type: ignore[arg-type]
                if kind == "error":
                    name, message, hint = detail
                    raise getattr(errors, name, VopsError)(message, hint=hint)
                self._ready.add(proc.pid)
            kind, outcomes = receive(proc.stdout)  # type: ignore[arg-type]
        except (EOFError, OSError, pickle.UnpicklingError):
            raise WorkerDied(*_DIED) from None
        return outcomes

    def close(self, kill: bool = False) -> None:
        """Stop the workers: at once with ``kill`` (Ctrl-C, an error), else when they have
        read end-of-file."""
        for proc in self.procs:
            if kill:
                proc.kill()
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()  # type: ignore[union-attr]
                except OSError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.lifeline.close()


def _main() -> None:
    """A worker: set up, then process chunks until the parent closes our stdin."""
    from vicuna_ops import lifeline

    lifeline.hold()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print from a library must not corrupt the protocol
    inp = sys.stdin.buffer
    clean, spec = receive(inp)
    try:
        from vicuna_ops.data.process import Processor

        processor = Processor(clean, spec.load())
    except VopsError as exc:
        send(out, ("error", (type(exc).__name__, exc.message, exc.hint)))
        return
    except Exception as exc:  # noqa: BLE001 - reported in the parent, with its type
        send(out, ("error", ("VopsError", f"worker could not start: {type(exc).__name__}: "
                                          f"{exc}", None)))
        return
    send(out, ("ready", None))
    # Read ahead on a thread, so the parent's writes never wait for our result writes.
    chunks: queue.SimpleQueue = queue.SimpleQueue()

    def read_ahead() -> None:
        try:
            while True:
                chunks.put(receive(inp))
        except (EOFError, OSError):
            chunks.put(None)

    threading.Thread(target=read_ahead, daemon=True).start()
    while (chunk := chunks.get()) is not None:
        send(out, ("ok", [processor.process(record) for record in chunk]))


if __name__ == "__main__":
    _main()
