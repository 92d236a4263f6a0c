"""docs/corpus-format.md is enough to read a corpus: the reader and torch Dataset written there (run here as they
stand in the page, with no ssrp import of their own) give what CorpusReader gives.

LMDB allows one handle per file and process, so each test reads with CorpusReader first, closes it, then reads
with the documented code."""

import os
import re

import numpy as np
import pytest
import torch

from ssrp.corpus import CorpusReader, image_key

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "corpus-format.md")


@pytest.fixture(scope="module")
def doc_reader():
    text = open(DOC, encoding="utf-8").read()
    block = re.search(r"<!-- reader:begin -->\n```python\n(.*?)```\n<!-- reader:end -->", text, re.S)
    assert block, "the reader block of docs/corpus-format.md is missing"
    assert not re.search(r"^\s*(import|from)\s+ssrp", block.group(1), re.M)  # nothing of ssrp
    namespace: dict = {}
    exec(compile(block.group(1), DOC, "exec"), namespace)  # noqa: S102 - the project's own documentation
    return namespace


def _expected(corpus: str) -> dict:
    with CorpusReader(corpus) as reader:
        return {kind: {key: vars(reader.get(key)) for key in reader.keys(kind)} for kind in ("image", "text", "index")}


def test_the_documented_decoder_reads_every_record_as_ssrp_does(corpus, doc_reader):
    expected = _expected(corpus)
    docs = doc_reader["Corpus"](corpus)
    try:
        for kind, records in expected.items():
            assert sorted(docs.keys(kind)) == sorted(records)
            for key, fields in records.items():
                mine = docs.get(key)
                assert mine["kind"] == kind
                for name, value in fields.items():
                    if isinstance(value, np.ndarray):
                        assert mine[name].dtype == value.dtype and mine[name].shape == value.shape, (key, name)
                        np.testing.assert_array_equal(mine[name], value)
                    else:
                        assert (tuple(mine[name]) if isinstance(value, tuple) else mine[name]) == value, (key, name)
    finally:
        docs.close()


def test_the_documented_decoder_checks_the_crc(corpus, doc_reader):
    with CorpusReader(corpus) as reader:
        value = bytearray(reader.get_raw(image_key(1, "raw")))
    value[-3] ^= 0xFF
    with pytest.raises(ValueError, match="crc32"):
        doc_reader["decode_record"](bytes(value))


def test_the_documented_dataset_feeds_a_dataloader(corpus, doc_reader):
    expected = _expected(corpus)
    dataset = doc_reader["CaptionPairs"](corpus, view="rot90", variant="de")
    try:
        assert len(dataset) == sum(len(ix["caption_ids"]) for ix in expected["index"].values())
        item = dataset[3]
        img = expected["image"][image_key(item["image_id"], "rot90")]
        txt = expected["text"][f"text/{item['caption_id']:012d}/de"]
        np.testing.assert_array_equal(item["features"].numpy(), img["features"].astype(np.float32)[:36])
        np.testing.assert_allclose(item["boxes"][:, 2].numpy(), np.clip(img["boxes"][:36, 2] / img["width"], 0, 1))
        assert item["input_ids"].tolist() == txt["input_ids"].tolist() and item["words"] == list(txt["words"])
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=1, collate_fn=list)
        assert sum(len(b) for b in loader) == len(dataset)  # a worker process opens its own shards
    finally:
        dataset.corpus.close()
