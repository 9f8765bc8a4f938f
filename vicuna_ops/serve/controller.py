"""The controller: the OpenAI-compatible API in front of the workers, and their registry.

    client --HTTP--> controller --HTTP--> worker        (one hop; see proxy.py)
    worker --register / heartbeat / drain (worker token)--> controller

Public endpoints (``Bearer`` API key when keys are configured): ``GET /v1/models``,
``POST /v1/chat/completions``, ``POST /v1/completions``. Open: ``GET /healthz``,
``GET /metrics``. Workers only (``Bearer`` worker token): ``POST /vops/workers/register``,
``/heartbeat``, ``/drain``, ``/leave`` (after a drain), and ``GET /vops/workers``.
Workers of several models may register: requests are routed by their ``model``, and
``/v1/models`` lists every model served. Pages: ``GET /`` (chat) and
``GET /arena``, with the Arena's API under ``/arena/`` (webpages.py, arena_routes.py); its
votes live in ``arena.db`` beside the registry.

Every body is read with a size limit and validated before anything is sent on: garbage is a
400, a bad or unknown field a 422 naming it, an unknown model a 404, a body over the limit
(or a prompt over the model's context, from the worker) a 413. Nothing a client sends can
produce a 500; the catch-all handler exists for bugs and still answers in OpenAI's format.
"""


import asyncio
import functools
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from vicuna_ops import adaptors
from vicuna_ops.serve import protocol
from vicuna_ops.serve.bodies import bearer_in, parse_body, read_body
from vicuna_ops.serve.error_handlers import install_error_handlers
from vicuna_ops.serve.metrics import ControllerMetrics
from vicuna_ops.serve.protocol import ApiError
from vicuna_ops.serve.proxy import Call, Passthrough, Proxy, ProxySettings, new_upstream_client
from vicuna_ops.serve.registry import Registry

log = logging.getLogger("vops.serve.controller")


@dataclass(frozen=True)
class ControllerSettings:
    registry_path: Path
    worker_token: str = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: frozenset[str] = field(default=frozenset(), repr=False)
    heartbeat_interval: float = 2.0
    max_body_bytes: int = 1 << 20
    proxy: ProxySettings = ProxySettings()
    advertise_url: str | None = None  # what workers should call; published to the bucket
    bucket: str | None = None  # with ``name``: publish <bucket>/<name>/serve/controller.json
    name: str | None = None
    graceful_timeout: float = 30.0
    signal_exit_code: int = 0  # the SkyPilot task uses 75: a stopped controller is relaunched
    models: frozenset[str] = frozenset()  # what the deployment serves, before any worker is up


