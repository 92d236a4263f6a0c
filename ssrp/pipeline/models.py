"""The stage objects a build runs, built from its config, and the identity of their models."""

from __future__ import annotations

import os
from typing import Any

from ssrp.config import config_identity, with_settings
from ssrp.pipeline.config import BuildConfig


def _flat(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"select": {"max_boxes": 10}}`` -> ``{"select.max_boxes": 10}`` (dotted keys pass through)."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def features_config(cfg: BuildConfig):
    from ssrp.features.config import FeaturesConfig

    return with_settings(FeaturesConfig(models_dir=cfg.models, device=cfg.device), _flat(cfg.features))


def views_config(cfg: BuildConfig):
    from ssrp.augment.views import ViewsConfig

    return with_settings(ViewsConfig(features=features_config(cfg), seed=cfg.seed), _flat(cfg.views))


def translate_config(cfg: BuildConfig):
    from ssrp.augment.backtranslate import BackTranslateConfig

    base = BackTranslateConfig(models_dir=cfg.models, device=cfg.device, seed=cfg.seed)
    return with_settings(base, _flat(cfg.translate))


def parse_config(cfg: BuildConfig):
    from ssrp.parse.config import ParseConfig

    return with_settings(ParseConfig(models_dir=cfg.models, device=cfg.device), _flat(cfg.parse))


def make_image_stage(cfg: BuildConfig):
    if cfg.has("views"):
        from ssrp.augment.views import ViewAugmenter

        return ViewAugmenter(views_config(cfg))
    from ssrp.features.extractor import Extractor

    return Extractor(features_config(cfg))


def make_translator(cfg: BuildConfig):
    from ssrp.augment.backtranslate import BackTranslator

    return BackTranslator(translate_config(cfg))


def make_parser(cfg: BuildConfig):
    from ssrp.parse.parser import Parser

    return Parser(parse_config(cfg))


def resolved_config(cfg: BuildConfig) -> dict:
    """Every setting that decides the corpus's bytes, defaults included (hashed into the manifest)."""
    out = {"split": cfg.split, "stages": list(cfg.stages), "max_images": cfg.max_images, "seed": cfg.seed,
           "features": config_identity(views_config(cfg) if cfg.has("views") else features_config(cfg))}
    if cfg.has("translate"):
        out["translate"] = config_identity(translate_config(cfg))
    if cfg.has("parse"):
        out["parse"] = config_identity(parse_config(cfg))
    return out


def with_trusted_translation_digests(cfg: BuildConfig) -> BuildConfig:
    """For remote workers: the model.pt digests this machine trusts (its signed checksums.json),
    passed in the config, since workers do not hold this user's trust key."""
    import dataclasses

    if not cfg.has("translate"):
        return cfg
    from ssrp.models.trust import trusted_digests

    digests = tuple(trusted_digests(os.path.join(cfg.models, "translation")))
    extra = tuple(cfg.translate.get("trusted_sha256", ()))
    return dataclasses.replace(cfg, translate={**cfg.translate, "trusted_sha256": tuple(sorted({*digests, *extra}))})


def model_identities(cfg: BuildConfig) -> dict:
    """What identifies each model a build uses, from the models' own small manifests (no model is loaded)."""
    from ssrp.features.weights import detector_dir, read_manifest

    ids: dict[str, Any] = {}
    manifest = read_manifest(detector_dir(cfg.models))
    ids["detector"] = {"name": manifest.get("name"), "weights_sha256": manifest.get("weights_sha256")}
    if cfg.has("translate"):
        from ssrp.augment.translation_models import model_digests

        ids["translation"] = model_digests(cfg.models)
    if cfg.has("parse"):
        from ssrp.parse.rewrite import model_identity

        ids["parser"] = model_identity(parse_config(cfg))
    return ids
