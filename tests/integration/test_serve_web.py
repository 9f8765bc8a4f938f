"""The chat page and the Arena in a real browser: headless Chromium (Debian's ``chromium``)
driven by Playwright, against a real ``vops serve --local --backend stub``.

Screenshots land in ``<tmp>/screenshots/`` and, when ``VOPS_TEST_ARTIFACTS`` is set, in
``$VOPS_TEST_ARTIFACTS/<test name>/`` too. Missing Chromium or Playwright fails the test with
the install step (the suite runs whole; nothing is skipped).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from vicuna_ops.lifeline import die_with_parent
from vicuna_ops.template import SYSTEM_PROMPT

pytestmark = pytest.mark.timeout(180)
VOPS = [sys.executable, "-m", "vicuna_ops"]
EXPECTED = "".join(f" t{i}" for i in range(32))  # the stub backend's reply
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
# every text a reply bubble has shown, to tell a streamed reply from one painted at once
WATCH_BUBBLES = """
window.__seen = [];
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver(() => {
    document.querySelectorAll(".bubble").forEach((b) => window.__seen.push(b.textContent));
  }).observe(document.body, { subtree: true, childList: true, characterData: true });
});
"""


def _chromium() -> str:
    for path in ("/usr/bin/chromium", shutil.which("chromium") or ""):
        if path and os.access(path, os.X_OK):
            return path
    pytest.fail("Chromium is missing: install Debian's browser with `apt-get install -y "
                "chromium` (.ci/run does)", pytrace=False)


def _playwright():
    """(sync_playwright, expect); the pages' CSP forbids eval, so waits use locators."""
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing: `pip install playwright` (in the `test` extra); "
                    "do not run `playwright install`, the tests use Debian's chromium",
                    pytrace=False)
    return sync_playwright, expect


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Shots:
    """Screenshots to the test's tmp dir and, if asked, to $VOPS_TEST_ARTIFACTS."""

    def __init__(self, tmp_path: Path, test_name: str) -> None:
        self.folders = [tmp_path / "screenshots"]
        if os.environ.get("VOPS_TEST_ARTIFACTS"):
            self.folders.append(Path(os.environ["VOPS_TEST_ARTIFACTS"]) / test_name)
        for folder in self.folders:
            folder.mkdir(parents=True, exist_ok=True)

    def take(self, page, name: str) -> None:
        png = page.screenshot(full_page=True)
        for folder in self.folders:
            (folder / f"{name}.png").write_bytes(png)


@pytest.fixture
def shots(tmp_path, request) -> Shots:
    return Shots(tmp_path, request.node.name)


