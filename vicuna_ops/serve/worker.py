"""The model worker: the same OpenAI endpoints as the controller, for the controller only.

It answers ``/v1/chat/completions`` and ``/v1/completions`` (plain and streamed) to callers
holding the worker token, renders chat with the Vicuna v1.1 template, runs at most
``max_concurrency`` generations at once (up to ``max_queue`` more wait; beyond that a 503
sends the controller elsewhere), and continues an earlier worker's stream when the request
carries ``vops_resume``.

Lifecycle: load the model, listen, register (retrying until a controller answers), heartbeat.
On SIGTERM or a spot preemption notice it drains: tells the controller, answers new requests
with 503 "draining" (the controller retries them elsewhere), lets in-flight generations finish
within ``drain_grace`` seconds, leaves the registry, then exits 0. A controller that refuses
the worker token ends the worker at once (exit 2, one line): retrying cannot fix a token.
"""


import asyncio
import functools
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from vicuna_ops import template
from vicuna_ops.errors import UserError
from vicuna_ops.serve import protocol
from vicuna_ops.serve.advertise import advertised_url
from vicuna_ops.serve.backends import GenerationParams, GenerationStats, load_backend
from vicuna_ops.serve.bodies import bearer_in, parse_body, read_body
from vicuna_ops.serve.error_handlers import install_error_handlers
from vicuna_ops.serve.membership import Membership, Refused
from vicuna_ops.serve.protocol import ApiError

log = logging.getLogger("vops.serve.worker")
WORKER_TOKEN_ENV = "VOPS_WORKER_TOKEN"
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


@dataclass(frozen=True)
class WorkerSettings:
    worker_token: str = field(repr=False)
    backend: str = "transformers"
    model: str | None = None  # folder or bucket URI
    model_name: str | None = None  # the name clients ask for; default from the folder
    host: str = "127.0.0.1"
    port: int = 8001
    advertise_url: str | None = None  # how the controller reaches us; default host:port
    controller_url: str | None = None  # else looked up in <bucket>/<name>/serve/
    bucket: str | None = None
    name: str | None = None
    max_concurrency: int = 4
    max_queue: int = 64
    heartbeat_interval: float = 2.0  # until the controller says otherwise
    drain_grace: float = 30.0
    cache_dir: Path = Path("~/.cache/vops/models")
    worker_id: str = field(default_factory=lambda: f"w-{uuid.uuid4().hex[:12]}")
    stub_tokens: int = 32
    stub_rate: float = 100.0
    aws_notice_url: str | None = None  # None: the node's own cloud's endpoint; "": off
    gcp_notice_url: str | None = None
    notice_poll: float = 5.0  # seconds between two looks at the preemption notice
    signal_exit_code: int = 0  # after a drain; the SkyPilot task uses 75 (recover the job)


class _State:
    def __init__(self, max_concurrency: int) -> None:
        self.draining = False
        self.preempted = False
        self.active = 0
        self.waiting = 0
        self.generated_tokens = 0
        self.slots = asyncio.Semaphore(max_concurrency)

    @property
    def in_flight(self) -> int:
        return self.active + self.waiting


