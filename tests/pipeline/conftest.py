import json
import os

import pytest

from ssrp.sample import SampleConfig, write_sample


@pytest.fixture(scope="session")
def coco(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("coco"))
    write_sample(root, SampleConfig(images=8, val_images=2, seed=1))
    return root


@pytest.fixture
def bad_coco(tmp_path):
    """The sample with bad input mixed in: truncated JPEG, text file named .jpg, missing file,
    empty caption, 5,000-word caption, duplicate annotation id."""
    root = str(tmp_path / "bad")
    write_sample(root, SampleConfig(images=8, val_images=2, seed=2))
    ann_path = os.path.join(root, "annotations", "captions_train2017.json")
    doc = json.load(open(ann_path))
    imgs = doc["images"]
    path = lambda i: os.path.join(root, "train2017", imgs[i]["file_name"])  # noqa: E731
    data = open(path(0), "rb").read()
    open(path(0), "wb").write(data[: len(data) // 3])  # truncated JPEG
    open(path(1), "w").write("this is not an image\n")  # text named .jpg
    os.remove(path(2))  # missing file
    anns = doc["annotations"]
    anns[0]["caption"] = "   "  # empty caption
    anns[1]["caption"] = " ".join(["word"] * 5000)  # 5,000 words
    anns.append(dict(anns[5]))  # duplicate annotation id
    json.dump(doc, open(ann_path, "w"))
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Every tiny model, built once through the same code as `ssrp models tiny`."""
    from ssrp.models.hub import build_tiny

    root = str(tmp_path_factory.mktemp("models"))
    build_tiny(root)
    return root
