"""The BUTD Faster R-CNN (ResNet C4) as plain torch modules; only torchvision.ops from torchvision.

Module and parameter names are detectron2's (``backbone.res4.22.conv2.norm.running_var``,
``proposal_generator.rpn_head.objectness_logits.weight``, ``roi_heads.box_predictor.cls_score.weight``),
so converted checkpoints keep their key names. What differs from detectron2 is the conventions,
fixed by the converters: background is class 0, "no attribute" is attribute 0, the RPN has one
objectness logit per anchor ordered as the Caffe anchor table, and the anchor table itself is a
buffer (``proposal_generator.caffe_anchors``) checked on load.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from ssrp.features.config import DetectorArch
from ssrp.features.proposals import caffe_anchor_table

logger = logging.getLogger(__name__)


class FrozenBatchNorm2d(nn.Module):
    """Inference BatchNorm (Caffe BatchNorm(use_global_stats) + Scale): y = (x - mean) / sqrt(var + eps) * w + b."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) in float64, for folding."""
        scale = self.weight.double() * torch.rsqrt(self.running_var.double() + self.eps)
        return scale, self.bias.double() - self.running_mean.double() * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.scale_shift()
        return x * scale.to(x.dtype)[None, :, None, None] + shift.to(x.dtype)[None, :, None, None]


