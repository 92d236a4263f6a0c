import pytest
from features_fixtures import coco_files, coco_sample, images, tiny_models  # noqa: F401 - shared fixtures
from features_helpers import small_config


@pytest.fixture(scope="session")
def augmenter(tiny_models):
    from ssrp.views.config import ViewsConfig
    from ssrp.views.stage import ViewAugmenter

    return ViewAugmenter(ViewsConfig(features=small_config(tiny_models))).load()
