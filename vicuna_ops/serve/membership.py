"""The worker's side of the registry protocol: find the controller, register, heartbeat,
drain.

* Registration retries with backoff for as long as it takes, so a worker may start before
  its controller (or outlive a controller restart).
* A heartbeat answered ``unknown`` (the controller lost its registry, or dropped this worker
  while the network was cut) registers again at once.
* The controller's address is either fixed (``--controller-url``) or read from the bucket
  (``<bucket>/<name>/serve/controller.json``); after a few failed heartbeats the worker reads
  it again, so a controller relaunched at a new address is found.
* The heartbeat interval is the controller's: its reply sets it, so the controller's rule
  "dropped after 3 missed intervals" always matches what the workers do.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from vicuna_ops.serve.protocol import DrainRequest, Heartbeat, HeartbeatReply, WorkerInfo

log = logging.getLogger("vops.serve.worker")

REDISCOVER_AFTER = 3  # failed heartbeats before the bucket is asked for a new address


class Membership:
    def __init__(self, info: Callable[[], WorkerInfo], token: str, *,
                 resolve: Callable[[], Any], interval: float = 2.0,
                 client: Any = None) -> None:
        """``info`` gives the current registration; ``resolve`` gives the controller URL
        (sync or async; may raise or return None while it is not known yet)."""
        httpx = _httpx()
        self.info = info
        self.token = token
        self.resolve = resolve
        self.interval = interval
        self.controller: str | None = None
        self.registered = asyncio.Event()
        self.client = client or httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=2.0))
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
        response = await self.client.post(self.controller + path,
                                          content=message.model_dump_json(),
                                          headers={**self._headers,
                                                   "content-type": "application/json"})
        if response.status_code == 401:
            raise PermissionError("the controller refused the worker token")
        response.raise_for_status()
        return response.json()

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
                    log.error("the controller at %s refused the worker token; check "
                              "VOPS_WORKER_TOKEN", self.controller)
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

    async def close(self) -> None:
        await self.client.aclose()


def _httpx() -> Any:
    from vicuna_ops import adaptors

    return adaptors.require("httpx")
