"""``ssrp finetune sample``: a tiny synthetic task set over a corpus's images, in exactly LXMERT's formats.

For the demo and the tests (no task data can be downloaded there). The answers are a property of each
image the model sees: an image's *main object* is the detector label of its most confident region, so a
model that reads the RoI features can learn them. It says nothing about quality on the real tasks.

* VQA: questions such as "what is the main object?" about each image; label {main: 1.0, runner-up: 0.3}
  (the runner-up: the most confident region with another label); ``img_id`` COCO-style
  (``COCO_train2014_000000000042``), ``question_id`` an int, ``answer_type`` "other".
* GQA: the same questions; label {main: 1.0}; ``img_id`` the decimal id, ``question_id`` a string.
* NLVR2: "both images show the same main object." about pairs of images; label 1 when their main objects
  agree (half the pairs, where the images allow it); ``img0``/``img1`` the images' file names without
  extension, identifiers ``split-set-pair-sentence``.

Images are split (seeded) 60/20/20 into training, validation and test images, so validation and test
questions are about images never trained on. Files: LXMERT's split names (VQA: train, nominival, minival,
test; GQA: train, valid, testdev, submit; NLVR2: train, valid, test), the test split without labels, and
``trainval_ans2label.json`` / ``trainval_label2ans.json`` for VQA and GQA.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np

from ssrp.corpus import IMAGE, CorpusReader, parse_key
from ssrp.finetune.tasks import ANS2LABEL, LABEL2ANS

QUESTIONS = (
    "what is the main object?",
    "what is in the picture?",
    "what does the image mostly show?",
    "which thing is the most visible?",
    "what is this?",
    "what object is shown here?",
)
STATEMENTS = (
    "both images show the same main object.",
    "the two pictures have the same kind of thing.",
    "the left and right images show the same object.",
)
# training files (two for VQA and GQA, as LXMERT trains on two), validation file, test file
SPLIT_NAMES = {
    "vqa": (("train", "nominival"), "minival", "test"),
    "gqa": (("train", "valid"), "testdev", "submit"),
    "nlvr2": (("train",), "valid", "test"),
}


def answer_name(label: int) -> str:
    return f"object{label}"


def image_facts(corpus: str) -> list[dict]:
    """Per raw image: id, file stem, main label and runner-up label (None when every region agrees)."""
    facts = []
    with CorpusReader(corpus) as reader:
        for key, rec in reader.items(IMAGE):
            if parse_key(key)[2] != "raw" or rec.num_boxes == 0:
                continue
            order = np.argsort(-np.asarray(rec.obj_conf), kind="stable")
            labels = [int(rec.obj_ids[i]) for i in order]
            runner = next((lab for lab in labels if lab != labels[0]), None)
            stem = os.path.splitext(rec.file_name)[0] if rec.file_name else str(rec.image_id)
            facts.append({"id": rec.image_id, "stem": stem, "main": labels[0], "runner": runner})
    if len(facts) < 5:
        raise ValueError(f"{corpus}: {len(facts)} images with detections; a task sample needs at least 5")
    return sorted(facts, key=lambda f: f["id"])


def split_images(facts: list[dict], seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    order = np.random.default_rng(seed).permutation(len(facts))
    n_valid = n_test = max(1, round(0.2 * len(facts)))
    picked = [facts[i] for i in order]
    return picked[n_valid + n_test :], picked[:n_valid], picked[n_valid : n_valid + n_test]


def qa_examples(task: str, images: list[dict], per_image: int, labelled: bool) -> list[dict]:
    rows = []
    for f in images:
        for k in range(per_image):
            row = {"sent": QUESTIONS[k % len(QUESTIONS)]}
            if task == "vqa":
                row.update(question_id=f["id"] * 1000 + k, img_id=f"COCO_train2014_{f['id']:012d}",
                           answer_type="other", question_type="what is")
            else:
                row.update(question_id=f"{f['id']:06d}{k:02d}", img_id=str(f["id"]))
            if labelled:
                label = {answer_name(f["main"]): 1.0}
                if task == "vqa" and f["runner"] is not None:
                    label[answer_name(f["runner"])] = 0.3
                row["label"] = label
            rows.append(row)
    return rows


def nlvr2_examples(split: str, images: list[dict], per_image: int, labelled: bool, rng: np.random.Generator) -> list[dict]:
    rows = []
    for n in range(len(images) * per_image):
        a = images[n % len(images)]
        same = [f for f in images if f["main"] == a["main"] and f is not a]
        other = [f for f in images if f["main"] != a["main"]] or [f for f in images if f is not a] or images
        pool = same if (n % 2 == 0 and same) else other
        b = pool[int(rng.integers(len(pool)))]
        s = int(rng.integers(len(STATEMENTS)))
        row = {"identifier": f"{split}-{n}-0-{s}", "img0": a["stem"], "img1": b["stem"], "sent": STATEMENTS[s],
               "uid": f"nlvr2_{split}_{n}"}
        if labelled:
            row["label"] = int(a["main"] == b["main"])
        rows.append(row)
    return rows


def write_task_sample(task: str, corpus: str, out: str, *, per_image: int = 6, seed: int = 0) -> dict:
    """Write the task's split files (and answer vocabulary) into ``out``; returns a summary."""
    if task not in SPLIT_NAMES:
        raise ValueError(f"task={task!r}: use one of {tuple(SPLIT_NAMES)}")
    if per_image < 1:
        raise ValueError(f"per_image={per_image} must be >= 1")
    facts = image_facts(corpus)
    train, valid, test = split_images(facts, seed)
    (train_a, train_b), valid_name, test_name = _names(task)
    half = max(1, len(train) // 2) if train_b else len(train)
    parts = {train_a: (train[:half], True), valid_name: (valid, True), test_name: (test, False)}
    if train_b:
        parts[train_b] = (train[half:], True)
    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    files = {}
    for split, (images, labelled) in parts.items():
        rows = (nlvr2_examples(split, images, per_image, labelled, rng) if task == "nlvr2"
                else qa_examples(task, images, per_image, labelled))
        _write_json(os.path.join(out, f"{split}.json"), rows)
        files[split] = len(rows)
    if task != "nlvr2":
        _write_answers(out, [f for split, (imgs, lab) in parts.items() if lab for f in imgs], task)
    return {"task": task, "out": out, "images": {"train": len(train), "valid": len(valid), "test": len(test)},
            "examples": files}


def _names(task: str) -> tuple[tuple[str, str | None], str, str]:
    train, valid, test = SPLIT_NAMES[task]
    return (train[0], train[1] if len(train) > 1 else None), valid, test


def _write_answers(out: str, images: list[dict], task: str) -> None:
    counts = Counter(answer_name(f["main"]) for f in images)
    if task == "vqa":
        counts.update(answer_name(f["runner"]) for f in images if f["runner"] is not None)
    answers = [a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    _write_json(os.path.join(out, ANS2LABEL), {a: i for i, a in enumerate(answers)})
    _write_json(os.path.join(out, LABEL2ANS), answers)


def _write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(value, fh, indent=1, sort_keys=True)
