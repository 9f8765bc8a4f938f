"""The worker's side of the registry protocol: find the controller, register, heartbeat,
drain, leave.

* Registration retries with backoff for as long as it takes, so a worker may start before
  its controller (or outlive a controller restart).
* A heartbeat answered ``unknown`` (the controller lost its registry, or dropped this worker
  while the network was cut) registers again at once.
* The controller's address is either fixed (``--controller-url``) or read from the bucket
  (``<bucket>/<name>/serve/controller.json``); after a few failed heartbeats the worker reads
  it again, so a controller relaunched at a new address is found.
* A registration refused for its token (401) raises ``Refused``: the worker stops.
* The heartbeat interval is the controller's: its reply sets it, so the controller's rule
  "dropped after 3 missed intervals" always matches what the workers do.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable
from urllib.parse import urlsplit

from vicuna_ops.serve.protocol import DrainRequest, Heartbeat, HeartbeatReply, WorkerInfo

log = logging.getLogger("vops.serve.worker")

REDISCOVER_AFTER = 3  # failed heartbeats before the bucket is asked for a new address


class Refused(Exception):
    """The controller refused the worker token (401): retrying cannot help."""


class Membership:
    def __init__(self, info: Callable[[], WorkerInfo], token: str, *,
                 resolve: Callable[[], Any], interval: float = 2.0,
                 client: Any = None) -> None:
        """``info`` gives the current registration; ``resolve`` gives the controller URL
        (sync or async; may raise or return None while it is not known yet)."""
        self.info = info
        self.token = token
        self.resolve = resolve
        self.interval = interval
        self.controller: str | None = None
        self.registered = asyncio.Event()
        self.client = client or JsonClient(timeout=5.0, connect_timeout=2.0)
        self.registrations = 0

    @property
    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    async def _controller_url(self) -> str | None:
        try:
            url = self.resolve()
            if asyncio.iscoroutine(url):
                url = await url
        except Exception as exc:  # the bucket may be unreachable for a while
            log.warning("cannot find the controller yet: %s", exc)
            return None
        return url.rstrip("/") if url else None

    async def _post(self, path: str, message: Any) -> Any:
        status, body = await self.client.post(self.controller + path,
                                              message.model_dump_json().encode(),
                                              self._headers)
        if status == 401:
            raise PermissionError("the controller refused the worker token")
        if status >= 400:
            raise ConnectionError(f"the controller answered {status}")
        return json.loads(body)

    async def register(self) -> None:
        """Register, retrying with backoff until the controller accepts."""
        delay = 0.1
        while True:
            self.controller = await self._controller_url() or self.controller
            if self.controller:
                try:
                    reply = HeartbeatReply.model_validate(
                        await self._post("/vops/workers/register", self.info()))
                    self.interval = reply.heartbeat_interval
                    self.registrations += 1
                    self.registered.set()
                    log.info("registered with %s", self.controller)
                    return
                except PermissionError:
                    raise Refused(f"the controller at {self.controller} refused the worker "
                                  "token") from None
                except Exception as exc:
                    log.info("registration with %s failed (%s); retrying", self.controller,
                             type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max(self.interval, 0.5))

    async def run(self) -> None:
        """Register, then heartbeat forever (cancel the task to stop)."""
        await self.register()
        failures = 0
        while True:
            await asyncio.sleep(self.interval)
            info = self.info()
            try:
                reply = HeartbeatReply.model_validate(await self._post(
                    "/vops/workers/heartbeat",
                    Heartbeat(worker_id=info.worker_id, in_flight=info.in_flight)))
                failures = 0
                self.interval = reply.heartbeat_interval
                if reply.status == "unknown":
                    log.warning("the controller does not know this worker; registering again")
                    await self.register()
            except Exception as exc:
                failures += 1
                log.info("heartbeat to %s failed (%s)", self.controller, type(exc).__name__)
                if failures >= REDISCOVER_AFTER:
                    url = await self._controller_url()
                    if url and url != self.controller:
                        log.warning("the controller moved to %s", url)
                        self.controller = url
                        failures = 0
                        await self.register()

    async def drain(self) -> bool:
        """Tell the controller to send no more requests here (best effort, quick)."""
        if not self.controller:
            return False
        try:
            await asyncio.wait_for(self._post(
                "/vops/workers/drain", DrainRequest(worker_id=self.info().worker_id)), 3.0)
            return True
        except Exception as exc:
            log.warning("could not tell the controller about the drain: %s", exc)
            return False

    async def leave(self) -> bool:
        """Tell the controller this worker is gone (after its drain), best effort."""
        if not self.controller or not self.registered.is_set():
            return False
        try:
            await asyncio.wait_for(self._post(
                "/vops/workers/leave", DrainRequest(worker_id=self.info().worker_id)), 3.0)
            return True
        except Exception as exc:  # it expires from the registry after missed heartbeats
            log.warning("could not deregister from the controller: %s", exc)
            return False

    async def close(self) -> None:
        await self.client.aclose()


class JsonClient:
    """Just enough HTTP/1.1 to POST JSON to the controller, one connection per message
    (one every few seconds). httpx would cost a worker ~0.1-0.2 s of imports at start."""

    def __init__(self, *, timeout: float = 5.0, connect_timeout: float = 2.0) -> None:
        self.timeout, self.connect_timeout = timeout, connect_timeout

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """``(status, body)``; raises OSError / TimeoutError / ValueError on failure."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        context = None
        if parts.scheme == "https":
            import ssl

            context = ssl.create_default_context()
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, port, ssl=context), self.connect_timeout)
        try:
            host = parts.netloc.rsplit("@", 1)[-1]
            lines = [f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} "
                     f"HTTP/1.1", f"host: {host}", "connection: close",
                     "content-type: application/json", f"content-length: {len(body)}",
                     *(f"{k}: {v}" for k, v in headers.items())]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            return await asyncio.wait_for(_read_response(reader), self.timeout)
        finally:
            writer.close()

    async def aclose(self) -> None:
        pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in
              (line.partition(":") for line in head[1:] if line)}
    if "content-length" in fields:
        return status, await reader.readexactly(int(fields["content-length"]))
    if fields.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return status, b"".join(chunks)
    return status, await reader.read()
