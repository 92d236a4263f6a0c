"""ssrp's fast paths inside Stanza equal Stanza's own functions, are put back, and change no parse."""

import dataclasses
import gc
import random

import numpy as np
import pytest
import torch
from stanza.models.common import vocab as common_vocab
from stanza.models.common.char_model import CharacterModel
from stanza.models.common.chuliu_edmonds import chuliu_edmonds_one_root
from stanza.models.common.data import get_long_tensor
from stanza.models.common.data import sort_all as stanza_sort_all
from stanza.models.common.pretrain import PretrainedWordVocab
from stanza.models.common.vocab import VOCAB_PREFIX, BaseVocab, CharVocab
from stanza.models.depparse import data as depparse_data
from stanza.models.depparse import head_constraints
from stanza.models.depparse import model as depparse_model
from stanza.models.pos import data as pos_data
from stanza.models.pos.vocab import FeatureVocab, WordVocab
from stanza.pipeline.lemma_processor import LemmaProcessor

from ssrp.corpus.records import TextRecord
from ssrp.parse import Parser, speedups
from ssrp.parse.speedups import fast_stanza, long_tensor, sort_all, vocab_map, vocab_unmap
from ssrp.parse.text import normalize, pretokenize
from ssrp.parse.tiny import sample_captions


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def _outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - comparing what Stanza's function and ours do
        return type(err)


# -- padded id tensors ------------------------------------------------------------------------------


def _id_lists(rng: random.Random) -> list[list[int]]:
    rows = [[rng.randrange(0, 500) for _ in range(rng.choice([0, 1, 2, 5, 12, 40]))] for _ in range(rng.randint(1, 60))]
    if not any(rows):
        rows[0].append(3)
    return rows


@pytest.mark.parametrize("seed", range(40))
def test_long_tensor_equals_stanzas(seed):
    rng = random.Random(seed)
    rows = _id_lists(rng)
    pad = rng.choice([0, 0, 1, 7])
    before = [list(r) for r in rows]
    ours, theirs = long_tensor(rows, len(rows), pad), get_long_tensor(rows, len(rows), pad)
    assert _same_tensor(ours, theirs)
    assert rows == before  # input untouched
    if seed % 4 == 0:  # the character tensors: one row per word, lengths sorted as Stanza's collate sorts them
        rows.sort(key=len, reverse=True)
        assert _same_tensor(long_tensor(rows, len(rows)), get_long_tensor(rows, len(rows)))


@pytest.mark.parametrize("rows, batch_size", [
    ([[[1, 2], [3, 4]], [[5, 6]]], 2),  # nested deeper (composite features)
    ([[1, 2], [3]], 4),  # more rows than ids: padding rows
    ([[], []], 2),  # no ids at all
    ([[True, False], [1]], 2),  # booleans are ids 1 and 0
    ([(1, 2), [3]], 2),  # a tuple row
    ([[1.5, 2], [3]], 2),  # not ids
    ([[1, 2], [3, [4]]], 2),  # ragged nesting
])
def test_long_tensor_other_shapes_behave_as_stanzas(rows, batch_size):
    ours, theirs = _outcome(long_tensor, rows, batch_size), _outcome(get_long_tensor, rows, batch_size)
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor) and _same_tensor(ours, theirs)
    else:
        assert ours is theirs


# -- sorting by length -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_sort_all_equals_stanzas(seed):
    """Ties in length (the common case: many words of one length) keep Stanza's order; odd shapes too."""
    rng = random.Random(seed)
    n = rng.choice([0, 1, 2, 7, 50, 300])
    lens = [rng.randint(0, 6) for _ in range(n)]
    batch = [[rng.random() for _ in range(n)], [[rng.randrange(9)] for _ in range(n)], [str(i) for i in range(n)]]
    batch = batch[: rng.randint(0, 3)]
    if seed % 7 == 0 and n:
        batch.append(batch[0][:-1] if batch else [1])  # a field shorter than lens: zip cuts, Stanza decides
    if seed == 1:
        batch = [[]]
    assert _outcome(sort_all, batch, lens) == _outcome(stanza_sort_all, batch, lens)


