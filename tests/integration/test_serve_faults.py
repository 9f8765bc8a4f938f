"""Fault tolerance with real processes: workers killed under load, controller restarts,
drains, heartbeats. Stub workers stream a known text, so every answer is checked word for
word (a resumed stream that lost or doubled a token fails).

What "loses no request" means here:

* a worker dies (SIGKILL) while another is up: every request, streamed or not, gets its
  complete, correct answer; no client-side retry is involved;
* the controller restarts gracefully (SIGTERM, what SkyPilot and ``vops serve --local``
  send): in-flight answers finish, new connections are refused until the new controller is
  up; a client that retries connection errors (the ``openai`` client does, by default) gets
  every answer;
* the controller crashes (SIGKILL): the requests in flight at that instant are cut and the
  client sees a connection error, never a silently truncated answer; non-streamed ones are
  retried by the client and answered; every request from one heartbeat interval after the
  restart on succeeds, with no worker re-registration needed.
"""

from __future__ import annotations

import signal
import socket
import threading
import time

import httpx
import openai
import pytest

from vicuna_ops.serve.local import LocalPlan, LocalServing

pytestmark = pytest.mark.timeout(180)

TOKENS = 30
EXPECTED = "".join(f" t{i}" for i in range(TOKENS))
INTERVAL = 0.5


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def make_serving(tmp_path):
    started = []

    def make(workers=2, interval=INTERVAL, rate=100.0, **extra):
        plan = LocalPlan(model=None, backend="stub", port=_port(), workers=workers,
                         heartbeat_interval=interval, state_dir=tmp_path / f"s{len(started)}",
                         stub_tokens=TOKENS, stub_rate=rate, max_concurrency=64,
                         start_timeout=60, grace=5, **extra)
        serving = LocalServing(plan)
        started.append(serving)
        serving.start()
        return serving

    yield make
    for serving in started:
        serving.stop()


class Load:
    """Clients in threads sending chat requests (half streamed) until stopped."""

    def __init__(self, url: str, clients: int = 12, retries: int = 0) -> None:
        self.url, self.retries = url, retries
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.results: list[tuple[float, float, bool, object]] = []  # start, end, stream, outcome
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(clients)]

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)

    def _run(self, index: int) -> None:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key="x",
                               max_retries=self.retries, timeout=30)
        stream = index % 2 == 0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                outcome = _ask(client, stream)
            except Exception as exc:  # recorded, judged by the test
                outcome = exc
            with self.lock:
                self.results.append((started, time.monotonic(), stream, outcome))

    def failures(self, since: float = 0.0) -> list:
        return [r for r in self.results if r[0] >= since and r[3] != EXPECTED]


def _ask(client, stream: bool) -> str:
    messages = [{"role": "user", "content": "count"}]
    if not stream:
        return client.chat.completions.create(model="stub", messages=messages
                                              ).choices[0].message.content
    chunks = client.chat.completions.create(model="stub", messages=messages, stream=True)
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _workers(serving) -> list[dict]:
    return httpx.get(serving.url + "/vops/workers", timeout=5,
                     headers={"authorization": f"Bearer {serving.token}"}).json()["workers"]


