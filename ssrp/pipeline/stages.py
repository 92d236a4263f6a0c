"""The stage objects of a build and the per-batch work, shared by the local runner and Beam.

Nothing here imports Beam: the local runner calls these methods in a loop, the Beam DoFns and
ModelHandlers call the very same methods on workers.

Images go through three steps: ``read_image`` (the file's bytes, or a source corpus's records of the image),
``decode`` (bytes -> DecodedImage, or a dead letter; the local runner runs it in worker processes) and
``run_images`` (the detector and the views, on the device). ``images`` does all three for Beam. Captions go
through ``captions``: back-translation and/or parsing of a batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ssrp.corpus import CorpusReader, ImageRecord, TextRecord, encode, image_key, text_key
from ssrp.deadletter import DeadLetter, RecordFailure
from ssrp.features.image import DecodedImage, decode_image
from ssrp.pipeline.config import BuildConfig
from ssrp.pipeline.inputs import CaptionInput, ImageInput
from ssrp.pipeline.settings import (
    features_config,
    make_image_stage,
    make_parser,
    make_translator,
    model_identities,
    resolved_config,
)

logger = logging.getLogger(__name__)

Encoded = tuple[str, bytes]  # (key, encoded record)


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
        self._decode_cfg = features_config(cfg).decode if cfg.has("features") else None
        self._image_stage = None
        self._translator = None
        self._parser = None
        self._source: CorpusReader | None = None

    def __getstate__(self) -> dict:  # to Beam workers: the settings, never loaded models or open shards
        return {"cfg": self.cfg, "open_fn": self.open_fn}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["cfg"], state["open_fn"])

    # -- construction ---------------------------------------------------------------------------

    def load(self, images: bool = True, captions: bool = True) -> BuildStages:
        """Load the models of the image side, the caption side, or both (a worker needs one)."""
        if images and self.cfg.has("features") and self._image_stage is None:
            self._image_stage = make_image_stage(self.cfg).load()
        if captions and self.cfg.has("translate") and self._translator is None:
            self._translator = make_translator(self.cfg).load()
        if captions and self.cfg.has("parse") and self._parser is None:
            self._parser = make_parser(self.cfg).load()
        return self

    def model_identities(self) -> dict:
        """The identity of every model used (written into the manifest); a source corpus's models too."""
        ids = model_identities(self.cfg)
        if self.cfg.source == "corpus":
            ids = {**self.source.manifest.get("models", {}), **ids}
        return ids

    def resolved_config(self) -> dict:
        """Every setting that decides the corpus's bytes, defaults included; a source corpus's config too."""
        config = resolved_config(self.cfg)
        if self.cfg.source == "corpus":
            config["source_corpus"] = self.source.manifest.get("config", {})
        return config

    @property
    def source(self) -> CorpusReader:
        """The source corpus of a corpus input, opened once per process."""
        if self._source is None:
            self._source = CorpusReader(self.cfg.input)
        return self._source

    # -- images ---------------------------------------------------------------------------------

    def read_image(self, inp: ImageInput) -> bytes | list[Encoded] | DeadLetter:
        """The image file's bytes, or (corpus input) the source corpus's records of the image, every view."""
        if self.cfg.source == "corpus":
            return self._source_records(inp)
        try:
            with self.open_fn(inp.path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return DeadLetter(inp.key, "read", "missing_file", f"{inp.path} does not exist")
        except OSError as err:
            return DeadLetter(inp.key, "read", "unreadable_file", f"{inp.path}: {err}")

    def _source_records(self, inp: ImageInput) -> list[Encoded] | DeadLetter:
        views = self.source.views()
        records = [(key, self.source.get_raw(key)) for key in (image_key(inp.image_id, v) for v in views)
                   if key in self.source]
        return records or DeadLetter(inp.key, "read", "missing_record", f"{self.cfg.input} has no image record")

    def decode(self, inp: ImageInput, data: bytes | list[Encoded] | DeadLetter) -> DecodedImage | list | DeadLetter:
        """File bytes -> DecodedImage (or a dead letter); records of a source corpus pass through."""
        if isinstance(data, (DeadLetter, list)):
            return data
        try:
            return decode_image(inp.image_id, data, inp.file_name, self._decode_cfg)
        except RecordFailure as failure:
            return DeadLetter.from_failure(inp.key, "decode", failure)

    def read_and_decode(self, inp: ImageInput) -> DecodedImage | list | DeadLetter:
        return self.decode(inp, self.read_image(inp))

    def run_images(self, decoded: Sequence[DecodedImage | list]) -> list[list[ImageRecord] | list[Encoded] | DeadLetter]:
        """The image stage on decoded images, one entry per input in order (a source corpus's records pass)."""
        images = [d for d in decoded if not isinstance(d, list)]
        results = iter(self.detect(images) if images else [])
        return [item if isinstance(item, list) else next(results) for item in decoded]

    def detect(self, images: Sequence[DecodedImage]) -> list[list[ImageRecord] | DeadLetter]:
        """The detector (and the views) on decoded images: a list of records or a dead letter for each."""
        return [r if isinstance(r, (list, DeadLetter)) else [r] for r in self._image_stage(images)]

    def images(self, batch: Sequence[tuple[ImageInput, bytes | list[Encoded]]]) -> list:
        """Decode and run the image stage; one entry per input, in order (Beam's ModelHandler calls this)."""
        decoded = [self.decode(inp, data) for inp, data in batch]
        live = [d for d in decoded if not isinstance(d, DeadLetter)]
        results = iter(self.run_images(live))
        return [d if isinstance(d, DeadLetter) else next(results) for d in decoded]

    # -- captions -------------------------------------------------------------------------------

    def captions(self, batch: Sequence[CaptionInput]) -> list[CaptionResult | DeadLetter]:
        """Back-translate (if on) and parse (if on); one entry per caption, in order."""
        if self._translator is not None:
            translated = self._translator([(c.caption_id, c.image_id, c.text) for c in batch])
            out = [r if isinstance(r, DeadLetter) else self._with_drops(c, r)
                   for c, r in zip(batch, translated, strict=True)]
        elif self.cfg.source == "corpus":
            out = [self._source_texts(c) for c in batch]
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

    def _source_texts(self, caption: CaptionInput) -> CaptionResult | DeadLetter:
        """A caption's variants as a source corpus holds them (to be parsed again)."""
        if "raw" not in caption.variants:
            return DeadLetter(caption.key, "read", "missing_record", f"{self.cfg.input} has no raw text record")
        return CaptionResult(caption, [self.source.text(caption.caption_id, v) for v in caption.variants])

    def _parse(self, results: list[CaptionResult | DeadLetter]) -> list[CaptionResult | DeadLetter]:
        flat = [(i, r) for i, res in enumerate(results) if isinstance(res, CaptionResult) for r in res.records]
        parsed = self._parser([r for _, r in flat]) if flat else []
        by_caption: dict[int, list] = {}
        for (i, _), p in zip(flat, parsed, strict=True):
            by_caption.setdefault(i, []).append(p)
        return [res if isinstance(res, DeadLetter) else _keep_parsed(res, by_caption.get(i, []))
                for i, res in enumerate(results)]


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


def encode_all(records: Sequence[ImageRecord | TextRecord | Encoded]) -> list[Encoded]:
    """(key, bytes) of each record; records that are already encoded (a source corpus's) pass unchanged."""
    return [r if isinstance(r, tuple) else (r.key, encode(r)) for r in records]


__all__ = ["BuildStages", "CaptionResult", "encode_all"]
