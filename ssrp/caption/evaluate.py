"""Decoding a split, the COCO caption metrics and the results JSON.

Metrics are the standard COCO caption evaluation (pycocoevalcap, the coco-caption code for Python 3):
references (the split file's raw sentences) and candidates go through the Stanford PTB tokenizer, then
BLEU-1..4, METEOR, ROUGE-L, CIDEr and, where its Java part can run, SPICE. The tokenizer and METEOR run
in Java (``java`` on the PATH). SPICE also needs the Stanford CoreNLP 3.6.0 jars, which pycocoevalcap
downloads on first use; where they are absent (no network) SPICE is skipped with a note unless
``decode.spice=on`` asks for it.

``predict`` writes what the COCO evaluation server takes: ``[{"image_id": int, "caption": str}, ...]``.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
from collections.abc import Sequence

import numpy as np
import torch

from ssrp.caption.beam import beam_search
from ssrp.caption.cider import CiderD
from ssrp.caption.data import KarpathyImage
from ssrp.caption.features import FeatureStore
from ssrp.caption.model import UpDown
from ssrp.caption.vocab import Vocab
from ssrp.fileutil import atomic_file

logger = logging.getLogger(__name__)

METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")


@torch.no_grad()
def decode_images(model: UpDown, store: FeatureStore, image_ids: Sequence[int], max_words: int, beam_size: int,
                  batch_size: int, device: torch.device, progress: bool = False) -> np.ndarray:
    """Word ids [M, max_words] of each image's caption: beam search, or greedy with beam_size 1."""
    from tqdm import tqdm

    model.eval()
    out = []
    for start in tqdm(range(0, len(image_ids), batch_size), desc="decoding", unit="batch", disable=not progress):
        att, mask = store.batch(image_ids[start : start + batch_size])
        att, mask = torch.from_numpy(att).to(device), torch.from_numpy(mask).to(device)
        if beam_size > 1:
            seq, _ = beam_search(model, att, mask, beam_size, max_words)
        else:
            seq, _ = model.decode(att, mask, max_words)
        out.append(seq.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, max_words), np.int64)


def results_json(image_ids: Sequence[int], seqs: np.ndarray, vocab: Vocab) -> list[dict]:
    return [{"image_id": int(i), "caption": vocab.sentence(s)} for i, s in zip(image_ids, seqs, strict=True)]


def write_results(results: list[dict], path: str) -> None:
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(results, fh)


def quick_cider(seqs: np.ndarray, images: Sequence[KarpathyImage], vocab: Vocab, max_length: int) -> float:
    """CIDEr (coco-caption's formula, corpus document frequencies) on the split file's tokens, in-process:
    what picks the best checkpoint. The reported figures come from ``coco_metrics``."""
    refs = [[vocab.encode(t, 10**6).tolist() for t in img.tokens] for img in images]
    hyps = [vocab.encode(vocab.decode(s), max_length).tolist() for s in seqs]
    return float(CiderD.corpus(refs, len(vocab)).scores(hyps, refs).mean())


# ------------------------------------------------------------------------------------------------
# COCO caption evaluation


def require_java() -> None:
    if shutil.which("java") is None:
        raise RuntimeError("the COCO caption metrics need Java (the PTB tokenizer and METEOR are Java programs): "
                           "install a JRE, e.g. apt-get install default-jre-headless")


def spice_status() -> tuple[bool, str]:
    """Whether SPICE can run here, and why not."""
    import pycocoevalcap.spice.get_stanford_models as models

    jar = os.path.join(models.SPICEDIR, models.SPICELIB, f"{models.JAR}.jar")
    if not os.path.exists(jar):
        return False, (f"SPICE skipped: it needs the Stanford CoreNLP models ({jar}), which pycocoevalcap downloads "
                       "on first use; run `python -m pycocoevalcap.spice.get_stanford_models` where there is network")
    return True, ""


def coco_metrics(results: list[dict], images: Sequence[KarpathyImage], spice: str = "auto") -> dict:
    """The COCO caption metrics of the results against each image's raw reference sentences."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    require_java()
    refs_by_id = {img.image_id: img.raw for img in images}
    missing = [r["image_id"] for r in results if r["image_id"] not in refs_by_id]
    if missing:
        raise ValueError(f"{len(missing)} results have no references in the split, e.g. image {missing[0]}")
    tok = PTBTokenizer()
    gts = tok.tokenize({r["image_id"]: [{"caption": c} for c in refs_by_id[r["image_id"]]] for r in results})
    res = tok.tokenize({r["image_id"]: [{"caption": r["caption"]}] for r in results})
    out: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):  # the BLEU scorer prints its n-gram counts
        bleu, _ = Bleu(4).compute_score(gts, res)
    out.update({f"Bleu_{n + 1}": float(b) for n, b in enumerate(bleu)})
    out["METEOR"] = float(Meteor().compute_score(gts, res)[0])
    out["ROUGE_L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    out["SPICE"], note = _spice(gts, res, spice)
    if note:
        out["notes"] = [note]
    out["images"] = len(results)
    return out


def _spice(gts: dict, res: dict, mode: str) -> tuple[float | None, str]:
    if mode == "off":
        return None, "SPICE not computed (decode.spice=off)"
    ok, why = spice_status()
    if not ok:
        if mode == "on":
            raise RuntimeError(why)
        logger.warning("%s", why)
        return None, why
    from pycocoevalcap.spice.spice import Spice

    return float(Spice().compute_score(gts, res)[0]), ""


def format_metrics(m: dict) -> str:
    cells = []
    for k in METRICS:
        v = m.get(k)
        cells.append(f"{k} {'-' if v is None else f'{100 * v:.1f}'}")
    return "  ".join(cells)
