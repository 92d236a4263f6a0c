"""Settings of the BUTD extractor. Every Caffe quirk is a setting whose default is the Caffe value.

Two kinds of settings:

* ``DetectorArch`` describes the network a weight file belongs to (it is stored in the weights'
  manifest.json and read back on loading): depth, widths, the MSRA stride placement, the Caffe
  max-pool, the res5 dilation, the RPN width, the anchor table, class and attribute counts.
* ``FeaturesConfig`` holds how the extractor runs: preprocessing, proposals, pooling, selection,
  precision and batching.

docs/features.md maps every field to the detectron2 config key it mirrors.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

CAFFE_PIXEL_MEAN_BGR = (102.9801, 115.9465, 122.7717)
PRECISIONS = ("auto", "fp32", "tf32", "fp16", "bf16")


@dataclass(frozen=True)
class DetectorArch:
    """The network: ResNet C4 trunk, RPN, res5 RoI head, class and attribute predictors."""

    blocks_per_stage: tuple[int, int, int, int] = (3, 4, 23, 3)  # RESNETS.DEPTH 101 (res2..res5)
    stem_out_channels: int = 64  # RESNETS.STEM_OUT_CHANNELS
    res2_out_channels: int = 256  # RESNETS.RES2_OUT_CHANNELS; res5 gives 8x this (2048: the feature size)
    bottleneck_channels: int = 64  # RESNETS.NUM_GROUPS * WIDTH_PER_GROUP in res2
    stride_in_1x1: bool = True  # RESNETS.STRIDE_IN_1X1: MSRA ResNet puts the stride in the first 1x1 conv
    caffe_maxpool: bool = True  # MODEL.CAFFE_MAXPOOL: stem max-pool 3x3/2 with pad 0 and ceil rounding
    res5_dilation: int = 2  # RESNETS.RES5_DILATION (ROI_BOX_HEAD.RES5HALVE False): res5 stride 1, dilation 2
    rpn_hidden_channels: int = 512  # PROPOSAL_GENERATOR.HID_CHANNELS: the RPN 3x3 conv width
    anchor_base_size: int = 16  # Caffe generate_anchors base_size (== the feature stride)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # ANCHOR_GENERATOR.ASPECT_RATIOS (Caffe: ratio-major)
    anchor_scales: tuple[float, ...] = (4.0, 8.0, 16.0, 32.0)  # Caffe scales; sizes 64..512 px
    num_classes: int = 1601  # ROI_HEADS.NUM_CLASSES + 1: background at index 0 (Caffe order)
    num_attributes: int = 401  # ROI_BOX_HEAD.NUM_ATTRS + 1: "no attribute" at index 0
    cls_embed_dim: int = 256  # attribute head: class embedding width (no bias)
    attr_hidden_dim: int = 512  # attribute head: fc_attr width
    bn_eps: float = 1e-5  # Caffe BatchNorm / detectron2 FrozenBatchNorm2d eps

    def __post_init__(self) -> None:
        if len(self.blocks_per_stage) != 4 or min(self.blocks_per_stage) < 1:
            raise ValueError(f"blocks_per_stage must be 4 positive counts (res2..res5), got {self.blocks_per_stage}")
        for name in ("stem_out_channels", "res2_out_channels", "bottleneck_channels", "rpn_hidden_channels",
                     "cls_embed_dim", "attr_hidden_dim", "anchor_base_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.res5_dilation not in (1, 2):
            raise ValueError(f"res5_dilation must be 1 or 2 (BUTD: 2), got {self.res5_dilation}")
        if self.num_classes < 2 or self.num_attributes < 2:
            raise ValueError("num_classes and num_attributes count the background / no-attribute entry: at least 2")
        if not self.anchor_ratios or not self.anchor_scales or min(self.anchor_ratios + self.anchor_scales) <= 0:
            raise ValueError(f"anchor ratios and scales must be positive, got {self.anchor_ratios}, {self.anchor_scales}")

    @property
    def feature_dim(self) -> int:
        return self.res2_out_channels * 8

    @property
    def res4_channels(self) -> int:
        return self.res2_out_channels * 4

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_ratios) * len(self.anchor_scales)

    @property
    def feat_stride(self) -> int:
        return 16  # conv1 /2, pool1 /2, res3 /2, res4 /2

    def to_json(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> DetectorArch:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown detector arch fields {sorted(unknown)}; this ssrp knows {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class PreprocessConfig:
    """Caffe ``_get_image_blob``: BGR float, mean subtracted, then resized (bilinear, no antialias)."""

    channel_order: str = "BGR"  # INPUT.FORMAT
    pixel_mean: tuple[float, float, float] = CAFFE_PIXEL_MEAN_BGR  # MODEL.PIXEL_MEAN, in channel_order
    mean_before_resize: bool = True  # Caffe subtracts the mean from the full-size image, then resizes
    test_scale: int = 600  # INPUT.MIN_SIZE_TEST (Caffe TEST.SCALES): the short side after resizing
    max_size: int = 1000  # INPUT.MAX_SIZE_TEST (Caffe TEST.MAX_SIZE): cap of the long side (np.round rule)

    def __post_init__(self) -> None:
        if self.channel_order not in ("BGR", "RGB"):
            raise ValueError(f"channel_order must be BGR or RGB, got {self.channel_order!r}")
        if len(self.pixel_mean) != 3:
            raise ValueError(f"pixel_mean needs 3 values, got {self.pixel_mean}")
        if self.test_scale < 16 or self.max_size < self.test_scale:
            raise ValueError(f"need 16 <= test_scale <= max_size, got {self.test_scale}, {self.max_size}")


@dataclass(frozen=True)
class RPNConfig:
    """Caffe ``proposal_layer.py`` at test time."""
    RUNTIME: ClassVar[frozenset[str]] = frozenset({"early_stop_nms"})  # same proposals either way

    pre_nms_topk: int = 6000  # RPN.PRE_NMS_TOPK_TEST (Caffe TEST.RPN_PRE_NMS_TOP_N)
    post_nms_topk: int = 300  # RPN.POST_NMS_TOPK_TEST (Caffe TEST.RPN_POST_NMS_TOP_N)
    nms_thresh: float = 0.7  # RPN.NMS_THRESH (Caffe TEST.RPN_NMS_THRESH)
    min_size: float = 16.0  # PROPOSAL_GENERATOR.MIN_SIZE, in original-image pixels (x im_scale)
    legacy_plus_one: bool = True  # Caffe box convention: widths x2-x1+1, clip to W-1, IoU with +1
    early_stop_nms: bool = True  # stop the proposal NMS once post_nms_topk are kept (same result, less work)

    def __post_init__(self) -> None:
        if self.pre_nms_topk < 1 or self.post_nms_topk < 1:
            raise ValueError(f"RPN top-k values must be positive, got {self.pre_nms_topk}, {self.post_nms_topk}")
        if not 0.0 < self.nms_thresh <= 1.0:
            raise ValueError(f"rpn nms_thresh must lie in (0, 1], got {self.nms_thresh}")
        if self.min_size < 0:
            raise ValueError(f"rpn min_size must be >= 0, got {self.min_size}")


@dataclass(frozen=True)
class RoIConfig:
    """RoI max pooling on res4 (Caffe ``roi_pool5``)."""
    RUNTIME: ClassVar[frozenset[str]] = frozenset({"chunk"})  # how many RoIs per call

    pooler_resolution: int = 14  # ROI_BOX_HEAD.POOLER_RESOLUTION (Caffe pooled_w/h)
    pooler_type: str = "ROIPool"  # ROI_BOX_HEAD.POOLER_TYPE: Caffe ROIPooling = torchvision roi_pool
    chunk: int = 1024  # RoIs per res5 call (all images in flight share the chunks); bounds memory

    def __post_init__(self) -> None:
        if self.pooler_resolution < 1 or self.chunk < 1:
            raise ValueError(f"pooler_resolution and chunk must be positive, got {self.pooler_resolution}, {self.chunk}")
        if self.pooler_type != "ROIPool":
            raise ValueError(f"pooler_type {self.pooler_type!r}: BUTD uses ROIPool (max pooling); no other is offered")


@dataclass(frozen=True)
class SelectConfig:
    """Caffe ``generate_tsv.py``: which proposals become the image's regions."""
    RUNTIME: ClassVar[frozenset[str]] = frozenset({"method"})  # both methods select the same regions

    nms_thresh: float = 0.3  # ROI_HEADS.NMS_THRESH_TEST (Caffe TEST.NMS), per class on the proposal boxes
    conf_thresh: float = 0.2  # ROI_HEADS.SCORE_THRESH_TEST (generate_tsv conf_thresh) on max_conf
    min_boxes: int = 36  # MIN_BOXES (10 for the adaptive 10-100 set)
    max_boxes: int = 36  # MAX_BOXES (100 for the adaptive set)
    method: str = "vectorised"  # vectorised (exact, all classes at once) | loop (1600 NMS calls, the reference)

    def __post_init__(self) -> None:
        if not 0.0 < self.nms_thresh <= 1.0:
            raise ValueError(f"select nms_thresh must lie in (0, 1], got {self.nms_thresh}")
        if not 1 <= self.min_boxes <= self.max_boxes:
            raise ValueError(f"need 1 <= min_boxes <= max_boxes, got {self.min_boxes}, {self.max_boxes}")
        if self.method not in ("vectorised", "loop"):
            raise ValueError(f"select method must be vectorised or loop, got {self.method!r}")


