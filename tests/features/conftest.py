import pytest
from features_fixtures import coco_files, coco_sample, images, tiny_models  # noqa: F401 - shared fixtures
from features_helpers import small_config


@pytest.fixture(scope="session")
def extractor(tiny_models):
    from ssrp.features.stage import Extractor

    return Extractor(small_config(tiny_models)).load()


