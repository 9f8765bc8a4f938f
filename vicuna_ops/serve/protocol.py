"""The wire formats of the serving tier, as pydantic models.

Two families live here:

* the subset of the OpenAI API that vops serves (``/v1/models``, ``/v1/chat/completions``,
  ``/v1/completions``, streaming as server-sent events), validated strictly: an unknown
  field is a 422 that names it, not something silently ignored;
* the messages between a worker and the controller (register, heartbeat, drain).

``ApiError`` is the one exception both apps raise for a client-visible failure; it renders
as OpenAI's error body ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

WORKER_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
DONE_EVENT = b"data: [DONE]\n\n"
SSE_MEDIA_TYPE = "text/event-stream"


class ApiError(Exception):
    """A failure the client sees, with its HTTP status and OpenAI-style body."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status, message, type, param, code)
        self.headers = headers  # e.g. Retry-After on a 503

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def validation_error(exc: ValidationError) -> ApiError:
    """The first problem of a pydantic error as a 422 that names the field."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown field"
    return ApiError(422, f"{where}: {message}", param=where, code="invalid_field")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- the OpenAI API subset -----------------------------------------------------------------


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class _SamplingFields(_Strict):
    model: str = Field(min_length=1, max_length=256)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    n: Literal[1] = 1
    seed: int | None = None
    user: str | None = Field(None, max_length=256)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4 or any(not stop for stop in stops):
            raise ValueError("give at most 4 non-empty stop strings")
        return stops

    def stop_list(self) -> list[str]:
        return list(self.stop or [])

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_SamplingFields):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("give exactly one prompt (batches are not supported)")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def token_limit(self) -> int | None:
        return self.max_tokens


class Resume(_Strict):
    """What a failed worker already streamed; the next worker continues after it.

    Only the controller sends this (workers accept it from a caller holding the worker
    token); the public API rejects it like any unknown field.
    """

    text: str


class WorkerChatRequest(ChatCompletionRequest):
    vops_resume: Resume | None = None


class WorkerCompletionRequest(CompletionRequest):
    vops_resume: Resume | None = None


ENDPOINTS: dict[str, tuple[type[_SamplingFields], type[_SamplingFields]]] = {
    # path: (public request model, the worker's model with the resume extension)
    "/v1/chat/completions": (ChatCompletionRequest, WorkerChatRequest),
    "/v1/completions": (CompletionRequest, WorkerCompletionRequest),
}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def new_request_id() -> str:
    return uuid.uuid4().hex[:24]


_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def request_id_from(header: str | None) -> str:
    """The caller's ``X-Request-Id`` when it is a sane token, else a new id."""
    return header if header and _REQUEST_ID.match(header) else new_request_id()


def chat_response(request_id: str, model: str, text: str, finish_reason: str,
                  prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"id": f"chatcmpl-{request_id}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish_reason}],
            "usage": usage(prompt_tokens, completion_tokens)}


def chat_chunk(request_id: str, model: str, delta: dict[str, str],
               finish_reason: str | None = None) -> dict[str, Any]:
    return {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}


def completion_response(request_id: str, model: str, text: str, finish_reason: str,
                        prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"id": f"cmpl-{request_id}", "object": "text_completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None,
                         "finish_reason": finish_reason}],
            "usage": usage(prompt_tokens, completion_tokens)}


def completion_chunk(request_id: str, model: str, text: str,
                     finish_reason: str | None = None) -> dict[str, Any]:
    return {"id": f"cmpl-{request_id}", "object": "text_completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None,
                         "finish_reason": finish_reason}]}


def usage_chunk(request_id: str, model: str, chat: bool, prompt_tokens: int,
                completion_tokens: int) -> dict[str, Any]:
    """The last chunk when ``stream_options.include_usage`` is set: no choices, only usage."""
    prefix, obj = ("chatcmpl", "chat.completion.chunk") if chat else ("cmpl", "text_completion")
    return {"id": f"{prefix}-{request_id}", "object": obj, "created": int(time.time()),
            "model": model, "choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def chunk_text(event: dict[str, Any]) -> str:
    """The text a streamed chunk adds (chat ``delta.content`` or completion ``text``)."""
    choices = event.get("choices") or []
    if not choices:
        return ""
    choice = choices[0]
    if "delta" in choice:
        return choice["delta"].get("content") or ""
    return choice.get("text") or ""


def model_list(models: list[str], owned_by: str = "vops") -> dict[str, Any]:
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": owned_by}
        for name in models]}


# --- worker <-> controller -----------------------------------------------------------------


class WorkerInfo(_Strict):
    """What a worker tells the controller when it registers."""

    worker_id: str
    url: str
    models: list[str] = Field(min_length=1, max_length=16)
    context_length: int | None = Field(None, ge=1)
    max_concurrency: int = Field(1, ge=1, le=4096)
    in_flight: int = Field(0, ge=0)
    identity: dict[str, str | int | float | bool | None] = Field(default_factory=dict)

    @field_validator("worker_id")
    @classmethod
    def _worker_id(cls, value: str) -> str:
        if not WORKER_ID_PATTERN.match(value):
            raise ValueError("1-128 letters, digits, '.', '_' or '-'")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+$", value.rstrip("/")):
            raise ValueError("an http(s)://host:port address")
        return value.rstrip("/")

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[str]) -> list[str]:
        for name in value:
            if not MODEL_NAME_PATTERN.match(name):
                raise ValueError(f"bad model name {name!r}")
        return value


class Heartbeat(_Strict):
    worker_id: str
    in_flight: int = Field(0, ge=0)


class HeartbeatReply(_Strict):
    status: Literal["ok", "unknown", "draining"]
    heartbeat_interval: float


class DrainRequest(_Strict):
    worker_id: str
