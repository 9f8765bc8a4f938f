"""Arena battles and votes: who fights whom, and a durable record of every vote.

A battle is one prompt answered by two anonymous contestants, seat A and seat B. With two or
more models served, the contestants are two different models (a random pair, random seats)
at the same sampling settings; with one model served, it is that model at two sampling
settings (:data:`ONE_MODEL_SETTINGS`), so a single deployment can still ask "which settings
do people prefer?". A contestant's rating label is the model name, plus its settings when
the battle set one model against itself (``stub [t=0.2]``).

Battles live in SQLite (``arena.db``, WAL) beside the controller's registry: the battle row
is written when it is created, each reply when its stream ends (or is stopped), the vote
last. A vote is final: a battle takes one, and only once both replies are recorded.
``vops arena report`` reads the same file (:func:`battles_for_rating`).
"""

from __future__ import annotations

import json
import random
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from vicuna_ops.errors import ServeError

DB_NAME = "arena.db"
OUTCOMES = ("a", "b", "tie", "bothbad")
SIDES = ("a", "b")
TWO_MODEL_SETTINGS = {"temperature": 0.7, "top_p": 1.0}  # Chatbot Arena's default
ONE_MODEL_SETTINGS = ({"temperature": 0.2, "top_p": 1.0}, {"temperature": 1.0, "top_p": 1.0})
MAX_TOKENS = 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS battles (
    battle_id   TEXT PRIMARY KEY,
    created_at  REAL NOT NULL,
    prompt      TEXT NOT NULL,
    system      TEXT NOT NULL,
    model_a     TEXT NOT NULL,
    model_b     TEXT NOT NULL,
    settings_a  TEXT NOT NULL,      -- JSON: temperature, top_p, max_tokens
    settings_b  TEXT NOT NULL,
    label_a     TEXT NOT NULL,      -- what the ratings call each contestant
    label_b     TEXT NOT NULL,
    reply_a     TEXT,               -- NULL until its stream ended
    reply_b     TEXT,
    stopped_a   INTEGER NOT NULL DEFAULT 0,  -- the user stopped it (or it failed) early
    stopped_b   INTEGER NOT NULL DEFAULT 0,
    outcome     TEXT,               -- a | b | tie | bothbad; NULL until voted
    voted_at    REAL
);
CREATE INDEX IF NOT EXISTS battles_voted ON battles (voted_at);
"""


class ArenaConflict(Exception):
    """A battle asked to do what its state does not allow (vote twice, stream twice)."""


@dataclass(frozen=True)
class Contestant:
    model: str
    settings: dict
    label: str

    def public(self) -> dict:
        return {"model": self.model, "label": self.label, "settings": dict(self.settings)}


@dataclass(frozen=True)
class Battle:
    battle_id: str
    prompt: str
    system: str
    a: Contestant
    b: Contestant
    replies: dict  # side -> text or None
    outcome: str | None

    def seat(self, side: str) -> Contestant:
        return self.a if side == "a" else self.b

    def reveal(self) -> dict:
        return {"a": self.a.public(), "b": self.b.public()}


def settings_label(settings: dict) -> str:
    text = f"t={settings['temperature']:g}"
    if settings.get("top_p", 1.0) != 1.0:
        text += f", top_p={settings['top_p']:g}"
    return text


def pick_contestants(models: list[str], rng: random.Random) -> tuple[Contestant, Contestant]:
    """Two seats: two distinct models if there are, else one model at two settings."""
    models = sorted(set(models))
    if not models:
        raise ValueError("no model is served")
    if len(models) >= 2:
        first, second = rng.sample(models, 2)
        settings = {**TWO_MODEL_SETTINGS, "max_tokens": MAX_TOKENS}
        return (Contestant(first, settings, first), Contestant(second, dict(settings), second))
    model = models[0]
    seats = list(ONE_MODEL_SETTINGS)
    rng.shuffle(seats)
    return tuple(Contestant(model, {**s, "max_tokens": MAX_TOKENS},
                            f"{model} [{settings_label(s)}]") for s in seats)  # type: ignore


class ArenaStore:
    """The battles table; every change is committed before it is answered."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")  # a vote is a person's time
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise ServeError(f"cannot open the arena votes database {self.path}: {exc}",
                             hint="check the folder beside the registry is writable") from exc

    def close(self) -> None:
        self._db.close()

    def create(self, prompt: str, system: str, a: Contestant, b: Contestant) -> Battle:
        battle_id = secrets.token_hex(12)
        self._db.execute(
            "INSERT INTO battles (battle_id, created_at, prompt, system, model_a, model_b,"
            " settings_a, settings_b, label_a, label_b) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (battle_id, time.time(), prompt, system, a.model, b.model,
             json.dumps(a.settings), json.dumps(b.settings), a.label, b.label))
        return Battle(battle_id, prompt, system, a, b, {"a": None, "b": None}, None)

    def get(self, battle_id: str) -> Battle | None:
        row = self._db.execute(
            "SELECT battle_id, prompt, system, model_a, model_b, settings_a, settings_b,"
            " label_a, label_b, reply_a, reply_b, outcome FROM battles WHERE battle_id = ?",
            (battle_id,)).fetchone()
        if row is None:
            return None
        (bid, prompt, system, model_a, model_b, set_a, set_b, label_a, label_b, reply_a,
         reply_b, outcome) = row
        return Battle(bid, prompt, system, Contestant(model_a, json.loads(set_a), label_a),
                      Contestant(model_b, json.loads(set_b), label_b),
                      {"a": reply_a, "b": reply_b}, outcome)

    def record_reply(self, battle_id: str, side: str, text: str, *, stopped: bool) -> None:
        column = {"a": "a", "b": "b"}[side]  # never interpolate anything a client sent
        self._db.execute(f"UPDATE battles SET reply_{column} = ?, stopped_{column} = ?"
                         f" WHERE battle_id = ? AND reply_{column} IS NULL",
                         (text, int(stopped), battle_id))

    def vote(self, battle_id: str, outcome: str) -> Battle:
        """Record the vote; ``KeyError`` for an unknown battle, ``ArenaConflict`` if it was
        voted on already or a reply is still streaming."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}")
        battle = self.get(battle_id)
        if battle is None:
            raise KeyError(battle_id)
        if battle.outcome is not None:
            raise ArenaConflict("this battle has a vote already")
        if None in battle.replies.values():
            raise ArenaConflict("both answers must finish (or be stopped) before the vote")
        updated = self._db.execute(
            "UPDATE battles SET outcome = ?, voted_at = ? WHERE battle_id = ?"
            " AND outcome IS NULL", (outcome, time.time(), battle_id)).rowcount
        if not updated:  # a concurrent vote won
            raise ArenaConflict("this battle has a vote already")
        return self.get(battle_id)  # type: ignore[return-value]

    def votes(self) -> Iterator[dict]:
        """Every voted battle, oldest first."""
        cursor = self._db.execute(
            "SELECT battle_id, created_at, voted_at, prompt, system, model_a, model_b,"
            " settings_a, settings_b, label_a, label_b, reply_a, reply_b, stopped_a,"
            " stopped_b, outcome FROM battles WHERE outcome IS NOT NULL ORDER BY voted_at")
        names = [d[0] for d in cursor.description]
        for row in cursor:
            record = dict(zip(names, row))
            record["settings_a"] = json.loads(record["settings_a"])
            record["settings_b"] = json.loads(record["settings_b"])
            record["stopped_a"], record["stopped_b"] = (bool(record["stopped_a"]),
                                                         bool(record["stopped_b"]))
            yield record


def battles_for_rating(votes: list[dict]) -> list[tuple[str, str, str]]:
    """Votes as ``(contestant_a, contestant_b, outcome)`` for ``ratings.bradley_terry``."""
    return [(v["label_a"], v["label_b"], v["outcome"]) for v in votes]
