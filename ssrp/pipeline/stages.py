"""The stage objects of a build and the per-batch work, shared by the local runner and Beam.

Nothing here imports Beam: the local runner calls these methods in a loop, the Beam DoFns and
ModelHandlers call the very same methods on workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ssrp.corpus import ImageRecord, TextRecord, encode, text_key
from ssrp.deadletter import DeadLetter, RecordFailure
from ssrp.pipeline.coco import CaptionInput, ImageInput
from ssrp.pipeline.config import BuildConfig

logger = logging.getLogger(__name__)


@dataclass
class CaptionResult:
    """The text records of one caption, and what was dropped on the way (counted, not hidden)."""

    caption: CaptionInput
    records: list[TextRecord]
    dropped: dict[str, int] = field(default_factory=dict)


class BuildStages:
    """Builds and holds the plain-Python stage objects of a build (one set per process)."""

    def __init__(self, cfg: BuildConfig, open_fn: Callable = open):
        self.cfg = cfg
        self.open_fn = open_fn
        self._image_stage = None
        self._translator = None
        self._parser = None

    # -- construction (lazy imports: only the stages a build uses are imported) -----------------

    def load(self, images: bool = True, captions: bool = True) -> BuildStages:
        """Load the models of the image side, the caption side, or both (a worker needs one)."""
        if images and self._image_stage is None:
            self._image_stage = make_image_stage(self.cfg)
            self._image_stage.load()
        if captions and self.cfg.has("translate") and self._translator is None:
            self._translator = make_translator(self.cfg)
            self._translator.load()
        if captions and self.cfg.has("parse") and self._parser is None:
            self._parser = make_parser(self.cfg)
            self._parser.load()
        return self

    def model_identities(self) -> dict:
        """The identity of every model used (written into the manifest)."""
        from ssrp.pipeline.models import model_identities

        return model_identities(self.cfg)

    def resolved_config(self) -> dict:
        """Every setting that decides the corpus's bytes, defaults included."""
        from ssrp.pipeline.models import resolved_config

        return resolved_config(self.cfg)

    # -- images ---------------------------------------------------------------------------------

    def read_image(self, inp: ImageInput) -> bytes | DeadLetter:
        try:
            with self.open_fn(inp.path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return DeadLetter(inp.key, "read", "missing_file", f"{inp.path} does not exist")
        except OSError as err:
            return DeadLetter(inp.key, "read", "unreadable_file", f"{inp.path}: {err}")

    def images(self, batch: Sequence[tuple[ImageInput, bytes]]) -> list[list[ImageRecord] | DeadLetter]:
        """Decode and run the image stage; one entry per input, in order."""
        from ssrp.features import decode_image

        decode_cfg = self._decode_config()
        out: list[list[ImageRecord] | DeadLetter | None] = [None] * len(batch)
        decoded, where = [], []
        for i, (inp, data) in enumerate(batch):
            try:
                decoded.append(decode_image(inp.image_id, data, inp.file_name, decode_cfg))
                where.append(i)
            except RecordFailure as failure:
                out[i] = DeadLetter.from_failure(inp.key, "decode", failure)
        if decoded:
            for i, result in zip(where, self._run_image_stage(decoded), strict=True):
                out[i] = result
        return out  # type: ignore[return-value]

    def _decode_config(self):
        from ssrp.pipeline.models import features_config

        return features_config(self.cfg).decode

    def _run_image_stage(self, decoded: list) -> list[list[ImageRecord] | DeadLetter]:
        results = self._image_stage(decoded)
        return [r if isinstance(r, (list, DeadLetter)) else [r] for r in results]

    # -- captions -------------------------------------------------------------------------------

    def captions(self, batch: Sequence[CaptionInput]) -> list[CaptionResult | DeadLetter]:
        """Back-translate (if on) and parse (if on); one entry per caption, in order."""
        out: list[CaptionResult | DeadLetter] = []
        if self._translator is not None:
            translated = self._translator([(c.caption_id, c.image_id, c.text) for c in batch])
            for caption, result in zip(batch, translated, strict=True):
                out.append(result if isinstance(result, DeadLetter) else self._with_drops(caption, result))
        else:
            out = [self._raw_only(c) for c in batch]
        if self._parser is not None:
            out = self._parse(out)
        return out

    def _with_drops(self, caption: CaptionInput, result) -> CaptionResult:
        records, dropped = translation_records(result)
        return CaptionResult(caption, records, dropped)

    def _raw_only(self, caption: CaptionInput) -> CaptionResult | DeadLetter:
        text = caption.text.strip() if isinstance(caption.text, str) else ""
        if not text:
            return DeadLetter(caption.key, "read", "empty_caption", "caption is empty or whitespace")
        return CaptionResult(caption, [TextRecord(caption_id=caption.caption_id, image_id=caption.image_id,
                                                  variant="raw", text=text)])

    def _parse(self, results: list[CaptionResult | DeadLetter]) -> list[CaptionResult | DeadLetter]:
        flat = [(i, r) for i, res in enumerate(results) if isinstance(res, CaptionResult) for r in res.records]
        parsed = self._parser([r for _, r in flat]) if flat else []
        by_caption: dict[int, list] = {}
        for (i, _), p in zip(flat, parsed, strict=True):
            by_caption.setdefault(i, []).append(p)
        out: list[CaptionResult | DeadLetter] = []
        for i, res in enumerate(results):
            out.append(res if isinstance(res, DeadLetter) else _keep_parsed(res, by_caption.get(i, [])))
        return out


def _keep_parsed(res: CaptionResult, parsed: list) -> CaptionResult | DeadLetter:
    """A caption whose raw sentence fails to parse is dead; a paraphrase that fails is dropped."""
    records, dropped = [], dict(res.dropped)
    for p in parsed:
        if isinstance(p, DeadLetter):
            if p.key == text_key(res.caption.caption_id, "raw"):
                return p
            name = f"parse_failed:{p.key.rsplit('/', 1)[-1]}"
            dropped[name] = dropped.get(name, 0) + 1
        else:
            records.append(p)
    return CaptionResult(res.caption, records, dropped)


def translation_records(records: list[TextRecord]) -> tuple[list[TextRecord], dict[str, int]]:
    """The translator's records of one caption, and its dropped paraphrases (kept in the raw record's
    meta) counted by variant and reason."""
    dropped: dict[str, int] = {}
    for entry in records[0].meta.get("dropped", ()) if records else ():
        name = f"{entry.get('variant')}/{entry.get('reason')}"
        dropped[name] = dropped.get(name, 0) + 1
    return list(records), dropped


def encode_all(records: Sequence[ImageRecord | TextRecord]) -> list[tuple[str, bytes]]:
    return [(r.key, encode(r)) for r in records]


def make_image_stage(cfg: BuildConfig):
    from ssrp.pipeline.models import make_image_stage as make

    return make(cfg)


def make_translator(cfg: BuildConfig):
    from ssrp.pipeline.models import make_translator as make

    return make(cfg)


def make_parser(cfg: BuildConfig):
    from ssrp.pipeline.models import make_parser as make

    return make(cfg)


__all__ = ["BuildStages", "CaptionResult", "encode_all"]
