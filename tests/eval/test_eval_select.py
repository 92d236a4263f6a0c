import json

import pytest
from eval_helpers import build_corpus

from ssrp.corpus import CorpusReader
from ssrp.eval.config import EvalConfig
from ssrp.eval.select import caption_pairs, image_views, select_images


def test_split_selection_of_a_format_1_corpus_reads_the_coco_annotations(tmp_path):
    corpus = build_corpus(str(tmp_path / "old"), split="")  # index records without a split
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_val2017.json").write_text(
        json.dumps({"images": [{"id": 3}, {"id": 7}, {"id": 999}], "annotations": []}))
    with CorpusReader(corpus) as reader:
        assert select_images(reader) == list(range(1, 17))
        assert select_images(reader, max_images=2) == [1, 2]
        assert select_images(reader, "val", str(tmp_path)) == [3, 7]
        with pytest.raises(ValueError, match="needs --coco"):
            select_images(reader, "val")
        with pytest.raises(FileNotFoundError, match="captions_train2017"):
            select_images(reader, "train", str(tmp_path))
        assert image_views(reader, 1) == ["raw", "hflip", "rot90"]
        pairs = caption_pairs(reader, [2])
        assert [(p.caption_id, p.view, p.variant) for p in pairs] == [
            (c, "raw", v) for c in (200, 201) for v in ("raw", "de", "ru")]


@pytest.mark.parametrize("change", [{"batch_size": 0}, {"min_length": 1}, {"fusion_weight": 1.5},
                                    {"recall_ks": ()}, {"rel_temperature": -1.0}, {"show_objects": 1}])
def test_bad_settings_are_refused(change):
    with pytest.raises(ValueError, match=next(iter(change))):
        EvalConfig(**change)
