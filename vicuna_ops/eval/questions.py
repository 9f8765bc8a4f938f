"""Question sets: MT-bench-style JSONL, one question per line.

    {"question_id": 1, "category": "math", "turns": ["...", "..."], "reference": ["..."]}

``turns`` holds one or two user messages; ``reference`` (optional, one per turn or fewer) is
shown to the judge. ``builtin:vops-40`` is the set this project wrote (``data/vops-40.jsonl``).
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vicuna_ops.errors import UserError

BUILTIN_PREFIX = "builtin:"
_DATA = Path(__file__).resolve().parent / "data"

# MT-bench's sampling temperatures: deterministic where there is one right answer.
CATEGORY_TEMPERATURE = {
    "writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
    "reasoning": 0.0, "stem": 0.1, "humanities": 0.1,
}
DEFAULT_TEMPERATURE = 0.7  # a category vops does not know (a user's own)


class Question(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    question_id: int | str
    category: str = Field(min_length=1)
    turns: list[str] = Field(min_length=1, max_length=2)
    reference: list[str] | None = None

    @field_validator("turns")
    @classmethod
    def _non_empty_turns(cls, turns: list[str]) -> list[str]:
        if any(not t.strip() for t in turns):
            raise ValueError("a turn is empty")
        return turns

    @property
    def qid(self) -> str:
        """The id as a key: ``1`` and ``"1"`` are the same question."""
        return str(self.question_id)

    def reference_for(self, turn: int) -> str | None:
        """The reference answer for ``turn`` (1-based), if the question has one."""
        if self.reference and len(self.reference) >= turn:
            return self.reference[turn - 1]
        return None

    @property
    def temperature(self) -> float:
        return CATEGORY_TEMPERATURE.get(self.category.lower(), DEFAULT_TEMPERATURE)


def builtin_names() -> list[str]:
    return sorted(p.stem for p in _DATA.glob("*.jsonl"))


def resolve(spec: str) -> Path:
    """``builtin:NAME`` or a path -> the file to read."""
    if spec.startswith(BUILTIN_PREFIX):
        name = spec[len(BUILTIN_PREFIX):]
        path = _DATA / f"{name}.jsonl"
        if not path.is_file():
            raise UserError(f"no builtin question set {name!r}",
                            hint="builtin sets: " + ", ".join(BUILTIN_PREFIX + n
                                                              for n in builtin_names()))
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"question file {spec!r} does not exist",
                        hint="give a JSONL file, or builtin:vops-40")
    return path


def load(spec: str) -> list[Question]:
    """Every question of a file, in file order; a bad line is an error naming it."""
    path = resolve(spec)
    return parse_lines(path.read_text(encoding="utf-8").splitlines(), str(path))


def parse_lines(lines: list[str], source: str) -> list[Question]:
    questions: list[Question] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            question = Question.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{source}:{number}: not JSON ({exc.msg})",
                            hint="one question object per line") from exc
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"]) or "question"
            raise UserError(f"{source}:{number}: {where}: {error['msg']}",
                            hint="fields: question_id, category, turns (1-2 strings), "
                                 "optional reference (strings)") from exc
        if question.qid in seen:
            raise UserError(f"{source}:{number}: question_id {question.question_id!r} repeats",
                            hint="every question needs its own id")
        seen.add(question.qid)
        questions.append(question)
    if not questions:
        raise UserError(f"{source} holds no questions", hint="one JSON object per line")
    return questions


def to_line(question: Question) -> str:
    return json.dumps(question.model_dump(exclude_none=True), ensure_ascii=False)
