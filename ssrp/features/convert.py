"""Converters from the published BUTD checkpoints to the ssrp detector format.

Two layouts, the same detectron2 key names (``backbone.res4.22.conv2.norm.running_var`` ...):

* ``hf``: Hugging Face ``unc-nlp/frcnn-vg-finetuned`` ``pytorch_model.bin`` (a torch state dict;
  read with ``torch.load(weights_only=True)``): BatchNorm2d buffers with ``num_batches_tracked``,
  ``proposal_generator.anchor_generator.cell_anchors.0`` stored as a parameter.
* ``d2``: airsplay's detectron2 pickle ``faster_rcnn_from_caffe_attr.pkl`` (``{"model": {name:
  ndarray}}``). A legacy pickle: it is unpickled only after its sha256 matches a pinned value or
  with an explicit ``allow_unverified_pickle=True``, and even then through an unpickler that
  admits nothing but numpy arrays and plain containers.

What the converter checks and changes, each recorded in the manifest's ``conversion``:

* every key is known (unexpected keys fail; ``num_batches_tracked``, ``bbox_pred`` and the anchor
  buffer are the only ones dropped, by name) and every expected key is present with its shape;
* class order: detectron2 puts background last (1601 = 1600 + 1); ``cls_score`` and
  ``cls_embedding`` rows are rolled so background is row 0 (Caffe order);
* attribute order: the HF/airsplay heads drop the last attribute logit as "no attribute"
  (``attr_logits[..., :-1]``), so ``attr_score`` rows are rolled to put it at 0 (Caffe order);
* anchors: the checkpoint's cell anchors (or, when absent, detectron2's DefaultAnchorGenerator
  table for sizes 64..512) are matched by shape to the Caffe table and the RPN channels permuted
  into Caffe order; their centres are reported (the Caffe table is what this detector uses);
* RPN logits: one logit per anchor (detectron2) is kept; two per anchor (Caffe softmax, bg then fg)
  becomes fg - bg, which is exact (softmax([bg, fg])[1] = sigmoid(fg - bg));
* BatchNorm stays unfolded on disk (folding happens on load, ``FeaturesConfig.fold_bn``).
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ssrp.features.config import DetectorArch
from ssrp.features.models import HF_CHECKPOINT, WeightsError, save_detector
from ssrp.features.proposals import caffe_anchor_table
from ssrp.fileutil import sha256_file

logger = logging.getLogger(__name__)

LAYOUTS = ("hf", "d2")
CELL_ANCHORS = "proposal_generator.anchor_generator.cell_anchors.0"
OBJECTNESS = "proposal_generator.rpn_head.objectness_logits"
DELTAS = "proposal_generator.rpn_head.anchor_deltas"
PREDICTOR = "roi_heads.box_predictor"
D2_ANCHOR_SIZES = (64.0, 128.0, 256.0, 512.0)  # airsplay config ANCHOR_GENERATOR.SIZES

# sha256 of published legacy pickles that may be unpickled without the explicit flag. None is known:
# airsplay's README publishes no checksum, so `allow_unverified_pickle=True` (CLI: --allow-unverified-pickle)
# is needed, and the digest found is logged and written to the manifest. Add verified digests here.
PINNED_PICKLES: dict[str, str] = {}

_DROPPED = re.compile(r"(\.num_batches_tracked$|^roi_heads\.box_predictor\.bbox_pred\.|"
                      r"^proposal_generator\.anchor_generator\.cell_anchors\.|^pixel_(mean|std)$)")


class ConversionError(WeightsError):
    """A checkpoint that is not the layout it claims to be, or whose contents fail a check."""


# --------------------------------------------------------------------------------------------
# Reading checkpoints.


def read_hf_checkpoint(path: str) -> dict[str, torch.Tensor]:
    """The HF pytorch_model.bin: a plain state dict, so the safe loader suffices."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ConversionError(f"{path}: expected a state dict, got {type(state).__name__}")
    return {str(k): torch.as_tensor(v) for k, v in state.items()}


