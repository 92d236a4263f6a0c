"""The columnar document answers Stanza's processors exactly as a stanza.Document does."""

import pytest
from stanza.models.common.doc import Document
from stanza.pipeline.tokenize_processor import TokenizeProcessor

from ssrp.parse.columns import FIELDS, ColumnDocument, run_processors, supports
from ssrp.parse.text import normalize, pretokenize
from ssrp.parse.tiny import sample_captions

TOKENS = [["A", "dog", "runs", "."], ["_"], ["Two", "cats", "'s", "?", "!"]]


def _both(tokens):
    raw, entries = TokenizeProcessor.process_pre_tokenized_text(None, tokens)
    return Document(entries, raw), ColumnDocument(tokens)


@pytest.mark.parametrize("fields", [["text"], "text", ["id"], ["misc"], ["text", "upos", "xpos", "feats", "lemma"],
                                    ["text", "upos", "xpos", "feats", "lemma", "head", "deprel"], list(FIELDS)])
@pytest.mark.parametrize("as_sentences", [False, True])
def test_get_equals_documents(fields, as_sentences):
    doc, columns = _both(TOKENS)
    assert columns.get(fields, as_sentences=as_sentences) == doc.get(fields, as_sentences=as_sentences)


def test_get_returns_fresh_lists():
    """Stanza's loaders edit what get returns (None -> '_'): the document must not change."""
    _, columns = _both(TOKENS)
    got = columns.get(["text", "upos"], as_sentences=True)
    got[0][0][1] = "_"
    assert columns.get(["upos"])[0] is None


def test_set_applies_words_setters():
    doc, columns = _both(TOKENS)
    n = sum(map(len, TOKENS))
    tags = [["NOUN", "_", None], ["_", "NN", "Number=Sing"]] * 5
    heads = [["2", "nsubj"], ["0", "root"], ["_", None], ["1", "punct"], [3, "_"]] * 2
    lemmas = ["a", "_", "", None, "_", "cat", "'s", "?", "!", "x"]
    for fields, values in ((["upos", "xpos", "feats"], tags[:n]), (("head", "deprel"), heads[:n]),
                           (["lemma"], lemmas[:n]), ("misc", ["_"] * n)):
        doc.set(fields, values)
        columns.set(fields, values)
    every = list(FIELDS)
    assert columns.get(every, as_sentences=True) == doc.get(every, as_sentences=True)
    assert [[w.upos for w in s.words] for s in columns.sentences] == [[w.upos for w in s.words] for s in doc.sentences]


def test_wrong_calls_are_refused():
    _, columns = _both(TOKENS)
    with pytest.raises(ValueError, match="values for"):
        columns.set(["upos"], ["X"])
    with pytest.raises(ValueError, match="words only"):
        columns.get(["text"], from_token=True)
    with pytest.raises(KeyError, match="ner"):
        columns.get(["ner"])
    with pytest.raises(AttributeError, match="ner"):
        _ = columns.sentences[0].words[0].ner


def test_build_dependencies_checks_heads_as_stanza_does():
    _, columns = _both([["a", "b"]])
    columns.set(["head"], ["0", "1"])
    columns.sentences[0].build_dependencies()
    columns.set(["head"], ["0", "3"])
    with pytest.raises(IndexError, match="not a valid word index"):
        columns.sentences[0].build_dependencies()


def test_processors_on_columns_equal_the_stock_pipeline(tiny_parser):
    """POS, lemma and depparse on the columnar document (no fast paths swapped in) against Stanza's own
    Pipeline call on a Document: every field of every word."""
    nlp = tiny_parser._nlp
    assert supports(nlp)
    tokens = [pretokenize(normalize(t, True)) for t in sample_captions(images=30)]
    columns = run_processors(nlp, tokens)
    doc = nlp(tokens)
    every = ["text", "upos", "xpos", "feats", "lemma", "head", "deprel"]
    assert columns.get(every, as_sentences=True) == doc.get(every, as_sentences=True)


def test_only_pretokenized_pipelines_of_the_four_processors_are_supported(tiny_cfg):
    import dataclasses

    from ssrp.parse.backend import load_pipeline

    nlp, pretokenized = load_pipeline(dataclasses.replace(tiny_cfg, tokenizer="stanza"))
    assert not pretokenized and not supports(nlp)
