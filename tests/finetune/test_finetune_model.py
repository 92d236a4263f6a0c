"""The fine-tuning model: pretrained parts loaded and computing what they computed in pretraining, the fused
relations, LXMERT's heads and losses."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ssrp.finetune.checkpoint import check_same_encoder, load_pretrained
from ssrp.finetune.config import make_config
from ssrp.finetune.data import TaskCollate, TaskDataset, Tokenizer, load_examples
from ssrp.finetune.heads import build_model
from ssrp.finetune.images import CorpusImages
from ssrp.finetune.loop import task_loss
from ssrp.finetune.tasks import load_answers
from ssrp.train.checkpoint import load_checkpoint
from ssrp.train.heads import Stage1Model, Stage2Heads, pool_words, upper_triangle
from ssrp.train.model import SSRPEncoder


def _batch(task, tasks, bert_dir, corpus, model_cfg, answers, n=6):
    tok = Tokenizer(f"{bert_dir}/vocab.txt", 20)
    images = CorpusImages(corpus, 36, model_cfg)
    split = {"vqa": "train", "gqa": "train", "nlvr2": "train"}[task]
    examples = load_examples(task, tasks[task], [split])[:n]
    images.resolve({i for ex in examples for i in ex.images})
    ds = TaskDataset(task, examples, tok, images, answers)
    return TaskCollate(task, tok.pad, len(answers) if answers else 2)([ds[i] for i in range(len(ds))])


def _model(task, features, pretrained, fusion="linear"):
    cfg = make_config(task, "tiny", [f"head.features={features}", f"head.fusion={fusion}"])
    pre = load_pretrained(pretrained["stage1"], pretrained["stage2"], cfg.head)
    return cfg, pre


def test_f_align_is_the_stage1_g_align(pretrained, tasks, bert_dir, corpus):
    cfg, pre = _model("vqa", "f_align", pretrained)
    answers = load_answers(tasks["vqa"])
    net = build_model(cfg, pre.model, pre.stage2, answers, pre.state).eval()
    batch = _batch("vqa", tasks, bert_dir, corpus, pre.model, answers)
    stage1 = Stage1Model(pre.model)
    stage1.load_state_dict(load_checkpoint(pretrained["stage1"])["model"])
    stage1.eval()
    with torch.no_grad():
        text, objects = stage1.encoder(batch["input_ids"], batch["text_mask"], batch["features"], batch["boxes"],
                                       batch["object_mask"])
        expected = stage1.align.f_align(text, objects, batch["object_mask"])
        got = net.features(batch)
    torch.testing.assert_close(got, expected)
    assert net(batch).shape == (6, len(answers))


@pytest.mark.parametrize("features", ["f_align+rv", "f_align+rw", "f_align+rv+rw"])
def test_projection_fusion_is_the_export_fused_relation(pretrained, tasks, bert_dir, corpus, features):
    """head.fusion=projection: rel = w z_v/|z_v| + (1-w) z_w/|z_w| from the stage-2 probes and projection heads."""
    cfg, pre = _model("vqa", features, pretrained, fusion="projection")
    answers = load_answers(tasks["vqa"])
    net = build_model(cfg, pre.model, pre.stage2, answers, pre.state).eval()
    batch = _batch("vqa", tasks, bert_dir, corpus, pre.model, answers)
    s2 = load_checkpoint(pretrained["stage2"])
    encoder, heads = SSRPEncoder(pre.model), Stage2Heads(pre.model.hidden, pre.stage2)
    encoder.load_state_dict({k[8:]: v for k, v in s2["model"].items() if k.startswith("encoder.")})
    heads.load_state_dict({k[6:]: v for k, v in s2["model"].items() if k.startswith("heads.")})
    encoder.eval()
    with torch.no_grad():
        text, objects = encoder(batch["input_ids"], batch["text_mask"], batch["features"], batch["boxes"],
                                batch["object_mask"])
        size = pre.stage2.max_nodes
        z_v = heads.visual_proj(upper_triangle(heads.visual_probe(objects), batch["object_mask"], size))
        words, mask = pool_words(text, batch["piece_word"], batch["piece_word"].shape[1] - 2)
        z_w = heads.text_proj(upper_triangle(heads.text_probe(words), mask, size))
        w = cfg.head.fusion_weight
        parts = {"rv": F.normalize(z_v, dim=-1), "rw": F.normalize(z_w, dim=-1)}
        if features == "f_align+rv+rw":
            expected = w * parts["rv"] + (1 - w) * parts["rw"]
        else:
            expected = parts[features.split("+")[1]]
        got = net.features(batch)[:, pre.model.hidden :]
    torch.testing.assert_close(got, expected)


def test_linear_fusion_shapes_and_nlvr2_pairs(pretrained, tasks, bert_dir, corpus):
    cfg, pre = _model("nlvr2", "f_align+rv+rw", pretrained)
    net = build_model(cfg, pre.model, pre.stage2, None, pre.state).eval()
    batch = _batch("nlvr2", tasks, bert_dir, corpus, pre.model, None, n=5)
    assert batch["features"].shape[0] == 10 and batch["label"].shape == (5,)
    with torch.no_grad():
        rows = net.features(batch)
        assert rows.shape == (10, 2 * pre.model.hidden)  # f_align (hidden) + the fused relations (rel_dim = hidden)
        logits = net(batch)
        expected = net.logit_fc(torch.cat([rows[0::2], rows[1::2]], -1))  # LXMERT: [img0 row ; img1 row]
    torch.testing.assert_close(logits, expected)
    assert logits.shape == (5, 2)


def test_losses_are_lxmerts():
    logits = torch.randn(4, 7)
    target = torch.rand(4, 7) * (torch.rand(4, 7) < 0.3)
    total, count = task_loss("vqa", logits, {"target": target})
    lxmert = torch.nn.BCEWithLogitsLoss()(logits, target) * logits.size(1)  # src/tasks/vqa.py
    torch.testing.assert_close(total / count, lxmert)
    labels = torch.tensor([0, 1, 1, 0])
    total, count = task_loss("nlvr2", logits[:, :2], {"label": labels})
    torch.testing.assert_close(total / count, torch.nn.CrossEntropyLoss()(logits[:, :2], labels))


def test_pretrained_checkpoints_are_checked(pretrained):
    head = make_config("vqa", "tiny", ["head.features=f_align+rv"]).head
    with pytest.raises(ValueError, match="is a stage2 checkpoint; pass the stage-1"):
        load_pretrained(pretrained["stage2"], pretrained["stage2"], head)
    with pytest.raises(ValueError, match="uses probed relations: pass --stage2"):
        load_pretrained(pretrained["stage1"], None, head)
    stage1 = load_checkpoint(pretrained["stage1"])["model"]
    stage2 = load_checkpoint(pretrained["stage2"])["model"]
    check_same_encoder(stage1, stage2, "s1", "s2")
    key = next(k for k in stage1 if k.startswith("encoder."))
    with pytest.raises(ValueError, match=f"its encoder differs from --stage1 s1 at {key}"):
        check_same_encoder({**stage1, key: stage1[key] + 1}, stage2, "s1", "s2")
    f_align_only = dataclasses.replace(head, features="f_align")
    assert load_pretrained(pretrained["stage1"], None, f_align_only).stage2 is None


def test_freeze_keeps_parts_fixed(pretrained, tasks, bert_dir, corpus):
    cfg, pre = _model("vqa", "f_align+rw", pretrained)
    cfg = dataclasses.replace(cfg, head=dataclasses.replace(cfg.head, freeze=("encoder", "probes")))
    answers = load_answers(tasks["vqa"])
    net = build_model(cfg, pre.model, pre.stage2, answers, pre.state)
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("encoder.") or "_probe" in n for n in trainable)
    assert any(n.startswith("relations.fuse") for n in trainable) and any(n.startswith("align.dense") for n in trainable)
    assert not any(n.startswith("align.classifier") for n in trainable)  # Eq. 4's classifier is not a feature


def test_f_align_model_is_lxmerts_vqa_model_given_its_weights():
    """SSRP-Cross with the f_align head is LXMERT's VQAModel (transformers' LxmertForQuestionAnswering): given its
    weights (bench/finetune.py's renaming), the same logits; a padded batch, dropout off."""
    from bench.finetune import lxmert_vqa, make_batch, ours_vqa, question_lengths, same_weights

    size = dict(hidden=64, heads=4, intermediate=128, text_layers=2, visual_layers=1, inter_layers=2)
    torch.manual_seed(0)
    ours, hf = ours_vqa(size, "f_align"), lxmert_vqa(size)
    assert same_weights(ours, hf, size, "f_align") < 1e-5
    other = ours_vqa(size, "f_align").eval()
    batch = make_batch(4, torch.device("cpu"), question_lengths(4))
    with torch.no_grad():  # without the weights they differ: the comparison can fail
        assert float((other(batch) - ours.eval()(batch)).abs().max()) > 1e-2
