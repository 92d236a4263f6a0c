"""The three inter-modality encoders, padding, BERT loading and the stage-1 heads."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssrp.train.bert import bert_data_config, bert_model_config, load_bert
from ssrp.train.config import DataConfig, ModelConfig
from ssrp.train.heads import AlignHead, Stage1Model
from ssrp.train.model import Layout, SSRPEncoder, TextEmbeddings

CFG = ModelConfig(
    hidden=16,
    heads=2,
    intermediate=32,
    text_layers=1,
    visual_layers=1,
    inter_layers=2,
    dropout=0.0,
    vocab_size=50,
    max_positions=20,
    feature_dim=8,
    num_object_labels=5,
)


def _inputs(b=2, t=6, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 50, (b, t), generator=g)
    tm = torch.ones(b, t, dtype=torch.bool)
    tm[1, 4:] = False
    feats = torch.randn(b, n, 8, generator=g)
    boxes = torch.rand(b, n, 4, generator=g)
    om = torch.ones(b, n, dtype=torch.bool)
    om[0, 3:] = False
    return ids, tm, feats, boxes, om


def _encoder(variant, **kw):
    torch.manual_seed(0)
    return SSRPEncoder(dataclasses.replace(CFG, variant=variant, **kw)).eval()


@pytest.mark.parametrize(
    ("variant", "kw", "text_sees_vision", "vision_sees_text"),
    [
        ("share", {}, False, False),
        ("share", {"share_attention": "joint"}, True, True),
        ("visual", {}, True, False),
        ("cross", {}, True, True),
    ],
)
def test_information_flow_of_each_variant(variant, kw, text_sees_vision, vision_sees_text):
    enc = _encoder(variant, **kw)
    ids, tm, feats, boxes, om = _inputs()
    t0, v0 = enc(ids, tm, feats, boxes, om)
    t1, _ = enc(ids, tm, feats + 1.0, boxes, om)  # change the image only
    _, v2 = enc((ids + 7) % 50, tm, feats, boxes, om)  # change the caption only
    assert (not torch.allclose(t0, t1, atol=1e-6)) == text_sees_vision
    assert (not torch.allclose(v0, v2, atol=1e-6)) == vision_sees_text


@pytest.mark.parametrize("variant", ["share", "visual", "cross"])
def test_padding_does_not_leak(variant):
    enc = _encoder(variant, share_attention="joint") if variant == "share" else _encoder(variant)
    ids, tm, feats, boxes, om = _inputs()
    t0, v0 = enc(ids, tm, feats, boxes, om)
    ids2, feats2 = ids.clone(), feats.clone()
    ids2[~tm] = 3
    feats2[~om] = 100.0
    t1, v1 = enc(ids2, tm, feats2, boxes, om)
    assert torch.allclose(t0[tm], t1[tm], atol=1e-5)
    assert torch.allclose(v0[om], v1[om], atol=1e-5)


@pytest.mark.parametrize(
    ("variant", "kw"), [("share", {}), ("share", {"share_attention": "joint"}), ("visual", {}), ("cross", {})]
)
@pytest.mark.parametrize("cut", ["none", "cut", "uniform"])
def test_unpadded_layers_match_the_dense_computation(variant, kw, cut):
    """model.unpad only skips padded rows: same states on real positions, same gradients, zeros on padding;
    ``cut``: every sample is padded at the end, so the unpadded grids are also cut short; ``uniform``: after
    the cut nothing is padded (a bucket of equal-length captions)."""
    x = _inputs(b=3, t=7, n=5)
    x[1][0, 2:] = False  # a short caption beside the padded one
    if cut == "cut":
        x[1][:, 5:] = False
        x[4][:, 4:] = False
    elif cut == "uniform":
        x[1][:] = False
        x[1][:, :5] = True
        x[4][:] = True
        x[4][:, 4:] = False
    results = []
    for unpad in ("off", "on"):
        enc = _encoder(variant, unpad=unpad, **kw)
        t, v = enc(*x)
        (t[x[1]].pow(2).sum() + v[x[4]].sum()).backward()
        results.append((t, v, [p.grad for p in enc.parameters()]))
    (td, vd, gd), (tu, vu, gu) = results
    assert torch.allclose(td[x[1]], tu[x[1]], atol=1e-5) and torch.allclose(vd[x[4]], vu[x[4]], atol=1e-5)
    assert not tu[~x[1]].any() and not vu[~x[4]].any()
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(gd, gu, strict=True))


@pytest.mark.parametrize("mode", ["cross", "separate", "joint"])
def test_paired_attention_equals_each_modality_attending_on_its_own(mode):
    """One pass over the shared weights for both modalities gives what each modality gets through the
    sub-layer alone: Cross's two directions, Share's two self-attentions, or attention over both."""
    from ssrp.train.model import AttentionSublayer

    torch.manual_seed(0)
    sub = AttentionSublayer(CFG).eval()
    g = torch.Generator().manual_seed(1)
    tm = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    vm = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    tl, vl = Layout(tm), Layout(vm)
    t, v = torch.randn(int(tm.sum()), 16, generator=g), torch.randn(int(vm.sum()), 16, generator=g)
    both = sub.paired(torch.cat([t, v]), tl, vl, mode).split([len(t), len(v)])
    if mode == "cross":
        alone = sub(t, tl, v, vl), sub(v, vl, t, tl)
    elif mode == "separate":
        alone = sub(t, tl, t, tl), sub(v, vl, v, vl)
    else:
        jl = Layout(torch.cat([tm, vm], 1))
        joint = jl.rows(torch.cat([tl.grid(t), vl.grid(v)], 1))
        alone = sub(t, tl, joint, jl), sub(v, vl, joint, jl)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(both, alone, strict=True))


def test_cross_without_concatenation_equals_paired_cross():
    """``AttentionSublayer.cross`` (Cross's layers: each modality's projections run on its own rows) gives the
    states and the gradients (weights and both inputs) of ``paired(cat([t, v]), ..., "cross")``."""
    from ssrp.train.model import AttentionSublayer

    torch.manual_seed(0)
    sub = AttentionSublayer(CFG).eval()
    tl = Layout(torch.tensor([[True] * 4 + [False] * 2, [True] * 6]))
    vl = Layout(torch.tensor([[True] * 5, [True] * 3 + [False] * 2]))
    results = []
    for fast in (True, False):
        t = torch.randn(tl.count, 16, generator=torch.Generator().manual_seed(2), requires_grad=True)
        v = torch.randn(vl.count, 16, generator=torch.Generator().manual_seed(3), requires_grad=True)
        out = sub.cross(t, v, tl, vl) if fast else sub.paired(torch.cat([t, v]), tl, vl, "cross").split([tl.count, vl.count])
        g = torch.Generator().manual_seed(1)
        w = [torch.randn(o.shape, generator=g) for o in out]
        sub.zero_grad()
        sum((o * x).sum() for o, x in zip(out, w, strict=True)).backward()
        results.append([*out, t.grad, v.grad, *(p.grad.clone() for p in sub.parameters())])
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(*results, strict=True))


def test_layout_keeps_real_rows_in_batch_order():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    layout = Layout(mask)
    grid = torch.arange(6.0).view(2, 3, 1)
    assert layout.rows(grid).flatten().tolist() == [0.0, 1.0, 3.0]
    assert layout.positions().tolist() == [0, 1, 0]
    # the grid is cut after the batch's last real position; full() restores the input's length
    assert layout.length == 2 and layout.mask.tolist() == [[True, True], [True, False]]
    assert layout.grid(layout.rows(grid)).flatten().tolist() == [0.0, 1.0, 3.0, 0.0]
    assert layout.full(layout.rows(grid)).flatten().tolist() == [0.0, 1.0, 0.0, 3.0, 0.0, 0.0]
    dense = Layout(torch.ones(2, 3, dtype=torch.bool))
    assert dense.index is None and dense.rows(grid).data_ptr() == grid.data_ptr()
    assert dense.positions().tolist() == [0, 1, 2, 0, 1, 2]
    kept = Layout(mask, unpad=False)  # no unpadding: the whole grid, uncut
    assert kept.index is None and kept.length == 3 and kept.rows(grid).data_ptr() == grid.data_ptr()
    same_length = Layout(torch.tensor([[True, True, False], [True, True, False]]))
    assert same_length.index is None and same_length.length == 2
    assert same_length.rows(grid).flatten().tolist() == [0.0, 1.0, 3.0, 4.0]
    assert same_length.full(same_length.rows(grid)).flatten().tolist() == [0.0, 1.0, 0.0, 3.0, 4.0, 0.0]


@pytest.mark.parametrize("padded", [True, False])
def test_cpu_attention_equals_sdpa(padded):
    """The CPU path (two batched products around a softmax, queries pre-scaled, padded keys biased by the
    dtype's lowest value, no bias when no key is padded) gives SDPA's values and gradients."""
    from ssrp.train.model import MultiHeadAttention

    torch.manual_seed(0)
    attn = MultiHeadAttention(16, 2, dropout=0.0).eval()
    tm = torch.tensor([[True] * 4 + [False] * 2, [True] * 6]) if padded else torch.ones(2, 6, dtype=torch.bool)
    vm = torch.tensor([[True] * 5, [True] * 3 + [False] * 2]) if padded else torch.ones(2, 5, dtype=torch.bool)
    tl, vl = Layout(tm), Layout(vm)
    assert (vl.key_bias(2, torch.float32) is None) == (not padded)
    t = torch.randn(int(tm.sum()), 16, requires_grad=True)
    v = torch.randn(int(vm.sum()), 16, requires_grad=True)
    ours = attn(t, tl, v, vl)
    grads = torch.autograd.grad(ours.pow(2).sum(), (t, v, attn.qkv.weight))
    q = tl.grid(F.linear(t, attn.qkv.weight[:16], attn.qkv.bias[:16])).unflatten(-1, (2, 8)).transpose(1, 2)
    kv = vl.grid(F.linear(v, attn.qkv.weight[16:], attn.qkv.bias[16:])).unflatten(-1, (2, 2, 8)).permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=vm[:, None, None, :])
    ref = attn.out(tl.rows(y.transpose(1, 2).flatten(2)))
    ref_grads = torch.autograd.grad(ref.pow(2).sum(), (t, v, attn.qkv.weight))
    assert torch.allclose(ours, ref, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(grads, ref_grads, strict=True))


@pytest.mark.parametrize("variant", ["share", "cross"])
def test_align_head_follows_f_align_of_each_variant(variant):
    head = AlignHead(dataclasses.replace(CFG, variant=variant)).eval()
    text, objects = torch.randn(2, 4, 16), torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    base = head(text, objects, mask)
    padded = objects.clone()
    padded[0, 3:] = 50.0
    assert torch.allclose(base, head(text, padded, mask))
    moved = objects.clone()
    moved[:, 0] += 1.0
    # Share/Visual: g_align([mean v; w_CLS]); Cross: g_align(w_CLS) only
    assert torch.allclose(base, head(text, moved, mask)) == (variant == "cross")


def test_bert_weights_reproduce_hugging_face_bert(bert_dir):
    from transformers import BertForPreTraining

    cfg = bert_model_config(
        dataclasses.replace(
            ModelConfig(variant="cross"),
            hidden=32,
            heads=2,
            intermediate=64,
            text_layers=2,
            visual_layers=1,
            inter_layers=1,
            feature_dim=8,
            num_object_labels=5,
        ),
        bert_dir,
    )
    model = Stage1Model(cfg).eval()
    report = load_bert(model, bert_dir, cfg)
    assert "cls.seq_relationship.weight" in report.unmapped
    assert "align.dense.weight" in report.mapped  # Cross: g_align(w_CLS) starts from BERT's pooler
    assert not any(name.startswith("encoder.text_layers") for name in report.not_from_bert)
    hf = BertForPreTraining.from_pretrained(bert_dir).eval()
    ids = torch.randint(5, cfg.vocab_size, (2, 7))
    with torch.no_grad():
        out = hf(input_ids=ids, output_hidden_states=True)
        layout = Layout(torch.ones(2, 7, dtype=torch.bool))
        x = model.encoder.text_embeddings(ids, layout)
        for layer in model.encoder.text_layers:
            x = layer(x, layout)
        x = layout.grid(x)
        logits = F.linear(model.mlm_transform(x), model.encoder.text_embeddings.word.weight, model.mlm_bias)
    assert torch.allclose(x, out.hidden_states[2], atol=1e-5)
    assert torch.allclose(logits, out.prediction_logits, atol=1e-4)


def test_bert_config_adoption_and_refusals(bert_dir, vocab):
    cfg = ModelConfig(hidden=32, heads=2, intermediate=64, text_layers=2)
    adopted = bert_model_config(cfg, bert_dir)
    assert adopted.vocab_size == len(vocab) and adopted.max_positions == 64
    data = bert_data_config(DataConfig(), bert_dir)
    assert (data.pad_id, data.mask_id) == (vocab.index("[PAD]"), vocab.index("[MASK]"))
    assert not vocab[data.random_token_min].startswith("[")
    with pytest.raises(ValueError, match="model.hidden"):
        bert_model_config(ModelConfig(), bert_dir)
    with pytest.raises(ValueError, match="text_layers"):
        bert_model_config(dataclasses.replace(cfg, text_layers=5), bert_dir)


def test_stage1_losses_match_a_reference_computation():
    torch.manual_seed(0)
    model = Stage1Model(dataclasses.replace(CFG, variant="visual")).eval()
    ids, tm, feats, boxes, om = _inputs(b=3, seed=1)
    ids, tm, feats, boxes = (
        torch.cat([ids, ids[:1]]),
        torch.cat([tm, tm[:1]]),
        torch.cat([feats, feats[:1]]),
        torch.cat([boxes, boxes[:1]]),
    )
    om = torch.cat([om, om[:1]])
    mlm = torch.full(ids.shape, -1)
    mlm[0, 1], mlm[1, 2], mlm[2, 3], mlm[3, 1] = 7, 8, 9, 10
    obj = torch.full(om.shape, -1)
    obj[0, 0], obj[1, 4], obj[3, 2] = 1, 2, 3
    target = torch.randn(feats.shape)
    matched = torch.tensor([1.0, 1.0, 0.0, 1.0])
    batch = {
        "input_ids": ids,
        "text_mask": tm,
        "features": feats,
        "boxes": boxes,
        "object_mask": om,
        "mlm_labels": mlm,
        "obj_labels": obj,
        "feat_targets": target,
        "matched": matched,
    }
    with torch.no_grad():
        terms = model(batch)
        t, v = model.encoder(ids, tm, feats, boxes, om)
        ref = {"mlm": [], "obj": [], "feat": []}
        for b in range(4):
            if not matched[b]:
                continue  # masked losses are taken on matched pairs only
            for i in range(ids.shape[1]):
                if mlm[b, i] >= 0:
                    logits = F.linear(
                        model.mlm_transform(t[b, i]), model.encoder.text_embeddings.word.weight, model.mlm_bias
                    )
                    ref["mlm"].append(F.cross_entropy(logits[None], mlm[b, i][None]))
            for i in range(om.shape[1]):
                if obj[b, i] >= 0:
                    h = model.obj_transform(v[b, i])
                    ref["obj"].append(F.cross_entropy(model.obj_label(h)[None], obj[b, i][None]))
                    ref["feat"].append(F.smooth_l1_loss(model.obj_feature(h), target[b, i]))
        logit = model.align(t, v, om)
        match = F.binary_cross_entropy_with_logits(logit, matched)
    for name in ("mlm", "obj", "feat"):
        s, c = terms[name]
        assert float(c) == len(ref[name])
        assert float(s / c) == pytest.approx(float(torch.stack(ref[name]).mean()), rel=1e-5)
    s, c = terms["match"]
    assert float(s / c) == pytest.approx(float(match), rel=1e-5)


def test_tiny_bert_has_the_layout_of_the_fetched_one(models_dir, bert_dir):
    import os
    import re

    from ssrp.train.bert import BERT_REVISION, SOURCE

    assert SOURCE.name == "bert" and {f.dest for f in SOURCE.files} == {"config.json", "vocab.txt", "model.safetensors"}
    for f in SOURCE.files:
        assert f.url.startswith("https://huggingface.co/") and BERT_REVISION in f.url
        assert re.fullmatch(r"[0-9a-f]{64}", f.sha256)
    assert os.path.dirname(os.path.join(models_dir, "bert", "x")) == bert_dir
    assert {f.dest for f in SOURCE.files} <= set(os.listdir(bert_dir))


def test_tiny_bert_keeps_an_existing_vocabulary(tmp_path):
    from ssrp.train.bert import build_tiny_bert, read_vocab

    (tmp_path / "bert").mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "dog", "##s", "on"]
    (tmp_path / "bert" / "vocab.txt").write_text("\n".join(words) + "\n")
    info = build_tiny_bert(str(tmp_path))
    assert info["vocab"] == "existing" and info["vocab_size"] == len(words)
    assert read_vocab(str(tmp_path / "bert")) == words
    cfg = bert_model_config(ModelConfig(hidden=32, heads=2, intermediate=64, text_layers=2), str(tmp_path / "bert"))
    assert cfg.vocab_size == len(words)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_unpadded_encoder_on_cuda_matches_dense_under_bf16():
    x = tuple(t.cuda() for t in _inputs(b=4, t=9, n=5))
    outputs = []
    for unpad in ("off", "on"):
        enc = _encoder("cross", unpad=unpad).cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            t, v = enc(*x)
        outputs.append((t.float()[x[1]], v.float()[x[4]]))
    (td, vd), (tu, vu) = outputs
    assert torch.allclose(td, tu, atol=3e-2) and torch.allclose(vd, vu, atol=3e-2)


def _stage1_batch(b=4, seed=1, masked=True):
    ids, tm, feats, boxes, om = _inputs(b=b, t=7, seed=seed)
    tm[0, 3:] = False
    g = torch.Generator().manual_seed(seed)
    mlm = torch.where((torch.rand(ids.shape, generator=g) < 0.4) & tm, ids, -1)
    obj = torch.where((torch.rand(om.shape, generator=g) < 0.4) & om, torch.randint(0, 5, om.shape, generator=g), -1)
    mlm[:, 0] = -1
    if not masked:  # nothing masked: every head reads its zero-weight fallback row
        mlm[:], obj[:] = -1, -1
    matched = torch.tensor([1.0, 0.0, 1.0, 1.0][:b])
    return {
        "input_ids": ids,
        "text_mask": tm,
        "features": feats,
        "boxes": boxes,
        "object_mask": om,
        "mlm_labels": mlm,
        "obj_labels": obj,
        "feat_targets": torch.randn(feats.shape, generator=g),
        "matched": matched,
    }


@pytest.mark.parametrize(
    ("variant", "kw"), [("share", {}), ("share", {"share_attention": "joint"}), ("visual", {}), ("cross", {})]
)
@pytest.mark.parametrize("masked", [True, False])
def test_last_layer_for_read_positions_only_gives_the_dense_losses_and_gradients(variant, kw, masked):
    """Stage 1 with unpadding computes the last inter-modality layer only for the positions its heads read
    (masked tokens, [CLS], masked RoIs): the same four losses and the same gradient of every weight as the
    dense computation of every position."""
    batch = _stage1_batch(masked=masked)
    results = []
    for unpad in ("off", "on"):
        torch.manual_seed(0)
        model = Stage1Model(dataclasses.replace(CFG, variant=variant, unpad=unpad, **kw)).eval()
        terms = model(batch)
        sum(s / c.clamp(min=1) for s, c in terms.values()).backward()
        grads = {k: p.grad for k, p in model.named_parameters()}
        results.append(({k: (float(s.detach()), float(c)) for k, (s, c) in terms.items()}, grads))
    (dense, g_dense), (kept, g_kept) = results
    assert dense.keys() == kept.keys()
    for name in dense:
        assert kept[name][1] == dense[name][1]
        assert kept[name][0] == pytest.approx(dense[name][0], rel=1e-5, abs=1e-6)
    assert all(g_kept[k] is not None for k in g_dense)  # every weight takes part (DDP needs it)
    assert all(torch.allclose(g_dense[k], g_kept[k], rtol=1e-4, atol=1e-6) for k in g_dense)


def test_cross_layer_computes_kept_positions_only():
    """The last Cross layer's self-attention queries and FF see the kept rows only."""
    from ssrp.train.model import CrossLayer

    torch.manual_seed(0)
    layer = CrossLayer(CFG).eval()
    tm = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    vm = torch.ones(2, 5, dtype=torch.bool)
    tl, vl = Layout(tm), Layout(vm)
    t, v = torch.randn(int(tm.sum()), 16), torch.randn(10, 16)
    keep_t = torch.zeros_like(tm)
    keep_t[:, 0] = keep_t[1, 4] = True
    keep_v = torch.zeros_like(vm)
    keep_v[0, 2] = True
    seen = []
    layer.text_ff.fc1.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    layer.visual_ff.fc1.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    full_t, full_v = layer(t, v, tl, vl)
    kt, kv = layer(t, v, tl, vl, (tl.select(keep_t), vl.select(keep_v)))
    assert seen == [10, 10, 3, 1]
    assert torch.allclose(kt, tl.grid(full_t)[keep_t[:, : tl.length]], atol=1e-6)
    assert torch.allclose(kv, vl.grid(full_v)[keep_v], atol=1e-6)


def test_layout_selection_and_row_index():
    mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
    layout = Layout(mask)
    keep = torch.tensor([[False, True, False, False], [True, False, True, False]])
    sel = layout.select(keep)
    assert sel.rows.tolist() == [1, 2, 4]  # rows of (0, 1), (1, 0), (1, 2) among the 5 real rows
    assert sel.layout.count == 3 and sel.layout.full_length == 4
    assert layout.row_index(torch.tensor([[True, False, False, False], [True, False, False, False]])).tolist() == [0, 2]
    dense = Layout(mask, unpad=False)
    assert dense.row_index(keep).tolist() == [1, 4, 6]  # the dense rows are the whole grid


@pytest.mark.parametrize("padded", [True, False])
def test_row_and_head_copies_have_exact_gradients(padded):
    from ssrp.train.model import _Gather, _HeadsToRows, _RowsToHeads, _Scatter

    mask = torch.tensor([[True, True, False], [True, True, True]]) if padded else torch.ones(2, 3, dtype=torch.bool)
    lay = Layout(mask)
    n = lay.count
    rows = torch.randn(n, 3 * 2 * 2, dtype=torch.float64, requires_grad=True)
    slots = lay.head_slots(2)
    assert (slots is None) == (not padded)
    args = (slots, lay.batch, lay.length, 3, 2, 0.5)
    assert torch.autograd.gradcheck(lambda r: _RowsToHeads.apply(r, *args), (rows,))
    # the blocks are the padded grid's [B, heads, L, d] per part (zeros at padding, the first part scaled)
    grid = torch.zeros(2, lay.length, 12, dtype=torch.float64).masked_scatter(mask[..., None], rows.detach())
    ref = grid.view(2, lay.length, 3, 2, 2).permute(2, 0, 3, 1, 4).reshape(3, 4, lay.length, 2)
    blocks = _RowsToHeads.apply(rows, *args)
    assert all(torch.equal(b, r * (0.5 if p == 0 else 1.0)) for p, (b, r) in enumerate(zip(blocks, ref, strict=True)))
    y = torch.randn(2 * 2, lay.length, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _HeadsToRows.apply(t, slots, 2, 2), (y,))
    index = torch.tensor([3, 0, 2])
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _Gather.apply(t, index), (x,))
    assert torch.autograd.gradcheck(lambda t: _Scatter.apply(t[:3], index, 5), (x,))
    # heads of rows, then rows of heads: the identity (and zeros at padded positions)
    q, k, v = _RowsToHeads.apply(rows, slots, lay.batch, lay.length, 3, 2, 1.0)
    assert torch.equal(_HeadsToRows.apply(k, slots, 2, 2), rows[:, 4:8])
    if padded:
        assert not q.view(2, 2, 3, 2)[0, :, 2].any()


