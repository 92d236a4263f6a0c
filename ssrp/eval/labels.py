"""Class names of a corpus's regions, for figure labels.

A corpus built by ssrp records its detector's object and attribute vocabularies in its manifest
(``models.features.objects_vocab`` / ``attributes_vocab``, docs/corpus-format.md); a region's ``obj_ids`` value
is a 0-based line of that vocabulary. Corpora built before the vocabularies were recorded have none: their
regions are labelled ``#id``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

logger = logging.getLogger(__name__)

ELLIPSIS = "\u2026"


def shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when something was cut."""
    return text if len(text) <= limit else text[: max(1, limit - 1)] + ELLIPSIS


@dataclass(frozen=True)
class ClassNames:
    objects: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()

    @classmethod
    def from_manifest(cls, manifest: Mapping) -> ClassNames:
        features = (manifest.get("models") or {}).get("features") or {}
        names = cls(tuple(features.get("objects_vocab") or ()), tuple(features.get("attributes_vocab") or ()))
        if not names.objects:
            logger.warning("the corpus records no detector vocabulary (built before ssrp recorded it): regions are "
                           "labelled by class id; rebuild the corpus to get class names")
        return names

    def object(self, obj_id: int) -> str:
        return self.objects[obj_id] if 0 <= obj_id < len(self.objects) else f"#{obj_id}"

    def attribute(self, attr_id: int) -> str:
        return self.attributes[attr_id] if 0 <= attr_id < len(self.attributes) else f"#{attr_id}"

    def labels(self, obj_ids: Sequence[int], limit: int = 12) -> list[str]:
        return [shorten(self.object(int(i)), limit) for i in obj_ids]