def create_app(settings: WorkerSettings, backend: Any = None) -> Any:
    """The worker app; loads the backend now, so a bad model fails before registering."""
    # Starlette alone (FastAPI's base, same extra): FastAPI costs ~0.2 s of imports at every
    # worker start, and the worker uses none of it
    try:
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, StreamingResponse
    except ImportError as exc:
        raise UserError("starlette is not installed",
                        hint="pip install 'vicuna-ops[serve]'") from exc

    backend = backend or load_backend(
        settings.backend, model=settings.model, model_name=settings.model_name,
        cache_dir=settings.cache_dir.expanduser(), stub_tokens=settings.stub_tokens,
        stub_rate=settings.stub_rate)
    advertise = settings.advertise_url or advertised_url(settings.host, settings.port,
                                                         settings.controller_url)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        state = app.state.worker = _State(settings.max_concurrency)
        membership = app.state.membership = Membership(
            lambda: _info(settings, backend, advertise, state), settings.worker_token,
            resolve=_resolver(settings), interval=settings.heartbeat_interval)
        app.state.loop = asyncio.get_running_loop()
        tasks = [asyncio.create_task(_after_listening(app, membership.run()))]
        tasks.append(asyncio.create_task(_watch_spot_notice(app, settings)))
        if settings.bucket and settings.name:
            from vicuna_ops.serve.accounting import keep_segment

            tasks.append(asyncio.create_task(keep_segment(
                settings.bucket, settings.name, "serve-worker", settings.worker_id,
                lambda: (state.generated_tokens, state.preempted))))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await membership.close()

    app = Starlette(lifespan=lifespan)
    app.state.settings = settings
    app.state.backend = backend

    install_error_handlers(app, log)

    def check_token(request: Any) -> None:
        if not bearer_in(request, (settings.worker_token,)):
            raise ApiError(401, "missing or invalid worker token",
                           type="authentication_error", code="invalid_worker_token")

    async def generate(request: Any, *, path: str) -> Any:
        check_token(request)
        state: _State = request.app.state.worker
        if state.draining:
            return JSONResponse(ApiError(503, "this worker is draining", type="server_error",
                                         code="draining").body(),
                                status_code=503, headers={"x-vops-draining": "1"})
        chat = path == CHAT
        _, model = protocol.ENDPOINTS[path]
        parsed = parse_body(await read_body(request, 4 << 20), model)
        if parsed.model != backend.model_name:
            raise ApiError(404, f"model {parsed.model!r} is not served here",
                           param="model", code="model_not_found")
        job = _plan(parsed, chat, backend)
        if state.waiting >= settings.max_queue:
            raise ApiError(503, "this worker is busy", type="server_error", code="busy")
        request_id = protocol.request_id_from(request.headers.get("x-request-id"))
        state.waiting += 1
        try:
            await state.slots.acquire()
        finally:
            state.waiting -= 1
        state.active += 1
        slot = _Slot(state)
        if not parsed.stream:
            stats = GenerationStats()
            try:
                text = await _collect(backend, job, stats, request)
            finally:
                slot.release(stats.completion_tokens)
            make = protocol.chat_response if chat else protocol.completion_response
            return JSONResponse(make(request_id, backend.model_name, text,
                                     stats.finish_reason or "stop", job.prompt_tokens,
                                     job.resumed_tokens + stats.completion_tokens))
        events = _sse(backend, job, chat, request_id, parsed.include_usage(), slot)
        slot.bind(events)
        return StreamingResponse(events, media_type=protocol.SSE_MEDIA_TYPE)

    for path in (CHAT, COMPLETIONS):
        app.router.add_route(path, functools.partial(generate, path=path), methods=["POST"])

    async def models(request: Any) -> Any:
        check_token(request)
        return JSONResponse(protocol.model_list([backend.model_name]))

    async def healthz(request: Any) -> Any:
        state: _State = request.app.state.worker
        return JSONResponse({
            "status": "draining" if state.draining else "ok", "worker_id": settings.worker_id,
            "model": backend.model_name, "in_flight": state.in_flight,
            "registered": request.app.state.membership.registered.is_set()})

    app.router.add_route("/v1/models", models, methods=["GET"])
    app.router.add_route("/healthz", healthz, methods=["GET"])
    return app


@dataclass(frozen=True)
class _Job:
    prompt: str  # the rendered prompt plus any resumed text
    prompt_tokens: int  # of the rendered prompt alone
    resumed_tokens: int
    params: GenerationParams
    resumed: bool = False  # continues another worker's stream (which sent the role chunk)


