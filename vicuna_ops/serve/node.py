"""The serving node processes, ``controller`` and ``worker``: their flags and their start.

    python -m vicuna_ops.serve.node worker --controller-url URL --backend stub ...
    vops serve worker ...            (the same parser; what the SkyPilot tasks run)

A worker's start is on the critical path of every recovery (a preempted worker is replaced
by a fresh process), so this module imports nothing the node does not need: no Typer, no
Rich, no command groups (``vops`` itself costs ~0.2 s of imports before a flag is parsed).
``--local`` starts its children through ``python -m vicuna_ops.serve.node``.

Secrets come from the environment only: the worker token from ``VOPS_WORKER_TOKEN``, API
keys from ``VOPS_API_KEYS`` (or the variable ``--api-key-env`` names), never from a flag.
Exit codes: 0 after a drain (or ``--signal-exit-code``), 2 for a mistake (one line, e.g. a
port that cannot be bound), 1 for anything else.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vicuna_ops.errors import UserError, VopsError

WORKER_TOKEN_ENV = "VOPS_WORKER_TOKEN"
API_KEYS_ENV = "VOPS_API_KEYS"


class _Parser(argparse.ArgumentParser):
    """argparse with a ``UserError`` (one line, exit 2) instead of usage text."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"vops serve {self.prog.split()[-1]}: {message}",
                        hint=f"see `vops serve {self.prog.split()[-1]} --help`")


def _controller_parser() -> _Parser:
    p = _Parser(prog="controller", description="Run the controller.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--registry", type=Path, default=None, help="SQLite registry file.")
    p.add_argument("--heartbeat-interval", type=float, default=2.0)
    p.add_argument("--api-key-env", default=None)
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)
    p.add_argument("--advertise-url", default=None)
    p.add_argument("--bucket", default=None)
    p.add_argument("--name", default=None)
    p.add_argument("--wait-for-worker", type=float, default=5.0)
    p.add_argument("--signal-exit-code", type=int, default=0)
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--model-name", dest="model_names", action="append", default=None,
                   help="A model the deployment serves (a request for it is a 503, not a "
                   "404, while no worker is up); default $VOPS_MODEL_NAME.")
    return p


def _worker_parser() -> _Parser:
    p = _Parser(prog="vops serve worker", description=(
        "Serve one model and join a running controller (local or cloud) as one of its "
        f"workers. Needs ${WORKER_TOKEN_ENV}: the controller's worker token. SIGTERM drains: "
        "no new requests, in-flight ones finish, the worker leaves the registry, exit 0."))
    hide = argparse.SUPPRESS
    p.add_argument("--controller-url", default=None, metavar="URL",
                   help="The controller, e.g. http://10.0.0.5:8000 (or find it with --bucket "
                   "and --name).")
    p.add_argument("--model", default=None, metavar="PATH_OR_URI",
                   help="HF model folder or bucket URI (e.g. s3://b/runs/r1/final).")
    p.add_argument("--model-name", default=None, metavar="NAME",
                   help="The name clients ask for (default: the run or folder name).")
    p.add_argument("--backend", default="transformers",
                   help="transformers, vllm, or stub (fixed tokens, no model).")
    p.add_argument("--host", default=None, help="Listen address (default 127.0.0.1 when the "
                   "controller is on loopback, else 0.0.0.0).")
    p.add_argument("--port", type=int, default=8001, help="Listen port (default 8001).")
    p.add_argument("--advertise-url", default=None, metavar="URL",
                   help="How the controller reaches this worker (default: http://ADDRESS:PORT,"
                   " ADDRESS being --host, else $VOPS_PUBLIC_HOST, else this machine's "
                   "address on the interface that routes to the controller).")
    p.add_argument("--max-concurrency", type=int, default=4,
                   help="Generations run at once (default 4).")
    p.add_argument("--max-queue", type=int, default=64, help="Requests that may wait.")
    p.add_argument("--drain-grace", type=float, default=30.0,
                   help="Seconds in-flight requests get after SIGTERM (default 30).")
    p.add_argument("--bucket", default=None, help="With --name: read the controller's address "
                   "that a cloud deployment publishes there.")
    p.add_argument("--name", default=None, help="The deployment name (with --bucket).")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="Where bucket models are downloaded (default $VOPS_HOME/cache/models).")
    p.add_argument("--log-level", default="WARNING")
    p.add_argument("--heartbeat-interval", type=float, default=2.0, help=hide)
    p.add_argument("--worker-id", default=None, help=hide)
    p.add_argument("--stub-tokens", type=int, default=32, help=hide)
    p.add_argument("--stub-rate", type=float, default=100.0, help=hide)
    p.add_argument("--signal-exit-code", type=int, default=0, help=hide)
    p.add_argument("--aws-notice-url", default=os.environ.get("VOPS_AWS_NOTICE_URL"), help=hide)
    p.add_argument("--gcp-notice-url", default=os.environ.get("VOPS_GCP_NOTICE_URL"), help=hide)
    p.add_argument("--notice-poll-seconds", dest="notice_poll", type=float, default=5.0,
                   help=hide)
    return p


