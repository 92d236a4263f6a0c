"""Each stage's typed config from a build config, what identifies a corpus (settings and models), and the
stage objects themselves.

Every ``--set STAGE.KEY=VALUE`` reaches its stage's frozen config through ``ssrp.config.with_settings``
(typed, validated before any file is written). What is not part of a corpus's identity is what each config
class lists in ``RUNTIME``; ``resolved_config`` is the identity a corpus records and a rerun must match.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ssrp.config import config_identity, with_settings
from ssrp.features.config import FeaturesConfig
from ssrp.features.models import detector_dir, detector_identity
from ssrp.features.stage import Extractor
from ssrp.models.trust import trusted_digests
from ssrp.parse.config import ParseConfig
from ssrp.parse.models import model_identity as parse_identity
from ssrp.parse.stage import Parser
from ssrp.pipeline.config import BuildConfig
from ssrp.translate.config import TranslateConfig
from ssrp.translate.models import model_digests, translation_dir
from ssrp.translate.stage import BackTranslator
from ssrp.views.config import ViewsConfig
from ssrp.views.stage import ViewAugmenter


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"select": {"max_boxes": 10}}`` -> ``{"select.max_boxes": 10}`` (dotted keys pass through)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def features_config(cfg: BuildConfig) -> FeaturesConfig:
    return with_settings(FeaturesConfig(models_dir=cfg.models, device=cfg.device), _flat(cfg.features))


def views_config(cfg: BuildConfig) -> ViewsConfig:
    return with_settings(ViewsConfig(features=features_config(cfg), seed=cfg.seed), _flat(cfg.views))


def translate_config(cfg: BuildConfig) -> TranslateConfig:
    base = TranslateConfig(models_dir=cfg.models, device=cfg.device, seed=cfg.seed)
    return with_settings(base, _flat(cfg.translate))


def parse_config(cfg: BuildConfig) -> ParseConfig:
    return with_settings(ParseConfig(models_dir=cfg.models, device=cfg.device), _flat(cfg.parse))


def views_per_image(cfg: BuildConfig) -> int:
    """Image records per image, for sizing shards: the chosen views (all 14 by default) or the raw one."""
    return len(views_config(cfg).views) if cfg.has("views") else 1


def variants_per_caption(cfg: BuildConfig) -> int:
    return 1 + len(translate_config(cfg).pivots) if cfg.has("translate") else 1


def resolved_config(cfg: BuildConfig) -> dict:
    """Every setting that decides the corpus's bytes, defaults included (hashed into the manifest). Building it
    type-checks every stage setting."""
    out = {"split": cfg.split, "stages": list(cfg.stages), "max_images": cfg.max_images, "seed": cfg.seed}
    if cfg.has("features"):
        out["features"] = config_identity(features_config(cfg))
    if cfg.has("views"):
        out["views"] = {k: v for k, v in config_identity(views_config(cfg)).items() if k != "features"}
    if cfg.has("translate"):
        out["translate"] = config_identity(translate_config(cfg))
    if cfg.has("parse"):
        out["parse"] = config_identity(parse_config(cfg))
    return out


def with_trusted_translation_digests(cfg: BuildConfig) -> BuildConfig:
    """For remote workers: the model.pt digests this machine trusts (its signed checksums.json),
    passed in the config, since workers do not hold this user's trust key."""
    if not cfg.has("translate"):
        return cfg
    digests = tuple(trusted_digests(translation_dir(cfg.models)))
    extra = tuple(cfg.translate.get("trusted_sha256", ()))
    return dataclasses.replace(cfg, translate={**cfg.translate, "trusted_sha256": tuple(sorted({*digests, *extra}))})


def model_identities(cfg: BuildConfig) -> dict:
    """What identifies each model a build uses, from the models' own small manifests (no model is loaded)."""
    ids: dict[str, Any] = {}
    if cfg.has("features"):
        ids["features"] = detector_identity(detector_dir(cfg.models))  # with its vocabularies, to name regions
    if cfg.has("translate"):
        ids["translate"] = model_digests(cfg.models)
    if cfg.has("parse"):
        ids["parse"] = parse_identity(parse_config(cfg))
    return ids


def make_image_stage(cfg: BuildConfig):
    """The image stage object (loaded later, on the worker): the view augmenter, or the extractor alone."""
    # imported here: the stage modules import torch, which a build that only plans (or a CLI's --help) skips
    if cfg.has("views"):

        return ViewAugmenter(views_config(cfg))

    return Extractor(features_config(cfg))


def make_translator(cfg: BuildConfig) -> BackTranslator:
    return BackTranslator(translate_config(cfg))  # fairseq and torch are imported by load()


def make_parser(cfg: BuildConfig) -> Parser:
    return Parser(parse_config(cfg))  # stanza is imported by load()
