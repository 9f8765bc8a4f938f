"""Send one API request to a worker and relay the answer, surviving the worker's death.

One hop: the controller speaks the OpenAI API to the client and the same API to the worker
(FastChat goes client -> API server -> controller -> worker and back, four or five hops).

What happens when a worker fails:

* nothing reached the client yet (connection refused, the worker died before answering or
  before its first streamed event, a 5xx or a 503 "draining"): the request goes to another
  worker, up to ``max_attempts`` workers; a worker whose port refused is skipped until its
  next heartbeat;
* a stream already reached the client: the controller knows the text it relayed, so it asks
  another worker to continue the same completion after that text (``vops_resume``) and
  splices the continuation into the same stream; the client sees one uninterrupted answer;
* a non-streamed request never has a byte at the client before the worker finished, so it
  is always retried whole;
* a 4xx from the worker (prompt longer than the model's context: 413) is the client's
  answer, passed through unchanged;
* a worker that hangs (its port open, nothing coming back) stops heartbeating; when the
  registry drops it, ``abort_worker`` breaks off every request waiting on it, and they are
  retried or resumed like the rest instead of waiting for a read timeout.

The upstream client is aiohttp's: httpx's connection pool scans every pooled connection on
each request, which made it the controller's bottleneck (about a third of the requests per
second of calling the workers directly, on 2 cores).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from vicuna_ops.serve import router
from vicuna_ops.serve.protocol import (
    DONE_EVENT, SSE_MEDIA_TYPE, ApiError, chunk_text)
from vicuna_ops.serve.registry import Registry, Worker

RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


@dataclass(frozen=True)
class ProxySettings:
    max_attempts: int = 3  # workers tried for one request (or one resume) before giving up
    max_resumes: int = 3  # mid-stream continuations per request
    wait_for_worker: float = 5.0  # seconds to wait for a live worker before a 503
    down_for: float = 10.0  # seconds a worker that refused a connection is skipped
    connect_timeout: float = 2.0
    read_timeout: float = 300.0  # between two bytes from a worker (a prefill can be slow)


@dataclass
class Call:
    """One client request on its way through the proxy."""

    path: str
    model: str
    parsed: Any  # the validated request (pydantic)
    raw: bytes  # the client's body, forwarded as-is (it validated)
    request_id: str
    stream: bool
    started: float

    def body(self) -> dict[str, Any]:
        """The request as a dict, to add ``vops_resume`` to (only a resume needs it)."""
        return self.parsed.model_dump(mode="json", exclude_unset=True)


class _WorkerFailed(Exception):
    def __init__(self, reason: str, *, down: bool) -> None:
        super().__init__(reason)
        self.reason, self.down = reason, down


class _Attempt:
    """One request in progress on one worker, so that it can be broken off from outside.

    While the request's own task waits on the worker (sending, waiting for headers or the
    first event) breaking off means cancelling that task, which the waiting code catches;
    while a stream is relayed, the task may be busy writing to the client, so the worker's
    response is closed instead and the next read fails.
    """

    __slots__ = ("task", "response", "aborted", "relaying")

    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.response: Any = None
        self.aborted = False
        self.relaying = False

    def abort(self) -> None:
        self.aborted = True
        if self.relaying:
            if self.response is not None:
                self.response.close()
        elif self.task is not None:
            self.task.cancel()

    def was_aborted(self) -> bool:
        """After a CancelledError: True if only ``abort`` cancelled (the client did not)."""
        if not self.aborted:
            return False
        uncancel = getattr(asyncio.current_task(), "uncancel", None)
        return uncancel is None or uncancel() == 0


class Proxy:
    def __init__(self, registry: Registry, client: Any, worker_token: str, metrics: Any,
                 settings: ProxySettings = ProxySettings()) -> None:
        self.registry = registry
        self.client = client  # aiohttp.ClientSession (new_upstream_client)
        self.token = worker_token
        self.metrics = metrics
        self.settings = settings
        self._attempts: dict[str, set[_Attempt]] = {}

    def _track(self, worker: Worker) -> _Attempt:
        attempt = _Attempt()
        self._attempts.setdefault(worker.worker_id, set()).add(attempt)
        return attempt

    def _untrack(self, worker: Worker, attempt: _Attempt) -> None:
        attempts = self._attempts.get(worker.worker_id)
        if attempts is not None:
            attempts.discard(attempt)
            if not attempts:
                del self._attempts[worker.worker_id]

    def abort_worker(self, worker_id: str) -> int:
        """Break off every request waiting on a dropped worker; how many there were."""
        attempts = self._attempts.pop(worker_id, set())
        for attempt in attempts:
            attempt.abort()
        return len(attempts)

    # --- choosing a worker -----------------------------------------------------------------

    async def _lease(self, model: str, tried: set[str]) -> router.Lease | None:
        """A claim on the best worker not yet tried; waits a while if none is live."""
        deadline = time.monotonic() + self.settings.wait_for_worker
        while True:
            worker = router.choose(self.registry.workers(), model, now=self.registry.now(),
                                   exclude=tried)
            if worker is not None:
                tried.add(worker.worker_id)
                return router.Lease(worker)
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.025)

    def _failed(self, worker: Worker, failure: _WorkerFailed) -> None:
        self.metrics.retries.labels(failure.reason).inc()
        if failure.down:
            self.registry.mark_down(worker.worker_id, self.settings.down_for)

    def _headers(self, call: Call) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}", "content-type": "application/json",
                "x-request-id": call.request_id}

    def _check_status(self, worker: Worker, status: int, headers: Any) -> None:
        if status in RETRYABLE_STATUS:
            if headers.get("x-vops-draining"):
                self.registry.drain(worker.worker_id)
            raise _WorkerFailed(f"status_{status}", down=False)

    # --- non-streamed ----------------------------------------------------------------------

    async def complete(self, call: Call) -> tuple[int, bytes]:
        """The worker's status and JSON body for a non-streamed request."""
        tried: set[str] = set()
        for _ in range(self.settings.max_attempts):
            lease = await self._lease(call.model, tried)
            if lease is None:
                break
            attempt = self._track(lease.worker)
            try:
                async with self.client.post(lease.worker.url + call.path, data=call.raw,
                                            headers=self._headers(call)) as response:
                    content = await response.read()
                self._check_status(lease.worker, response.status, response.headers)
                self.metrics.first_byte.labels(call.path).observe(time.monotonic() - call.started)
                return response.status, content
            except TRANSPORT_ERRORS as exc:
                self._failed(lease.worker, _WorkerFailed(_reason(exc), down=True))
            except _WorkerFailed as failure:
                self._failed(lease.worker, failure)
            except asyncio.CancelledError:
                if not attempt.was_aborted():
                    raise
                self._failed(lease.worker, _WorkerFailed("dropped", down=True))
            finally:
                self._untrack(lease.worker, attempt)
                lease.release()
        raise _no_worker(call.model)

    # --- streamed --------------------------------------------------------------------------

    async def open_stream(self, call: Call) -> AsyncIterator[bytes]:
        """The SSE events of a streamed request, opened on a worker that already sent its
        first event; later failures continue on another worker. Raises ApiError (or returns
        a worker's 4xx as ``_Passthrough``) while nothing has been sent yet."""
        attempt = await self._open(call, resume_text=None)
        events = self._relay(call, attempt)
        attempt.lease.bind(events)  # released even if the server never starts the body
        return events

    async def _open(self, call: Call, resume_text: str | None) -> "_Stream":
        tried: set[str] = set()
        body = call.raw if resume_text is None else json.dumps(
            {**call.body(), "vops_resume": {"text": resume_text}}).encode()
        for _ in range(self.settings.max_attempts):
            lease = await self._lease(call.model, tried)
            if lease is None:
                break
            stream = _Stream(lease, self._track(lease.worker), self._untrack)
            try:
                stream.response = await self.client.post(
                    lease.worker.url + call.path, data=body, headers=self._headers(call))
                stream.attempt.response = stream.response
                status = stream.response.status
                if status != 200:
                    content = await stream.response.read()
                    self._check_status(lease.worker, status, stream.response.headers)
                    await stream.close()
                    raise Passthrough(status, content)
                stream.first = await stream.next_event()
                if stream.first is None:
                    raise _WorkerFailed("empty_stream", down=True)
                if resume_text is None:
                    self.metrics.first_byte.labels(call.path).observe(
                        time.monotonic() - call.started)
                stream.attempt.relaying = True  # from now on: close, never cancel
                return stream
            except TRANSPORT_ERRORS as exc:
                await stream.close()
                self._failed(lease.worker, _WorkerFailed(_reason(exc), down=True))
            except _WorkerFailed as failure:
                await stream.close()
                self._failed(lease.worker, failure)
            except asyncio.CancelledError:
                await stream.close()
                if not stream.attempt.was_aborted():
                    raise
                self._failed(lease.worker, _WorkerFailed("dropped", down=True))
            except BaseException:
                await stream.close()
                raise
        raise _no_worker(call.model)

    async def _relay(self, call: Call, stream: "_Stream") -> AsyncIterator[bytes]:
        relayed: list[str] = []  # the text the client has received
        finished = False  # a finish_reason reached the client: the answer is complete
        resumes = 0
        try:
            while True:
                try:
                    event = stream.first
                    stream.first = None
                    while event is not None:
                        if event == DONE_EVENT:
                            yield event
                            return
                        text, finish = _event_text(event)
                        relayed.append(text)
                        finished = finished or finish
                        yield event
                        event = await stream.next_event()
                    raise _WorkerFailed("stream_cut", down=True)  # ended without [DONE]
                except TRANSPORT_ERRORS as exc:
                    failure = _WorkerFailed(_reason(exc), down=True)
                except _WorkerFailed as exc:
                    failure = exc
                self._failed(stream.lease.worker, failure)
                await stream.close()
                if finished:  # only [DONE] (and maybe the usage chunk) was lost
                    yield DONE_EVENT
                    return
                if resumes >= self.settings.max_resumes:
                    yield _error_event(ApiError(502, "the worker failed mid-stream too often",
                                                type="server_error", code="worker_failed"))
                    return
                resumes += 1
                self.metrics.resumes.inc()
                try:
                    stream = await self._open(call, resume_text="".join(relayed))
                except (ApiError, Passthrough) as exc:
                    error = exc if isinstance(exc, ApiError) else exc.as_api_error()
                    self.metrics.errors.labels("stream_lost").inc()
                    yield _error_event(error)
                    return
        finally:
            await stream.close()