@dataclass(frozen=True)
class DecodeConfig:
    """Turning image file bytes into an RGB array (see ssrp.features.image)."""

    min_side: int = 16  # smaller images are rejected (too_small)
    max_pixels: int = 50_000_000  # larger images are rejected before decoding (decompression_bomb)
    alpha_background: tuple[int, int, int] = (255, 255, 255)  # transparent pixels are composited onto this

    def __post_init__(self) -> None:
        if self.min_side < 1 or self.max_pixels < self.min_side**2:
            raise ValueError(f"need min_side >= 1 and max_pixels >= min_side^2, got {self.min_side}, {self.max_pixels}")
        if len(self.alpha_background) != 3 or not all(0 <= c <= 255 for c in self.alpha_background):
            raise ValueError(f"alpha_background must be 3 values in 0..255, got {self.alpha_background}")


@dataclass(frozen=True)
class FeaturesConfig:
    """Everything the extractor stage needs; cheap and picklable."""
    # settings of where and how fast, not of what: left out of a corpus's config (ssrp.config.config_identity)
    RUNTIME: ClassVar[frozenset[str]] = frozenset({"models_dir", "device", "trunk_batch", "verify_weights"})

    models_dir: str = ""  # holds features/ (from `ssrp models fetch features` or `ssrp models tiny`)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (fp16 on GPU, fp32 on CPU) | fp32 | tf32 | fp16 | bf16 (convolutions only)
    channels_last: bool = True  # memory format of the convolutions
    fold_bn: bool = True  # fold frozen BatchNorm into the convolutions (same function, fewer ops)
    trunk_batch: int = 0  # images of one resized size per trunk call; 0: auto (8 on GPU, 1 on CPU, where
    # oneDNN's batched convolutions round differently from single-image ones)
    verify_weights: bool = True  # check the safetensors sha256 against the manifest on load
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi: RoIConfig = field(default_factory=RoIConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.trunk_batch < 0:
            raise ValueError(f"trunk_batch must be >= 0 (0: auto), got {self.trunk_batch}")
        if self.select.max_boxes > self.rpn.post_nms_topk:
            raise ValueError(
                f"select.max_boxes {self.select.max_boxes} exceeds rpn.post_nms_topk {self.rpn.post_nms_topk}"
            )
        if not math.isfinite(self.rpn.min_size):
            raise ValueError("rpn.min_size must be finite")
