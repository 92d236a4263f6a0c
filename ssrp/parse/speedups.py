"""Exact fast paths for Stanza's bulk parsing, swapped in only for the duration of a Parser call.

Profiling the bulk path (docs/parse.md, "Figures") showed four costs that have nothing to do with the
networks and that grow with the size of the Document, not with what is computed:

* **the tree decoder** (Chu-Liu-Edmonds in Python, one numpy rebuild per contracted cycle): replaced by
  ``ssrp.parse.mst.one_root_tree`` (the same trees, tested);
* **padded id tensors** (``stanza.models.common.data.get_long_tensor`` fills a tensor one row at a time, one
  torch call per word for the character tensors): ``long_tensor`` builds the same tensor with one numpy
  scatter;
* **vocabulary lookups** (``BaseVocab.map`` calls ``unit2id`` -> ``normalize_unit`` per character):
  ``vocab_map`` does the same dictionary lookups in one comprehension, for the vocabularies whose lookup
  is exactly the base class's (others keep Stanza's); ``vocab_unmap`` likewise for ``BaseVocab.unmap``
  (ids back to tags and relations);
* **the cyclic garbage collector**: a chunk's Document is hundreds of thousands of container objects that
  stay alive for the whole call, and CPython's generational collector traverses them again and again
  while Stanza allocates (about a quarter of bulk time); ``fast_stanza`` pauses it for the call and
  restores it after (the Documents' reference cycles are then collected as usual).

``fast_stanza()`` swaps all of them in and puts Stanza's originals back on exit, also when parsing
raises. The swap is process-wide (Stanza's module attributes) and reference-counted, so overlapping calls
from several threads share one swap and the last one out restores Stanza (docs/parse.md). Each replacement is tested for equality with
Stanza's function on random inputs (tests/parse/test_parse_speedups.py) and the Parser's output with and
without them is compared on the sample captions.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import sys
import threading
from collections.abc import Iterator
from itertools import chain

import numpy as np

from ssrp.parse.mst import one_root_tree

# the modules that bind get_long_tensor at import (the processors a parse pipeline can run)
_LONG_TENSOR_USERS = (
    "stanza.models.pos.data",
    "stanza.models.depparse.data",
    "stanza.models.lemma.data",
    "stanza.models.mwt.data",
    "stanza.models.common.char_model",
)
# the modules that bind sort_all at import
_SORT_USERS = ("stanza.models.pos.data", "stanza.models.depparse.data", "stanza.models.lemma.data")
_DECODER_USERS = ("stanza.models.depparse.model", "stanza.models.depparse.head_constraints")


def long_tensor(tokens_list, batch_size, pad_id=0):
    """Stanza's ``get_long_tensor`` for its common case, a list of id lists (one row per sentence or word):
    the ``batch_size x longest`` int64 tensor of the rows, padded with ``pad_id``. Other shapes (nested
    deeper, a batch size other than the row count, no ids at all) go to Stanza's function."""
    import torch
    from stanza.models.common.data import get_long_tensor

    if not tokens_list or len(tokens_list) != batch_size or not isinstance(tokens_list[0], list):
        return get_long_tensor(tokens_list, batch_size, pad_id)
    try:
        ids = np.array(list(chain.from_iterable(tokens_list)))
    except ValueError:  # ragged nesting
        return get_long_tensor(tokens_list, batch_size, pad_id)
    if ids.ndim != 1 or ids.dtype.kind not in "iub":  # no ids, nested deeper, not ids: Stanza's function decides
        return get_long_tensor(tokens_list, batch_size, pad_id)
    lens = np.fromiter(map(len, tokens_list), dtype=np.int64, count=batch_size)
    longest = int(lens.max())
    out = np.full((batch_size, longest), pad_id, dtype=np.int64)
    out[np.arange(longest) < lens[:, None]] = ids  # row-major: row i gets its ids, then padding
    return torch.from_numpy(out)


def sort_all(batch, lens):
    """Stanza's ``sort_all``: every field of ``batch`` ordered by descending ``lens``, and that order (the
    original indices). Stanza sorts tuples (length, index, fields...) in reverse, so equal lengths come in
    descending index order and the fields are never compared; here one stable sort of the indices by length
    in reverse, starting from the descending indices, gives the same order without building the tuples."""
    from stanza.models.common.data import sort_all as stanza_sort_all

    if batch == [[]] or not lens or not isinstance(lens, list) or any(len(field) != len(lens) for field in batch):
        return stanza_sort_all(batch, lens)  # the empty case, and shapes zip would cut: Stanza's function
    order = sorted(range(len(lens) - 1, -1, -1), key=lens.__getitem__, reverse=True)
    return [[field[i] for i in order] for field in batch], order