def _plan(parsed: Any, chat: bool, backend: Any) -> "_Job":
    """Render, count, and check the prompt against the context: 413 when it cannot fit."""
    if chat:
        messages = [{"role": m.role, "content": m.text()} for m in parsed.messages]
        try:
            system, turns = template.parse_turns(messages)
            prompt = template.render_prompt(system, turns)
        except template.InvalidConversation as exc:
            raise ApiError(422, f"messages: {exc}", param="messages",
                           code="invalid_field") from None
    else:
        prompt = parsed.prompt_text()
    context = backend.context_length
    prompt_tokens = backend.count_tokens(prompt)
    if prompt_tokens >= context:
        raise ApiError(413, f"the prompt is {prompt_tokens} tokens; this model's context is "
                       f"{context}", param="messages" if chat else "prompt",
                       code="context_length_exceeded")
    resume = parsed.vops_resume.text if parsed.vops_resume else ""
    resumed = backend.count_tokens(prompt + resume) - prompt_tokens if resume else 0
    room = context - prompt_tokens - resumed
    limit = parsed.token_limit()
    max_new = max(0, min(room, limit - resumed) if limit else room)
    return _Job(prompt + resume, prompt_tokens, resumed, GenerationParams(
        max_tokens=max_new, temperature=parsed.temperature, top_p=parsed.top_p,
        stop=tuple(parsed.stop_list()), seed=parsed.seed, resumed_tokens=resumed),
        resumed=parsed.vops_resume is not None)


class _Slot:
    """One running generation's claim on the concurrency limit, released exactly once."""

    def __init__(self, state: _State) -> None:
        self.state, self.done = state, False

    def release(self, tokens: int = 0) -> None:
        if not self.done:
            self.done = True
            self.state.active -= 1
            self.state.generated_tokens += tokens
            self.state.slots.release()

    def bind(self, obj: object) -> None:
        import weakref

        weakref.finalize(obj, self.release)


async def _collect(backend: Any, job: _Job, stats: GenerationStats, request: Any) -> str:
    """The whole answer of a non-streamed request; stops early if the caller hangs up."""
    if job.params.max_tokens <= 0:
        stats.finish_reason = "length"
        return ""
    pieces: list[str] = []
    stream = backend.generate(job.prompt, job.params, stats)
    try:
        async for piece in stream:
            pieces.append(piece)
            if len(pieces) % 16 == 0 and await request.is_disconnected():
                break  # nobody will read the answer: stop generating it
    except Exception as exc:  # a 500 makes the controller try another worker
        log.exception("generation failed")
        raise ApiError(500, f"generation failed: {type(exc).__name__}",
                       type="server_error", code="generation_failed") from None
    finally:
        await stream.aclose()
    return "".join(pieces)


