"""Where an eval folder keeps things:

    DIR/questions.jsonl               the questions answered (the judge reads them here)
    DIR/answers/NAME.jsonl            one model's answers (``/`` in NAME becomes ``--``)
    DIR/judgments/pairwise.jsonl      pairwise judgments, one per order and turn
    DIR/judgments/single.jsonl        1-10 ratings, one per answer and turn
"""

from __future__ import annotations

from pathlib import Path

from vicuna_ops.errors import UserError
from vicuna_ops.eval import questions as qmod
from vicuna_ops.eval.questions import Question

MODES = ("pairwise", "single")


def answers_dir(out: Path) -> Path:
    return out / "answers"


def answers_path(out: Path, model: str) -> Path:
    return answers_dir(out) / f"{model.replace('/', '--')}.jsonl"


def judgments_path(out: Path, mode: str) -> Path:
    return out / "judgments" / f"{mode}.jsonl"


def questions_path(out: Path) -> Path:
    return out / "questions.jsonl"


def load_questions(out: Path) -> list[Question]:
    path = questions_path(out)
    if not path.is_file():
        raise UserError(f"{out} holds no answered questions ({path.name} is missing)",
                        hint="run `vops eval answer --out DIR ...` first")
    return qmod.parse_lines(path.read_text(encoding="utf-8").splitlines(), str(path))


def save_questions(out: Path, questions: list[Question]) -> None:
    """Record the questions; a folder already holding a different question under the same
    id is refused (its answers and judgments would not match)."""
    path = questions_path(out)
    known: dict[str, Question] = {}
    if path.is_file():
        known = {q.qid: q for q in load_questions(out)}
    for question in questions:
        old = known.get(question.qid)
        if old is not None and old != question:
            raise UserError(f"question {question.question_id!r} differs from the one already "
                            f"answered in {out}",
                            hint="use another --out folder for another question set")
    new = [q for q in questions if q.qid not in known]
    if not new:
        return
    out.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        for question in new:
            handle.write(qmod.to_line(question) + "\n")


def load_answers(out: Path) -> dict[str, dict[str, dict]]:
    """model -> question id -> answer record, for every answers file of the folder."""
    from vicuna_ops.eval.store import RecordStore

    found: dict[str, dict[str, dict]] = {}
    folder = answers_dir(out)
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        for record in RecordStore(path):
            found.setdefault(str(record.get("model") or path.stem), {})[record["key"]] = record
    return found
