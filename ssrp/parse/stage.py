"""The parse stage: Stanza dependency parses, WordPiece alignment and tree distances for TextRecords.

    parser = Parser(ParseConfig(models_dir="models"))
    parser.load()                      # one Stanza Pipeline + one WordPiece tokenizer per process
    out = parser(records)              # list[TextRecord | DeadLetter], same order as the input

For each caption (raw text or paraphrase) it fills ``words, upos, deprels, heads, input_ids, piece_word,
tree_dist``. Policies for what the paper leaves open (several sentences, truncation to 36 tokens,
punctuation, pieces of one word) are described in docs/parse.md.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from ssrp.corpus.records import TextRecord, validate
from ssrp.deadletter import DeadLetter, RecordFailure
from ssrp.parse.backend import Sentence, load_pipeline, parse_texts
from ssrp.parse.config import ParseConfig
from ssrp.parse.text import dropped_chars, screen
from ssrp.parse.trees import TreeError, merge_sentences, to_uint8, tree_distances, tree_distances_batch
from ssrp.parse.wordpiece import align, load_wordpiece, word_pieces

logger = logging.getLogger(__name__)

STAGE = "parse"


@dataclasses.dataclass(frozen=True)
class _Parsed:
    """A caption's words and tree before alignment (all words, heads over all words)."""

    words: tuple[str, ...]
    upos: tuple[str, ...]
    deprels: tuple[str, ...]
    heads: np.ndarray
    sentences: int


def _distance(heads: np.ndarray) -> np.ndarray | RecordFailure:
    try:
        return tree_distances(heads)
    except TreeError as err:
        return RecordFailure("bad_tree", str(err))


def _distances(heads_list: list[np.ndarray]) -> list[np.ndarray | RecordFailure]:
    """Tree distances of a chunk at once; should a head array not be a tree, the others still get theirs."""
    try:
        return list(tree_distances_batch(heads_list))
    except TreeError:
        return [_distance(heads) for heads in heads_list]