def _event(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


async def _sse(backend: Any, job: _Job, chat: bool, request_id: str, include_usage: bool,
               slot: _Slot) -> AsyncIterator[bytes]:
    """The streamed answer. A failure ends the body without ``[DONE]``: the controller reads
    that as a cut stream and continues on another worker."""
    model = backend.model_name
    stats = GenerationStats()
    try:
        if chat:
            chunk = lambda text, finish=None: protocol.chat_chunk(  # noqa: E731
                request_id, model, {"content": text} if text else {}, finish)
            if not job.resumed:
                yield _event(protocol.chat_chunk(request_id, model,
                                                 {"role": "assistant", "content": ""}))
        else:
            chunk = lambda text, finish=None: protocol.completion_chunk(  # noqa: E731
                request_id, model, text, finish)
        if job.params.max_tokens > 0:
            async for piece in backend.generate(job.prompt, job.params, stats):
                yield _event(chunk(piece))
        yield _event(chunk("", stats.finish_reason or "length"))
        if include_usage:
            yield _event(protocol.usage_chunk(request_id, model, chat, job.prompt_tokens,
                                              job.resumed_tokens + stats.completion_tokens))
        yield protocol.DONE_EVENT
    except Exception:
        log.exception("generation failed mid-stream")
    finally:
        slot.release(stats.completion_tokens)


def _info(settings: WorkerSettings, backend: Any, url: str, state: _State) -> protocol.WorkerInfo:
    from vicuna_ops.segments import node_identity

    return protocol.WorkerInfo(
        worker_id=settings.worker_id, url=url, models=[backend.model_name],
        context_length=backend.context_length, max_concurrency=settings.max_concurrency,
        in_flight=state.in_flight if state else 0,
        identity={k: v for k, v in node_identity().items()
                  if isinstance(v, (str, int, float, bool)) or v is None})


def _resolver(settings: WorkerSettings) -> Any:
    if settings.controller_url:
        return lambda: settings.controller_url
    if settings.bucket and settings.name:
        from vicuna_ops.serve import discovery

        return lambda: asyncio.to_thread(discovery.lookup, settings.bucket, settings.name)
    raise ValueError("a worker needs --controller-url, or --bucket and --name")


async def _after_listening(app: Any, work: Any) -> None:
    """Run ``work`` once uvicorn is accepting connections (lifespan starts before that).
    A refused token stops the server: retrying cannot fix it (``run_worker`` says why)."""
    for _ in range(200):
        server = getattr(app.state, "server", None)
        if server is None or server.started:
            break
        await asyncio.sleep(0.05)
    try:
        await work
    except Refused as exc:
        app.state.refused = exc
        server = getattr(app.state, "server", None)
        if server is not None:
            server.should_exit = True


async def drain(app: Any, server: Any = None, reason: str = "SIGTERM") -> None:
    """Stop taking work, tell the controller, finish in-flight work, then stop the server."""
    state: _State = app.state.worker
    if state.draining:
        return
    state.draining = True
    settings: WorkerSettings = app.state.settings
    log.warning("draining (%s): %d request(s) in flight", reason, state.in_flight)
    await app.state.membership.drain()
    deadline = time.monotonic() + settings.drain_grace
    while state.in_flight and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if state.in_flight:
        log.warning("drain grace over with %d request(s) still running", state.in_flight)
    await app.state.membership.leave()  # gone from the registry now, not at its expiry
    if server is not None:
        server.should_exit = True


async def _watch_spot_notice(app: Any, settings: WorkerSettings) -> None:
    """Poll the cloud's preemption notice (AWS instance-action, GCP preempted); drain on one."""
    await app.state.membership.registered.wait()  # its imports must not delay registering
    from vicuna_ops.segments import node_identity

    try:
        from vicuna_ops.train.args import AWS_TOKEN_URL
        from vicuna_ops.train.preemption import aws_notice, gcp_notice, notice_urls
    except ImportError:  # a serving-only install without the training package
        return
    cloud = str(node_identity().get("cloud", "local"))
    aws_url, gcp_url = notice_urls(cloud, settings.aws_notice_url, settings.gcp_notice_url)
    # an explicit notice URL is a test's fake metadata server, which has no IMDSv2 token
    token_url = AWS_TOKEN_URL if settings.aws_notice_url is None else None
    token: list[str | None] = [None]
    probes = []
    if aws_url:
        probes.append(lambda: aws_notice(aws_url, token_url, token))
    if gcp_url:
        probes.append(lambda: gcp_notice(gcp_url))
    while probes:
        for probe in probes:
            try:
                notice = await asyncio.to_thread(probe)
            except Exception:
                notice = None
            if notice:
                app.state.worker.preempted = True
                await drain(app, getattr(app.state, "server", None), reason=notice)
                return
        await asyncio.sleep(settings.notice_poll)


def run_worker(settings: WorkerSettings) -> int:
    """Load the model, serve, drain on the first SIGTERM/SIGINT or a spot notice; blocks.
    Returns the exit code: the server only stops after a drain."""
    from vicuna_ops.serve.server import listen, serve

    sock = listen(settings.host, settings.port)  # a taken port fails before the model loads
    app = create_app(settings)

    def on_signal(server: Any) -> None:
        app.state.loop.call_soon_threadsafe(
            lambda: asyncio.ensure_future(drain(app, server)))

    serve(app, settings.host, settings.port, on_signal=on_signal,
          graceful_timeout=settings.drain_grace + 5, sock=sock)
    refused = getattr(app.state, "refused", None)
    if refused is not None:
        raise UserError(str(refused), hint=f"export {WORKER_TOKEN_ENV} with the token the "
                        "controller was started with")
    return settings.signal_exit_code