class Passthrough(Exception):
    """A worker's own non-retryable answer (a 4xx), returned to the client as it is."""

    def __init__(self, status: int, content: bytes) -> None:
        super().__init__(status)
        self.status, self.content = status, content

    def as_api_error(self) -> ApiError:
        try:
            error = json.loads(self.content)["error"]
            return ApiError(self.status, error["message"], type=error.get("type") or
                            "invalid_request_error", param=error.get("param"),
                            code=error.get("code"))
        except (ValueError, KeyError, TypeError):
            return ApiError(self.status, self.content.decode(errors="replace")[:500])


class _Stream:
    """An open SSE response from one worker, split into events, holding its lease."""

    def __init__(self, lease: router.Lease, attempt: _Attempt, on_close: Any) -> None:
        self.lease = lease
        self.attempt = attempt
        self.on_close = on_close  # (worker, attempt) -> None: stop tracking the attempt
        self.response: Any = None  # aiohttp.ClientResponse
        self.first: bytes | None = None
        self._buffer = b""
        self._ended = False

    async def next_event(self) -> bytes | None:
        """The next complete ``data: ...\\n\\n`` event, or None at the end of the body."""
        while True:
            end = self._buffer.find(b"\n\n")
            if end >= 0:
                event, self._buffer = self._buffer[:end + 2], self._buffer[end + 2:]
                return event
            chunk = await self.response.content.readany()
            if not chunk:
                self._ended = True
                return None
            self._buffer += chunk

    async def close(self) -> None:
        self.on_close(self.lease.worker, self.attempt)
        self.lease.release()
        if self.response is not None:
            response, self.response = self.response, None
            if self._ended:
                response.release()  # read to the end: the connection can be reused
            else:
                response.close()  # abandoned mid-body: drop it, so the worker stops


