"""Preemption notices: SIGTERM/SIGINT and the AWS/GCP metadata endpoints (a local fake)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vicuna_ops.train.args import AWS_NOTICE_URL, GCP_NOTICE_URL
from vicuna_ops.train.preemption import PreemptionWatcher, StopFlag, notice_urls


class FakeMetadata:
    """AWS IMDSv2 (token + instance-action) and GCP (preempted) on one loopback server."""

    def __init__(self) -> None:
        self.notice = False
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.token = "tok-123"


@pytest.fixture
def metadata() -> Iterator[tuple[FakeMetadata, str]]:
    state = FakeMetadata()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, code: int, body: str) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def do_PUT(self) -> None:
            state.requests.append(("PUT", self.path, dict(self.headers)))
            if self.path == "/latest/api/token":
                self._answer(200, state.token)
            else:
                self._answer(404, "")

        def do_GET(self) -> None:
            state.requests.append(("GET", self.path, dict(self.headers)))
            if self.path == "/latest/meta-data/spot/instance-action":
                if self.headers.get("X-aws-ec2-metadata-token") != state.token:
                    self._answer(401, "")
                elif state.notice:
                    self._answer(200, '{"action": "terminate", "time": "2030-01-01T00:02:00Z"}')
                else:
                    self._answer(404, "")
            elif self.path == "/computeMetadata/v1/instance/preempted":
                if self.headers.get("Metadata-Flavor") != "Google":
                    self._answer(403, "")
                else:
                    self._answer(200, "TRUE" if state.notice else "FALSE")
            else:
                self._answer(404, "")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def wait_for(flag: StopFlag, seconds: float = 5.0) -> bool:
    return flag.event.wait(seconds)


def test_aws_notice_with_imdsv2_token(metadata):
    state, base = metadata
    flag = StopFlag()
    # the token URL defaults to /latest/api/token on the notice URL's server
    watcher = PreemptionWatcher(flag, aws_url=f"{base}/latest/meta-data/spot/instance-action",
                                poll_s=0.05)
    watcher.start()
    try:
        time.sleep(0.3)
        assert not flag.is_set()  # 404: no notice yet
        state.notice = True
        assert wait_for(flag)
    finally:
        watcher.stop()
    request = flag.request_made
    assert request.reason == "preempted" and "terminate at 2030-01-01T00:02:00Z" in request.source
    puts = [r for r in state.requests if r[0] == "PUT"]
    assert len(puts) == 1  # the token is cached across polls
    headers = {k.lower(): v for k, v in puts[0][2].items()}
    assert headers.get("x-aws-ec2-metadata-token-ttl-seconds") == "21600", puts


def test_gcp_notice_with_metadata_flavor(metadata):
    state, base = metadata
    flag = StopFlag()
    watcher = PreemptionWatcher(flag, gcp_url=f"{base}/computeMetadata/v1/instance/preempted",
                                poll_s=0.05)
    watcher.start()
    try:
        time.sleep(0.3)
        assert not flag.is_set()
        state.notice = True
        assert wait_for(flag)
    finally:
        watcher.stop()
    assert flag.request_made.source == "gcp preempted: TRUE"


def test_unreachable_endpoint_is_logged_once_and_polling_goes_on():
    flag, logs = StopFlag(), []
    watcher = PreemptionWatcher(flag, gcp_url="http://127.0.0.1:9/preempted", poll_s=0.02,
                                log=logs.append)
    watcher.start()
    time.sleep(0.3)
    watcher.stop()
    assert not flag.is_set()
    assert len([line for line in logs if "cannot poll the gcp" in line]) == 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_sets_the_flag_and_handlers_are_restored(signum):
    before = signal.getsignal(signum)
    flag = StopFlag()
    watcher = PreemptionWatcher(flag)
    watcher.start()
    try:
        os.kill(os.getpid(), signum)
        assert wait_for(flag, 2)
    finally:
        watcher.stop()
    assert flag.request_made.source == signal.Signals(signum).name
    assert signal.getsignal(signum) == before


def test_imdsv1_endpoint_is_asked_without_a_token_and_not_retried(metadata):
    state, base = metadata
    state.token = None  # no token endpoint: PUT answers 404
    from vicuna_ops.train.preemption import aws_notice

    token: list[str | None] = [None]
    url = f"{base}/latest/meta-data/spot/instance-action"
    assert aws_notice(url, f"{base}/no-token-here", token) is None  # 401 without a token
    assert token == [""]
    aws_notice(url, f"{base}/no-token-here", token)
    assert len([r for r in state.requests if r[0] == "PUT"]) == 1


def test_first_request_wins():
    flag = StopFlag()
    assert flag.request("budget", "budget: $5")
    assert not flag.request("preempted", "SIGTERM")
    assert flag.request_made.reason == "budget"


def test_endpoints_follow_the_cloud_unless_configured():
    assert notice_urls("aws", None, None) == (AWS_NOTICE_URL, None)
    assert notice_urls("gcp", None, None) == (None, GCP_NOTICE_URL)
    assert notice_urls("local", None, None) == (None, None)
    assert notice_urls("aws", "", "http://fake/p") == (None, "http://fake/p")
