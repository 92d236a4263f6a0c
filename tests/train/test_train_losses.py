"""Losses against reference computations written from the paper's equations with plain loops."""

import math

import numpy as np
import pytest
import torch

from ssrp.train.heads import DistanceProbe, pool_words, upper_triangle
from ssrp.train.losses import contrastive_terms, partner_index, probe_terms, xcl_anchor_terms


def _cos(a, b, tau):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) / tau)


def reference_cl_all(zv: np.ndarray, zw: np.ndarray, tau: float, literal: bool) -> float:
    """L_CL-all = 1/(2N) sum over positive pairs (i, j) of L_SCL(i,j) + L_SCL(j,i) + L_XCL(i,j) (Eq. 6, 7)."""
    two_n = len(zv)
    n = two_n // 2
    z = {"v": zv, "w": zw}

    def Z(x, y, a, b):  # noqa: N802 - the paper's notation
        return _cos(z[x][a], z[y][b], tau)

    def scl(i, j):
        total = 0.0
        for x in ("v", "w"):
            denom = sum(math.exp(Z(x, x, i, k)) for k in range(two_n) if k != i)
            total -= math.log(math.exp(Z(x, x, i, j)) / denom)
        return total

    def xcl(i, j):
        total = 0.0
        for m in (i, j):
            for nn in (i, j):
                for x, y in (("v", "w"), ("w", "v")):
                    ks = [k for k in range(two_n) if k != m] if literal else range(two_n)
                    denom = sum(math.exp(Z(x, y, m, k)) for k in ks)
                    total -= math.log(math.exp(Z(x, y, m, nn)) / denom)
        return total

    pairs = [(i, i + n) for i in range(n)]
    return sum(scl(i, j) + scl(j, i) + xcl(i, j) for i, j in pairs) / two_n


@pytest.mark.parametrize("literal", [False, True])
def test_contrastive_matches_eq6_eq7_loops(literal):
    rng = np.random.default_rng(0)
    zv, zw = rng.standard_normal((8, 5)), rng.standard_normal((8, 5))
    terms = contrastive_terms(torch.tensor(zv), torch.tensor(zw), 0.3, xcl_denominator="literal" if literal else "all")
    ours = sum(float(s / c) for s, c in terms.values())
    assert ours == pytest.approx(reference_cl_all(zv, zw, 0.3, literal), rel=1e-6)


def test_gathered_ranks_sum_to_the_single_process_loss():
    """Two ranks with a (monkeypatched) all-gather give the loss of one process on the global batch."""
    rng = np.random.default_rng(1)
    n, world = 4, 2
    a_v, b_v = torch.tensor(rng.standard_normal((n, 6))), torch.tensor(rng.standard_normal((n, 6)))
    a_w, b_w = torch.tensor(rng.standard_normal((n, 6))), torch.tensor(rng.standard_normal((n, 6)))
    single = contrastive_terms(torch.cat([a_v, b_v]), torch.cat([a_w, b_w]), 0.2)
    per = n // world

    def local(x_a, x_b, r):
        return torch.cat([x_a[r * per : (r + 1) * per], x_b[r * per : (r + 1) * per]])

    total = {"scl": 0.0, "xcl": 0.0}
    for r in range(world):
        gathered = {}
        for name, (xa, xb) in {"v": (a_v, b_v), "w": (a_w, b_w)}.items():
            gathered[name] = torch.cat([local(xa, xb, q) for q in range(world)])

        def fake_gather(x, r=r, gathered=gathered):
            key = "v" if torch.equal(x, local(a_v, b_v, r)) else "w"
            return gathered[key], r * 2 * per

        terms = contrastive_terms(local(a_v, b_v, r), local(a_w, b_w, r), 0.2, gather=fake_gather)
        for k in total:
            total[k] += float(terms[k][0])
    for k in total:
        assert total[k] == pytest.approx(float(single[k][0]), rel=1e-9)


def test_cross_modal_positive_is_the_matched_pair():
    """Aligning caption m with its own image m lowers L_XCL (the fork's self-mask dropped exactly this pair)."""
    d, two_n = 8, 4
    eye = torch.eye(d, dtype=torch.float64)
    z_v = eye[:two_n].clone()
    self_col, pos_col = torch.arange(two_n), partner_index(two_n // 2)
    aligned = eye[[0, 5, 6, 7]].clone()  # w_0 = v_0: the matched same-view pair
    misaligned = eye[[5, 0, 6, 7]].clone()  # v_0's direction on w_1, a negative of anchor 0
    la = xcl_anchor_terms(z_v, aligned, self_col, pos_col, 0.1, literal=False)[0]
    lb = xcl_anchor_terms(z_v, misaligned, self_col, pos_col, 0.1, literal=False)[0]
    assert la < lb - 1.0


def reference_probe_loss(pred: np.ndarray, gold: np.ndarray, lengths: list[int]) -> float:
    """Eq. 5 (Hewitt & Manning's L1 loss): per sentence sum |d_G - d_B^2| / n^2, mean over non-empty sentences."""
    losses = []
    for b, n in enumerate(lengths):
        if n == 0:
            continue
        s = sum(abs(gold[b, i, j] - pred[b, i, j]) for i in range(n) for j in range(n))
        losses.append(s / n**2)
    return sum(losses) / len(losses)


def test_probe_loss_matches_eq5_and_is_zero_for_exact_distances():
    rng = np.random.default_rng(2)
    lengths = [5, 0, 3]
    gold = np.full((3, 5, 5), -1.0)
    for b, n in enumerate(lengths):
        gold[b, :n, :n] = rng.integers(0, 6, (n, n))
    pred = rng.uniform(0, 5, (3, 5, 5))
    mask = torch.tensor([[i < n for i in range(5)] for n in lengths])
    s, c = probe_terms(torch.tensor(pred), torch.tensor(gold), mask)
    assert float(s / c) == pytest.approx(reference_probe_loss(pred, gold, lengths))
    assert float(c) == 2  # the empty sentence is not counted
    exact = np.where(gold >= 0, gold, rng.uniform(0, 9, gold.shape))  # garbage on padding is ignored
    s, c = probe_terms(torch.tensor(exact), torch.tensor(gold), mask)
    assert float(s) == 0.0


def test_probe_outputs_squared_distances_once():
    probe = DistanceProbe(6, 3).double()
    x = torch.randn(2, 4, 6, dtype=torch.float64)
    r = probe(x)
    for b in range(2):
        for i in range(4):
            for j in range(4):
                diff = (x[b, i] - x[b, j]) @ probe.proj
                assert float(r[b, i, j].detach()) == pytest.approx(float((diff @ diff).detach()), abs=1e-9)


def test_pool_words_and_upper_triangle_against_loops():
    states = torch.randn(2, 6, 3)
    piece_word = torch.tensor([[-1, 0, 0, 1, -1, -1], [-1, 0, 1, 1, 2, -1]])
    pooled, mask = pool_words(states, piece_word, 3)
    assert mask.tolist() == [[True, True, False], [True, True, True]]
    assert torch.allclose(pooled[0, 0], states[0, 1:3].mean(0))
    assert torch.allclose(pooled[1, 1], states[1, 2:4].mean(0))
    r = torch.arange(9.0).view(1, 3, 3).expand(2, 3, 3)
    vec = upper_triangle(r, mask, 4)
    assert vec.shape == (2, 6)
    # pairs (0,1) (0,2) (0,3) (1,2) (1,3) (2,3); word 2 of sentence 0 is padding
    assert vec[0].tolist() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert vec[1].tolist() == [1.0, 2.0, 0.0, 5.0, 0.0, 0.0]