class Conv2dNorm(nn.Conv2d):
    """detectron2's Conv2d: a convolution with an optional norm child (``conv1.weight``, ``conv1.norm.*``)."""

    def __init__(self, *args, eps: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm: FrozenBatchNorm2d | None = FrozenBatchNorm2d(self.out_channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return self.norm(x) if self.norm is not None else x

    @torch.no_grad()
    def fold(self) -> None:
        """Fold the frozen BN into the weight and a bias (in float64, stored in the weight's dtype)."""
        if self.norm is None:
            return
        scale, shift = self.norm.scale_shift()
        dtype = self.weight.dtype
        weight = self.weight.double() * scale[:, None, None, None]
        bias = shift + (self.bias.double() * scale if self.bias is not None else 0.0)
        self.weight.data.copy_(weight.to(dtype))
        self.bias = nn.Parameter(bias.to(dtype), requires_grad=False)
        self.norm = None


def _conv(cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1,
          eps: float = 1e-5) -> Conv2dNorm:
    return Conv2dNorm(cin, cout, k, stride=stride, padding=padding, dilation=dilation, bias=False, eps=eps)


class BasicStem(nn.Module):
    """conv1 7x7/2 + BN + ReLU, then max-pool 3x3/2: Caffe (pad 0, ceil) or torchvision (pad 1, floor)."""

    def __init__(self, out_channels: int, caffe_maxpool: bool, eps: float):
        super().__init__()
        self.conv1 = _conv(3, out_channels, 7, stride=2, padding=3, eps=eps)
        self.caffe_maxpool = caffe_maxpool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(self.conv1(x))
        if self.caffe_maxpool:
            return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BottleneckBlock(nn.Module):
    """ResNet bottleneck; MSRA (stride_in_1x1) puts the stride on conv1, torchvision's v1.5 on conv2."""

    def __init__(self, cin: int, cout: int, bottleneck: int, stride: int, stride_in_1x1: bool,
                 dilation: int, eps: float):
        super().__init__()
        self.shortcut = _conv(cin, cout, 1, stride=stride, eps=eps) if cin != cout else None
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv(cin, bottleneck, 1, stride=s1, eps=eps)
        self.conv2 = _conv(bottleneck, bottleneck, 3, stride=s3, padding=dilation, dilation=dilation, eps=eps)
        self.conv3 = _conv(bottleneck, cout, 1, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        out += self.shortcut(x) if self.shortcut is not None else x
        return F.relu_(out)


def make_stage(n: int, cin: int, cout: int, bottleneck: int, first_stride: int, arch: DetectorArch,
               dilation: int = 1) -> nn.Sequential:
    blocks = []
    for i in range(n):
        blocks.append(BottleneckBlock(cin if i == 0 else cout, cout, bottleneck, first_stride if i == 0 else 1,
                                      arch.stride_in_1x1, dilation, arch.bn_eps))
    return nn.Sequential(*blocks)


class ResNetTrunk(nn.Module):
    """stem, res2, res3, res4: the shared trunk (stride 16)."""

    def __init__(self, arch: DetectorArch):
        super().__init__()
        self.stem = BasicStem(arch.stem_out_channels, arch.caffe_maxpool, arch.bn_eps)
        cin, cout, bn = arch.stem_out_channels, arch.res2_out_channels, arch.bottleneck_channels
        for i, name in enumerate(("res2", "res3", "res4")):
            self.add_module(name, make_stage(arch.blocks_per_stage[i], cin, cout, bn, 1 if i == 0 else 2, arch))
            cin, cout, bn = cout, cout * 2, bn * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res4(self.res3(self.res2(self.stem(x))))


class RPNHead(nn.Module):
    """3x3 conv (Caffe rpn_conv/3x3, 512 wide) + ReLU, one objectness logit and 4 deltas per anchor."""

    def __init__(self, cin: int, hidden: int, num_anchors: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, hidden, 3, padding=1)
        self.objectness_logits = nn.Conv2d(hidden, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(hidden, num_anchors * 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = F.relu(self.conv(x))
        return self.objectness_logits(t), self.anchor_deltas(t)


class ProposalGenerator(nn.Module):
    def __init__(self, arch: DetectorArch):
        super().__init__()
        self.rpn_head = RPNHead(arch.res4_channels, arch.rpn_hidden_channels, arch.num_anchors)
        table = caffe_anchor_table(arch.anchor_base_size, arch.anchor_ratios, arch.anchor_scales)
        self.register_buffer("caffe_anchors", torch.as_tensor(table, dtype=torch.float32))


class BoxPredictor(nn.Module):
    """cls_score (1601-way, background 0) and the attribute head (Caffe cls_embedding / fc_attr / attr_score).

    bbox_pred is not part of the model: BUTD keeps the proposal boxes, so the converters drop it.
    """

    def __init__(self, arch: DetectorArch):
        super().__init__()
        d = arch.feature_dim
        self.cls_score = nn.Linear(d, arch.num_classes)
        self.cls_embedding = nn.Embedding(arch.num_classes, arch.cls_embed_dim)
        self.fc_attr = nn.Linear(d + arch.cls_embed_dim, arch.attr_hidden_dim)
        self.attr_score = nn.Linear(arch.attr_hidden_dim, arch.num_attributes)

    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.cls_score(features)

    def attribute_logits(self, features: torch.Tensor, class_logits: torch.Tensor) -> torch.Tensor:
        """Caffe: predicted_cls = ArgMax over all 1601 logits (background included) -> embed -> concat."""
        predicted = class_logits.argmax(dim=1)
        x = torch.cat([features, self.cls_embedding(predicted)], dim=1)
        return self.attr_score(F.relu(self.fc_attr(x)))


class RoIHeads(nn.Module):
    """res5 on the 14x14 pooled RoIs (stride 1, dilation 2), mean over 14x14 = the 2048-d feature."""

    def __init__(self, arch: DetectorArch):
        super().__init__()
        dil = arch.res5_dilation
        self.res5 = make_stage(arch.blocks_per_stage[3], arch.res4_channels, arch.feature_dim,
                               arch.bottleneck_channels * 8, 1 if dil == 2 else 2, arch, dilation=dil)
        self.box_predictor = BoxPredictor(arch)


class BUTDDetector(nn.Module):
    def __init__(self, arch: DetectorArch):
        super().__init__()
        self.arch = arch
        self.backbone = ResNetTrunk(arch)
        self.proposal_generator = ProposalGenerator(arch)
        self.roi_heads = RoIHeads(arch)

    def trunk(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def rpn(self, res4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.proposal_generator.rpn_head(res4)

    def region_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled grids [K, C4, 14, 14] -> float32 features [K, D] (mean over the grid)."""
        return self.roi_heads.res5(pooled).float().mean(dim=(2, 3))

    def fold_batchnorm(self) -> int:
        count = 0
        for module in self.modules():
            if isinstance(module, Conv2dNorm) and module.norm is not None:
                module.fold()
                count += 1
        return count


def build_detector(arch: DetectorArch, device: torch.device | str = "cpu") -> BUTDDetector:
    """An uninitialised-weights detector (``meta`` device gives shapes only, no memory)."""
    with torch.device(device):
        model = BUTDDetector(arch)
    return model.eval().requires_grad_(False)