def _metric(serving, name: str) -> float:
    total = 0.0
    for line in httpx.get(serving.url + "/metrics").text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _wait(condition, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def test_killing_a_worker_under_load_loses_no_request(make_serving):
    serving = make_serving(workers=2)
    victim = serving.workers[0]
    with Load(serving.url, clients=12) as load:
        time.sleep(1.5)
        victim.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        time.sleep(2.0)
    assert len(load.results) > 40
    assert load.failures() == []
    assert any(start < killed < end for start, end, _s, _o in load.results)
    # streams cut mid-way were continued on the other worker, word for word
    assert _metric(serving, "vops_stream_resumes_total") >= 1
    assert len(_workers(serving)) == 1


def test_a_dead_worker_is_dropped_within_three_heartbeat_intervals(make_serving):
    serving = make_serving(workers=2)
    time.sleep(INTERVAL)  # let both heartbeat at least once
    serving.workers[1].process.send_signal(signal.SIGKILL)
    took = _wait(lambda: len(_workers(serving)) == 1, 10, "the worker to be dropped")
    assert took <= 3 * INTERVAL + 0.2
    assert _metric(serving, "vops_workers_dropped_total") == 1


def test_a_draining_worker_finishes_its_streams_and_exits_cleanly(make_serving):
    serving = make_serving(workers=2, rate=20.0)  # 1.5 s per answer
    leaving = serving.workers[0]
    with Load(serving.url, clients=8) as load:
        time.sleep(0.8)
        leaving.process.send_signal(signal.SIGTERM)
        assert leaving.process.wait(timeout=10) == 0
        exited = time.monotonic()
        time.sleep(0.5)
    assert load.failures() == []
    assert any(start < exited < end for start, end, _s, _o in load.results)
    # the drain was announced, so nothing needed a mid-stream rescue
    assert _metric(serving, "vops_stream_resumes_total") == 0


def test_controller_graceful_restart_under_load_loses_none(make_serving):
    serving = make_serving(workers=2)
    with Load(serving.url, clients=8, retries=5) as load:
        time.sleep(1.0)
        serving.controller.process.send_signal(signal.SIGTERM)
        assert serving.controller.process.wait(timeout=15) == 0
        serving.restart(serving.controller)
        _wait(lambda: _healthy(serving), 20, "the controller to come back")
        time.sleep(1.5)
    assert load.failures() == []
    assert len(load.results) > 20


def test_controller_crash_under_load_loses_none_after_one_interval(make_serving):
    serving = make_serving(workers=2)
    with Load(serving.url, clients=8, retries=5) as load:
        time.sleep(1.0)
        serving.controller.process.send_signal(signal.SIGKILL)
        crashed = time.monotonic()
        serving.controller.process.wait(timeout=5)
        serving.restart(serving.controller)
        _wait(lambda: _healthy(serving), 20, "the controller to come back")
        back = time.monotonic()
        time.sleep(4.0)  # clients sit out the openai client's retry backoff first
    # only requests in flight at the crash may fail, and only streamed ones, loudly
    for start, end, stream, outcome in load.failures():
        assert stream and start < crashed, (start, end, outcome)
        assert isinstance(outcome, openai.APIConnectionError), outcome
    assert load.failures(since=back + INTERVAL) == []
    assert len([r for r in load.results if r[0] >= back + INTERVAL]) > 5


def test_a_restarted_controller_routes_to_known_workers_at_once(make_serving):
    serving = make_serving(workers=2, interval=4.0)  # heartbeats far apart
    serving.controller.process.send_signal(signal.SIGKILL)
    serving.controller.process.wait(timeout=5)
    serving.restart(serving.controller)
    _wait(lambda: _healthy(serving), 20, "the controller to come back")
    started = time.monotonic()
    client = openai.OpenAI(base_url=serving.url + "/v1", api_key="x", max_retries=0)
    assert _ask(client, stream=True) == EXPECTED
    assert time.monotonic() - started < 2.0
    assert len(_workers(serving)) == 2  # from the SQLite registry, not from heartbeats
    assert _metric(serving, "vops_worker_registrations_total") == 0


def test_a_controller_that_lost_its_registry_gets_workers_back(make_serving):
    serving = make_serving(workers=2)
    serving.controller.process.send_signal(signal.SIGKILL)
    serving.controller.process.wait(timeout=5)
    for path in serving.registry_path.parent.glob("registry.db*"):
        path.unlink()
    serving.restart(serving.controller)
    _wait(lambda: _healthy(serving), 20, "the controller to come back")
    took = _wait(lambda: len(_workers(serving)) == 2, 10, "the workers to register again")
    assert took <= 2 * INTERVAL + 1.0  # heartbeat answered "unknown" -> register at once
    client = openai.OpenAI(base_url=serving.url + "/v1", api_key="x", max_retries=0)
    assert _ask(client, stream=False) == EXPECTED


def test_a_worker_started_before_the_controller_registers(make_serving, tmp_path):
    serving = make_serving(workers=1)
    serving.controller.process.send_signal(signal.SIGKILL)
    serving.controller.process.wait(timeout=5)
    late = serving.add_worker()  # nobody listens at the controller's address yet
    time.sleep(1.0)
    assert late.process.poll() is None
    serving.restart(serving.controller)
    _wait(lambda: _healthy(serving) and len(_workers(serving)) == 2, 20,
          "the late worker to register")


def _healthy(serving) -> bool:
    try:
        return httpx.get(serving.url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_client_that_goes_away_frees_the_worker(make_serving):
    serving = make_serving(workers=1, rate=10.0)  # 3 s per answer
    worker_url = serving.worker_url(serving.workers[0])
    with httpx.stream("POST", serving.url + "/v1/completions", timeout=10,
                      json={"model": "stub", "prompt": "x", "max_tokens": 30,
                            "stream": True}) as response:
        for line in response.iter_lines():
            if '"text":" t0"' in line:
                break  # one token, then hang up
    took = _wait(lambda: httpx.get(worker_url + "/healthz").json()["in_flight"] == 0, 5,
                 "the worker to notice the client left")
    assert took < 2.5  # well before the answer would have finished
    assert _workers(serving)[0]["in_flight"] == 0  # the controller's lease is back too


def test_a_worker_killed_before_its_first_byte_is_retried(make_serving):
    """SIGSTOP leaves the port open but silent; after SIGKILL the connection breaks before
    any byte, and the request is sent to the other worker."""
    serving = make_serving(workers=2)
    frozen = serving.workers[0].process
    frozen.send_signal(signal.SIGSTOP)
    results = []
    def ask():
        client = openai.OpenAI(base_url=serving.url + "/v1", api_key="x", max_retries=0,
                               timeout=30)
        results.append(_ask(client, stream=True))
    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # some requests now wait on the frozen worker
    frozen.send_signal(signal.SIGKILL)
    for thread in threads:
        thread.join(timeout=30)
    assert results == [EXPECTED] * 4
    assert _metric(serving, "vops_retries_total") >= 1


def test_requests_on_a_hung_worker_move_when_it_is_dropped(make_serving):
    """A frozen worker (SIGSTOP: port open, no answers, no heartbeats) holds requests only
    until the registry drops it; then they are retried or resumed elsewhere."""
    serving = make_serving(workers=2)
    frozen = serving.workers[0].process
    try:
        with Load(serving.url, clients=8) as load:
            time.sleep(1.0)
            frozen.send_signal(signal.SIGSTOP)
            stopped = time.monotonic()
            time.sleep(3.0)
        assert load.failures() == []
        stuck = [end - start for start, end, _s, _o in load.results if start < stopped < end]
        assert stuck and max(stuck) < 3 * INTERVAL + 2.0  # not the 300 s read timeout
        assert _metric(serving, 'vops_retries_total{reason="dropped"}') >= 1
    finally:
        frozen.send_signal(signal.SIGCONT)


def test_a_spot_notice_drains_the_worker(make_serving):
    """A fake GCP metadata server says ``preempted: TRUE``; the worker drains (its streams
    finish, new requests go to the other worker) and exits with the code SkyPilot's
    ``recover_on_exit_codes`` relaunches on."""
    import http.server

    class Metadata(http.server.BaseHTTPRequestHandler):
        preempted = False

        def do_GET(self):  # noqa: N802 - http.server's naming
            body = b"TRUE" if Metadata.preempted else b"FALSE"
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    notice_url = f"http://127.0.0.1:{server.server_address[1]}/preempted"
    try:
        serving = make_serving(workers=1, rate=20.0)
        spot = serving.add_worker((  # only this one watches the fake metadata server
            "--gcp-notice-url", notice_url, "--notice-poll-seconds", "0.2",
            "--signal-exit-code", "75"))
        _wait(lambda: len(_workers(serving)) == 2, 20, "the spot worker to register")
        with Load(serving.url, clients=6) as load:
            time.sleep(1.0)
            Metadata.preempted = True
            assert spot.process.wait(timeout=15) == 75
            time.sleep(0.5)
        assert load.failures() == []
        assert _metric(serving, "vops_stream_resumes_total") == 0
    finally:
        server.shutdown()
