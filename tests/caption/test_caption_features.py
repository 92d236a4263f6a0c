"""Attention features: the same BUTD features from every source; SSRP-Visual's refined objects and relations."""

import base64
import csv
import dataclasses

import numpy as np
import pytest

from ssrp.caption.config import FeatureConfig
from ssrp.caption.features import FeatureStore, SSRPObjects, check_text_free, ensure_cache, open_source
from ssrp.train.config import ModelConfig

BUTD = FeatureConfig(parts=("butd",), batch_size=4)


def _butd_tsv(corpus, path):
    """The bottom-up-attention generate_tsv format: image_id, image_w, image_h, num_boxes, boxes, features."""
    from ssrp.features.export import image_records

    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        for r in image_records(corpus):
            w.writerow([r.image_id, r.width, r.height, r.num_boxes,
                        base64.b64encode(np.asarray(r.boxes, np.float32).tobytes()).decode(),
                        base64.b64encode(np.asarray(r.features, np.float32).tobytes()).decode()])
    return path


def test_every_source_gives_the_same_cached_butd_features(planted, tmp_path):
    from ssrp.features.export import export_hdf5, export_lxmert_tsv

    corpus = planted["corpus"]
    ids = [img["image_id"] for img in planted["images"]][::-1]
    sources = {"corpus": corpus, "h5": str(tmp_path / "f.h5"), "butd_tsv": _butd_tsv(corpus, str(tmp_path / "b.tsv")),
               "lxmert_tsv": str(tmp_path / "l.tsv")}
    export_hdf5(corpus, sources["h5"])
    export_lxmert_tsv(corpus, sources["lxmert_tsv"])
    stores = {name: FeatureStore(ensure_cache(BUTD, src, None, ids, str(tmp_path / name), progress=False))
              for name, src in sources.items()}
    planted_by_id = {img["image_id"]: img for img in planted["images"]}
    for i in ids[:10]:
        expected = planted_by_id[i]["features"].astype(np.float16)
        for name, store in stores.items():
            np.testing.assert_array_equal(store.get(i), expected, err_msg=name)
    att, mask = stores["h5"].batch(ids[:3])
    assert att.dtype == np.float32 and mask.sum(1).tolist() == [len(planted_by_id[i]["features"]) for i in ids[:3]]


def test_the_cache_is_reused_for_the_same_inputs_and_rebuilt_for_others(planted, tmp_path):
    ids = [img["image_id"] for img in planted["images"]][:5]
    a = ensure_cache(BUTD, planted["corpus"], None, ids, str(tmp_path), progress=False)
    assert ensure_cache(BUTD, planted["corpus"], None, list(reversed(ids)), str(tmp_path), progress=False) == a
    assert ensure_cache(dataclasses.replace(BUTD, max_objects=2), planted["corpus"], None, ids, str(tmp_path),
                        progress=False) != a
    assert ensure_cache(BUTD, planted["corpus"], None, ids[:4], str(tmp_path), progress=False) != a


def test_missing_images_and_unknown_sources_are_clear_errors(planted, tmp_path):
    with pytest.raises(ValueError, match="image 4242: no raw view in the corpus"):
        ensure_cache(BUTD, planted["corpus"], None, [4242], str(tmp_path), progress=False)
    (tmp_path / "x.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="unknown feature source"):
        open_source(str(tmp_path / "x.npz"))
    with pytest.raises(ValueError, match="needs SSRP-Visual's stage-2 checkpoint"):
        ensure_cache(FeatureConfig(), planted["corpus"], None, [1000], str(tmp_path), progress=False)


def test_refined_objects_and_relations_equal_the_probe_model_run_with_a_caption(planted, ssrp_visual, tmp_path):
    """SSRP-Visual's object states do not depend on the caption: computed from the image alone they equal
    what ``ssrp eval`` computes for an image-caption pair; objects_rel is softmax(-R_v / t) V."""
    from ssrp.eval.config import EvalConfig
    from ssrp.eval.inference import Pair, ProbeModel
    from ssrp.eval.retrieval import enhance

    image_id = planted["images"][3]["image_id"]
    probe = ProbeModel(ssrp_visual, planted["corpus"], EvalConfig(progress=False, device="cpu")).load()
    with_caption = probe([Pair(image_id, image_id * 10 + 2)])[0]
    cfg = FeatureConfig(batch_size=4)
    store = FeatureStore(ensure_cache(cfg, planted["corpus"], ssrp_visual, [image_id, 1000, 1001], str(tmp_path),
                                      device="cpu", progress=False))
    row = store.get(image_id).astype(np.float32)
    butd, hidden = 16, with_caption.objects.shape[1]
    assert row.shape == (len(with_caption.objects), butd + 2 * hidden)
    np.testing.assert_allclose(row[:, butd : butd + hidden], with_caption.objects, atol=2e-3)
    np.testing.assert_allclose(row[:, butd + hidden :], enhance(with_caption.objects, with_caption.r_v), atol=2e-3)
    objects, r_v = SSRPObjects(ssrp_visual, "cpu")(list(open_source(planted["corpus"]).read([image_id])))[0]
    np.testing.assert_allclose(objects, with_caption.objects, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(r_v, with_caption.r_v, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("variant, share_attention, ok", [("visual", "separate", True), ("share", "separate", True),
                                                          ("share", "joint", False), ("cross", "separate", False)])
def test_only_variants_whose_objects_ignore_the_caption_are_accepted(variant, share_attention, ok):
    cfg = ModelConfig(variant=variant, share_attention=share_attention)
    if ok:
        check_text_free(cfg, "ckpt")
    else:
        with pytest.raises(ValueError, match=f"SSRP-{variant} checkpoint; its object states depend on the caption"):
            check_text_free(cfg, "ckpt")


def test_a_stage1_checkpoint_is_refused(ssrp_visual):
    stage1 = ssrp_visual.replace("run2", "run1")
    with pytest.raises(ValueError, match="stage1 checkpoint; the refined objects and relations come from stage 2"):
        SSRPObjects(stage1, "cpu")
