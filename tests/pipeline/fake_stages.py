"""Deterministic fake stages, for unit tests of the orchestration around the real stages only."""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, ImageOps

from ssrp.corpus import ImageRecord, TextRecord
from ssrp.deadletter import DeadLetter
from ssrp.pipeline.stages import BuildStages, CaptionResult


class FakeStages(BuildStages):
    fail_captions: set = set()

    def load(self, images=True, captions=True):
        return self

    def model_identities(self):
        return {"fake": "v1"}

    def resolved_config(self):
        return {"split": self.cfg.split, "stages": list(self.cfg.stages), "max_images": self.cfg.max_images}

    def decode(self, inp, data):
        if not isinstance(data, bytes):
            return data
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                w, h = ImageOps.exif_transpose(im).size  # as the real decode does
        except Exception as err:  # noqa: BLE001 - any decoding failure is a dead letter here
            return DeadLetter(inp.key, "decode", "corrupt_image", str(err)[:80])
        return (inp.image_id, w, h, int(hashlib.sha256(data).hexdigest()[:8], 16))

    def detect(self, decoded):
        out = []
        for image_id, w, h, seed in decoded:
            rng = np.random.default_rng(seed)
            views = ["raw", "rot90"] if self.cfg.has("views") else ["raw"]
            recs = []
            for view in views:
                xy = rng.uniform(0, min(w, h) / 2, (4, 2)).astype(np.float32)
                recs.append(ImageRecord(image_id=image_id, view=view, height=h, width=w,
                                        boxes=np.concatenate([xy, xy + 5], 1), features=rng.standard_normal((4, 8)).astype(np.float16),
                                        obj_ids=np.arange(4, dtype=np.int32), obj_conf=np.ones(4, np.float32),
                                        attr_ids=np.zeros(4, np.int32), attr_conf=np.zeros(4, np.float32)))
            out.append(recs)
        return out

    def captions(self, batch):
        if self.cfg.source == "corpus":  # the source's variants, as the real stages read them (no parser here)
            return [self._source_texts(c) for c in batch]
        out = []
        for c in batch:
            text = c.text.strip()
            if not text:
                out.append(DeadLetter(c.key, "translate", "empty_caption", "empty"))
                continue
            if len(text.split()) > 500:
                out.append(DeadLetter(c.key, "translate", "too_long", f"{len(text.split())} words"))
                continue
            recs = [TextRecord(caption_id=c.caption_id, image_id=c.image_id, variant="raw", text=text)]
            if self.cfg.has("translate"):
                recs.append(TextRecord(caption_id=c.caption_id, image_id=c.image_id, variant="de",
                                       text=" ".join(reversed(text.split())), pivot="x"))
            out.append(CaptionResult(c, recs, {"ratio_filter:ru": 1} if self.cfg.has("translate") else {}))
        return out
