"""``vops chat``: talk to a served model in the terminal, replies streamed as they come.

    vops chat [--endpoint http://127.0.0.1:8000] [--model NAME] [--system TEXT]

``/reset`` forgets the conversation, ``/exit`` or Ctrl-D leaves. The API key, if the server
wants one, comes from ``VOPS_API_KEY`` (or the variable ``--api-key-env`` names).
"""

from __future__ import annotations

import os
import sys

import typer

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"
STARTUP_RETRIES = 2  # a controller that is just starting gets ~1.5 s


def chat(
    endpoint: str = typer.Option(None, "--endpoint", help="Controller URL (default "
                                 f"$VOPS_ENDPOINT or {DEFAULT_ENDPOINT})."),
    model: str = typer.Option(None, "--model", help="Model name (default: the first served)."),
    system: str = typer.Option(None, "--system", help="System prompt (default: Vicuna's)."),
    max_tokens: int = typer.Option(None, "--max-tokens", min=1, help="Reply length limit."),
    temperature: float = typer.Option(0.7, "--temperature", min=0.0, max=2.0),
    api_key_env: str = typer.Option("VOPS_API_KEY", "--api-key-env", metavar="VAR",
                                    help="Env var holding the API key."),
) -> None:
    """Chat with a served model; replies stream as they are generated."""
    from vicuna_ops.errors import ServeError, UserError
    from vicuna_ops.serve.client import ChatClient, chat_loop

    url = endpoint or os.environ.get("VOPS_ENDPOINT") or DEFAULT_ENDPOINT
    client = ChatClient(url, api_key=os.environ.get(api_key_env) or None, model=model)
    interactive = sys.stdin.isatty()
    try:  # before reading anything, terminal or pipe: a wrong or dead endpoint is exit 2
        client.check(retries=STARTUP_RETRIES)
    except ServeError as exc:
        client.close()
        raise UserError(exc.message, hint=exc.hint) from exc

    def read(prompt: str) -> str:
        if interactive:
            return input(prompt)
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        if interactive:
            sys.stderr.write(f"chatting with {client.pick_model()} at {client.base} "
                             "(/reset, /exit)\n")
        chat_loop(client, read, write, system=system, max_tokens=max_tokens,
                  temperature=temperature)
    finally:
        client.close()


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
