"""Random-weight models at the published sizes (ssrp models random --size full): the architectures and vocabulary
sizes, and the detector written through the published file, converted and loaded like the real weights."""

import os

import pytest
import torch

from ssrp.cli import main


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("direction,sizes,params", [("en-de", (42024, 42024), (265e6, 275e6)),
                                                    ("en-ru", (31640, 31232), (285e6, 295e6))])
def test_wmt19_architecture_and_dictionary_sizes(tmp_path, direction, sizes, params):
    """Built with fairseq's own parser and task, as the real checkpoints were (on the meta device: no memory)."""
    pytest.importorskip("fairseq")
    from fairseq import options, tasks

    from ssrp.translate.models import DIRECTIONS
    from ssrp.translate.tiny import FULL_ARCH, FULL_DICT_SIZES, WORDS, _learn_codes, _write_dicts

    d = next(d for d in DIRECTIONS.values() if d.name == direction)
    pivot = d.tgt
    _write_dicts(str(tmp_path), d, _learn_codes(WORDS["en"] + " " + WORDS[pivot]), FULL_DICT_SIZES[pivot])
    share = ["--share-all-embeddings"] if pivot == "de" else ["--share-decoder-input-output-embed"]
    args = options.parse_args_and_arch(options.get_training_parser(), [
        str(tmp_path), "--task", "translation", "--source-lang", d.src, "--target-lang", d.tgt, "--cpu",
        *FULL_ARCH, *share])
    task = tasks.setup_task(args)
    assert (len(task.src_dict), len(task.tgt_dict)) == sizes
    with torch.device("meta"):
        model = task.build_model(args)
    assert params[0] < _count(model) < params[1]  # ~270M (en-de, shared embeddings), ~290M (en-ru)
    assert model.encoder.layers[0].fc1.out_features == 8192 and model.decoder.layers[0].fc1.out_features == 4096
    assert len(model.encoder.layers) == len(model.decoder.layers) == 6 and model.encoder.embed_tokens.embedding_dim == 1024


def test_bert_base_configuration():
    from transformers import BertConfig, BertForPreTraining

    from ssrp.models.fullsize import BERT_BASE_VOCAB

    with torch.device("meta"):
        model = BertForPreTraining(BertConfig(vocab_size=BERT_BASE_VOCAB))
    assert 109e6 < _count(model) < 111e6  # bert-base-uncased: 110M


@pytest.mark.slow
def test_full_width_detector_through_the_published_file_and_the_loader(tmp_path, capsys):
    from ssrp.features.models import load_detector

    out = str(tmp_path / "models")
    assert main(["models", "random", out, "--size", "full", "--only", "features"]) == 0
    assert '"butd-r101-random_full_size"' in capsys.readouterr().out
    published = 262_398_754  # bytes of unc-nlp/frcnn-vg-finetuned's pytorch_model.bin (ssrp.features.models)
    assert abs(os.path.getsize(os.path.join(out, "features", "pytorch_model.bin")) - published) < 0.001 * published
    loaded = load_detector(out)
    assert loaded.arch.num_classes == 1601 and loaded.arch.num_attributes == 401
    assert loaded.arch.blocks_per_stage == (3, 4, 23, 3) and loaded.arch.feature_dim == 2048
    assert len(loaded.objects) == 1600 and len(loaded.attributes) == 400
    assert 50e6 < _count(loaded.model) < 55e6  # 52M: the published 65M less the box regression the converter drops
