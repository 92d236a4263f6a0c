import hashlib
import json
import os

import pytest
from PIL import Image

from ssrp.sample import SampleConfig, write_sample


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            h.update(name.encode())
            h.update(open(os.path.join(dirpath, name), "rb").read())
    return h.hexdigest()


def test_sample_has_the_coco_2017_layout(tmp_path):
    counts = write_sample(str(tmp_path), SampleConfig(images=6, val_images=2, seed=3))
    assert counts == {"train": {"images": 6, "captions": 30}, "val": {"images": 2, "captions": 10}}
    doc = json.load(open(tmp_path / "annotations" / "captions_train2017.json"))
    assert set(doc) >= {"info", "licenses", "images", "annotations"}
    sizes = set()
    for img in doc["images"]:
        path = tmp_path / "train2017" / img["file_name"]
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (img["width"], img["height"])
        sizes.add((img["width"], img["height"]))
    assert len(sizes) >= 2  # varied sizes
    per_image = {}
    for ann in doc["annotations"]:
        assert set(ann) == {"image_id", "id", "caption"} and ann["caption"].strip()
        per_image.setdefault(ann["image_id"], []).append(ann["caption"])
    assert all(len(c) == 5 and len(set(c)) > 1 for c in per_image.values())
    val = json.load(open(tmp_path / "annotations" / "captions_val2017.json"))
    all_ids = [a["id"] for a in doc["annotations"] + val["annotations"]]
    assert len(all_ids) == len(set(all_ids))  # caption ids unique across splits, as in COCO
    assert not {i["id"] for i in doc["images"]} & {i["id"] for i in val["images"]}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    write_sample(str(tmp_path / "a"), SampleConfig(images=3, val_images=1, seed=7))
    write_sample(str(tmp_path / "b"), SampleConfig(images=3, val_images=1, seed=7))
    write_sample(str(tmp_path / "c"), SampleConfig(images=3, val_images=1, seed=8))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_config_is_validated():
    with pytest.raises(ValueError, match="images"):
        SampleConfig(images=0)
    with pytest.raises(ValueError, match="captions_per_image"):
        SampleConfig(captions_per_image=0)
