"""A columnar stand-in for ``stanza.Document`` in ssrp's pretokenized bulk call.

With pretokenized captions, Stanza's bulk call spends about a fifth of its time (with the fast paths of
``speedups``) on the Document itself rather than on parsing: its tokenize processor formats a
``start_char=..|end_char=..`` string for every token and parses it back while it builds a Token and a Word
object per token; the POS, lemma and depparse processors then read their inputs with ``Document.get``
(one ``getattr`` per word and field) and write their predictions with ``Document.set`` (one property
setter per word and field); depparse builds a dependency list per sentence; and the garbage collector
later walks the whole object graph (Words, Tokens and Sentences refer to each other).

``ColumnDocument`` keeps one flat list per field instead and answers exactly the calls those three
processors make on a Document: ``get`` (same nested lists), ``set`` (same conversions as ``Word``'s
setters: ``None`` and ``"_"`` become ``None``, heads become ``int``, a lemma of ``"_"`` survives only
for the text ``"_"``), ``sentences[i].words[j].<field>`` and ``sentence.build_dependencies()`` (which
checks every head as Stanza's does and keeps no graph: ssrp reads the heads). ``run_processors`` calls
the pipeline's processors on it in the pipeline's order, as ``Pipeline.process`` does; only pipelines made
of exactly tokenize (pretokenized), pos, lemma and depparse take this path (``supports``), any other
goes through ``Pipeline.process`` on a real Document. tests/parse/test_parse_columns.py checks ``get``
against ``Document.get`` on every field and the parses against stock Stanza.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate

# the processors, in Stanza's pipeline order, that the columnar path runs (after its own tokenization)
PROCESSORS = ("pos", "lemma", "depparse")
FIELDS = ("id", "text", "upos", "xpos", "feats", "lemma", "head", "deprel", "misc")


def supports(nlp) -> bool:
    """Whether ``nlp`` is a pretokenized pipeline of exactly tokenize, pos, lemma and depparse (anything else,
    e.g. a wrapped pipeline, is called as it is)."""
    config, processors = getattr(nlp, "config", None), getattr(nlp, "processors", None)
    if not isinstance(config, dict) or not isinstance(processors, dict):
        return False
    return bool(config.get("tokenize_pretokenized")) and set(processors) == {"tokenize", *PROCESSORS}


def _is_null(value) -> bool:
    return value is None or value == "_"


def _has_null(values: list) -> bool:
    return None in values or "_" in values


def _set_plain(values: list, texts: list) -> list:
    if not _has_null(values):
        return list(values)
    return [None if v is None or v == "_" else v for v in values]


def _set_head(values: list, texts: list) -> list:
    if not _has_null(values):
        return list(map(int, values))
    return [None if v is None or v == "_" else int(v) for v in values]


def _set_lemma(values: list, texts: list) -> list:
    return [v if not _is_null(v) or t == "_" else None for v, t in zip(values, texts, strict=True)]


# what Word's property setter does to a value (stanza.models.common.doc.Word)
_SETTERS = {"upos": _set_plain, "xpos": _set_plain, "feats": _set_plain, "deprel": _set_plain, "misc": _set_plain,
            "head": _set_head, "lemma": _set_lemma}


class _Word:
    __slots__ = ("_doc", "_k")

    def __init__(self, doc: ColumnDocument, k: int):
        self._doc, self._k = doc, k

    def __getattr__(self, name: str):
        try:
            return self._doc.columns[name][self._k]
        except KeyError:
            raise AttributeError(f"ColumnDocument words have no {name!r} (only {FIELDS})") from None


class _Sentence:
    __slots__ = ("_doc", "_start", "_end")

    def __init__(self, doc: ColumnDocument, start: int, end: int):
        self._doc, self._start, self._end = doc, start, end

    @property
    def words(self) -> list[_Word]:
        return [_Word(self._doc, k) for k in range(self._start, self._end)]

    def build_dependencies(self) -> None:
        """Stanza's checks on the heads (each names a word of the sentence); the graph itself is not kept."""
        heads = self._doc.columns["head"][self._start : self._end]
        for i, head in enumerate(heads, 1):
            if head is None or not 0 <= head <= len(heads):
                raise IndexError(f"Word head {head} is not a valid word index for word {i}")


class ColumnDocument:
    """The sentences of pretokenized captions, one list per field over all words (see the module doc)."""

    def __init__(self, token_lists: Sequence[Sequence[str]]):
        self.lengths = [len(tokens) for tokens in token_lists]
        self.bounds = [0, *accumulate(self.lengths)]
        n = self.bounds[-1]
        self.columns: dict[str, list] = {name: [None] * n for name in FIELDS}
        self.columns["text"] = [token for tokens in token_lists for token in tokens]
        self.columns["id"] = [i for length in self.lengths for i in range(1, length + 1)]
        self.columns["misc"] = [""] * n  # what is left of start_char=..|end_char=.. once Stanza has read it

    @property
    def num_words(self) -> int:
        return self.bounds[-1]

    @property
    def sentences(self) -> list[_Sentence]:
        b = self.bounds
        return [_Sentence(self, b[i], b[i + 1]) for i in range(len(self.lengths))]

    def _split(self, flat: list) -> list[list]:
        b = self.bounds
        return [flat[b[i] : b[i + 1]] for i in range(len(self.lengths))]

    def _columns(self, fields) -> list[list]:
        unknown = [f for f in fields if f not in self.columns]
        if unknown:
            raise KeyError(f"ColumnDocument has no field {unknown[0]!r} (only {FIELDS})")
        return [self.columns[f] for f in fields]

    def get(self, fields, as_sentences: bool = False, from_token: bool = False) -> list:
        """``Document.get``: the words' values, one list per word when several fields are asked for."""
        if isinstance(fields, str):
            fields = [fields]
        if not isinstance(fields, list) or not fields:
            raise ValueError("fields must be a non-empty list of field names")
        if from_token:
            raise ValueError("ColumnDocument holds words only (pretokenized captions have no multi-word tokens)")
        cols = self._columns(fields)
        flat = list(cols[0]) if len(cols) == 1 else [list(values) for values in zip(*cols, strict=True)]
        return self._split(flat) if as_sentences else flat

    def set(self, fields, contents, to_token: bool = False, to_sentence: bool = False) -> None:
        """``Document.set`` on words: one value (one field) or one sequence of values per word."""
        if isinstance(fields, str):
            fields = [fields]
        if to_token or to_sentence:
            raise ValueError("ColumnDocument sets word fields only")
        if len(contents) != self.num_words:
            raise ValueError(f"{len(contents)} values for {self.num_words} words")
        fields = list(fields)
        self._columns(fields)
        if len(fields) == 1:
            per_field = [list(contents)]
        else:
            if any(len(values) != len(fields) for values in contents):
                raise ValueError(f"every word needs one value for each of {fields}")
            per_field = [list(column) for column in zip(*contents, strict=True)] if contents else [[] for _ in fields]
        texts = self.columns["text"]
        for field, values in zip(fields, per_field, strict=True):
            setter = _SETTERS.get(field)
            if setter is None:
                raise ValueError(f"ColumnDocument cannot set {field!r}")
            self.columns[field] = setter(values, texts)


def run_processors(nlp, token_lists: Sequence[Sequence[str]]) -> ColumnDocument:
    """The pipeline's pos, lemma and depparse processors on the captions' tokens, in pipeline order."""
    doc = ColumnDocument(token_lists)
    for name in PROCESSORS:
        doc = nlp.processors[name].process(doc)
    return doc
