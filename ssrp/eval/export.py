"""``ssrp export``: relationship-aware features for downstream code, in one HDF5 file.

Layout (every image id written as a decimal string key; see docs/evaluation.md)::

    /                      attrs: format, variant, checkpoint, stage1, hidden, proj_dim, max_nodes,
                                  fusion_weight, rel_temperature, f_align_source, images, pairs
    /images/<image_id>/objects      f4 [N, H]  refined object features (raw view, mean over captions)
    /images/<image_id>/objects_rel  f4 [N, H]  softmax(-R_v / t) @ objects (the Obj.+Rel. enhancement)
    /images/<image_id>/r_v          f4 [N, N]  R_v (mean over captions)
    /images/<image_id>/boxes        f4 [N, 4]  x1 y1 x2 y2, raw-view pixels
    /images/<image_id>/obj_ids      i4 [N]     detector labels
    /pairs/<image_id>/caption_ids   i8 [C]
    /pairs/<image_id>/f_align       f4 [C, H]  g_align output of Eq. 4 (only with the stage-1 head)
    /pairs/<image_id>/z_v, z_w      f4 [C, P]  projections of vec(R_v), vec(R_w)
    /pairs/<image_id>/r_v_vec, r_w_vec  f4 [C, M]  vec(R_v), vec(R_w): strict upper triangles, M = S(S-1)/2
    /pairs/<image_id>/fused         f4 [C, H + P]  [f_align ; rel]  (f4 [C, P], just rel, without f_align)

with rel = w * z_v / |z_v| + (1 - w) * z_w / |z_w| (w = ``fusion_weight``): a linear fusion of the two
relationships in the space where the cross-modal contrastive loss aligns them.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ssrp import __version__
from ssrp.eval.inference import Output, ProbeModel
from ssrp.eval.metrics import upper_triangle
from ssrp.eval.retrieval import ImageFeatures, enhance, image_features
from ssrp.fileutil import atomic_file

logger = logging.getLogger(__name__)

FORMAT = "ssrp-export/1"


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def fused_relation(z_v: np.ndarray, z_w: np.ndarray, weight: float) -> np.ndarray:
    """rel = w * z_v/|z_v| + (1 - w) * z_w/|z_w| (rows)."""
    return weight * unit(z_v) + (1.0 - weight) * unit(z_w)


def fused_vector(f_align: np.ndarray | None, z_v: np.ndarray, z_w: np.ndarray, weight: float) -> np.ndarray:
    """[f_align ; rel], or rel alone without f_align."""
    rel = fused_relation(z_v, z_w, weight)
    return rel if f_align is None else np.concatenate([np.asarray(f_align, np.float64), rel], -1)


def export(model: ProbeModel, image_ids: list[int], path: str) -> dict:
    """Write the HDF5 file (atomically: a temporary file renamed at the end); returns a summary."""
    import h5py

    cfg = model.cfg
    size = model.train_cfg.stage2.max_nodes
    if model.align is None:
        logger.warning("no g_align head (pass --stage1 RUN1/checkpoint.pt): f_align is not exported and "
                       "'fused' holds the fused relationship vector only")
    images = pairs = 0
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as h5:
        _root_attrs(h5, model, size)
        for feats in image_features(model, image_ids, cfg.image_captions, desc="export: images"):
            _write_image(h5.require_group("images"), model, feats)
            pairs += _write_pairs(h5.require_group("pairs"), feats.image_id, feats.outputs, size, cfg.fusion_weight)
            images += 1
        h5.attrs["images"] = images
        h5.attrs["pairs"] = pairs
    return {"path": path, "images": images, "pairs": pairs, "f_align": model.align is not None}


def _root_attrs(h5, model: ProbeModel, size: int) -> None:
    tc = model.train_cfg
    attrs = {
        "format": FORMAT, "ssrp_version": __version__, "variant": tc.model.variant,
        "checkpoint": os.path.abspath(model.ckpt_path),
        "stage1": os.path.abspath(model.stage1_path) if model.stage1_path else "", "hidden": tc.model.hidden, "proj_dim": tc.stage2.proj_dim, "max_nodes": size,
        "fusion_weight": model.cfg.fusion_weight, "rel_temperature": model.cfg.rel_temperature,
        "f_align_source": "g_align" if model.align is not None else "none",
        "fused": "[f_align ; w*z_v/|z_v| + (1-w)*z_w/|z_w|]" if model.align is not None
        else "w*z_v/|z_v| + (1-w)*z_w/|z_w|",
    }
    for k, v in attrs.items():
        h5.attrs[k] = v


def _write_image(group, model: ProbeModel, feats: ImageFeatures) -> None:
    rec = model.reader.image(feats.image_id, "raw")
    n = feats.objects.shape[0] if rec.num_boxes else 0
    g = group.create_group(str(feats.image_id))
    g.create_dataset("objects", data=feats.objects[:n].astype(np.float32))
    g.create_dataset("objects_rel", data=enhance(feats.objects[:n], feats.r_v[:n, :n],
                                                 model.cfg.rel_temperature).astype(np.float32))
    g.create_dataset("r_v", data=feats.r_v[:n, :n].astype(np.float32))
    g.create_dataset("boxes", data=np.asarray(rec.boxes[:n], np.float32))
    g.create_dataset("obj_ids", data=np.asarray(rec.obj_ids[:n], np.int32))


def _write_pairs(group, image_id: int, outputs: list[Output], size: int, weight: float) -> int:
    g = group.create_group(str(image_id))
    z_v = np.stack([o.z_v for o in outputs])
    z_w = np.stack([o.z_w for o in outputs])
    f_align = np.stack([o.f_align for o in outputs]) if outputs[0].f_align is not None else None
    g.create_dataset("caption_ids", data=np.array([o.pair.caption_id for o in outputs], np.int64))
    if f_align is not None:
        g.create_dataset("f_align", data=f_align.astype(np.float32))
    g.create_dataset("z_v", data=z_v.astype(np.float32))
    g.create_dataset("z_w", data=z_w.astype(np.float32))
    g.create_dataset("r_v_vec", data=np.stack([upper_triangle(o.r_v, size) for o in outputs]))
    g.create_dataset("r_w_vec", data=np.stack([upper_triangle(o.r_w, size) for o in outputs]))
    g.create_dataset("fused", data=fused_vector(f_align, z_v, z_w, weight).astype(np.float32))
    return len(outputs)