class _ArraysOnly(pickle.Unpickler):
    """Admits numpy arrays, numpy scalars/dtypes and builtin containers; nothing else can be built."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"), ("builtins", "set"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            if module.startswith("numpy.core"):
                module = module.replace("numpy.core", "numpy._core", 1)
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weight pickle")


def read_d2_pickle(path: str, allow_unverified_pickle: bool = False) -> tuple[dict[str, torch.Tensor], str]:
    """airsplay's detectron2 pickle -> (state dict, sha256).

    SECURITY: pickle can run code. This file is a legacy pickle with no safe format available, so it
    is read only when its sha256 is pinned in PINNED_PICKLES or the caller passes the explicit flag
    (the user vouches for the file), and then only through _ArraysOnly.
    """
    digest = sha256_file(path)
    pinned = os.path.basename(path) in PINNED_PICKLES and PINNED_PICKLES[os.path.basename(path)] == digest
    if not (pinned or digest in PINNED_PICKLES.values() or allow_unverified_pickle):
        raise ConversionError(
            f"{path}: a legacy pickle with sha256 {digest}, which is not pinned in "
            "ssrp.features.convert.PINNED_PICKLES; unpickling runs code, so it is refused. If you trust "
            "this file, pass --allow-unverified-pickle (allow_unverified_pickle=True)."
        )
    with open(path, "rb") as fh:
        data = _ArraysOnly(io.BytesIO(fh.read()), encoding="latin1").load()
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        raise ConversionError(f"{path}: expected a detectron2 pickle {{'model': {{name: array}}}}")
    return {str(k): torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.items()}, digest


# --------------------------------------------------------------------------------------------
# Converting.


def infer_arch(state: Mapping[str, torch.Tensor], base: DetectorArch | None = None) -> DetectorArch:
    """The architecture a detectron2-named state dict describes (shapes); conventions from ``base``."""
    base = base or DetectorArch()

    def blocks(prefix: str) -> int:
        found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"\.(\d+)\.", k))}
        if not found:
            raise ConversionError(f"no {prefix}.N.* keys: not a ResNet C4 detector checkpoint")
        return max(found) + 1

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise ConversionError(f"missing key {key}")
        return tuple(state[key].shape)

    return DetectorArch(
        blocks_per_stage=(blocks("backbone.res2"), blocks("backbone.res3"), blocks("backbone.res4"),
                          blocks("roi_heads.res5")),
        stem_out_channels=shape("backbone.stem.conv1.weight")[0],
        res2_out_channels=shape("backbone.res2.0.conv3.weight")[0],
        bottleneck_channels=shape("backbone.res2.0.conv1.weight")[0],
        stride_in_1x1=base.stride_in_1x1,
        caffe_maxpool=base.caffe_maxpool,
        res5_dilation=base.res5_dilation,
        rpn_hidden_channels=shape("proposal_generator.rpn_head.conv.weight")[0],
        anchor_base_size=base.anchor_base_size,
        anchor_ratios=base.anchor_ratios,
        anchor_scales=base.anchor_scales,
        num_classes=shape(f"{PREDICTOR}.cls_score.weight")[0],
        num_attributes=shape(f"{PREDICTOR}.attr_score.weight")[0],
        cls_embed_dim=shape(f"{PREDICTOR}.cls_embedding.weight")[1],
        attr_hidden_dim=shape(f"{PREDICTOR}.fc_attr.weight")[0],
        bn_eps=base.bn_eps,
    )


def convert_state_dict(source: Mapping[str, torch.Tensor], layout: str, arch: DetectorArch | None = None, *,
                       background_last: bool = True, no_attribute_last: bool = True
                       ) -> tuple[dict[str, torch.Tensor], DetectorArch, dict[str, Any]]:
    """A published state dict -> (ssrp state dict, arch, report of every change)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    state = {_rename_bn(k): v.detach().float() if v.is_floating_point() else v for k, v in source.items()}
    arch = arch or infer_arch(state)
    report: dict[str, Any] = {"layout": layout}
    cell = state.get(CELL_ANCHORS)
    state, report["dropped"] = _drop_known(state)
    perm, report["anchors"] = anchor_permutation(cell, arch, layout)
    state, report["rpn_objectness"] = _rpn_to_single_logit(state, arch.num_anchors)
    state = _permute_rpn(state, perm)
    if background_last:
        state = _roll_rows(state, [f"{PREDICTOR}.cls_score.weight", f"{PREDICTOR}.cls_score.bias",
                                   f"{PREDICTOR}.cls_embedding.weight"])
    if no_attribute_last:
        state = _roll_rows(state, [f"{PREDICTOR}.attr_score.weight", f"{PREDICTOR}.attr_score.bias"])
    report["class_order"] = "background moved from last to row 0" if background_last else "background already row 0"
    report["attribute_order"] = ("no-attribute moved from last to row 0" if no_attribute_last
                                 else "no-attribute already row 0")
    table = caffe_anchor_table(arch.anchor_base_size, arch.anchor_ratios, arch.anchor_scales)
    state["proposal_generator.caffe_anchors"] = torch.as_tensor(table, dtype=torch.float32)
    return state, arch, report


