"""``builtin:tiny-chat``: a small multi-turn conversation set generated in code.

The tiny recipe trains on it so the demo and the tests need no download and get the same
bytes on every machine. The conversations are short (they fit the tiny recipe's max_length
with the Vicuna system prompt, byte-level tokens) and regular enough that a 2-layer model's
loss visibly falls in 40 steps: arithmetic with a follow-up that refers to the previous
answer, word reversal, capitals, counting, upper-casing.
"""

from __future__ import annotations

import random
from collections.abc import Callable

BUILTIN_TINY_CHAT = "builtin:tiny-chat"
DEFAULT_SIZE = 512
DEFAULT_SEED = 1234

_WORDS = ("apple", "river", "cloud", "stone", "tiger", "piano", "lemon", "rocket", "garden",
          "mirror", "candle", "forest", "planet", "window", "bridge", "silver")
_CAPITALS = (("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"),
             ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Chile", "Santiago"),
             ("Canada", "Ottawa"), ("Norway", "Oslo"), ("Greece", "Athens"),
             ("Poland", "Warsaw"))
_PHRASES = ("good morning", "hello world", "spot gpus", "keep going", "well done", "big sky")

Message = dict[str, str]


def tiny_chat(size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED) -> list[dict[str, object]]:
    """``size`` ShareGPT-style records ``{"id", "conversations": [{"from", "value"}]}``."""
    rng = random.Random(seed)
    makers: list[Callable[[random.Random], list[Message]]] = [
        _arithmetic, _reverse, _capital, _count, _upper]
    records = []
    for index in range(size):
        turns = makers[index % len(makers)](rng)
        records.append({"id": f"tiny-{index:05d}", "conversations": turns})
    return records


def _turns(*pairs: tuple[str, str]) -> list[Message]:
    out: list[Message] = []
    for user, assistant in pairs:
        out += [{"from": "human", "value": user}, {"from": "gpt", "value": assistant}]
    return out


def _arithmetic(rng: random.Random) -> list[Message]:
    a, b, c = rng.randint(1, 49), rng.randint(1, 49), rng.randint(2, 9)
    first = (f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.")
    if rng.random() < 0.5:
        return _turns(first)
    return _turns(first, (f"Add {c} to that.", f"{a + b} plus {c} is {a + b + c}."))


def _reverse(rng: random.Random) -> list[Message]:
    word = rng.choice(_WORDS)
    return _turns((f"Reverse the word {word}.", f"{word} reversed is {word[::-1]}."))


def _capital(rng: random.Random) -> list[Message]:
    (country, city), (other, other_city) = rng.sample(_CAPITALS, 2)
    first = (f"What is the capital of {country}?", f"The capital of {country} is {city}.")
    if rng.random() < 0.5:
        return _turns(first)
    return _turns(first, (f"And of {other}?", f"The capital of {other} is {other_city}."))


def _count(rng: random.Random) -> list[Message]:
    start = rng.randint(1, 20)
    end = start + rng.randint(2, 5)
    return _turns((f"Count from {start} to {end}.",
                   ", ".join(str(n) for n in range(start, end + 1)) + "."))


def _upper(rng: random.Random) -> list[Message]:
    phrase = rng.choice(_PHRASES)
    return _turns((f"Say {phrase} in capital letters.", f"{phrase.upper()}!"))
