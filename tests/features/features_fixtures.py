"""Session fixtures shared by the features and augment tests (imported by both conftests)."""

import os

import pytest
from features_helpers import scene

from ssrp.features.image import DecodedImage


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from ssrp.features.tiny import build_tiny

    root = str(tmp_path_factory.mktemp("models"))
    build_tiny(root)
    return root


@pytest.fixture(scope="session")
def coco_sample(tmp_path_factory):
    from ssrp.sample import SampleConfig, write_sample

    root = str(tmp_path_factory.mktemp("coco"))
    write_sample(root, SampleConfig(images=3, val_images=1, seed=0))
    return root


@pytest.fixture(scope="session")
def images():
    """Four decoded images: two of one size (one trunk group), two of others."""
    sizes = [(200, 150), (200, 150), (150, 220), (240, 120)]
    return [DecodedImage(i + 1, f"{i + 1:012d}.jpg", scene(w, h, seed=i)) for i, (w, h) in enumerate(sizes)]


@pytest.fixture(scope="session")
def coco_files(coco_sample):
    d = os.path.join(coco_sample, "train2017")
    return [os.path.join(d, n) for n in sorted(os.listdir(d))]