# -- vocabulary lookups -----------------------------------------------------------------------------


def _vocab(cls, units, lower=False, **extra):
    return cls.load_state_dict({"lang": "en", "idx": 0, "cutoff": 0, "lower": lower,
                                "_id2unit": VOCAB_PREFIX + units,
                                "_unit2id": {u: i for i, u in enumerate(VOCAB_PREFIX + units)}, **extra})


UNITS = ["a", "dog", "Dog", "the", "café", "x y", "x\xa0y", "_", ".", "n't"]
PROBES = UNITS + ["DOG", "CAFÉ", "unseen", "", None, "X Y", "a", "The"] + list("aDx .")


@pytest.mark.parametrize("vocab", [
    _vocab(CharVocab, list("abcdefgxy .")),
    _vocab(BaseVocab, UNITS),
    _vocab(BaseVocab, UNITS, lower=True),
    _vocab(WordVocab, UNITS, ignore=[]),
    _vocab(WordVocab, UNITS, lower=True, ignore=[]),
    _vocab(WordVocab, UNITS, ignore=["_"]),
    _vocab(PretrainedWordVocab, UNITS, lower=True),
    _vocab(PretrainedWordVocab, UNITS),
], ids=["char", "base", "base-lower", "word", "word-lower", "word-ignore", "pretrain-lower", "pretrain"])
def test_vocab_map_equals_stanzas(vocab):
    rng = random.Random(0)
    for _ in range(50):
        units = [rng.choice(PROBES) for _ in range(rng.randint(0, 12))]
        assert _outcome(vocab_map, vocab, units) == _outcome(BaseVocab.map, vocab, units), units


@pytest.mark.parametrize("vocab", [
    _vocab(CharVocab, UNITS),
    _vocab(BaseVocab, UNITS),
    _vocab(WordVocab, UNITS, ignore=[]),
    _vocab(WordVocab, UNITS, ignore=["_"]),
    _vocab(PretrainedWordVocab, UNITS),
], ids=["char", "base", "word", "word-ignore", "pretrain"])
def test_vocab_unmap_equals_stanzas(vocab):
    rng = random.Random(0)
    size = len(vocab._id2unit)
    for _ in range(50):
        ids = [rng.randrange(-size, size + 1) for _ in range(rng.randint(0, 12))]  # size: out of range
        assert _outcome(vocab_unmap, vocab, ids) == _outcome(BaseVocab.unmap, vocab, ids), ids
    assert _outcome(vocab_unmap, vocab, np.arange(size)) == _outcome(BaseVocab.unmap, vocab, np.arange(size))


def test_vocab_map_on_the_pipelines_own_vocabularies(tiny_parser):
    vocabs = []
    for name in ("pos", "lemma", "depparse"):
        processor = tiny_parser._nlp.processors[name]
        multi = getattr(processor, "vocab", None)
        if multi is not None and hasattr(multi, "_vocabs"):
            vocabs += list(multi._vocabs.values())
        if getattr(processor, "pretrain", None) is not None:
            vocabs.append(processor.pretrain.vocab)
    assert len(vocabs) >= 6
    words = [w for t in sample_captions(images=10) for w in pretokenize(normalize(t, True))]
    tags = ["NOUN", "DET", "PUNCT", "VERB", "_", "Number=Sing", "nsubj", "root", "bogus"]
    for vocab in vocabs:
        for units in (words, [c for w in words for c in w], [w.lower() for w in words], tags):
            assert _outcome(vocab_map, vocab, units) == _outcome(BaseVocab.map, vocab, units)
    assert any(isinstance(v, FeatureVocab) for v in vocabs)  # composite: Stanza's own lookup, through vocab_map
    rng = random.Random(1)
    for vocab in vocabs:
        size = len(vocab._id2unit) if hasattr(vocab, "_id2unit") else 0
        for _ in range(20):
            ids = [rng.randrange(-size, size) for _ in range(rng.randint(0, 12))] if size else []
            assert _outcome(vocab_unmap, vocab, ids) == _outcome(BaseVocab.unmap, vocab, ids), ids
        if size:  # out of range: the same IndexError
            assert _outcome(vocab_unmap, vocab, [size]) == _outcome(BaseVocab.unmap, vocab, [size])