class Parser:
    """Plain-Python parse stage: ``__init__`` keeps the config only; ``load()`` loads the models."""

    def __init__(self, cfg: ParseConfig | None = None):
        self.cfg = cfg or ParseConfig()
        self._nlp = None
        self._pretokenized = True
        self._wordpiece = None

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg}  # models are never pickled; a worker calls load()

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["cfg"])

    @property
    def loaded(self) -> bool:
        return self._nlp is not None

    def load(self) -> Parser:

        if not self.loaded:
            self._wordpiece = load_wordpiece(self.cfg.resolved_vocab_path, self.cfg.lowercase)
            self._nlp, self._pretokenized = load_pipeline(self.cfg)
        return self

    # -- the stage ------------------------------------------------------------------------------

    def __call__(self, records: Sequence[TextRecord]) -> list[TextRecord | DeadLetter]:
        if not self.loaded:
            raise RuntimeError("Parser.load() must be called before parsing")
        out: list[TextRecord | DeadLetter | None] = [None] * len(records)
        todo: list[tuple[int, str]] = []
        for i, record in enumerate(records):
            try:
                todo.append((i, screen(record.text, self.cfg)))
            except RecordFailure as failure:
                out[i] = DeadLetter.from_failure(record.key, STAGE, failure)
        for start in range(0, len(todo), self.cfg.chunk_size):
            chunk = todo[start : start + self.cfg.chunk_size]
            parses = self._parse_chunk([text for _, text in chunk])
            for (i, _), item in zip(chunk, self._finish([records[i] for i, _ in chunk], parses), strict=True):
                out[i] = item
        return out  # type: ignore[return-value]

    def parse_text(self, text: str) -> TextRecord | DeadLetter:
        """Parse one sentence outside a corpus (``ssrp parse --text``)."""
        return self([TextRecord(caption_id=0, image_id=0, variant="raw", text=text)])[0]

    def pieces(self, input_ids: Sequence[int]) -> list[str]:
        """The WordPiece tokens of ids (for display)."""
        return [self._wordpiece.id_to_token(int(i)) for i in input_ids]

    # -- Stanza ---------------------------------------------------------------------------------

    def _parse_chunk(self, texts: list[str]) -> list[list[Sentence] | RecordFailure]:
        """All texts in one Stanza call; if that fails, each text alone, so one bad text fails alone."""
        try:
            return list(parse_texts(self._nlp, self._pretokenized, texts, self.cfg.fast_decode))
        except Exception as err:  # noqa: BLE001 - Stanza raises many types; each text is retried below
            if len(texts) == 1:
                return [RecordFailure("parser_error", f"{type(err).__name__}: {err}")]
            logger.warning("Stanza failed on a chunk of %d captions (%s: %s); parsing them one by one",
                           len(texts), type(err).__name__, err)
        return [self._parse_chunk([text])[0] for text in texts]

    def _merge(self, sentences: list[Sentence]) -> _Parsed:
        if not sentences or not any(s.words for s in sentences):
            raise RecordFailure("no_words", "Stanza found no words")
        if len(sentences) > 1 and self.cfg.multi_sentence == "reject":
            raise RecordFailure("multi_sentence", f"Stanza split the caption into {len(sentences)} sentences")
        heads, deprels = merge_sentences([(s.heads, s.deprels) for s in sentences], self.cfg.multi_sentence)
        return _Parsed(
            words=tuple(w for s in sentences for w in s.words),
            upos=tuple(u for s in sentences for u in s.upos),
            deprels=tuple(deprels),
            heads=heads,
            sentences=len(sentences),
        )

    # -- alignment and distances ----------------------------------------------------------------

    def _finish(
        self, records: list[TextRecord], parses: list[list[Sentence] | RecordFailure]
    ) -> list[TextRecord | DeadLetter]:
        out: list[TextRecord | DeadLetter | None] = [None] * len(records)
        ok: list[tuple[int, _Parsed]] = []
        for i, (record, parse) in enumerate(zip(records, parses, strict=True)):
            try:
                if isinstance(parse, RecordFailure):
                    raise parse
                ok.append((i, self._merge(parse)))
            except RecordFailure as failure:
                out[i] = DeadLetter.from_failure(record.key, STAGE, failure)
        pieces = word_pieces(self._wordpiece, [p.words for _, p in ok])
        dists = _distances([p.heads for _, p in ok])
        cls_id = self._wordpiece.token_to_id("[CLS]")
        sep_id = self._wordpiece.token_to_id("[SEP]")
        for (i, parsed), word_ids, dist in zip(ok, pieces, dists, strict=True):
            if isinstance(dist, RecordFailure):
                out[i] = DeadLetter.from_failure(records[i].key, STAGE, dist)
                continue
            alignment = align(word_ids, self.cfg.max_pieces, cls_id, sep_id)
            if alignment.kept == 0:
                failure = RecordFailure(
                    "word_too_long", f"the first word has {len(word_ids[0])} pieces, more than {self.cfg.max_pieces}"
                )
                out[i] = DeadLetter.from_failure(records[i].key, STAGE, failure)
                continue
            out[i] = self._record(records[i], parsed, alignment, dist)
        return out  # type: ignore[return-value]

    def _record(self, record: TextRecord, parsed: _Parsed, alignment, dist: np.ndarray) -> TextRecord:
        kept = alignment.kept
        heads = parsed.heads[:kept].astype(np.int32)
        heads[heads > kept] = 0  # head dropped by truncation: no head among the kept words
        notes = {}
        if parsed.sentences > 1:
            notes["sentences"] = parsed.sentences
        if kept < len(parsed.words):
            notes["words_dropped"] = len(parsed.words) - kept
        if self.cfg.strip_symbols and (n := dropped_chars(record.text)):
            notes["chars_dropped"] = n
        meta = {k: v for k, v in record.meta.items() if k != STAGE}
        if notes:
            meta[STAGE] = notes
        out = dataclasses.replace(
            record,
            words=parsed.words[:kept],
            upos=parsed.upos[:kept],
            deprels=parsed.deprels[:kept],
            heads=heads,
            input_ids=alignment.input_ids,
            piece_word=alignment.piece_word,
            tree_dist=to_uint8(dist[:kept, :kept]),
            meta=meta,
        )
        validate(out)
        return out
