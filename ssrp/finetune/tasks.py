"""The task files, in LXMERT's formats (airsplay/lxmert ``src/tasks/*_data.py``).

A task directory holds one JSON list per split and, for VQA and GQA, the answer vocabulary::

    DATA/<split>.json                 VQA: {"question_id", "img_id", "sent", "label": {answer: score}, ...}
                                      GQA: the same shape ("question_id" a string)
                                      NLVR2: {"identifier", "img0", "img1", "sent", "label": 0 | 1, "uid"}
    DATA/trainval_ans2label.json      VQA, GQA: {answer: index}
    DATA/trainval_label2ans.json      VQA, GQA: [answer, ...] (optional; checked against ans2label)

``label`` is absent in test splits. Every problem names the file and the record.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)

ANS2LABEL = "trainval_ans2label.json"
LABEL2ANS = "trainval_label2ans.json"


class TaskDataError(ValueError):
    """A task file that does not have LXMERT's format."""


@dataclass(frozen=True)
class Example:
    """One question (VQA, GQA) or one statement about an image pair (NLVR2)."""

    uid: int | str  # VQA question_id (int), GQA question_id (str), NLVR2 identifier
    sent: str
    images: tuple[str, ...]  # (img_id,) or (img0, img1)
    label: dict[str, float] | int | None = None  # answer scores, the NLVR2 label, or None (test splits)
    answer_type: str = ""  # VQA's answer_type (yes/no, number, other) when given


def split_path(data_dir: str, split: str) -> str:
    return os.path.join(data_dir, f"{split}.json")


def _read_json(path: str):
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such task file")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise TaskDataError(f"{path}: not valid JSON ({err})") from None


def load_split(task: str, data_dir: str, split: str) -> list[Example]:
    """The examples of ``DATA/<split>.json``."""
    path = split_path(data_dir, split)
    rows = _read_json(path)
    if not isinstance(rows, list):
        raise TaskDataError(f"{path}: expected a JSON list of examples, got {type(rows).__name__}")
    parse = _nlvr2_example if task == "nlvr2" else _qa_example
    examples = [parse(row, f"{path} record {i}") for i, row in enumerate(rows)]
    seen: set = set()
    for i, ex in enumerate(examples):
        if ex.uid in seen:
            raise TaskDataError(f"{path} record {i}: id {ex.uid!r} appears twice")
        seen.add(ex.uid)
    return examples


def _field(row: dict, name: str, kinds: tuple[type, ...], where: str):
    if not isinstance(row, dict):
        raise TaskDataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if name not in row:
        raise TaskDataError(f"{where}: missing field {name!r}")
    value = row[name]
    if not isinstance(value, kinds) or isinstance(value, bool):
        raise TaskDataError(f"{where}: field {name!r} is {type(value).__name__}, expected {kinds[0].__name__}")
    return value


def _qa_example(row: dict, where: str) -> Example:
    qid = _field(row, "question_id", (int, str), where)
    img = _field(row, "img_id", (str, int), where)
    sent = _field(row, "sent", (str,), where)
    label = None
    if "label" in row:
        label = row["label"]
        if not isinstance(label, dict) or not all(
            isinstance(a, str) and isinstance(s, (int, float)) and not isinstance(s, bool) for a, s in label.items()
        ):
            raise TaskDataError(f"{where}: field 'label' must map answers to scores, got {label!r}")
        label = {a: float(s) for a, s in label.items()}
    return Example(uid=qid, sent=sent, images=(str(img),), label=label, answer_type=str(row.get("answer_type", "")))


def _nlvr2_example(row: dict, where: str) -> Example:
    ident = _field(row, "identifier", (str,), where)
    images = (_field(row, "img0", (str,), where), _field(row, "img1", (str,), where))
    sent = _field(row, "sent", (str,), where)
    label = None
    if "label" in row:
        label = row["label"]
        if label in ("True", "False"):  # the raw NLVR2 files' spelling
            label = int(label == "True")
        if label not in (0, 1) or isinstance(label, bool):
            raise TaskDataError(f"{where}: field 'label' must be 0 or 1, got {row['label']!r}")
    return Example(uid=ident, sent=sent, images=images, label=label)


def load_answers(data_dir: str) -> list[str]:
    """The answer vocabulary (label index -> answer) from ``trainval_ans2label.json`` (and, when present,
    ``trainval_label2ans.json``, which must agree with it)."""
    path = os.path.join(data_dir, ANS2LABEL)
    ans2label = _read_json(path)
    if not isinstance(ans2label, dict) or not ans2label:
        raise TaskDataError(f"{path}: expected a non-empty JSON object answer -> index")
    n = len(ans2label)
    answers: list[str | None] = [None] * n
    for ans, idx in ans2label.items():
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < n or answers[idx] is not None:
            raise TaskDataError(f"{path}: answer {ans!r} has index {idx!r}; indices must be 0..{n - 1}, each once")
        answers[idx] = ans
    other = os.path.join(data_dir, LABEL2ANS)
    if os.path.exists(other) and _read_json(other) != answers:
        raise TaskDataError(f"{other} disagrees with {path}: they must list the same answers in the same order")
    return answers  # type: ignore[return-value]


def check_labels(examples: list[Example], answers: list[str], where: str) -> int:
    """Answers outside the vocabulary are dropped from the targets (LXMERT's GQA does so); returns how many
    (answer, example) pairs were dropped, after one warning."""
    known = set(answers)
    dropped = [(ex.uid, a) for ex in examples if isinstance(ex.label, dict) for a in ex.label if a not in known]
    if dropped:
        logger.warning("%s: %d answers are not in the answer vocabulary and are left out of the targets "
                       "(first: question %r, answer %r)", where, len(dropped), *dropped[0])
    return len(dropped)