# -- the swap ---------------------------------------------------------------------------------------


def _current():
    return (BaseVocab.map, depparse_model.chuliu_edmonds_one_root, head_constraints.chuliu_edmonds_one_root,
            depparse_data.get_long_tensor, pos_data.get_long_tensor, LemmaProcessor.process, CharacterModel.forward,
            pos_data.sort_all, depparse_data.sort_all)


def test_fast_stanza_swaps_in_and_puts_everything_back():
    stock = _current()
    assert stock[1] is chuliu_edmonds_one_root and stock[3] is get_long_tensor
    assert gc.isenabled()
    with fast_stanza():
        assert not gc.isenabled()
        assert BaseVocab.map is vocab_map and depparse_data.get_long_tensor is long_tensor
        assert pos_data.get_long_tensor is long_tensor
        assert depparse_model.chuliu_edmonds_one_root is head_constraints.chuliu_edmonds_one_root
        assert depparse_model.chuliu_edmonds_one_root is not chuliu_edmonds_one_root
        assert pos_data.sort_all is sort_all and depparse_data.sort_all is sort_all
        assert LemmaProcessor.process is not stock[5] and CharacterModel.forward is not stock[6]
    assert _current() == stock and gc.isenabled()
    with pytest.raises(RuntimeError, match="boom"), fast_stanza():
        raise RuntimeError("boom")
    assert _current() == stock and gc.isenabled()
    with fast_stanza(enabled=False):
        assert _current() == stock and gc.isenabled()
    gc.disable()
    try:
        with fast_stanza():
            pass
        assert not gc.isenabled()  # a caller's disabled collector stays disabled
    finally:
        gc.enable()
    assert common_vocab.BaseVocab.map is stock[0]


def test_overlapping_calls_from_threads_share_one_swap():
    """Thread A enters, B enters, A leaves (B still inside: fast paths stay), B leaves (stock again)."""
    import threading

    stock = _current()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with fast_stanza():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def second():
        a_in.wait(5)
        with fast_stanza():
            b_in.set()
            a_out.wait(5)
            seen["after_a_left"] = (BaseVocab.map is vocab_map, gc.isenabled())

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert seen["after_a_left"] == (True, False)
    assert _current() == stock and gc.isenabled()


# -- the parses -------------------------------------------------------------------------------------


def _fields(rec):
    return (rec.words, rec.upos, rec.deprels, rec.heads.tolist(), rec.input_ids.tolist(), rec.tree_dist.tolist())


def test_bulk_parses_equal_stock_stanza_one_sentence_at_a_time(tiny_parser):
    """The Parser's bulk call (one Document, all fast paths) against stock Stanza, one Pipeline call per
    caption as the benchmark's baseline runs it: the same words, tags, heads and relations."""
    texts = sample_captions(images=40)
    out = tiny_parser([TextRecord(caption_id=i + 1, image_id=1, variant="raw", text=t) for i, t in enumerate(texts)])
    assert BaseVocab.map is not vocab_map  # stock Stanza below
    for rec, text in zip(out, texts, strict=True):
        [sent] = tiny_parser._nlp([pretokenize(normalize(text, True))]).sentences
        assert rec.words == tuple(w.text for w in sent.words)
        assert rec.upos == tuple(w.upos for w in sent.words)
        assert rec.deprels == tuple(w.deprel for w in sent.words)
        assert rec.heads.tolist() == [w.head for w in sent.words]