def test_cpu_dropout_masks():
    from ssrp.train.model import Dropout, keep_mask

    torch.manual_seed(3)
    a = keep_mask((200, 300), 0.1, torch.float32)
    torch.manual_seed(3)
    b = keep_mask((200, 300), 0.1, torch.float32)
    assert torch.equal(a, b)  # torch.manual_seed decides the mask
    for rate in (0.1, 0.3):  # numpy's in-place threshold and scale give torch's float32 ge_/mul_ mask
        torch.manual_seed(3)
        fast = keep_mask((200, 300), rate, torch.float32)
        torch.manual_seed(3)
        seed = int(torch.randint(0, 2**62, (1,)))
        u = torch.from_numpy(np.random.default_rng(seed).random((200, 300), dtype=np.float32))
        assert torch.equal(fast, u.ge_(rate).mul_(1.0 / (1.0 - rate)))
    assert a.unique().tolist() == [0.0, pytest.approx(1 / 0.9)]
    assert abs(float((a > 0).float().mean()) - 0.9) < 0.01
    drop = Dropout(0.1)
    x = torch.randn(50, 40)
    assert torch.equal(drop.eval()(x), x)
    y = drop.train()(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / 0.9)


def test_tied_word_weight_gets_the_stock_gradient(monkeypatch):
    """On CPU the MLM decoder and the word lookup read the tied weight through ``TextEmbeddings.tied_weights``
    (the lookup's sparse rows added in place into the decoder's dense gradient): every weight's gradient is the
    stock one (``nn.Embedding`` lookup and ``F.linear`` on the same weight, autograd summing the two)."""
    batch = _stage1_batch()
    grads = []
    for stock in (False, True):
        if stock:
            monkeypatch.setattr(TextEmbeddings, "tied_weights", lambda self: (self.word.weight, None))
        torch.manual_seed(0)
        model = Stage1Model(CFG).eval()
        terms = model(batch)
        sum(s / c.clamp(min=1) for s, c in terms.values()).backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
    fast, ref = grads
    word = "encoder.text_embeddings.word.weight"
    assert not fast[word].is_sparse and fast[word].is_contiguous()
    looked_up = batch["input_ids"][batch["text_mask"]].unique()
    assert ref[word][looked_up].abs().sum() > 0
    assert all(torch.allclose(fast[k], ref[k], rtol=1e-5, atol=1e-7) for k in ref)
    with torch.no_grad():  # no gradient to send: the plain weight, no alias
        emb = model.encoder.text_embeddings
        assert emb.tied_weights() == (emb.word.weight, None)
