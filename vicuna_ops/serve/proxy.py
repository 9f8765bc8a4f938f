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
  answer, passed through unchanged.
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
    body: dict[str, Any]  # the validated request, as sent to workers
    raw: bytes  # the client's body, forwarded as-is on the first attempt
    request_id: str
    stream: bool
    started: float


class _WorkerFailed(Exception):
    def __init__(self, reason: str, *, down: bool) -> None:
        super().__init__(reason)
        self.reason, self.down = reason, down


class Proxy:
    def __init__(self, registry: Registry, client: Any, worker_token: str, metrics: Any,
                 settings: ProxySettings = ProxySettings()) -> None:
        self.registry = registry
        self.client = client  # httpx.AsyncClient
        self.token = worker_token
        self.metrics = metrics
        self.settings = settings

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
        httpx = _httpx()
        tried: set[str] = set()
        for _ in range(self.settings.max_attempts):
            lease = await self._lease(call.model, tried)
            if lease is None:
                break
            try:
                response = await self.client.post(
                    lease.worker.url + call.path, content=call.raw, headers=self._headers(call))
                self._check_status(lease.worker, response.status_code, response.headers)
                self.metrics.first_byte.labels(call.path).observe(time.monotonic() - call.started)
                return response.status_code, response.content
            except httpx.TransportError as exc:
                self._failed(lease.worker, _WorkerFailed(_reason(exc), down=True))
            except _WorkerFailed as failure:
                self._failed(lease.worker, failure)
            finally:
                lease.release()
        raise _no_worker(call.model)

    # --- streamed --------------------------------------------------------------------------

    async def open_stream(self, call: Call) -> AsyncIterator[bytes]:
        """The SSE events of a streamed request, opened on a worker that already sent its
        first event; later failures continue on another worker. Raises ApiError (or returns
        a worker's 4xx as ``_Passthrough``) while nothing has been sent yet."""
        attempt = await self._open(call, resume_text=None)
        events = self._relay(call, attempt)
        return events

    async def _open(self, call: Call, resume_text: str | None) -> "_Stream":
        httpx = _httpx()
        tried: set[str] = set()
        body = call.raw if resume_text is None else json.dumps(
            {**call.body, "vops_resume": {"text": resume_text}}).encode()
        for _ in range(self.settings.max_attempts):
            lease = await self._lease(call.model, tried)
            if lease is None:
                break
            stream = _Stream(lease)
            try:
                request = self.client.build_request(
                    "POST", lease.worker.url + call.path, content=body,
                    headers=self._headers(call))
                stream.response = await self.client.send(request, stream=True)
                status = stream.response.status_code
                if status != 200:
                    content = await stream.response.aread()
                    self._check_status(lease.worker, status, stream.response.headers)
                    await stream.close()
                    raise Passthrough(status, content)
                stream.first = await stream.next_event()
                if stream.first is None:
                    raise _WorkerFailed("empty_stream", down=True)
                if resume_text is None:
                    self.metrics.first_byte.labels(call.path).observe(
                        time.monotonic() - call.started)
                return stream
            except httpx.TransportError as exc:
                await stream.close()
                self._failed(lease.worker, _WorkerFailed(_reason(exc), down=True))
            except _WorkerFailed as failure:
                await stream.close()
                self._failed(lease.worker, failure)
            except BaseException:
                await stream.close()
                raise
        raise _no_worker(call.model)

    async def _relay(self, call: Call, stream: "_Stream") -> AsyncIterator[bytes]:
        httpx = _httpx()
        relayed: list[str] = []  # the text the client has received
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
                        relayed.append(_event_text(event))
                        yield event
                        event = await stream.next_event()
                    raise _WorkerFailed("stream_cut", down=True)  # ended without [DONE]
                except httpx.TransportError as exc:
                    failure = _WorkerFailed(_reason(exc), down=True)
                except _WorkerFailed as exc:
                    failure = exc
                self._failed(stream.lease.worker, failure)
                await stream.close()
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

    def __init__(self, lease: router.Lease) -> None:
        self.lease = lease
        self.response: Any = None
        self.first: bytes | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._buffer = b""

    async def next_event(self) -> bytes | None:
        """The next complete ``data: ...\\n\\n`` event, or None at the end of the body."""
        if self._chunks is None:
            self._chunks = self.response.aiter_raw()
        while True:
            end = self._buffer.find(b"\n\n")
            if end >= 0:
                event, self._buffer = self._buffer[:end + 2], self._buffer[end + 2:]
                return event
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                return None
            self._buffer += chunk

    async def close(self) -> None:
        self.lease.release()
        if self.response is not None:
            response, self.response = self.response, None
            await response.aclose()


def _event_text(event: bytes) -> str:
    if not event.startswith(b"data: {"):
        return ""
    try:
        return chunk_text(json.loads(event[6:]))
    except (ValueError, AttributeError, TypeError, KeyError, IndexError):
        return ""


def _error_event(error: ApiError) -> bytes:
    return b"data: " + json.dumps(error.body()).encode() + b"\n\n"


def _no_worker(model: str) -> ApiError:
    return ApiError(503, f"no live worker could serve model {model!r}; try again shortly",
                    type="server_error", code="no_worker")


def _reason(exc: Exception) -> str:
    name = type(exc).__name__
    return {"ConnectError": "connect", "ConnectTimeout": "connect", "ReadTimeout": "timeout",
            "RemoteProtocolError": "broken", "ReadError": "broken"}.get(name, "transport")


def _httpx():
    from vicuna_ops import adaptors

    return adaptors.require("httpx")


__all__ = ["Call", "Passthrough", "Proxy", "ProxySettings", "SSE_MEDIA_TYPE"]