def create_app(settings: ControllerSettings) -> Any:
    fastapi = adaptors.require("fastapi")
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    if not settings.worker_token:
        raise ValueError("the controller needs a worker token")
    metrics = ControllerMetrics()

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        registry = Registry(settings.registry_path,
                            heartbeat_interval=settings.heartbeat_interval)
        registry.remember(settings.models)
        from vicuna_ops.serve.arena import DB_NAME, ArenaStore

        app.state.arena = ArenaStore(settings.registry_path.parent / DB_NAME)
        client = new_upstream_client(settings.proxy)
        app.state.registry = registry
        app.state.proxy = Proxy(registry, client, settings.worker_token, metrics,
                                settings.proxy)
        tasks = [asyncio.create_task(_reap(registry, app.state.proxy, metrics,
                                           settings.heartbeat_interval))]
        if settings.bucket and settings.name and settings.advertise_url:
            from vicuna_ops.serve import discovery

            tasks.append(asyncio.create_task(discovery.keep_published(
                settings.bucket, settings.name, settings.advertise_url)))
        if settings.bucket and settings.name:
            from vicuna_ops.serve.accounting import keep_segment

            started = protocol.new_request_id()[:12]
            tasks.append(asyncio.create_task(keep_segment(
                settings.bucket, settings.name, "serve-controller", started,
                lambda: (0, False))))
        log.info("controller up with %d known worker(s)", len(registry.workers()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close()
            registry.close()
            app.state.arena.close()

    app = fastapi.FastAPI(title="vops controller", lifespan=lifespan, docs_url=None,
                          redoc_url=None, openapi_url=None)

    install_error_handlers(app, log)

    # --- public API ------------------------------------------------------------------------

    def check_api_key(request: Any) -> None:
        if settings.api_keys and not bearer_in(request, settings.api_keys):
            raise ApiError(401, "missing or invalid API key (send 'Authorization: Bearer "
                           "<key>')", type="authentication_error", code="invalid_api_key")

    @app.get("/v1/models")
    async def models(request: fastapi.Request) -> Any:
        check_api_key(request)
        # every model a request may name: one whose workers are all down answers 503
        return protocol.model_list(request.app.state.registry.known_models())

    async def api_call(request: Any, *, path: str) -> Any:
        started = time.monotonic()
        metrics.in_flight.inc()
        status, streaming = 500, False
        try:
            check_api_key(request)
            raw = await read_body(request, settings.max_body_bytes)
            public_model, _ = protocol.ENDPOINTS[path]
            parsed = parse_body(raw, public_model)
            registry = request.app.state.registry
            known = registry.known_models()
            if parsed.model not in known:  # never served here; a known one without a live
                # worker waits for one in the proxy, then is a 503 with Retry-After
                raise ApiError(404, f"model {parsed.model!r} does not exist; served: "
                               f"{', '.join(known) or 'none yet'}",
                               param="model", code="model_not_found")
            request_id = protocol.request_id_from(request.headers.get("x-request-id"))
            call = Call(path=path, model=parsed.model, parsed=parsed, raw=raw,
                        request_id=request_id, stream=parsed.stream, started=started)
            proxy = request.app.state.proxy
            if not parsed.stream:
                status, content = await proxy.complete(call)
                return Response(content, status_code=status, media_type="application/json")
            events = await proxy.open_stream(call)
            status, streaming = 200, True
            body = _finishing(events, lambda: done(path, 200, started))
            return StreamingResponse(body, media_type=protocol.SSE_MEDIA_TYPE,
                                     headers={"x-request-id": request_id,
                                              "cache-control": "no-cache"})
        except ApiError as exc:
            status = exc.status
            if status >= 500:
                metrics.errors.labels(exc.code or "server").inc()
            return JSONResponse(exc.body(), status_code=status, headers=exc.headers)
        except Passthrough as exc:
            status = exc.status
            return Response(exc.content, status_code=status, media_type="application/json")
        finally:
            if not streaming:
                done(path, status, started)

    def done(path: str, status: int, started: float) -> None:
        metrics.in_flight.dec()
        metrics.requests.labels(path, str(status)).inc()
        metrics.latency.labels(path).observe(time.monotonic() - started)

    # plain Starlette routes: the hot path skips FastAPI's per-request dependency solving
    for path in protocol.ENDPOINTS:
        app.router.add_route(path, functools.partial(api_call, path=path), methods=["POST"])

    from vicuna_ops.serve.arena_routes import install_arena
    from vicuna_ops.serve.webpages import install_pages

    install_pages(app, api_key_required=bool(settings.api_keys))
    install_arena(app, check_api_key, max_body_bytes=settings.max_body_bytes)

    @app.get("/healthz")
    async def healthz(request: fastapi.Request) -> Any:
        registry = request.app.state.registry
        states = [w.state for w in registry.workers()]
        return {"status": "ok", "workers": {"live": states.count("live"),
                                            "draining": states.count("draining")},
                "models": registry.models()}

    @app.get("/metrics")
    async def prometheus(request: fastapi.Request) -> Any:
        registry = request.app.state.registry
        metrics.refresh_workers(registry.workers(), registry.now())
        content, media_type = metrics.render()
        return Response(content, media_type=media_type)

    # --- workers ---------------------------------------------------------------------------

    def check_worker_token(request: Any) -> None:
        if not bearer_in(request, (settings.worker_token,)):
            raise ApiError(401, "missing or invalid worker token",
                           type="authentication_error", code="invalid_worker_token")

    async def worker_message(request: Any, model: type) -> Any:
        check_worker_token(request)
        return parse_body(await read_body(request, 64 * 1024), model)

    @app.post("/vops/workers/register")
    async def register(request: fastapi.Request) -> Any:
        info = await worker_message(request, protocol.WorkerInfo)
        worker = request.app.state.registry.register(info)
        metrics.registrations.inc()
        log.info("worker %s registered at %s serving %s", worker.worker_id, worker.url,
                 ",".join(sorted(worker.models)))
        return protocol.HeartbeatReply(status="ok",
                                       heartbeat_interval=settings.heartbeat_interval)

    @app.post("/vops/workers/heartbeat")
    async def heartbeat(request: fastapi.Request) -> Any:
        beat = await worker_message(request, protocol.Heartbeat)
        known = request.app.state.registry.heartbeat(beat.worker_id, beat.in_flight)
        return protocol.HeartbeatReply(status="ok" if known else "unknown",
                                       heartbeat_interval=settings.heartbeat_interval)

    @app.post("/vops/workers/drain")
    async def drain(request: fastapi.Request) -> Any:
        message = await worker_message(request, protocol.DrainRequest)
        known = request.app.state.registry.drain(message.worker_id)
        log.info("worker %s draining", message.worker_id)
        return {"status": "ok" if known else "unknown"}

    @app.post("/vops/workers/leave")
    async def leave(request: fastapi.Request) -> Any:
        # after its drain: what it still streams finishes; nothing new is sent there
        message = await worker_message(request, protocol.DrainRequest)
        registry = request.app.state.registry
        known = registry.get(message.worker_id) is not None
        registry.remove(message.worker_id)
        log.info("worker %s left", message.worker_id)
        return {"status": "ok" if known else "unknown"}

    @app.get("/vops/workers")
    async def list_workers(request: fastapi.Request) -> Any:
        check_worker_token(request)
        registry = request.app.state.registry
        now = registry.now()
        return {"workers": [w.as_dict(now) for w in registry.workers()]}

    return app


async def _finishing(events: AsyncIterator[bytes], on_done: Any) -> AsyncIterator[bytes]:
    """Relay ``events``; ``on_done`` runs once when the stream ends, however it ends."""
    try:
        async for event in events:
            yield event
    finally:
        on_done()
        await events.aclose()


async def _reap(registry: Registry, proxy: Proxy, metrics: ControllerMetrics,
                interval: float) -> None:
    """Drop workers that stopped heartbeating (runs every quarter interval), and move the
    requests they were holding to other workers."""
    while True:
        await asyncio.sleep(interval / 4)
        try:
            for worker_id in registry.expire():
                metrics.workers_dropped.inc()
                moved = proxy.abort_worker(worker_id)
                log.warning("worker %s dropped: no heartbeat for %.1fs; %d request(s) moved",
                            worker_id, registry.expiry, moved)
        except Exception:  # the reaper must outlive a transient SQLite error
            log.exception("reaping workers failed")


def run_controller(settings: ControllerSettings) -> int:
    """Serve until SIGTERM/SIGINT; in-flight streams finish within the graceful timeout.
    Returns the exit code."""
    from vicuna_ops.serve.server import listen, serve

    sock = listen(settings.host, settings.port)  # a taken port fails in one line, at once
    serve(create_app(settings), settings.host, settings.port,
          graceful_timeout=settings.graceful_timeout, sock=sock)
    return settings.signal_exit_code