def _event_text(event: bytes) -> tuple[str, bool]:
    """The text a relayed event adds, and whether it carries a finish reason."""
    if not event.startswith(b"data: {"):
        return "", False
    try:
        data = json.loads(event[6:])
        choices = data.get("choices") or [{}]
        return chunk_text(data), bool(choices[0].get("finish_reason"))
    except (ValueError, AttributeError, TypeError, KeyError, IndexError):
        return "", False


def _error_event(error: ApiError) -> bytes:
    return b"data: " + json.dumps(error.body()).encode() + b"\n\n"


RETRY_AFTER_SECONDS = 5  # about what a restarted worker takes to register again


def _no_worker(model: str) -> ApiError:
    return ApiError(503, f"no live worker could serve model {model!r}; try again shortly",
                    type="server_error", code="no_worker",
                    headers={"retry-after": str(RETRY_AFTER_SECONDS)})


def _reason(exc: BaseException) -> str:
    aiohttp = _aiohttp()
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return "broken"
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    return "transport"


def _aiohttp() -> Any:
    from vicuna_ops import adaptors

    return adaptors.require("aiohttp")


def new_upstream_client(settings: ProxySettings) -> Any:
    """The controller's client to the workers: pooled, no overall timeout (streams are long),
    a connect timeout and a limit on silence between two bytes."""
    aiohttp = _aiohttp()
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0, ttl_dns_cache=300)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout,
                                    sock_read=settings.read_timeout)
    return aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                 skip_auto_headers=("User-Agent",))


def _transport_errors() -> tuple[type[BaseException], ...]:
    try:
        aiohttp = _aiohttp()
    except Exception:  # without aiohttp the controller cannot start anyway
        return (OSError, asyncio.TimeoutError)
    return (aiohttp.ClientError, asyncio.TimeoutError)


TRANSPORT_ERRORS = _transport_errors()


__all__ = ["Call", "Passthrough", "Proxy", "ProxySettings", "SSE_MEDIA_TYPE",
           "new_upstream_client"]
