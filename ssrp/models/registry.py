"""Which stage provides which model, and where in a models directory each one lives.

A model's folder and its ``ssrp models fetch`` name are the name of the stage that uses it (``features``,
``translate``, ``parse``) or ``bert`` (the trainer's text encoder). Folders of earlier ssrp versions
(``detector``, ``translation``, ``parser``) are still found, by ``model_folder`` alone.
"""

from __future__ import annotations

import os

# name -> "module:attribute" of a hub.ModelSource, imported only when that model is fetched or listed
SOURCES: dict[str, str] = {
    "features": "ssrp.features.models:SOURCE",
    "translate": "ssrp.translate.models:SOURCE",
    "parse": "ssrp.parse.models:SOURCE",
    "bert": "ssrp.train.bert:SOURCE",
}

# name -> "module:function(models_dir) -> dict": builds that stage's tiny model(s) under models_dir,
# in the same layout ``ssrp models fetch`` gives the real ones. Built in this order: the parser's
# tiny build writes a WordPiece vocabulary learned from the sample captions to bert/vocab.txt,
# which the tiny BERT then uses.
TINY_BUILDERS: dict[str, str] = {
    "features": "ssrp.features.tiny:build_tiny",
    "translate": "ssrp.translate.tiny:build_tiny",
    "parse": "ssrp.parse.tiny:build_tiny",
    "bert": "ssrp.train.bert:build_tiny_bert",
}

# name -> builder of a random-weight model at the published size, same layout (``ssrp models random``;
# ssrp.models.fullsize). Same order as above: the parse build writes bert/vocab.txt first.
FULL_SIZE_BUILDERS: dict[str, str] = {
    "features": "ssrp.models.fullsize:build_features",
    "translate": "ssrp.models.fullsize:build_translate",
    "parse": "ssrp.models.fullsize:build_parse",
    "bert": "ssrp.models.fullsize:build_bert",
}

# the folder (and fetch) names of ssrp 0.1's first releases
LEGACY_NAMES = {"detector": "features", "translation": "translate", "parser": "parse"}


def canonical_name(name: str) -> str:
    """A model's name, accepting the legacy ones (``detector`` -> ``features``)."""
    return LEGACY_NAMES.get(name, name)


def model_folder(models_dir: str, name: str) -> str:
    """``models_dir/<name>``, or the legacy folder of that model when only it exists."""
    folder = os.path.join(models_dir, name)
    legacy = [old for old, new in LEGACY_NAMES.items() if new == name]
    if not os.path.isdir(folder):
        for old in legacy:
            if os.path.isdir(os.path.join(models_dir, old)):
                return os.path.join(models_dir, old)
    return folder