@functools.cache
def _lookup_kind(cls: type) -> tuple[str, str]:
    """(kind, UNK unit): kind "base" if ``cls.unit2id`` is exactly BaseVocab's (normalise: None stays None,
    else lowercase if ``lower``; then the id or UNK's id), "word" for pos.WordVocab's (the same unless the
    unit is in its ignore list), "composite" for CompositeVocab's (memoised per call), "pretrain" for BaseVocab's lookup with PretrainedWordVocab's normalisation
    (the base one, then a non-empty unit's spaces become no-break spaces), "" for any other lookup."""
    from stanza.models.common.pretrain import PretrainedWordVocab
    from stanza.models.common.vocab import UNK, BaseVocab, CompositeVocab
    from stanza.models.pos.vocab import WordVocab

    if cls.unit2id is CompositeVocab.unit2id:
        return "composite", UNK
    if cls.normalize_unit is PretrainedWordVocab.normalize_unit and cls.unit2id is BaseVocab.unit2id:
        return "pretrain", UNK
    if cls.normalize_unit is not BaseVocab.normalize_unit:
        return "", UNK
    if cls.unit2id is BaseVocab.unit2id:
        return "base", UNK
    return ("word" if cls.unit2id is WordVocab.unit2id else ""), UNK


def vocab_map(self, units):
    """``BaseVocab.map`` (``[self.unit2id(u) for u in units]``) without two Python calls per unit."""
    kind, unk_unit = _lookup_kind(type(self))
    if kind == "composite":
        return _composite_map(self, units)
    ids = self._unit2id
    unk = ids.get(unk_unit) if kind else None
    if unk is None or (kind == "word" and self.ignore):
        return [self.unit2id(u) for u in units]
    if self.lower:
        units = [u if u is None else u.lower() for u in units]
    if kind == "pretrain":
        return [ids.get(u.replace(" ", "\xa0") if u else u, unk) for u in units]
    return [ids.get(u, unk) for u in units]


def _composite_map(self, units):
    """CompositeVocab's lookups (a list of ids per unit: features, xpos parts), each distinct unit looked up
    once per call; every unit still gets its own list, and an error surfaces at the unit that raises it."""
    memo: dict = {}
    out = []
    try:
        for u in units:
            ids = memo.get(u)
            if ids is None:
                ids = memo[u] = self.unit2id(u)
            out.append(list(ids))
    except TypeError:  # an unhashable unit: Stanza's own loop decides
        return [self.unit2id(u) for u in units]
    return out


def vocab_unmap(self, ids):
    """``BaseVocab.unmap`` (``[self.id2unit(i) for i in ids]``) without a Python call per id, for the
    vocabularies whose ``id2unit`` is the base class's list index or pos.WordVocab's (the same, except that with
    an ignore list the EMPTY id reads "_"); others keep Stanza's."""
    base, word, empty_id = _id2unit_kinds()
    lookup = type(self).id2unit
    units = self._id2unit if lookup in (base, word) else None
    if units is None:
        return [self.id2unit(i) for i in ids]
    if lookup is word and len(self.ignore) > 0:
        return ["_" if i == empty_id else units[i] for i in ids]
    return [units[i] for i in ids]


@functools.cache
def _id2unit_kinds():
    from stanza.models.common.vocab import EMPTY_ID, BaseVocab
    from stanza.models.pos.vocab import WordVocab

    return BaseVocab.id2unit, WordVocab.id2unit, EMPTY_ID


