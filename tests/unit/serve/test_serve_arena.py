"""The Arena without a browser: who fights whom, the durable votes table, the ratings, and the
controller's Arena and page routes in process (Starlette's TestClient, no worker behind)."""

from __future__ import annotations

import random
import sqlite3

import pytest
from starlette.testclient import TestClient

from vicuna_ops.serve.arena import (
    ArenaConflict,
    ArenaStore,
    Contestant,
    battles_for_rating,
    pick_contestants,
)
from vicuna_ops.serve.arena_report import summarize
from vicuna_ops.serve.controller import ControllerSettings, create_app
from vicuna_ops.serve.proxy import ProxySettings
from vicuna_ops.template import SYSTEM_PROMPT

TOKEN = "worker-secret"
WORKER = {"worker_id": "w1", "url": "http://127.0.0.1:9", "models": ["m"],
          "max_concurrency": 2}


# --- pairing -------------------------------------------------------------------------------


def test_two_models_fight_as_themselves_at_the_same_settings_in_random_seats():
    seen = set()
    for seed in range(40):
        a, b = pick_contestants(["x", "y", "z"], random.Random(seed))
        assert a.model != b.model and a.label == a.model and b.label == b.model
        assert a.settings == b.settings and a.settings["temperature"] == 0.7
        seen.add((a.model, b.model))
    assert len(seen) == 6  # every pair, in both seat orders


def test_one_model_fights_itself_at_two_settings():
    orders = set()
    for seed in range(20):
        a, b = pick_contestants(["only"], random.Random(seed))
        assert a.model == b.model == "only" and a.settings != b.settings
        assert {a.label, b.label} == {"only [t=0.2]", "only [t=1]"}
        orders.add(a.label)
    assert len(orders) == 2  # the settings change seats too


def test_no_model_no_battle():
    with pytest.raises(ValueError):
        pick_contestants([], random.Random(0))


# --- the store -----------------------------------------------------------------------------


def _pair() -> tuple[Contestant, Contestant]:
    settings = {"temperature": 0.7, "top_p": 1.0, "max_tokens": 64}
    return Contestant("x", settings, "x"), Contestant("y", dict(settings), "y")


def test_a_vote_needs_both_replies_is_final_and_survives_a_reopen(tmp_path):
    store = ArenaStore(tmp_path / "arena.db")
    battle = store.create("prompt?", SYSTEM_PROMPT, *_pair())
    with pytest.raises(ArenaConflict, match="both answers"):
        store.vote(battle.battle_id, "a")
    store.record_reply(battle.battle_id, "a", "answer A", stopped=False)
    store.record_reply(battle.battle_id, "a", "a second try", stopped=True)  # first one stays
    with pytest.raises(ArenaConflict):
        store.vote(battle.battle_id, "b")
    store.record_reply(battle.battle_id, "b", "answer B (cut)", stopped=True)
    voted = store.vote(battle.battle_id, "bothbad")
    assert voted.reveal()["a"]["model"] == "x" and voted.outcome == "bothbad"
    with pytest.raises(ArenaConflict, match="vote already"):
        store.vote(battle.battle_id, "a")
    with pytest.raises(KeyError):
        store.vote("0" * 24, "a")
    store.close()

    reopened = ArenaStore(tmp_path / "arena.db")
    [vote] = list(reopened.votes())
    assert (vote["prompt"], vote["reply_a"], vote["reply_b"]) == (
        "prompt?", "answer A", "answer B (cut)")
    assert (vote["stopped_a"], vote["stopped_b"]) == (False, True)
    assert vote["settings_a"]["max_tokens"] == 64 and vote["system"] == SYSTEM_PROMPT
    assert battles_for_rating([vote]) == [("x", "y", "bothbad")]
    reopened.close()


def test_a_seat_name_from_a_client_never_reaches_sql(tmp_path):
    store = ArenaStore(tmp_path / "arena.db")
    battle = store.create("p", SYSTEM_PROMPT, *_pair())
    with pytest.raises(KeyError):
        store.record_reply(battle.battle_id, "a = 'x'; --", "text", stopped=False)
    store.close()


# --- ratings -------------------------------------------------------------------------------