def _rename_bn(key: str) -> str:
    return re.sub(r"\.norm\.gamma$", ".norm.weight", re.sub(r"\.norm\.beta$", ".norm.bias", key))


def _drop_known(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    kept: dict[str, torch.Tensor] = {}
    dropped: dict[str, Any] = {"num_batches_tracked": 0, "bbox_pred": 0, "cell_anchors": 0}
    for key, value in state.items():
        if key.startswith("pixel_"):
            dropped[key] = [round(float(x), 4) for x in value.reshape(-1)]  # reported, not used
        elif _DROPPED.search(key):
            name = "num_batches_tracked" if key.endswith("num_batches_tracked") else (
                "bbox_pred" if "bbox_pred" in key else "cell_anchors")
            dropped[name] += 1
        else:
            kept[key] = value
    return kept, dropped


def detectron2_cell_anchors(sizes=D2_ANCHOR_SIZES, ratios=(0.5, 1.0, 2.0)) -> np.ndarray:
    """detectron2 DefaultAnchorGenerator.generate_cell_anchors: size-major, centred at 0."""
    rows = []
    for size in sizes:
        for ratio in ratios:
            w = math.sqrt(size * size / ratio)
            h = ratio * w
            rows.append([-w / 2.0, -h / 2.0, w / 2.0, h / 2.0])
    return np.asarray(rows, dtype=np.float64)


def anchor_permutation(cell: torch.Tensor | None, arch: DetectorArch, layout: str) -> tuple[list[int], dict]:
    """perm[j] = the checkpoint's anchor index that matches Caffe anchor j (by width and height)."""
    caffe = caffe_anchor_table(arch.anchor_base_size, arch.anchor_ratios, arch.anchor_scales)
    if cell is not None:
        table, origin = cell.detach().double().numpy().reshape(-1, 4), "stored in the checkpoint"
    else:
        table, origin = detectron2_cell_anchors(ratios=arch.anchor_ratios), "not stored; detectron2 default assumed"
    if table.shape != caffe.shape:
        raise ConversionError(f"checkpoint has {table.shape[0]} anchors, the architecture {caffe.shape[0]}")
    plus = np.array([0.0, 0.0, 1.0, 1.0])
    ck_wh = np.log(np.maximum(table[:, 2:] - table[:, :2], 1e-6))
    cf_wh = np.log((caffe + plus)[:, 2:] - caffe[:, :2])
    dist = np.abs(ck_wh[None, :, :] - cf_wh[:, None, :]).max(axis=2)  # [caffe, checkpoint]
    perm = [int(i) for i in dist.argmin(axis=1)]
    worst = float(dist[np.arange(len(perm)), perm].max())
    if sorted(perm) != list(range(len(perm))) or worst > math.log(1.15):
        raise ConversionError(f"anchor table ({origin}) does not match the Caffe anchor shapes: {table.tolist()}")
    centres = ((table[:, :2] + table[:, 2:]) / 2.0).mean(axis=0).round(3).tolist()
    return perm, {"source_table": origin, "permutation": perm, "identity": perm == list(range(len(perm))),
                  "source_centre": centres, "caffe_centre": [7.5, 7.5], "max_log_shape_error": round(worst, 4)}


def _rpn_to_single_logit(state: dict[str, torch.Tensor], anchors: int) -> tuple[dict[str, torch.Tensor], str]:
    w, b = state.get(f"{OBJECTNESS}.weight"), state.get(f"{OBJECTNESS}.bias")
    if w is None or b is None:
        raise ConversionError(f"missing {OBJECTNESS}.weight/bias")
    if w.shape[0] == anchors:
        return state, "one logit per anchor (kept)"
    if w.shape[0] == 2 * anchors:
        state = dict(state)
        state[f"{OBJECTNESS}.weight"] = w[anchors:] - w[:anchors]
        state[f"{OBJECTNESS}.bias"] = b[anchors:] - b[:anchors]
        return state, "two logits per anchor (Caffe softmax bg|fg) -> fg - bg"
    raise ConversionError(f"{OBJECTNESS}.weight has {w.shape[0]} channels; expected {anchors} or {2 * anchors}")


def _permute_rpn(state: dict[str, torch.Tensor], perm: list[int]) -> dict[str, torch.Tensor]:
    if perm == list(range(len(perm))):
        return state
    state = dict(state)
    idx = torch.as_tensor(perm)
    idx4 = (idx[:, None] * 4 + torch.arange(4)[None, :]).reshape(-1)
    for name, index in ((OBJECTNESS, idx), (DELTAS, idx4)):
        state[f"{name}.weight"] = state[f"{name}.weight"][index]
        state[f"{name}.bias"] = state[f"{name}.bias"][index]
    return state


def _roll_rows(state: dict[str, torch.Tensor], keys: list[str]) -> dict[str, torch.Tensor]:
    state = dict(state)
    for key in keys:
        if key not in state:
            raise ConversionError(f"missing key {key}")
        state[key] = torch.roll(state[key], shifts=1, dims=0)  # last row becomes row 0
    return state


def convert_checkpoint(path: str, layout: str, out_dir: str, *, allow_unverified_pickle: bool = False,
                       arch: DetectorArch | None = None, name: str = "butd-r101-vg") -> dict:
    """Read a published checkpoint, convert, check, and write detector.safetensors + manifest.json."""
    if layout == "hf":
        source, digest = read_hf_checkpoint(path), sha256_file(path)
    elif layout == "d2":
        source, digest = read_d2_pickle(path, allow_unverified_pickle)
    else:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    state, arch, report = convert_state_dict(source, layout, arch)
    manifest = save_detector(out_dir, state, arch, name=name,
                             source={"file": os.path.basename(path), "layout": layout, "sha256": digest},
                             conversion=report)
    logger.info("converted %s (%s layout): %s", path, layout, report)
    return manifest


# --------------------------------------------------------------------------------------------
# The inverse: an ssrp state dict in a published layout (tiny models and converter tests).


def to_published_layout(state: Mapping[str, torch.Tensor], arch: DetectorArch, layout: str = "hf", *,
                        anchors: str = "detectron2", rpn_logits: str = "single") -> dict[str, torch.Tensor]:
    """Re-express an ssrp state dict the way a published checkpoint stores it.

    ``anchors``: "detectron2" (size-major table centred at 0; RPN channels reordered to match),
    "caffe" (the Caffe table) or "none" (not stored). ``rpn_logits``: "single" or "caffe2" (bg|fg).
    """
    out = {k: v.clone() for k, v in state.items() if k != "proposal_generator.caffe_anchors"}
    for key in [k for k in out if k.endswith(".norm.running_var")]:
        if layout == "hf":
            out[key.replace("running_var", "num_batches_tracked")] = torch.tensor(0, dtype=torch.int64)
    for key in (f"{PREDICTOR}.cls_score.weight", f"{PREDICTOR}.cls_score.bias", f"{PREDICTOR}.cls_embedding.weight",
                f"{PREDICTOR}.attr_score.weight", f"{PREDICTOR}.attr_score.bias"):
        out[key] = torch.roll(out[key], shifts=-1, dims=0)  # row 0 becomes the last row
    gen = torch.Generator().manual_seed(0)
    out[f"{PREDICTOR}.bbox_pred.weight"] = torch.randn((arch.num_classes - 1) * 4, arch.feature_dim, generator=gen)
    out[f"{PREDICTOR}.bbox_pred.bias"] = torch.zeros((arch.num_classes - 1) * 4)
    if anchors != "none":
        caffe = torch.as_tensor(caffe_anchor_table(arch.anchor_base_size, arch.anchor_ratios, arch.anchor_scales),
                                dtype=torch.float32)
        table = caffe if anchors == "caffe" else torch.as_tensor(detectron2_cell_anchors(ratios=arch.anchor_ratios),
                                                                 dtype=torch.float32)
        out[CELL_ANCHORS] = table
    if anchors in ("detectron2", "none"):
        perm, _ = anchor_permutation(None, arch, "d2")
        inverse = [perm.index(i) for i in range(len(perm))]  # checkpoint index -> caffe index
        out = _permute_rpn(out, inverse)
    if rpn_logits == "caffe2":
        w, b = out[f"{OBJECTNESS}.weight"], out[f"{OBJECTNESS}.bias"]
        bg_w, bg_b = torch.randn(w.shape, generator=gen) * 0.01, torch.randn(b.shape, generator=gen)
        out[f"{OBJECTNESS}.weight"] = torch.cat([bg_w, w + bg_w])  # softmax([bg, fg])[1] = sigmoid(w)
        out[f"{OBJECTNESS}.bias"] = torch.cat([bg_b, b + bg_b])
    return out


def convert_fetched(model_dir: str, fetched: Sequence = ()) -> dict:
    """post-fetch step: the downloaded HF checkpoint (its sha256 pinned and checked) -> detector.safetensors +
    manifest.json."""
    return convert_checkpoint(os.path.join(model_dir, HF_CHECKPOINT), "hf", model_dir)
