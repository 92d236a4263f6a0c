"""Caption paraphrases by back-translation: English -> German -> English and English -> Russian -> English.

SSRP (NeurIPS 2020, §4) paraphrases every caption through two pretrained back-translators, so 591k
captions become 1.77M sentences. This stage uses the fairseq WMT19 single models
(ssrp.translate.models), samples on the forward leg and runs beam search on the return leg (Edunov et al.
2018: sampled synthetic sources give a stronger, more diverse signal; beam keeps the English fluent).

    translator = BackTranslator(TranslateConfig(models_dir="models"))
    translator.load()
    out = translator([(caption_id, image_id, "A man riding a horse."), ...])
    # out[i]: [TextRecord raw, TextRecord de, TextRecord ru] or a DeadLetter, in input order

Per caption, the output is the raw record (``variant='raw'``, the text as given, stripped) and one
record per pivot whose paraphrase passed the filters (``text``: the English paraphrase, ``pivot``: the
German/Russian sentence, ``meta``: the settings). A paraphrase that comes back empty, with an unknown
token, or outside the length ratio is not replaced: it is listed in the raw record's
``meta["dropped"]`` with its reason (``count_outcomes`` tallies them). A caption that cannot be
translated at all (empty, too long, control characters, invalid UTF-8, a model error) becomes a
``DeadLetter`` naming the reason; the rest of its batch is translated.

Determinism: on CPU the output depends only on the models, the settings, the seed and the caption
(id and text): each caption samples from its own seed (``seed_for``), not from a batch-wide RNG.
"""

from __future__ import annotations

import hashlib
import logging
import math
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ssrp.corpus.records import TextRecord, text_key
from ssrp.deadletter import DeadLetter, RecordFailure, is_dead
from ssrp.devices import resolve_device
from ssrp.translate.config import STAGE, TranslateConfig
from ssrp.translate.models import load_hub, require_fairseq

logger = logging.getLogger(__name__)

_WHITESPACE_CONTROLS = {"\t", "\n", "\r"}


@dataclass
class _Caption:
    """One caption on its way through the stage."""

    index: int
    caption_id: int
    image_id: int
    text: str  # as given, stripped
    source: str  # what the translator reads: text with tabs/newlines as spaces
    moses: str = ""  # Moses-tokenised source (shared by both pivots)
    failure: RecordFailure | None = None
    pivots: dict[str, str] = field(default_factory=dict)
    paraphrases: dict[str, str] = field(default_factory=dict)
    dropped: list[dict[str, Any]] = field(default_factory=list)


def _pivot_of(direction: str) -> str:
    src, tgt = direction.split("-")
    return tgt if src == "en" else src


def seed_for(base_seed: int, caption_id: int, leg: str) -> int:
    """A 62-bit seed for one caption on one leg, from a hash (never Python's salted hash())."""
    digest = hashlib.sha256(f"{base_seed}:{caption_id}:{leg}".encode("ascii")).digest()
    return int.from_bytes(digest[:8], "little") >> 2


