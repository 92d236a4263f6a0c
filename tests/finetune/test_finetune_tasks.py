"""LXMERT's task files, the official metrics and the submission files."""

import json

import pytest

from ssrp.finetune.metrics import read_submission, score, sentence_key, write_submission
from ssrp.finetune.sample import SPLIT_NAMES
from ssrp.finetune.tasks import Example, TaskDataError, load_answers, load_split


def _write(path, value):
    path.write_text(json.dumps(value), encoding="utf-8")


def test_sample_writes_lxmert_formats(tasks):
    vqa = json.load(open(f"{tasks['vqa']}/minival.json"))
    assert set(vqa[0]) == {"question_id", "img_id", "sent", "label", "answer_type", "question_type"}
    assert isinstance(vqa[0]["question_id"], int) and vqa[0]["img_id"].startswith("COCO_train2014_")
    gqa = json.load(open(f"{tasks['gqa']}/testdev.json"))
    assert isinstance(gqa[0]["question_id"], str) and gqa[0]["img_id"].isdigit()
    nlvr2 = json.load(open(f"{tasks['nlvr2']}/valid.json"))
    assert set(nlvr2[0]) == {"identifier", "img0", "img1", "sent", "label", "uid"}
    for task, (train, valid, test) in SPLIT_NAMES.items():
        assert all("label" not in row for row in json.load(open(f"{tasks[task]}/{test}.json")))
        trained = {ex.images for s in train for ex in load_split(task, tasks[task], s)}
        held_out = {ex.images for ex in load_split(task, tasks[task], valid)}
        assert trained and held_out and not {i for t in trained for i in t} & {i for t in held_out for i in t}
    answers = load_answers(tasks["vqa"])
    assert all(a in answers for ex in load_split("vqa", tasks["vqa"], "train") for a in ex.label)


def test_bad_records_are_named(tmp_path):
    _write(tmp_path / "train.json", [{"question_id": 1, "img_id": "1", "sent": "q?"}, {"question_id": 2, "sent": "q"}])
    with pytest.raises(TaskDataError, match=r"train.json record 1: missing field 'img_id'"):
        load_split("vqa", str(tmp_path), "train")
    _write(tmp_path / "train.json", [{"question_id": 1, "img_id": "1", "sent": "q?", "label": {"yes": "1"}}])
    with pytest.raises(TaskDataError, match="record 0: field 'label' must map answers to scores"):
        load_split("vqa", str(tmp_path), "train")
    _write(tmp_path / "dev.json", [{"identifier": "dev-1-0-0", "img0": "a", "img1": "b", "sent": "s", "label": 2}])
    with pytest.raises(TaskDataError, match="record 0: field 'label' must be 0 or 1"):
        load_split("nlvr2", str(tmp_path), "dev")
    _write(tmp_path / "dev.json", [{"identifier": "dev-1-0-0", "img0": "a", "img1": "b", "sent": "s", "label": "True"}])
    assert load_split("nlvr2", str(tmp_path), "dev")[0].label == 1  # the raw NLVR2 spelling
    _write(tmp_path / "trainval_ans2label.json", {"yes": 0, "no": 0})
    with pytest.raises(TaskDataError, match="indices must be 0..1"):
        load_answers(str(tmp_path))
    _write(tmp_path / "trainval_ans2label.json", {"yes": 0, "no": 1})
    _write(tmp_path / "trainval_label2ans.json", ["no", "yes"])
    with pytest.raises(TaskDataError, match="disagrees"):
        load_answers(str(tmp_path))


def test_vqa_score_is_lxmert_soft_accuracy_per_answer_type():
    examples = [
        Example(1, "q", ("i",), {"red": 1.0, "blue": 0.3}, "other"),
        Example(2, "q", ("i",), {"yes": 0.9}, "yes/no"),
        Example(3, "q", ("i",), {"2": 0.6}, "number"),
        Example(4, "q", ("i",), None),  # a test question: not scored
    ]
    result = score("vqa", examples, {1: "blue", 2: "yes", 3: "3"})
    assert result["score"] == pytest.approx(100 * (0.3 + 0.9 + 0.0) / 3)
    assert result["by_answer_type"] == pytest.approx({"other": 30.0, "yes/no": 90.0, "number": 0.0})
    with pytest.raises(ValueError, match="1 of 3 examples have no prediction"):
        score("vqa", examples, {1: "blue", 2: "yes"})


def test_nlvr2_consistency_groups_a_sentence_over_its_image_pairs():
    assert sentence_key("dev-850-1-0") == "dev-850--0"
    examples = [Example(f"dev-1-{p}-0", "s", ("a", "b"), p % 2) for p in range(4)] + [
        Example(f"dev-2-{p}-1", "s", ("a", "b"), 1) for p in range(2)]
    predictions = {ex.uid: ex.label for ex in examples}
    predictions["dev-1-3-0"] = 0  # one wrong answer breaks sentence dev-1--0
    result = score("nlvr2", examples, predictions)
    assert result["accuracy"] == pytest.approx(100 * 5 / 6)
    assert result["consistency"] == pytest.approx(50.0)


@pytest.mark.parametrize("task,uids,answers", [
    ("vqa", [458752000, 7], ["net", "2"]),
    ("gqa", ["02930152", "07333408"], ["pipe", "yes"]),
    ("nlvr2", ["dev-850-0-0", "dev-850-1-0"], [1, 0]),
])
def test_submission_files_round_trip(tmp_path, task, uids, answers):
    examples = [Example(u, "s", ("i",)) for u in uids]
    path = str(tmp_path / "pred")
    assert write_submission(task, examples, dict(zip(uids, answers, strict=True)), path) == 2
    text = open(path).read()
    if task == "vqa":
        assert json.loads(text) == [{"question_id": 458752000, "answer": "net"}, {"question_id": 7, "answer": "2"}]
    elif task == "gqa":
        assert json.loads(text)[0] == {"questionId": "02930152", "prediction": "pipe"}
    else:
        assert text == "dev-850-0-0,True\ndev-850-1-0,False\n"
    assert read_submission(task, path) == dict(zip(uids, answers, strict=True))
