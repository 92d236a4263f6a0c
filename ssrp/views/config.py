"""Settings of the views stage (paper Table 2): which of the 14 views, and the box jitter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ssrp.features.config import FeaturesConfig

STAGE = "views"
ROI_VIEWS = ("roi_hflip", "rot90", "rot180", "rot270", "jitter0", "jitter1")
HFLIP_PREFIX = "hflip_"
ALL_VIEWS = ("raw", *ROI_VIEWS, "hflip", *(HFLIP_PREFIX + v for v in ROI_VIEWS))
# Table 2 columns: the views each counts (per image: 1, 1, 2, 6, 4 = 14)
TABLE2 = {
    "raw": ("raw",),
    "hflip": ("hflip",),
    "roi_hflip": ("roi_hflip", "hflip_roi_hflip"),
    "rotate": ("rot90", "rot180", "rot270", "hflip_rot90", "hflip_rot180", "hflip_rot270"),
    "jitter": ("jitter0", "jitter1", "hflip_jitter0", "hflip_jitter1"),
}


@dataclass(frozen=True)
class ViewsConfig:
    features: FeaturesConfig = field(default_factory=FeaturesConfig)  # the extractor the views reuse
    views: tuple[str, ...] = ALL_VIEWS  # which views to write (default: all 14)
    jitter_range: tuple[float, float] = (0.8, 1.2)  # paper: scale factors from [0.8, 1.2]
    jitter_isotropic: bool = False  # False: independent width and height factors per region
    seed: int = 0  # base seed of the jitter draws

    def __post_init__(self) -> None:
        unknown = [v for v in self.views if v not in ALL_VIEWS]
        if unknown or not self.views or len(set(self.views)) != len(self.views):
            raise ValueError(f"views must be distinct names from {ALL_VIEWS}; got {self.views}")
        lo, hi = self.jitter_range
        if not 0.0 < lo <= hi:
            raise ValueError(f"jitter_range must satisfy 0 < low <= high, got {self.jitter_range}")


def view_counts(num_images: int, views: Sequence[str] = ALL_VIEWS) -> dict[str, int]:
    """Records per Table 2 column for ``num_images`` images."""
    return {col: num_images * sum(v in views for v in names) for col, names in TABLE2.items()}