def clean_caption(text: Any, max_chars: int) -> tuple[str, str]:
    """(text as given, stripped; the translator's input) or RecordFailure naming what is wrong."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as err:
            raise RecordFailure("invalid_utf8", f"caption bytes are not UTF-8: {err}") from None
    if not isinstance(text, str):
        raise RecordFailure("not_text", f"caption is {type(text).__name__}, not str or bytes")
    stripped = text.strip()
    if not stripped:
        raise RecordFailure("empty_caption", "caption is empty or whitespace only")
    for ch in stripped:
        category = unicodedata.category(ch)
        if category == "Cs":
            raise RecordFailure("invalid_unicode", f"caption contains a lone surrogate U+{ord(ch):04X}")
        if category == "Cc" and ch not in _WHITESPACE_CONTROLS:
            raise RecordFailure("control_characters", f"caption contains control character U+{ord(ch):04X}")
    if len(stripped) > max_chars:
        raise RecordFailure("caption_too_long", f"caption has {len(stripped)} characters (limit {max_chars})")
    return stripped, " ".join(stripped.split())


def word_ratio(a: str, b: str) -> float:
    """Length ratio of two sentences in whitespace words, >= 1 (Edunov's --ratio filter on words)."""
    na, nb = len(a.split()), len(b.split())
    return max(na, nb) / max(min(na, nb), 1)


def count_outcomes(outputs: Sequence[list[TextRecord] | DeadLetter]) -> dict[str, Any]:
    """Totals over a stage output: captions, dead letters by reason, records by variant, drops by reason."""
    dead = Counter(o.reason for o in outputs if is_dead(o))
    records: Counter = Counter()
    dropped: Counter = Counter()
    for out in outputs:
        if is_dead(out):
            continue
        records.update(r.variant for r in out)
        dropped.update(f"{d['variant']}/{d['reason']}" for d in out[0].meta.get("dropped", ()))
    return {"captions": len(outputs), "dead": dict(dead), "records": dict(records), "dropped": dict(dropped)}


class BackTranslator:
    """The back-translation stage: ``load()``, then ``__call__(items)`` with items
    ``(caption_id, image_id, text)``; returns one ``list[TextRecord]`` or ``DeadLetter`` per item."""

    stage = STAGE

    def __init__(self, cfg: TranslateConfig):
        self.cfg = cfg
        self._hubs: dict[str, Any] | None = None
        self._generators: dict[str, Any] = {}

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg}  # models are loaded again by load() where the object lands

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["cfg"])

    # ----------------------------------------------------------------------------------------
    # Loading.

    def load(self) -> BackTranslator:
        require_fairseq()
        from ssrp.translate.decode import build_generator  # fairseq: imported once a translator loads

        if not self.cfg.models_dir:
            raise ValueError(
                "models_dir is empty: set it to the directory given to `ssrp models fetch translate --to`"
            )
        device = resolve_device(self.cfg.device)
        hubs = {}
        for pivot in self.cfg.pivots:
            for direction in (f"en-{pivot}", f"{pivot}-en"):
                hub = load_hub(self.cfg.models_dir, direction, trusted_sha256=self.cfg.trusted_sha256)
                hub = hub.to(device)
                if device.type == "cuda" and self.cfg.fp16:
                    hub = hub.half()
                hubs[direction] = hub
        self._hubs = hubs
        self._generators = {d: build_generator(h, self._leg(d)) for d, h in hubs.items()}
        logger.info("back-translation models loaded on %s: %s", device, ", ".join(hubs))
        return self

    def derive(self, **changes: Any) -> BackTranslator:
        """A translator with other decoding/batching/filter settings sharing this one's loaded models
        (for setting sweeps and benchmarks). Settings that decide what is loaded cannot change."""
        import dataclasses

        from ssrp.translate.decode import build_generator

        if self._hubs is None:
            raise RuntimeError("derive() needs a loaded translator: call load() first")
        fixed = {"models_dir", "device", "fp16", "trusted_sha256"} & set(changes)
        if fixed:
            raise ValueError(f"derive() cannot change {sorted(fixed)}: build a new BackTranslator and load() it")
        cfg = dataclasses.replace(self.cfg, **changes)
        if not set(cfg.pivots) <= set(self.cfg.pivots):
            raise ValueError(f"pivots={cfg.pivots!r}: only the loaded pivots {self.cfg.pivots!r} are available")
        other = BackTranslator(cfg)
        other._hubs = {d: h for d, h in self._hubs.items() if _pivot_of(d) in cfg.pivots}
        other._generators = {d: build_generator(h, other._leg(d)) for d, h in other._hubs.items()}
        return other

    def _leg(self, direction: str):
        from ssrp.translate.decode import LegSettings

        c = self.cfg
        if direction.startswith("en-"):
            return LegSettings(c.forward_sampling, c.forward_topk, c.forward_topp, c.forward_beam,
                               c.forward_temperature, c.lenpen, c.max_len_a, c.max_len_b)  # fmt: skip
        return LegSettings(c.back_sampling, c.back_topk, c.back_topp, c.back_beam,
                           c.back_temperature, c.lenpen, c.max_len_a, c.max_len_b)  # fmt: skip

    def settings(self) -> dict[str, Any]:
        """What a paraphrase record's meta says about how it was made (also for a corpus manifest)."""
        out: dict[str, Any] = {
            "forward": self._leg("en-x").as_meta(),
            "back": self._leg("x-en").as_meta(),
            "max_len": [self.cfg.max_len_a, self.cfg.max_len_b],
            "length_ratio": self.cfg.length_ratio,
            "seed": self.cfg.seed,
        }
        if self._hubs:
            out["models"] = {d: h.checkpoint_sha256[:16] for d, h in self._hubs.items()}
        return out

    # ----------------------------------------------------------------------------------------
    # The stage.

    def __call__(self, items: Sequence[tuple[int, int, str | bytes]]) -> list[list[TextRecord] | DeadLetter]:
        if self._hubs is None:
            raise RuntimeError("BackTranslator.load() must be called before translating")
        captions = [self._prepare(i, item) for i, item in enumerate(items)]
        live = [c for c in captions if isinstance(c, _Caption) and c.failure is None]
        self._tokenize(live)
        for pivot in self.cfg.pivots:
            self._round_trip(pivot, [c for c in live if c.failure is None])
        settings = self.settings()  # one dict shared by this call's paraphrase records
        return [self._finish(c, settings) for c in captions]

    def _prepare(self, index: int, item: Any) -> _Caption | DeadLetter:
        try:
            caption_id, image_id, text = item
            caption_id, image_id = int(caption_id), int(image_id)
        except (TypeError, ValueError) as err:
            return DeadLetter(
                f"text/{item!r:.60}", STAGE, "malformed_item", f"expected (caption_id, image_id, text): {err}"
            )
        try:
            stripped, source = clean_caption(text, max_chars=self.cfg.max_source_tokens * 20)
        except RecordFailure as failure:
            return DeadLetter.from_failure(text_key(caption_id, "raw"), STAGE, failure)
        return _Caption(index, caption_id, image_id, stripped, source)

    def _tokenize(self, captions: list[_Caption]) -> None:
        hub = self._hubs[f"en-{self.cfg.pivots[0]}"]  # Moses English tokenisation is the same for both pivots
        for c in captions:
            try:
                c.moses = hub.tokenize(c.source)
            except (ValueError, IndexError, KeyError) as err:  # sacremoses regexes on odd input
                c.failure = RecordFailure("tokenize_failed", f"Moses tokenizer: {type(err).__name__}: {err}")

    def _round_trip(self, pivot: str, captions: list[_Caption]) -> None:
        from ssrp.translate.decode import encode_text

        forward, back = f"en-{pivot}", f"{pivot}-en"
        sources = self._encode_sources(forward, captions)
        ok = [c for c in captions if c.failure is None]
        for c, out in zip(ok, self._translate(forward, [sources[c.index] for c in ok], ok), strict=True):
            if isinstance(out, str):
                c.pivots[pivot] = out
            elif out is not None:
                self._drop(c, pivot, (out[0], ""), pivot_text=out[1])
        with_pivot = [c for c in ok if c.failure is None and pivot in c.pivots]
        encoded = [encode_text(self._hubs[back], c.pivots[pivot]) for c in with_pivot]
        for c, out in zip(with_pivot, self._translate(back, encoded, with_pivot), strict=True):
            if isinstance(out, str):
                self._accept(c, pivot, out)
            elif out is not None:
                self._drop(c, pivot, out, pivot_text=c.pivots[pivot])

    def _encode_sources(self, direction: str, captions: list[_Caption]) -> dict:
        from ssrp.translate.decode import binarize

        hub = self._hubs[direction]
        limit = min(self.cfg.max_source_tokens, int(hub.max_positions[0]) if hub.max_positions else 10**9)
        out = {}
        for c in captions:
            tokens = binarize(hub.src_dict, hub.apply_bpe(c.moses))
            if tokens.numel() - 1 > limit:  # minus </s>
                c.failure = RecordFailure(
                    "caption_too_long", f"{tokens.numel() - 1} BPE tokens for {direction} (limit {limit})"
                )
            out[c.index] = tokens
        return out

    def _translate(self, direction: str, tokens: list, captions: list[_Caption]) -> list[str | tuple | None]:
        """Decoded top hypotheses; a (reason, detail) tuple for an output to drop; None after a
        model failure (the caption's failure is set)."""
        from ssrp.translate.decode import decode_text, generate

        hub = self._hubs[direction]
        seeds = [seed_for(self.cfg.seed, c.caption_id, direction) for c in captions]
        results = generate(
            hub, self._generators[direction], tokens, seeds,
            max_tokens=self.cfg.max_tokens, max_sentences=self.cfg.max_sentences, sort=self.cfg.sort_by_length,
        )  # fmt: skip
        out: list[str | tuple | None] = []
        for c, result in zip(captions, results, strict=True):
            if isinstance(result, Exception):
                c.failure = RecordFailure("translation_failed", f"{direction}: {type(result).__name__}: {result}")
                out.append(None)
            elif self.cfg.drop_unk and bool((result == hub.tgt_dict.unk()).any()):
                out.append(("unknown_token", decode_text(hub, result)))
            else:
                text = decode_text(hub, result).strip()
                out.append(text if text else ("empty_pivot" if direction.startswith("en-") else "empty_paraphrase", ""))
        return out

    def _accept(self, c: _Caption, pivot: str, paraphrase: str) -> None:
        ratio = word_ratio(paraphrase, c.text)
        if ratio > self.cfg.length_ratio:
            self._drop(c, pivot, ("length_ratio", paraphrase), c.pivots[pivot], ratio)
        elif self.cfg.drop_identical and paraphrase == c.text:
            self._drop(c, pivot, ("identical", paraphrase), c.pivots[pivot], ratio)
        else:
            c.paraphrases[pivot] = paraphrase

    @staticmethod
    def _drop(c: _Caption, pivot: str, why: tuple, pivot_text: str, ratio: float | None = None) -> None:
        reason, text = why
        entry = {"variant": pivot, "reason": reason, "text": text, "pivot": pivot_text}
        if ratio is not None and math.isfinite(ratio):
            entry["length_ratio"] = round(ratio, 3)
        c.dropped.append(entry)

    def _finish(self, c: _Caption | DeadLetter, settings: dict) -> list[TextRecord] | DeadLetter:
        if isinstance(c, DeadLetter):
            return c
        if c.failure is not None:
            return DeadLetter.from_failure(text_key(c.caption_id, "raw"), STAGE, c.failure)
        raw_meta = {"dropped": c.dropped} if c.dropped else {}
        records = [TextRecord(c.caption_id, c.image_id, "raw", c.text, meta=raw_meta)]
        for pivot in self.cfg.pivots:
            if pivot in c.paraphrases:
                meta = {"pivot_lang": pivot, "length_ratio": round(word_ratio(c.paraphrases[pivot], c.text), 3),
                        "settings": settings}  # fmt: skip
                records.append(
                    TextRecord(c.caption_id, c.image_id, pivot, c.paraphrases[pivot], c.pivots[pivot], meta=meta)
                )
        return records