@pytest.fixture
def serving(request):
    """``vops serve --local --backend stub`` on a free port: (endpoint, state folder, env)."""
    started: list[subprocess.Popen] = []

    def start(env_extra: dict | None = None):
        port = _port()
        env = {**os.environ, **(env_extra or {})}
        process = subprocess.Popen(
            [*VOPS, "serve", "--local", "--backend", "stub", "--port", str(port), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            preexec_fn=die_with_parent())
        started.append(process)
        line = process.stdout.readline()
        if not line:
            process.wait(timeout=10)
            pytest.fail(f"vops serve --local exited: {process.stderr.read()}")
        endpoint = json.loads(line)["endpoint"]
        state = Path(os.environ["VOPS_HOME"]) / "serve" / f"local-{port}"
        return endpoint, state, port

    def add_worker(endpoint: str, state: Path, *args: str) -> None:
        env = {**os.environ, "VOPS_WORKER_TOKEN": (state / "worker.token").read_text()}
        started.insert(0, subprocess.Popen(
            [sys.executable, "-m", "vicuna_ops.serve.node", "worker", "--controller-url",
             endpoint, "--backend", "stub", "--port", str(_port()), *args],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent()))

    start.add_worker = add_worker
    yield start
    for process in started:  # extra workers first, then the supervisors
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def _browser_page(playwright, endpoint: str, outside: list[str]):
    browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
    page = browser.new_page(viewport={"width": 1280, "height": 820})
    page.set_default_timeout(20_000)
    page.add_init_script(WATCH_BUBBLES)
    page.on("request", lambda r: None if r.url.startswith(endpoint + "/")
            or r.url.startswith("data:") else outside.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return browser, page, errors


def _votes(state: Path) -> list[dict]:
    with sqlite3.connect(state / "arena.db") as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM battles WHERE outcome IS NOT NULL")]


def test_chat_streams_and_the_arena_stores_a_vote(serving, shots):
    endpoint, state, port = serving()
    outside: list[str] = []
    chat_bodies: list[dict] = []
    sync_playwright, expect = _playwright()
    with sync_playwright() as playwright:
        browser, page, errors = _browser_page(playwright, endpoint, outside)
        page.on("request", lambda r: chat_bodies.append(r.post_data_json)
                if r.url.endswith("/v1/chat/completions") else None)
        page.goto(endpoint + "/")
        expect(page.locator("#model")).to_have_value("stub")
        assert SYSTEM_PROMPT in page.inner_text("#system-line")
        shots.take(page, "1-chat-empty")

        page.fill("#prompt", "Hello! Who are you?")
        page.keyboard.press("Enter")
        reply = page.locator(".msg.assistant .bubble").first
        expect(reply).to_have_text(EXPECTED.strip())
        expect(page.locator("#send")).to_be_visible()
        final = EXPECTED.strip()  # the page trims a reply's leading space
        partial = {t for t in page.evaluate("window.__seen")
                   if t and t != final and final.startswith(t)}
        assert len(partial) >= 3, f"the reply was not streamed: {partial}"

        page.fill("#prompt", "Tell me more, please.")
        page.click("#send")
        expect(page.locator(".msg.assistant .bubble").nth(1)).to_have_text(EXPECTED.strip())
        expect(page.locator("#send")).to_be_visible()
        # the second turn carries the first one, under the Vicuna system prompt
        assert [m["role"] for m in chat_bodies[1]["messages"]] == [
            "system", "user", "assistant", "user"]
        assert chat_bodies[1]["messages"][0]["content"] == SYSTEM_PROMPT
        assert chat_bodies[1]["messages"][2]["content"] == EXPECTED
        assert chat_bodies[1]["stream"] is True and chat_bodies[1]["model"] == "stub"
        shots.take(page, "2-chat-two-turns")

        page.goto(endpoint + "/arena")
        page.fill("#arena-prompt", "Write a haiku about spot instances.")
        shots.take(page, "3-arena-empty")
        page.keyboard.press("Enter")
        expect(page.locator("#vote-a")).to_be_enabled()
        for seat in ("a", "b"):
            assert page.inner_text(f"#reply-{seat}").strip() == EXPECTED.strip()
            assert page.inner_text(f"#name-{seat}") == f"Model {seat.upper()}"  # anonymous
        shots.take(page, "4-arena-answered")
        page.click("#vote-a")
        expect(page.locator("#name-a")).to_have_text(re.compile(r"^stub \["))
        names = {page.inner_text("#name-a"), page.inner_text("#name-b")}
        assert names == {"stub [t=0.2]", "stub [t=1]"}  # one model at two settings
        assert "voted: A is better" in page.inner_text("#status")
        shots.take(page, "5-arena-voted")
        assert errors == [], errors
        browser.close()
    assert outside == [], f"the pages loaded something from elsewhere: {outside}"

    [vote] = _votes(state)
    assert vote["outcome"] == "a" and vote["prompt"] == "Write a haiku about spot instances."
    assert vote["reply_a"] == EXPECTED and vote["reply_b"] == EXPECTED
    assert vote["model_a"] == vote["model_b"] == "stub"
    assert vote["label_a"] in names and vote["label_b"] in names - {vote["label_a"]}
    assert json.loads(vote["settings_a"])["temperature"] in (0.2, 1.0)
    assert vote["system"] == SYSTEM_PROMPT and not vote["stopped_a"] and not vote["stopped_b"]

    report = subprocess.run([*VOPS, "arena", "report", "--port", str(port), "--json"],
                            capture_output=True, text=True, timeout=60)
    assert report.returncode == 0, report.stderr
    ratings = json.loads(report.stdout)
    assert ratings["votes"] == 1
    winner, loser = ratings["models"]  # best first
    assert winner == vote["label_a"] and loser == vote["label_b"]
    assert ratings["models"][winner]["rating"] > ratings["models"][loser]["rating"]


def test_api_key_two_models_and_the_stop_buttons(serving, shots):
    endpoint, state, _ = serving({"VOPS_API_KEYS": "page-key-1"})
    serving.add_worker(endpoint, state, "--model-name", "slow", "--stub-tokens", "400",
                       "--stub-rate", "15")
    headers = {"authorization": "Bearer page-key-1"}
    for _ in range(200):
        listed = httpx.get(endpoint + "/healthz", timeout=5).json()
        if "slow" in listed["models"]:
            break
        import time
        time.sleep(0.1)
    else:
        pytest.fail("the second worker did not register")
    assert httpx.get(endpoint + "/v1/models", timeout=5).status_code == 401
    outside: list[str] = []
    sync_playwright, expect = _playwright()
    with sync_playwright() as playwright:
        browser, page, errors = _browser_page(playwright, endpoint, outside)
        page.goto(endpoint + "/")
        page.wait_for_selector("#key-banner", state="visible")
        shots.take(page, "1-key-asked")
        page.fill("#api-key", "wrong-key")
        page.click("#key-form button")
        page.wait_for_selector("#key-banner", state="visible")  # refused: asked again
        assert "invalid API key" in page.inner_text("#key-note")
        page.fill("#api-key", "page-key-1")
        page.click("#key-form button")
        expect(page.locator("#model option")).to_have_count(2)
        page.select_option("#model", "slow")

        page.fill("#prompt", "Count slowly.")
        page.keyboard.press("Enter")
        expect(page.locator(".msg.assistant .bubble").first).to_contain_text("t4")
        assert page.is_visible("#stop") and not page.is_visible("#send")
        shots.take(page, "2-chat-streaming")
        page.click("#stop")
        page.wait_for_selector(".msg.assistant.stopped")
        stopped_text = page.inner_text(".msg.assistant .bubble")
        assert "t4" in stopped_text and "t399" not in stopped_text
        assert "Stopped" in page.inner_text("#status") and page.is_visible("#send")
        shots.take(page, "3-chat-stopped")

        page.goto(endpoint + "/arena")  # the key is remembered
        page.fill("#arena-prompt", "Which is faster?")
        page.keyboard.press("Enter")
        for seat in ("a", "b"):
            expect(page.locator(f"#reply-{seat}")).to_contain_text("t4")
        page.click("#arena-stop")
        expect(page.locator("#vote-b")).to_be_enabled()
        page.click("#vote-b")
        expect(page.locator("#seat-a")).to_have_class(re.compile("revealed"))
        names = {page.inner_text("#name-a"), page.inner_text("#name-b")}
        assert names == {"stub", "slow"}  # two models: each plays as itself
        assert "winner" in page.get_attribute("#seat-b", "class")
        shots.take(page, "4-arena-two-models-voted")
        assert errors == [], errors
        browser.close()
    assert outside == [], outside

    [vote] = _votes(state)
    assert vote["outcome"] == "b" and {vote["model_a"], vote["model_b"]} == {"stub", "slow"}
    slow = "a" if vote["model_a"] == "slow" else "b"
    fast = "b" if slow == "a" else "a"
    assert vote[f"stopped_{slow}"] == 1 and "t399" not in vote[f"reply_{slow}"]
    assert vote[f"reply_{fast}"] == EXPECTED and vote[f"stopped_{fast}"] == 0
    assert json.loads(vote["settings_a"])["temperature"] == 0.7
    assert httpx.post(endpoint + "/arena/votes", json={"battle_id": vote["battle_id"],
                      "outcome": "a"}, headers=headers, timeout=5).status_code == 409
