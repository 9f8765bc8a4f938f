"""OpenAI-compatible chat calls for answering and judging.

The ``openai`` client does the retrying: 429, 408, 409, 5xx, timeouts and refused
connections are retried ``retries`` times with exponential backoff and jitter (0.5 s
doubling to 8 s), honouring the server's ``Retry-After`` / ``retry-after-ms``. What is left
after that is translated here into vops errors:

    a wrong endpoint, a dead server, a bad key, an unknown model -> EndpointError (stop the run)
    a request the server refuses on its own (400, 413, 422)      -> RequestRejected (skip it)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from vicuna_ops import adaptors
from vicuna_ops.errors import UserError

DEFAULT_RETRIES = 5
DEFAULT_TIMEOUT_S = 600.0


class EndpointError(UserError):
    """The endpoint cannot serve this run at all; what was done is saved."""


class RequestRejected(Exception):
    """The server refused this one request for good (too long, bad parameters)."""


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None


def base_url(endpoint: str) -> str:
    """``http://host:8000`` or ``http://host:8000/v1`` -> the latter (the openai client's)."""
    if not endpoint.startswith(("http://", "https://")):
        raise UserError(f"endpoint {endpoint!r} is not an http(s) URL",
                        hint="e.g. http://127.0.0.1:8000 (a `vops serve` deployment)")
    url = endpoint.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def api_key(env_var: str | None) -> str:
    """The key from ``env_var``; servers without auth take any key, the client needs one."""
    return (os.environ.get(env_var) if env_var else None) or "EMPTY"


class ChatAPI:
    """One endpoint and model; ``complete`` is safe to call from many tasks at once."""

    def __init__(self, endpoint: str, model: str, *, key: str = "EMPTY",
                 retries: int = DEFAULT_RETRIES, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        openai = adaptors.require("openai")
        self.openai = openai
        self.url = base_url(endpoint)
        self.model = model
        self._client = openai.AsyncOpenAI(base_url=self.url, api_key=key, max_retries=retries,
                                          timeout=timeout)

    async def close(self) -> None:
        await self._client.close()

    async def complete(self, messages: list[dict[str, str]], *, temperature: float,
                       max_tokens: int | None) -> Reply:
        openai = self.openai
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages,
                                  "temperature": temperature}
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        try:
            response = await self._client.chat.completions.create(**kwargs)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            raise RequestRejected(f"{exc.status_code}: {_detail(exc)}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code == 413:
                raise RequestRejected(f"413: {_detail(exc)}") from exc
            raise self._fatal(exc) from exc
        except openai.APIConnectionError as exc:  # includes timeouts, after the retries
            raise EndpointError(f"cannot reach {self.url}: {exc}",
                                hint="is the server up? rerun the same command to continue")
        if not response.choices:
            raise RequestRejected("the reply has no choices")
        choice = response.choices[0]
        usage = response.usage
        return Reply(text=choice.message.content or "",
                     prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                     completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                     finish_reason=choice.finish_reason)

    def _fatal(self, exc: Any) -> EndpointError:
        status = exc.status_code
        if status in (401, 403):
            return EndpointError(f"{self.url} refused the API key ({status})",
                                 hint="set the key in the variable --api-key-env names")
        if status == 404:
            return EndpointError(f"{self.url} does not serve model {self.model!r} (404)",
                                 hint="check the model name (GET /v1/models lists them)")
        return EndpointError(f"{self.url} answered {status} after retries: {_detail(exc)}",
                             hint="rerun the same command to continue where it stopped")


def _detail(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else body.get("message")
        if message:
            return " ".join(str(message).split())[:200]
    return " ".join(str(exc).split())[:200]