def check_range(flag: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise UserError(f"{flag} must be between {low} and {high}, not {value}")


def _secret(env: str, what: str) -> str:
    value = os.environ.get(env, "").strip()
    if not value:
        raise UserError(f"{what} is not set: export {env}",
                        hint="the same random secret on the controller and every worker")
    return value


def _api_keys(env: str | None) -> frozenset[str]:
    raw = os.environ.get(env or API_KEYS_ENV, "")
    return frozenset(key.strip() for key in raw.split(",") if key.strip())


def _vops_home() -> Path:
    # config.vops_home without importing config (and yaml with it); the registry and the
    # model cache create their own folders
    return Path(os.environ.get("VOPS_HOME") or Path.home() / ".vops").expanduser()


def run_controller(argv: list[str]) -> int:
    """Parse, check, serve until SIGTERM; the exit code."""
    from vicuna_ops import lifeline

    lifeline.hold()  # under `vops serve --local`: die with it
    args = _controller_parser().parse_args(argv)
    check_range("--port", args.port, 1, 65535)
    if args.heartbeat_interval <= 0:
        raise UserError("--heartbeat-interval must be positive")
    if args.name:
        from vicuna_ops.config import check_run_id

        check_run_id(args.name)
    model_names = args.model_names
    if model_names is None and os.environ.get("VOPS_MODEL_NAME"):
        model_names = [os.environ["VOPS_MODEL_NAME"]]
    advertise_url = args.advertise_url
    if (args.bucket or args.name) and advertise_url is None and args.host in ("0.0.0.0", "::"):
        from vicuna_ops.serve.discovery import public_host

        advertise_url = f"http://{public_host()}:{args.port}"
    from vicuna_ops.serve.controller import ControllerSettings, run_controller as serve
    from vicuna_ops.serve.proxy import ProxySettings
    from vicuna_ops.serve.server import configure_logging

    configure_logging(args.log_level.upper())
    path = args.registry or _vops_home() / "serve" / (args.name or "default") / "registry.db"
    settings = ControllerSettings(
        registry_path=path, worker_token=_secret(WORKER_TOKEN_ENV, "the worker token"),
        host=args.host, port=args.port, api_keys=_api_keys(args.api_key_env),
        heartbeat_interval=args.heartbeat_interval, max_body_bytes=args.max_body_bytes,
        proxy=ProxySettings(wait_for_worker=args.wait_for_worker,
                            down_for=max(3 * args.heartbeat_interval, 1.0)),
        advertise_url=advertise_url or f"http://{args.host}:{args.port}", bucket=args.bucket,
        name=args.name, signal_exit_code=args.signal_exit_code,
        models=frozenset(model_names or ()))
    return serve(settings)


def run_worker(argv: list[str]) -> int:
    """Parse, check, load the model, serve until drained; the exit code."""
    from vicuna_ops import lifeline

    lifeline.hold()  # under `vops serve --local`: die with it (and take its children)
    args = _worker_parser().parse_args(argv)
    check_range("--port", args.port, 1, 65535)
    check_range("--max-concurrency", args.max_concurrency, 1, 4096)
    if not args.controller_url and not (args.bucket and args.name):
        raise UserError("a worker needs to find its controller",
                        hint="pass --controller-url, or --bucket and --name")
    from vicuna_ops.serve import advertise

    controller_url = (advertise.check_url("--controller-url", args.controller_url)
                      if args.controller_url else None)
    host = args.host or advertise.default_host(controller_url)
    advertise_url = (advertise.check_url("--advertise-url", args.advertise_url)
                     if args.advertise_url else
                     advertise.advertised_url(host, args.port, controller_url))
    from vicuna_ops.serve.server import configure_logging
    from vicuna_ops.serve.worker import WorkerSettings, run_worker as serve

    configure_logging(args.log_level.upper())
    extra = {"worker_id": args.worker_id} if args.worker_id else {}
    settings = WorkerSettings(
        worker_token=_secret(WORKER_TOKEN_ENV, "the worker token"), backend=args.backend,
        model=args.model, model_name=args.model_name, host=host, port=args.port,
        advertise_url=advertise_url, controller_url=controller_url,
        bucket=args.bucket, name=args.name, max_concurrency=args.max_concurrency,
        max_queue=args.max_queue, heartbeat_interval=args.heartbeat_interval,
        drain_grace=args.drain_grace,
        cache_dir=args.cache_dir or _vops_home() / "cache" / "models",
        stub_tokens=args.stub_tokens, stub_rate=args.stub_rate,
        signal_exit_code=args.signal_exit_code, aws_notice_url=args.aws_notice_url,
        gcp_notice_url=args.gcp_notice_url, notice_poll=args.notice_poll, **extra)
    return serve(settings)


ROLES = {"controller": run_controller, "worker": run_worker}


def main(argv: list[str] | None = None) -> int:
    """``python -m vicuna_ops.serve.node ROLE ...``: errors as one line, like ``vops``."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ROLES:
        sys.stderr.write("error: usage: python -m vicuna_ops.serve.node controller|worker "
                         "[FLAGS]\n")
        return 2
    try:
        return ROLES[argv[0]](argv[1:])
    except VopsError as exc:
        if os.environ.get("VOPS_DEBUG") == "1":
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"error: {exc.one_line()}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
