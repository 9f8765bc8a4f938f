"""Stop requests: a preemption notice (SIGTERM, the AWS or GCP metadata endpoint) or the budget.

Nothing here stops training by itself: it raises a ``StopFlag``, and the trainer callback
checkpoints at the next optimizer-step boundary, waits for the upload and exits. AWS gives a
two-minute warning (``spot/instance-action`` answers 200 with JSON instead of 404); GCP about
30 s (``instance/preempted`` turns TRUE) and then sends an ACPI shutdown, which reaches us as
SIGTERM. Both URLs are configurable so tests point them at a local fake server.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from vicuna_ops.train.args import AWS_NOTICE_URL, GCP_NOTICE_URL

Log = Callable[[str], None]
_TIMEOUT_S = 2.0
_AWS_TOKEN_TTL_S = 21600


@dataclass(frozen=True)
class StopRequest:
    reason: str  # "preempted" or "budget"
    source: str  # what said so, for the log and the segment record
    at: float


class StopFlag:
    """Set once by any thread or signal handler; the first request wins."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entrant: a signal handler may interrupt a holder
        self._request: StopRequest | None = None
        self.event = threading.Event()

    def request(self, reason: str, source: str) -> bool:
        with self._lock:
            if self._request is not None:
                return False
            self._request = StopRequest(reason, source, time.time())
        self.event.set()
        return True

    @property
    def request_made(self) -> StopRequest | None:
        return self._request

    def is_set(self) -> bool:
        return self.event.is_set()


def aws_notice(url: str, token_url: str | None, token: list[str | None]) -> str | None:
    """The AWS instance-action notice ('terminate at ...') or None.

    ``token`` caches IMDSv2's session token: None = not fetched yet, "" = the endpoint gives
    none (IMDSv1), so ask without one and do not retry.
    """
    headers = {}
    if token_url and token[0] is None:
        try:
            request = urllib.request.Request(
                token_url, method="PUT",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(_AWS_TOKEN_TTL_S)})
            with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
                token[0] = response.read().decode().strip()
        except (urllib.error.URLError, OSError):
            token[0] = ""  # IMDSv1-only endpoint: ask without a token
    if token[0]:
        headers["X-aws-ec2-metadata-token"] = token[0]
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=_TIMEOUT_S) as response:
            body = response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            token[0] = None  # expired token: fetch a new one next time
        if exc.code in (401, 404):
            return None
        raise
    try:
        action = json.loads(body)
        return f"aws instance-action: {action.get('action', '?')} at {action.get('time', '?')}"
    except (ValueError, AttributeError):
        return f"aws instance-action: {body.strip()[:80]}"


def gcp_notice(url: str) -> str | None:
    request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        body = response.read().decode(errors="replace").strip()
    return "gcp preempted: TRUE" if body.upper() == "TRUE" else None


def aws_token_url_for(notice_url: str) -> str:
    """IMDSv2's token endpoint on the same server as the instance-action URL."""
    parts = urllib.parse.urlsplit(notice_url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/latest/api/token", "", ""))


def notice_urls(cloud: str, aws_url: str | None, gcp_url: str | None
                ) -> tuple[str | None, str | None]:
    """Which endpoints to poll: an explicit URL ('' = off), else the node's own cloud's."""
    aws = aws_url if aws_url is not None else (AWS_NOTICE_URL if cloud == "aws" else None)
    gcp = gcp_url if gcp_url is not None else (GCP_NOTICE_URL if cloud == "gcp" else None)
    return aws or None, gcp or None


class PreemptionWatcher:
    """SIGTERM/SIGINT handlers plus one polling thread per configured metadata endpoint.

    SIGINT counts as a notice too: Ctrl-C on ``vops train --local`` reaches the training
    process as well as the CLI, and should checkpoint rather than kill.
    """

    def __init__(self, flag: StopFlag, *, aws_url: str | None = None,
                 aws_token_url: str | None = None, gcp_url: str | None = None,
                 poll_s: float = 5.0, log: Log = lambda _m: None) -> None:
        self._flag, self._log, self._poll_s = flag, log, poll_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._previous_handlers: dict[int, object] = {}
        token: list[str | None] = [None]
        self._probes: list[tuple[str, Callable[[], str | None]]] = []
        if aws_url:
            token_url = aws_token_url or aws_token_url_for(aws_url)
            self._probes.append(("aws", lambda: aws_notice(aws_url, token_url, token)))
        if gcp_url:
            self._probes.append(("gcp", lambda: gcp_notice(gcp_url)))

    @property
    def watching(self) -> list[str]:
        return [name for name, _probe in self._probes]

    def start(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        for name, probe in self._probes:
            thread = threading.Thread(target=self._poll, args=(name, probe),
                                      name=f"vops-notice-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=_TIMEOUT_S + 1)
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Only set the flag: the training loop checkpoints at its next step boundary.
        self._flag.request("preempted", signal.Signals(signum).name)

    def _poll(self, name: str, probe: Callable[[], str | None]) -> None:
        failing = False
        while not self._stop.is_set() and not self._flag.is_set():
            try:
                notice = probe()
                if failing:
                    self._log(f"{name} metadata endpoint answers again")
                failing = False
            except (urllib.error.URLError, OSError, ValueError) as exc:
                if not failing:  # once per outage, not once per poll
                    self._log(f"cannot poll the {name} preemption endpoint ({exc}); retrying")
                failing, notice = True, None
            if notice:
                if self._flag.request("preempted", notice):
                    self._log(f"preemption notice: {notice}")
                return
            self._stop.wait(self._poll_s)
