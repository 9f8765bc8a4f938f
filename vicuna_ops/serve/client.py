"""A small streaming client of the OpenAI chat API, and the terminal chat loop on top of it.

The client speaks plain HTTP + server-sent events with httpx (no ``openai`` dependency on a
serving node). A connection error to the controller before any text arrived is retried a
few times with backoff: a controller restart then costs the user a pause, not an error.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Iterator

from vicuna_ops import adaptors
from vicuna_ops.errors import ServeError, UserError

CONNECT_RETRIES = 4


class ChatClient:
    def __init__(self, endpoint: str, *, api_key: str | None = None, model: str | None = None,
                 timeout: float = 300.0) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise UserError(f"endpoint {endpoint!r} is not an http(s) URL",
                            hint="e.g. --endpoint http://127.0.0.1:8000")
        httpx = adaptors.require("httpx")
        self._httpx = httpx
        base = endpoint.rstrip("/")
        self.base = base[:-3] if base.endswith("/v1") else base
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(headers=headers,
                                 timeout=httpx.Timeout(timeout, connect=5.0))
        self.model = model

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, *, retries: int = CONNECT_RETRIES,
                 **kwargs: Any) -> Any:
        """Send, retrying connection failures (nothing was received yet)."""
        delay = 0.5
        for attempt in range(retries + 1):
            try:
                request = self.http.build_request(method, self.base + path, **kwargs)
                return self.http.send(request, stream=True)
            except (self._httpx.ConnectError, self._httpx.RemoteProtocolError,
                    self._httpx.ConnectTimeout) as exc:
                if attempt == retries:
                    raise ServeError(f"cannot reach {self.base}: {exc}",
                                     hint="is the controller running? see `vops serve status`"
                                     ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 4.0)

    def models(self, *, retries: int = CONNECT_RETRIES) -> list[str]:
        response = self._request("GET", "/v1/models", retries=retries)
        try:
            body = _json_or_text(response.read())
        except self._httpx.HTTPError as exc:
            raise ServeError(f"{self.base} broke off its answer: {exc}") from exc
        finally:
            response.close()
        if response.status_code != 200:
            raise _error(response.status_code, body)
        try:
            return [str(entry["id"]) for entry in body["data"]]
        except (KeyError, TypeError) as exc:
            raise ServeError(f"{self.base} does not answer like an OpenAI API (GET /v1/models)",
                             hint="pass the controller's URL, e.g. http://127.0.0.1:8000"
                             ) from exc

    def check(self, *, retries: int = CONNECT_RETRIES) -> str:
        """Ask the server for its models (it answers, the key works); returns the model
        to use: the one asked for, else the first served."""
        return self.pick_model(self.models(retries=retries))

    def pick_model(self, names: list[str] | None = None) -> str:
        if self.model:
            return self.model
        names = self.models() if names is None else names
        if not names:
            raise ServeError(f"{self.base} serves no model yet",
                             hint="wait for a worker to register, or check `vops serve status`")
        self.model = names[0]
        return self.model

    def stream_chat(self, messages: list[dict[str, str]], *, max_tokens: int | None = None,
                    temperature: float = 0.7) -> Iterator[str]:
        """The assistant's reply, piece by piece, as the server streams it."""
        body: dict[str, Any] = {"model": self.pick_model(), "messages": messages,
                                "stream": True, "temperature": temperature}
        if max_tokens:
            body["max_tokens"] = max_tokens
        response = self._request("POST", "/v1/chat/completions", json=body)
        try:
            if response.status_code != 200:
                raise _error(response.status_code, _json_or_text(response.read()))
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if "error" in event:
                    raise _error(502, event)
                choices = event.get("choices") or []
                if choices:
                    text = choices[0].get("delta", {}).get("content")
                    if text:
                        yield text
        except self._httpx.HTTPError as exc:
            raise ServeError(f"the stream from {self.base} broke: {exc}") from exc
        finally:
            response.close()


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _error(status: int, body: Any) -> ServeError:
    message = body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
    error = UserError if status in (400, 401, 404, 413, 422) else ServeError
    return error(f"the server answered {status}: {message}")


def chat_loop(client: ChatClient, read: Callable[[str], str], write: Callable[[str], None],
              *, system: str | None = None, max_tokens: int | None = None,
              temperature: float = 0.7) -> int:
    """Read user lines until EOF or /exit; stream each reply. Returns the number of turns.

    ``/reset`` forgets the conversation.
    """
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    turns = 0
    while True:
        try:
            line = read("you> ")
        except EOFError:
            return turns
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return turns
        if line == "/reset":
            history = history[:1] if system else []
            write("(conversation reset)\n")
            continue
        history.append({"role": "user", "content": line})
        write("assistant> ")
        reply = []
        try:
            for piece in client.stream_chat(history, max_tokens=max_tokens,
                                            temperature=temperature):
                reply.append(piece)
                write(piece)
        except UserError:  # a bad key or model: every later turn would fail the same way
            history.pop()
            write("\n")
            raise
        except ServeError as exc:  # transient: say so and let the user try again
            history.pop()
            write(f"\n[error: {exc.one_line()}]\n")
            continue
        write("\n")
        history.append({"role": "assistant", "content": "".join(reply)})
        turns += 1
