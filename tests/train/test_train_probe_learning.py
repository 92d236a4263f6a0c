"""Learning: the stage-2 textual probe recovers dependency trees of held-out sentences (UUAS >= 0.8).

Setup, exactly: the frozen encoder is replaced by ``TreeEncoder``, a module with no trainable weights
whose text states carry each caption's tree. It embeds the word-level tree distances exactly by
classical MDS (tree metrics are squared-Euclidean), places the embedding in a fixed random 12-d
subspace of the 32-d hidden space, adds N(0, 1) noise in the other 20 dims, and gives each
WordPiece its word's vector plus N(0, 0.05) noise. Object states are a fixed random projection of
the RoI features. Everything else is the real stage 2: batches from ``Stage2Dataset`` over the test
corpus (two variants per caption, each with its own random tree), ``train_step`` with the frozen
encoder under no_grad, the full L_Stage2 (probe + L_CL-all), AdamW and the warm-up/decay schedule.
The probe must learn to project onto the tree subspace and ignore the noise; UUAS is measured on
100 freshly generated held-out sentences.
"""

import numpy as np
import pytest
import torch
from torch import nn
from train_helpers import FEATURE_DIM, NUM_LABELS, make_text

from ssrp.train.config import make_config
from ssrp.train.data import Collate, fit_text
from ssrp.train.distributed import DistInfo
from ssrp.train.heads import pool_words
from ssrp.train.metrics import uuas
from ssrp.train.steps import build_run, train_step

HIDDEN, TREE_DIMS = 32, 12


class TreeEncoder(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(HIDDEN, HIDDEN, generator=g))
        self.register_buffer("tree_basis", q[:, :TREE_DIMS])
        self.register_buffer("noise_basis", q[:, TREE_DIMS:])
        self.register_buffer("objects", torch.randn(FEATURE_DIM, HIDDEN, generator=g))
        self.batch: dict = {}

    @staticmethod
    def mds(dist: torch.Tensor) -> torch.Tensor:
        n = dist.shape[0]
        j = torch.eye(n, dtype=torch.float64) - 1.0 / n
        vals, vecs = torch.linalg.eigh(-0.5 * j @ dist.double() @ j)
        x = vecs * vals.clamp(min=0).sqrt()
        return torch.nn.functional.pad(x, (0, TREE_DIMS - n)).float() if n < TREE_DIMS else x[:, -TREE_DIMS:].float()

    def words(self, tree_dist: torch.Tensor) -> torch.Tensor:
        n = int((tree_dist[0] >= 0).sum())
        coords = self.mds(tree_dist[:n, :n])
        noise = torch.randn(n, HIDDEN - TREE_DIMS)
        return coords @ self.tree_basis.T + noise @ self.noise_basis.T

    def forward(self, input_ids, text_mask, features, boxes, object_mask):
        b, t = input_ids.shape
        states = 0.05 * torch.randn(b, t, HIDDEN)
        for i in range(b):
            words = self.words(self.batch["tree_dist"][i])
            pw = self.batch["piece_word"][i]
            states[i, pw >= 0] += words[pw[pw >= 0]]
        return states, features.float() @ self.objects


def held_out_uuas(run, encoder, sentences) -> float:
    samples = []
    for rec in sentences:
        ids, pw, td = fit_text(rec, 36)
        samples.append(
            {
                "input_ids": ids,
                "piece_word": pw,
                "tree_dist": td,
                "features": np.zeros((1, FEATURE_DIM), np.float16),
                "boxes": np.zeros((1, 4), np.float32),
            }
        )
    half = len(samples) // 2
    batch = Collate("stage2", 0)([{"a": a, "b": b} for a, b in zip(samples[:half], samples[half:], strict=True)])
    encoder.batch = batch
    with torch.no_grad():
        text, _ = encoder(
            batch["input_ids"], batch["text_mask"], batch["features"], batch["boxes"], batch["object_mask"]
        )
        words, mask = pool_words(text, batch["piece_word"], batch["tree_dist"].shape[1])
        pred = run.model.heads.text_probe(words)
    pairs = []
    for i in range(len(samples)):
        n = int(mask[i].sum())
        pairs.append((pred[i, :n, :n].numpy(), batch["tree_dist"][i, :n, :n].numpy()))
    return uuas(pairs)


@pytest.mark.slow
def test_textual_probe_recovers_held_out_trees(corpus, bert_dir, vocab):
    from ssrp.train.loop import build_data

    torch.manual_seed(0)
    overrides = [
        f"model.num_object_labels={NUM_LABELS}",
        f"model.feature_dim={FEATURE_DIM}",
        "optim.lr=0.01",
        "optim.max_steps=300",
        "optim.warmup_fraction=0.05",
    ]
    cfg = make_config("stage2", "cross", "tiny", overrides)
    from ssrp.train.steps import resolve_config

    cfg = resolve_config(cfg, corpus, bert_dir, None)
    info = DistInfo()
    sampler, loader = build_data(cfg, corpus, info)
    run = build_run(cfg, info, total_steps=cfg.optim.max_steps)
    encoder = TreeEncoder()
    run.model.encoder = encoder
    rng = np.random.default_rng(12345)
    held_out = [make_text(10_000 + i, 0, "raw", vocab, rng) for i in range(100)]
    before = held_out_uuas(run, encoder, held_out)
    step, epoch = 0, 0
    while step < cfg.optim.max_steps:
        sampler.set_epoch(epoch)
        for batch in loader:
            encoder.batch = batch
            train_step(run, batch, step)
            step += 1
            if step == cfg.optim.max_steps:
                break
        epoch += 1
    after = held_out_uuas(run, encoder, held_out)
    assert before < 0.6
    print("UUAS before", before, "after", after)
    assert after >= 0.8, (before, after)