class _Swap:
    """Process-wide swap with a reference count: the first caller in swaps the fast paths in and pauses the
    collector, the last caller out puts Stanza's functions and the collector's state back, so overlapping
    calls from several threads (a Beam worker shares one model across its threads) never restore early or
    leave the fast paths installed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0
        self.originals: list[tuple[object, str, object]] = []
        self.collecting = False

    def enter(self) -> None:
        with self.lock:
            if self.users == 0:
                targets = _targets()
                self.originals = [(obj, name, getattr(obj, name)) for obj, name, _ in targets]
                self.collecting = gc.isenabled()
                gc.disable()
                for obj, name, new in targets:
                    setattr(obj, name, new)
            self.users += 1

    def exit(self) -> None:
        with self.lock:
            self.users -= 1
            if self.users == 0:
                for obj, name, old in self.originals:
                    setattr(obj, name, old)
                self.originals = []
                if self.collecting:
                    gc.enable()


_SWAP = _Swap()


def dict_only_lemmas(stanza_process):
    """``LemmaProcessor.process`` that, for a dictionary-only lemmatizer, skips the seq2seq DataLoader Stanza
    builds (and never reads: ``predict_dict`` works on the document's (text, upos) pairs); every other
    lemmatizer goes to ``stanza_process``. The same lemmas, the same empty-lemma rule, the same document."""

    def process(self, document):
        if self.use_identity or not self.config.get("dict_only", False):
            return stanza_process(self, document)
        preds = self.trainer.predict_dict(document.get(["text", "upos"]))
        document.set(["lemma"], [lemma if len(lemma) else "_" for lemma in preds])  # Stanza: '' -> '_'
        return document

    return process


def _first_occurrences(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the distinct rows, in order of first occurrence; for each row, its distinct row's place)."""
    _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    place = np.empty_like(order)
    place[order] = np.arange(len(order))
    return first[order], place[inverse.reshape(-1)]


def distinct_words_char_model(stanza_forward):
    """``CharacterModel.forward`` that runs the character LSTM once per distinct word of the batch (the rows
    of ``chars`` with their lengths) and copies each word's vector to its other occurrences, then splits
    them into sentences as Stanza does. A word's vector depends on its own characters only, and a CPU LSTM
    computes each row alone (the same bits whichever rows share its batch; tested), so the result is the
    same tensor. Training mode (dropout) and other devices go to ``stanza_forward``."""

    def forward(self, chars, chars_mask, word_orig_idx, sentlens, wordlens):
        import torch
        from stanza.models.common.utils import tensor_unsort
        from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

        if self.training or chars.device.type != "cpu" or chars.dim() != 2:
            return stanza_forward(self, chars, chars_mask, word_orig_idx, sentlens, wordlens)
        lengths = np.asarray(wordlens, dtype=np.int64)
        keep, place = _first_occurrences(np.concatenate([chars.numpy(), lengths[:, None]], axis=1))
        if len(keep) == len(lengths):
            return stanza_forward(self, chars, chars_mask, word_orig_idx, sentlens, wordlens)
        index = torch.from_numpy(keep)
        # the distinct words as one "sentence" in their sorted order (keep preserves the length order)
        distinct = stanza_forward(self, chars[index], chars_mask[index], list(range(len(keep))), [len(keep)],
                                  lengths[keep].tolist())
        vectors = distinct[0] if self.pad else distinct.data
        res = tensor_unsort(vectors[torch.from_numpy(place)], word_orig_idx)
        res = pack_sequence(res.split(sentlens))
        return pad_packed_sequence(res, batch_first=True)[0] if self.pad else res

    return forward


def _split(flat: list, lengths: list[int]) -> list[list]:
    out, start = [], 0
    for n in lengths:
        out.append(flat[start : start + n])
        start += n
    return out


def _char_ids(vocab, words: list[str]) -> list[list[int]]:
    """``vocab.map(list(word))`` for each word, each distinct word mapped once (a fresh list per word)."""
    memo: dict[str, list[int]] = {}
    out = []
    for word in words:
        ids = memo.get(word)
        if ids is None:
            ids = memo[word] = vocab.map([c for c in word])
        out.append(list(ids))
    return out


class _Columns:
    """A batch of sentences' word rows as columns: each vocabulary lookup runs once over every word."""

    def __init__(self, data):
        self.lengths = [len(sent) for sent in data]
        self.rows = [w for sent in data for w in sent]

    def field(self, i: int) -> list:
        return [w[i] for w in self.rows]

    def mapped(self, vocab, units: list) -> list[list]:
        return _split(vocab.map(units), self.lengths)

    def chars(self, vocab) -> list[list[list[int]]]:
        return _split(_char_ids(vocab, self.field(0)), self.lengths)


def _plain_maps(*vocabs) -> bool:
    """Every vocabulary maps element by element with BaseVocab's ``map`` (Stanza's, or ``vocab_map``)."""
    from stanza.models.common.vocab import BaseVocab

    return all(v is None or type(v).map is BaseVocab.map for v in vocabs)


def columnar_depparse_preprocess(stanza_preprocess):
    """``depparse.data.Dataset.preprocess`` with each vocabulary lookup done once over all words (and each
    distinct word's characters once) instead of per sentence: the same lists, element for element. Falls back
    to ``stanza_preprocess`` for vocabularies with their own ``map``."""

    def preprocess(self, data, vocab, pretrain_vocab, args):
        from stanza.models.common.vocab import PAD_ID, ROOT_ID, CompositeVocab
        from stanza.models.depparse.data import to_int

        names = ("word", "char", "upos", "xpos", "feats", "lemma", "deprel")
        if not data or not _plain_maps(pretrain_vocab, *(vocab[n] for n in names)):
            return stanza_preprocess(self, data, vocab, pretrain_vocab, args)
        cols = _Columns(data)
        words, chars = cols.mapped(vocab["word"], cols.field(0)), cols.chars(vocab["char"])
        upos, xpos = cols.mapped(vocab["upos"], cols.field(1)), cols.mapped(vocab["xpos"], cols.field(2))
        feats, lemmas = cols.mapped(vocab["feats"], cols.field(3)), cols.mapped(vocab["lemma"], cols.field(4))
        heads = _split([to_int(w[5], ignore_error=self.eval) for w in cols.rows], cols.lengths)
        deprels = cols.mapped(vocab["deprel"], cols.field(6))
        pretrained = (cols.mapped(pretrain_vocab, [w[0].lower() for w in cols.rows])
                      if pretrain_vocab is not None else None)
        xpos_root = [[ROOT_ID] * len(vocab["xpos"])] if isinstance(vocab["xpos"], CompositeVocab) else [ROOT_ID]
        feats_root = [[ROOT_ID] * len(vocab["feats"])]
        processed = []
        for i, sent in enumerate(data):
            processed.append([
                [ROOT_ID] + words[i], [[ROOT_ID]] + chars[i], [ROOT_ID] + upos[i], xpos_root + xpos[i],
                feats_root + feats[i],
                [ROOT_ID] + (pretrained[i] if pretrained is not None else [PAD_ID] * len(sent)),
                [ROOT_ID] + lemmas[i], heads[i], deprels[i], [w[0] for w in sent],
            ])
        return processed

    return preprocess


def columnar_pos_preprocess(stanza_preprocess):
    """``pos.data.Dataset.preprocess`` with each lookup done once over all words (see the depparse one)."""

    def preprocess(self, data, vocab, pretrain_vocab, args):
        from stanza.models.common.vocab import PAD_ID
        from stanza.models.pos.data import DataSample

        if not data or not _plain_maps(pretrain_vocab, vocab["word"], vocab["char"],
                                       *(vocab[n] for n in self.tag_names)):
            return stanza_preprocess(self, data, vocab, pretrain_vocab, args)
        cols = _Columns(data)
        words, chars = cols.mapped(vocab["word"], cols.field(0)), cols.chars(vocab["char"])
        tags = [cols.mapped(vocab[name], cols.field(idx)) for idx, name in enumerate(self.tag_names, 1)]
        pretrained = (cols.mapped(pretrain_vocab, [w[0].lower() for w in cols.rows])
                      if pretrain_vocab is not None else None)
        return [DataSample(word=[words[i]], char=[chars[i]], tags=[column[i] for column in tags],
                           pretrain=[pretrained[i]] if pretrained is not None else [[PAD_ID] * len(sent)],
                           text=[w[0] for w in sent])
                for i, sent in enumerate(data)]

    return preprocess


def _targets() -> list[tuple[object, str, object]]:
    from stanza.models.common.char_model import CharacterModel
    from stanza.models.common.vocab import BaseVocab
    from stanza.models.depparse.data import Dataset as DepparseDataset
    from stanza.models.pos.data import Dataset as PosDataset
    from stanza.pipeline.lemma_processor import LemmaProcessor

    targets: list[tuple[object, str, object]] = [
        (BaseVocab, "map", vocab_map),
        (BaseVocab, "unmap", vocab_unmap),
        (LemmaProcessor, "process", dict_only_lemmas(LemmaProcessor.process)),
        (CharacterModel, "forward", distinct_words_char_model(CharacterModel.forward)),
        (DepparseDataset, "preprocess", columnar_depparse_preprocess(DepparseDataset.preprocess)),
        (PosDataset, "preprocess", columnar_pos_preprocess(PosDataset.preprocess)),
    ]
    for name in _DECODER_USERS:
        targets.append((importlib.import_module(name), "chuliu_edmonds_one_root", one_root_tree))
    for name in _SORT_USERS:
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "sort_all"):
            targets.append((module, "sort_all", sort_all))
    for name in _LONG_TENSOR_USERS:
        module = sys.modules.get(name)  # only what the pipeline imported; importing others is not our business
        if module is not None and hasattr(module, "get_long_tensor"):
            targets.append((module, "get_long_tensor", long_tensor))
    return targets


@contextlib.contextmanager
def fast_stanza(enabled: bool = True) -> Iterator[None]:
    """Run Stanza with ssrp's exact fast paths (see the module docstring); ``enabled=False``: stock Stanza
    (unless another thread's call has them swapped in at the time: they give the same results)."""
    if not enabled:
        yield
        return
    _SWAP.enter()
    try:
        yield
    finally:
        _SWAP.exit()