def test_character_model_on_distinct_words_equals_stanzas(tiny_parser):
    """The character model's output on the batches of a real bulk call, with each distinct word run once,
    is the very tensor Stanza computes (bit for bit), for the POS and the depparse model."""
    from ssrp.parse.backend import parse_texts

    calls = []
    stock_forward = CharacterModel.forward

    def record(self, *args):
        calls.append((self, args))
        return stock_forward(self, *args)

    texts = [normalize(t, True) for t in sample_captions(images=40)]
    CharacterModel.forward = record
    try:
        parse_texts(tiny_parser._nlp, True, texts, fast_decode=False)
    finally:
        CharacterModel.forward = stock_forward
    assert len({id(model) for model, _ in calls}) == 2  # POS and depparse
    fast = speedups.distinct_words_char_model(stock_forward)
    with torch.no_grad():
        for model, args in calls:
            chars = args[0]
            assert len(torch.unique(chars, dim=0)) < len(chars)  # repeated words: the shortcut is taken
            ours, theirs = fast(model, *args), stock_forward(model, *args)
            if not model.pad:  # a PackedSequence
                assert _same_tensor(ours.batch_sizes, theirs.batch_sizes)
                ours, theirs = ours.data, theirs.data
            assert _same_tensor(ours, theirs)


def test_bulk_parse_equals_stock_stanza_bulk(tiny_parser):
    """The benchmark's comparison: ssrp's bulk call (columnar document, all fast paths) against stock
    Stanza's bulk call on one Document, over 400 captions: the same words, tags, heads and relations."""
    from ssrp.parse.backend import parse_texts

    texts = [normalize(t, True) for t in sample_captions(images=80)]
    fast = parse_texts(tiny_parser._nlp, True, texts, fast_decode=True)
    stock = parse_texts(tiny_parser._nlp, True, texts, fast_decode=False)
    assert len(fast) == len(texts) and fast == stock


@pytest.mark.parametrize("tokenizer", ["pretokenized", "stanza"])
def test_parser_output_is_the_same_with_and_without_fast_paths(tiny_cfg, tokenizer):
    texts = sample_captions(images=20) + ["A dog. It runs on a red bus.", "The kite doesn't fly, it's broken!"]
    records = [TextRecord(caption_id=i + 1, image_id=1, variant="raw", text=t) for i, t in enumerate(texts)]
    cfg = dataclasses.replace(tiny_cfg, tokenizer=tokenizer)
    fast = Parser(cfg).load()(records)
    stock = Parser(dataclasses.replace(cfg, fast_decode=False)).load()(records)
    assert [_fields(a) for a in fast] == [_fields(b) for b in stock]


def test_columnar_preprocess_equals_stanzas(tiny_parser):
    """The POS and depparse datasets' preprocessing, done column-wise, gives the very lists Stanza builds
    sentence by sentence, on the data of a real bulk call (with and without ssrp's vocabulary lookups)."""
    from ssrp.parse.backend import parse_texts

    calls = []
    stock = {cls: cls.preprocess for cls in (pos_data.Dataset, depparse_data.Dataset)}

    def recorder(cls):
        def record(self, *args):
            calls.append((cls, self, args))
            return stock[cls](self, *args)
        return record

    texts = [normalize(t, True) for t in sample_captions(images=40)] + ["a café's 2nd kite , unseen-word !"]
    for cls in stock:
        cls.preprocess = recorder(cls)
    try:
        parse_texts(tiny_parser._nlp, True, texts, fast_decode=False)
    finally:
        for cls, fn in stock.items():
            cls.preprocess = fn
    assert {cls for cls, _, _ in calls} == set(stock)
    columnar = {pos_data.Dataset: speedups.columnar_pos_preprocess, depparse_data.Dataset:
                speedups.columnar_depparse_preprocess}
    for cls, dataset, args in calls:
        fast = columnar[cls](stock[cls])
        expected = stock[cls](dataset, *args)
        assert fast(dataset, *args) == expected and len(expected) == len(args[0])
        with fast_stanza():  # with ssrp's lookups swapped in, as in a bulk call
            assert fast(dataset, *args) == expected
