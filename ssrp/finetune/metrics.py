"""The tasks' official metrics and submission files.

* VQA (LXMERT's ``VQAEvaluator``): an answer earns the score its question's label gives it, the VQA soft
  accuracy min(#humans who gave it / 3, 1) as LXMERT's files store it; 0 for any other answer. Reported
  overall and per ``answer_type`` (yes/no, number, other: Table 4's Binary / Number / Other) when the file has it.
* GQA (``GQAEvaluator``; the GQA challenge's accuracy): the same rule; GQA labels give the one answer score 1.
* NLVR2 (lil-lab/nlvr ``nlvr2/eval/metrics.py``): accuracy, and consistency: the fraction of sentences
  (identifiers with the image-pair field blanked) whose every example is right.

Submission files: VQA ``[{"question_id": int, "answer": str}]`` (JSON), GQA ``[{"questionId": str,
"prediction": str}]`` (JSON), NLVR2 ``identifier,True|False`` lines (CSV), as LXMERT's ``dump_result`` writes them.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict

from ssrp.fileutil import atomic_file
from ssrp.finetune.tasks import Example, TaskDataError

SUBMISSION_SUFFIX = {"vqa": ".json", "gqa": ".json", "nlvr2": ".csv"}


def score(task: str, examples: list[Example], predictions: dict) -> dict:
    """Metrics (in %) of ``predictions`` (uid -> answer, or 0/1 for NLVR2) over the labelled ``examples``;
    ``score`` is the task's headline metric. Every example needs a prediction."""
    labelled = [ex for ex in examples if ex.label is not None]
    if not labelled:
        raise ValueError("no labelled examples to score (a test split?)")
    missing = [ex.uid for ex in labelled if ex.uid not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} of {len(labelled)} examples have no prediction (first: {missing[0]!r})")
    if task == "nlvr2":
        return _nlvr2(labelled, predictions)
    return _qa(labelled, predictions)


def _qa(examples: list[Example], predictions: dict) -> dict:
    by_type: dict[str, list[float]] = defaultdict(list)
    total = 0.0
    for ex in examples:
        s = ex.label.get(predictions[ex.uid], 0.0)
        total += s
        if ex.answer_type:
            by_type[ex.answer_type].append(s)
    out = {"score": 100.0 * total / len(examples), "accuracy": 100.0 * total / len(examples), "examples": len(examples)}
    if by_type:
        out["by_answer_type"] = {t: 100.0 * sum(v) / len(v) for t, v in sorted(by_type.items())}
    return out


def sentence_key(identifier: str) -> str:
    """NLVR2's consistency group: the identifier with its third field (the image pair) blanked."""
    parts = identifier.split("-")
    if len(parts) >= 3:
        parts[2] = ""
    return "-".join(parts)


def _nlvr2(examples: list[Example], predictions: dict) -> dict:
    correct = 0
    consistent: dict[str, bool] = {}
    for ex in examples:
        right = int(predictions[ex.uid]) == ex.label
        correct += right
        key = sentence_key(str(ex.uid))
        consistent[key] = consistent.get(key, True) and right
    accuracy = 100.0 * correct / len(examples)
    return {"score": accuracy, "accuracy": accuracy, "consistency": 100.0 * sum(consistent.values()) / len(consistent),
            "examples": len(examples)}


# ------------------------------------------------------------------------------------------------
# Submission files


def default_name(split: str, task: str) -> str:
    """LXMERT's names: ``<split>_predict.json`` (VQA, GQA), ``<split>_predict.csv`` (NLVR2)."""
    return f"{split}_predict{SUBMISSION_SUFFIX[task]}"


def write_submission(task: str, examples: list[Example], predictions: dict, path: str) -> int:
    """Write the official submission file for ``examples`` in their order (atomically); returns the row count."""
    missing = [ex.uid for ex in examples if ex.uid not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} examples have no prediction (first {missing[0]!r}): a submission answers all")
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        if task == "nlvr2":
            for ex in examples:
                fh.write(f"{ex.uid},{'True' if int(predictions[ex.uid]) == 1 else 'False'}\n")
        elif task == "vqa":
            json.dump([{"question_id": ex.uid, "answer": predictions[ex.uid]} for ex in examples], fh, indent=1)
        else:
            json.dump([{"questionId": str(ex.uid), "prediction": predictions[ex.uid]} for ex in examples], fh, indent=1)
    return len(examples)


def read_submission(task: str, path: str) -> dict:
    """uid -> answer (NLVR2: uid -> 0/1) from a submission file; a malformed row is named."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such prediction file")
    if task == "nlvr2":
        return _read_csv(path)
    with open(path, encoding="utf-8") as fh:
        try:
            rows = json.load(fh)
        except json.JSONDecodeError as err:
            raise TaskDataError(f"{path}: not valid JSON ({err})") from None
    id_key, ans_key = ("question_id", "answer") if task == "vqa" else ("questionId", "prediction")
    if not isinstance(rows, list):
        raise TaskDataError(f"{path}: expected a JSON list of {{{id_key!r}, {ans_key!r}}} objects")
    out = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or id_key not in row or not isinstance(row.get(ans_key), str):
            raise TaskDataError(f"{path} row {i}: expected {{{id_key!r}: id, {ans_key!r}: answer}}, got {row!r}")
        out[row[id_key]] = row[ans_key]
    return out


def _read_csv(path: str) -> dict:
    out = {}
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if not line.strip():
                continue
            ident, sep, pred = line.strip().partition(",")
            if not sep or pred.lower() not in ("true", "false"):
                raise TaskDataError(f"{path} line {i + 1}: expected 'identifier,True|False', got {line.strip()!r}")
            out[ident] = int(pred.lower() == "true")
    return out


def match_ids(examples: list[Example], predictions: dict) -> dict:
    """Submission ids as the task file spells them (GQA submissions carry string ids; VQA's may too)."""
    by_text = {str(ex.uid): ex.uid for ex in examples}
    return {by_text.get(str(k), k): v for k, v in predictions.items()}