def _votes_from_strengths(strengths: dict[str, float], n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    names = sorted(strengths)
    votes = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        p_a = 1 / (1 + 10 ** ((strengths[b] - strengths[a]) / 400))
        roll = rng.random()
        outcome = "tie" if roll < 0.1 else "bothbad" if roll < 0.15 else (
            "a" if rng.random() < p_a else "b")
        votes.append({"label_a": a, "label_b": b, "outcome": outcome})
    return votes


def test_votes_from_known_strengths_recover_the_order_with_intervals():
    votes = _votes_from_strengths({"weak": 800, "mid": 1000, "strong": 1200}, 600, seed=3)
    summary = summarize(votes, rounds=200, seed=0)
    assert list(summary["models"]) == ["strong", "mid", "weak"]
    strong = summary["models"]["strong"]
    assert strong["ci95"][0] < strong["rating"] < strong["ci95"][1]
    assert summary["models"]["strong"]["ci95"][0] > summary["models"]["weak"]["ci95"][1]
    counts = summary["outcomes"]
    assert sum(counts.values()) == summary["votes"] == 600 and counts["bothbad"] > 0
    for m in summary["models"].values():  # each vote counted once per side
        assert m["wins"] + m["losses"] + m["ties"] + m["both_bad"] == m["battles"]
    assert sum(m["battles"] for m in summary["models"].values()) == 1200


def test_the_same_votes_give_the_same_numbers():
    votes = _votes_from_strengths({"p": 1000, "q": 1050}, 80, seed=1)
    assert summarize(votes, rounds=100) == summarize(votes, rounds=100)
    assert summarize([], rounds=10)["models"] == {}


# --- the controller's routes ---------------------------------------------------------------


@pytest.fixture()
def make(tmp_path):
    def make(**kw):
        settings = ControllerSettings(
            registry_path=tmp_path / "registry.db", worker_token=TOKEN,
            proxy=ProxySettings(wait_for_worker=0.2, connect_timeout=0.5), **kw)
        return TestClient(create_app(settings))
    return make


def _register(client) -> None:
    reply = client.post("/vops/workers/register", json=WORKER,
                        headers={"authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 200


def test_pages_are_served_with_a_self_only_policy(make):
    with make() as client:
        for path in ("/", "/arena", "/static/chat.js", "/static/style.css"):
            reply = client.get(path)
            assert reply.status_code == 200, path
            assert "default-src 'self'" in reply.headers["content-security-policy"]
        assert "text/html" in client.get("/").headers["content-type"]
        assert 'src="/static/arena.js"' in client.get("/arena").text
        for path in ("/static/nope.js", "/static/index.html", "/static/..%2Fcontroller.py"):
            reply = client.get(path)
            assert reply.status_code == 404 and "error" in reply.json(), path
        config = client.get("/ui/config").json()
        assert config == {"system_prompt": SYSTEM_PROMPT, "api_key_required": False}


def test_nothing_in_the_pages_points_outside_the_machine():
    from vicuna_ops.serve.webpages import STATIC_DIR

    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        for marker in ("http://", "https://", "//cdn", "@import", "url("):
            assert marker not in text, f"{path.name} has {marker!r}"


def test_a_battle_hides_the_names_until_the_vote(make, tmp_path):
    with make() as client:
        assert client.post("/arena/battles", json={"prompt": "hi"}).status_code == 503
        _register(client)
        reply = client.post("/arena/battles", json={"prompt": "hi"})
        assert reply.status_code == 200 and "m" not in reply.text.replace('"seats"', "")
        battle_id = reply.json()["battle_id"]
        early = client.post("/arena/votes", json={"battle_id": battle_id, "outcome": "a"})
        assert early.status_code == 409 and early.json()["error"]["code"] == "vote_refused"
        # the worker is not there: the seat's stream fails before its first byte, and the
        # seat can be asked again (it is not left marked as streaming)
        for _ in range(2):
            seat = client.post(f"/arena/battles/{battle_id}/a")
            assert seat.status_code == 503 and seat.json()["error"]["code"] == "no_worker"
        assert client.post(f"/arena/battles/{battle_id}/c").status_code == 404
        assert client.post(f"/arena/battles/{'0' * 24}/a").status_code == 404
    with sqlite3.connect(tmp_path / "arena.db") as db:  # beside the registry
        [(prompt, model_a, model_b, outcome)] = db.execute(
            "SELECT prompt, model_a, model_b, outcome FROM battles")
    assert (prompt, model_a, model_b, outcome) == ("hi", "m", "m", None)


@pytest.mark.parametrize("body, status, param", [
    (b"not json", 400, None),
    (b'{"battle_id": "' + b"a" * 24 + b'", "outcome": "maybe"}', 422, "outcome"),
    (b'{"battle_id": "../../etc", "outcome": "a"}', 422, "battle_id"),
    (b'{"battle_id": "' + b"a" * 24 + b'", "outcome": "a", "extra": 1}', 422, "extra"),
    (b'{"outcome": "a"}', 422, "battle_id"),
    (b'[1, 2]', 422, "body"),
    (b'{"battle_id": "' + b"a" * 24 + b'", "outcome": "a"}', 404, "battle_id"),
])
def test_a_malformed_vote_gets_an_openai_shaped_4xx(make, body, status, param):
    with make() as client:
        reply = client.post("/arena/votes", content=body,
                            headers={"content-type": "application/json"})
        assert reply.status_code == status
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert error["param"] == param


def test_a_battle_prompt_is_validated(make):
    with make() as client:
        _register(client)
        assert client.post("/arena/battles", json={"prompt": ""}).json()["error"]["param"] \
            == "prompt"
        assert client.post("/arena/battles", json={"prompt": "x", "model": "m"}).status_code \
            == 422
        huge = client.post("/arena/battles", content=b"x" * (2 << 20))
        assert huge.status_code == 413


def test_api_keys_guard_the_arena_but_not_the_pages(make):
    with make(api_keys=frozenset({"k1"})) as client:
        _register(client)
        assert client.get("/").status_code == 200
        assert client.get("/ui/config").json()["api_key_required"] is True
        for path, body in (("/arena/battles", {"prompt": "hi"}),
                           ("/arena/votes", {"battle_id": "a" * 24, "outcome": "a"}),
                           (f"/arena/battles/{'a' * 24}/a", None)):
            reply = client.post(path, json=body)
            assert reply.status_code == 401, path
            assert reply.json()["error"]["code"] == "invalid_api_key"
        ok = client.post("/arena/battles", json={"prompt": "hi"},
                         headers={"authorization": "Bearer k1"})
        assert ok.status_code == 200
