"""The Arena's API on the controller (the page itself is ``static/arena.html``).

    POST /arena/battles              {"prompt"}            -> {"battle_id"}   (no names)
    POST /arena/battles/{id}/{a|b}                         -> the seat's reply, streamed (SSE)
    POST /arena/votes                {"battle_id", "outcome": a|b|tie|bothbad}
                                                           -> both seats' models, revealed

The page never learns who sits where before it votes: the controller sends each seat's
request itself (through the same proxy as ``/v1/chat/completions``: retries, resumes) and
relays the stream with the model name replaced by the seat. It also keeps the text it
relayed, so the stored replies are what the user saw, not what a client claims. Same API
key rule as ``/v1``; bad bodies get the same OpenAI-shaped 400/422.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any, AsyncIterator, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field

from vicuna_ops.serve import protocol
from vicuna_ops.serve.arena import (
    SIDES,
    ArenaConflict,
    ArenaStore,
    Battle,
    pick_contestants,
)
from vicuna_ops.serve.bodies import parse_body, read_body
from vicuna_ops.serve.protocol import ApiError
from vicuna_ops.template import SYSTEM_PROMPT

CHAT_PATH = "/v1/chat/completions"


class BattleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: str = Field(min_length=1, max_length=32_000)


class VoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    battle_id: str = Field(pattern=r"^[0-9a-f]{24}$")
    outcome: Literal["a", "b", "tie", "bothbad"]


def install_arena(app: Any, check_api_key: Callable[[Any], None], *,
                  max_body_bytes: int, rng: random.Random | None = None) -> None:
    """Add the Arena routes; ``app.state.arena`` (an ArenaStore), ``.registry`` and
    ``.proxy`` are set by the controller's lifespan."""
    from starlette.responses import JSONResponse, Response, StreamingResponse

    from vicuna_ops.serve.proxy import Passthrough

    rng = rng or random.SystemRandom()
    streaming: set[tuple[str, str]] = set()  # (battle, seat) with a reply on its way

    async def create(request: Any) -> Any:
        check_api_key(request)
        body = parse_body(await read_body(request, max_body_bytes), BattleRequest)
        registry = request.app.state.registry
        models = registry.models() or registry.known_models()  # live first
        if not models:
            raise ApiError(503, "no model is served yet; try again shortly",
                           type="server_error", code="no_worker", headers={"Retry-After": "5"})
        a, b = pick_contestants(models, rng)
        battle = request.app.state.arena.create(body.prompt, SYSTEM_PROMPT, a, b)
        return JSONResponse({"battle_id": battle.battle_id, "seats": list(SIDES)})

    async def reply(request: Any) -> Any:
        check_api_key(request)
        battle_id, side = request.path_params["battle_id"], request.path_params["side"]
        store: ArenaStore = request.app.state.arena
        battle = store.get(battle_id) if side in SIDES else None
        if battle is None:
            raise ApiError(404, "no such battle (or seat)", code="battle_not_found")
        if battle.replies[side] is not None or (battle_id, side) in streaming:
            raise ApiError(409, f"seat {side.upper()} has answered already",
                           code="already_answered")
        call = _call(battle, side, protocol.request_id_from(None))
        streaming.add((battle_id, side))
        try:
            events = await request.app.state.proxy.open_stream(call)
        except ApiError as exc:
            streaming.discard((battle_id, side))
            return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)
        except Passthrough as exc:
            streaming.discard((battle_id, side))
            return Response(exc.content, status_code=exc.status,
                            media_type="application/json")
        except BaseException:
            streaming.discard((battle_id, side))
            raise

        def done(text: str, complete: bool) -> None:
            streaming.discard((battle_id, side))
            store.record_reply(battle_id, side, text, stopped=not complete)

        return StreamingResponse(_anonymous(events, side, done),
                                 media_type=protocol.SSE_MEDIA_TYPE,
                                 headers={"cache-control": "no-cache"})

    async def vote(request: Any) -> Any:
        check_api_key(request)
        body = parse_body(await read_body(request, 4096), VoteRequest)
        # a stopped seat's text is stored when the server sees the client go, which can come
        # a moment after the page's click on a vote button: give it that moment
        for _ in range(40):
            if not any((body.battle_id, side) in streaming for side in SIDES):
                break
            await asyncio.sleep(0.05)
        try:
            battle = request.app.state.arena.vote(body.battle_id, body.outcome)
        except KeyError:
            raise ApiError(404, "no such battle", param="battle_id",
                           code="battle_not_found") from None
        except ArenaConflict as exc:
            raise ApiError(409, str(exc), code="vote_refused") from None
        return JSONResponse({"battle_id": battle.battle_id, "outcome": battle.outcome,
                             "seats": battle.reveal()})

    app.router.add_route("/arena/battles", create, methods=["POST"])
    app.router.add_route("/arena/battles/{battle_id}/{side}", reply, methods=["POST"])
    app.router.add_route("/arena/votes", vote, methods=["POST"])


def _call(battle: Battle, side: str, request_id: str) -> Any:
    from vicuna_ops.serve.proxy import Call

    seat = battle.seat(side)
    body = {"model": seat.model, "stream": True,
            "messages": [{"role": "system", "content": battle.system},
                         {"role": "user", "content": battle.prompt}],
            "temperature": seat.settings["temperature"], "top_p": seat.settings["top_p"],
            "max_tokens": seat.settings["max_tokens"]}
    parsed = protocol.ChatCompletionRequest.model_validate(body)
    return Call(path=CHAT_PATH, model=seat.model, parsed=parsed,
                raw=json.dumps(body).encode(), request_id=request_id, stream=True,
                started=time.monotonic())


async def _anonymous(events: AsyncIterator[bytes], side: str,
                     done: Callable[[str, bool], None]) -> AsyncIterator[bytes]:
    """Relay the seat's events with its model's name replaced; ``done(text, complete)``
    once, however the stream ends (a stop button closes it early)."""
    text: list[str] = []
    complete = False
    try:
        async for event in events:
            if event == protocol.DONE_EVENT:
                complete = True
                yield event
                continue
            if event.startswith(b"data: {"):
                try:
                    data = json.loads(event[6:])
                except ValueError:
                    data = None
                if isinstance(data, dict):
                    if "model" in data:
                        data["model"] = f"seat-{side}"
                    text.append(protocol.chunk_text(data))
                    event = b"data: " + json.dumps(data).encode() + b"\n\n"
            yield event
    finally:
        done("".join(text), complete)
        await events.aclose()
