"""The losses of both stages, as (sum, count) pairs so that ranks can normalise by global counts.

Stage 1 (Eq. 3, 4): masked-token cross-entropy, masked-RoI object-label cross-entropy against the
detector's labels, smooth-L1 regression of masked RoI features, and image-text matching (binary
cross-entropy on g_align's output).

Stage 2 (Eq. 5, 6, 7): the structural-probe loss of Hewitt & Manning (the squared probe distance
compared directly with the tree distance, padding masked, divided by n^2 per sentence, averaged over
non-empty sentences) and the contrastive losses L_SCL and L_XCL over 2N augmented image-caption
pairs, with negatives from every rank.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# (sum over this rank's items, number of items on this rank); normalised by the global count later
LossTerm = tuple[Tensor, Tensor]
# all-gathers a [n, d] tensor over ranks with gradients; returns (gathered [world*n, d], offset of this rank)
Gather = Callable[[Tensor], tuple[Tensor, int]]


def no_gather(x: Tensor) -> tuple[Tensor, int]:
    return x, 0


def _full(x: Tensor) -> Tensor:
    """At least float32 (losses of bf16 activations are computed in float32; float64 stays)."""
    return x if x.dtype == torch.float64 else x.float()


# ------------------------------------------------------------------------------------------------
# Stage 1


def masked_lm_terms(logits: Tensor, labels: Tensor, weight: Tensor) -> LossTerm:
    """Cross-entropy of rows with label >= 0, each multiplied by ``weight`` (0 for padded fallbacks)."""
    ce = F.cross_entropy(_full(logits), labels.clamp(min=0), reduction="none")
    return (ce * weight).sum(), weight.sum()


def feature_regression_terms(pred: Tensor, target: Tensor, weight: Tensor) -> LossTerm:
    """Smooth-L1 between predicted and original RoI features, averaged over feature dims, per RoI."""
    per_roi = F.smooth_l1_loss(_full(pred), _full(target), reduction="none").mean(-1)
    return (per_roi * weight).sum(), weight.sum()


def matching_terms(logit: Tensor, matched: Tensor) -> LossTerm:
    """Eq. 4: binary cross-entropy of p(f_align) against y (1 = matched caption)."""
    bce = F.binary_cross_entropy_with_logits(_full(logit), _full(matched), reduction="none")
    return bce.sum(), torch.tensor(float(bce.numel()), device=bce.device)


# ------------------------------------------------------------------------------------------------
# Stage 2: probe


def probe_terms(pred: Tensor, gold: Tensor, node_mask: Tensor) -> LossTerm:
    """Eq. 5 per sentence, summed over non-empty sentences; count = number of non-empty sentences.

    ``pred``: [B, W, W] squared probe distances (not squared again); ``gold``: [B, W, W] tree
    distances, -1 on padding; ``node_mask``: [B, W] words that exist (and got at least one piece).
    """
    valid = (gold >= 0) & node_mask[:, :, None] & node_mask[:, None, :]
    pred = _full(pred)
    n = node_mask.sum(-1).to(pred.dtype)
    diff = (pred - gold.to(pred.dtype)).abs() * valid
    nonempty = n > 0
    per_sentence = diff.sum((1, 2)) / n.clamp(min=1).pow(2)
    return (per_sentence * nonempty).sum(), nonempty.sum().to(pred.dtype)


# ------------------------------------------------------------------------------------------------
# Stage 2: contrastive (Eq. 6, 7)


def _cosine_logits(anchor: Tensor, candidates: Tensor, temperature: float) -> Tensor:
    return F.normalize(_full(anchor), dim=-1) @ F.normalize(_full(candidates), dim=-1).T / temperature


def _pick(logits: Tensor, columns: Tensor) -> Tensor:
    return logits.gather(1, columns[:, None]).squeeze(1)


def _exclude(logits: Tensor, columns: Tensor) -> Tensor:
    return logits.scatter(1, columns[:, None], float("-inf"))


def scl_anchor_terms(z: Tensor, z_all: Tensor, self_col: Tensor, pos_col: Tensor, temperature: float) -> Tensor:
    """One modality's term of Eq. 6 for each anchor i: -log e^{Z_ij} / sum_{k != i} e^{Z_ik}."""
    logits = _exclude(_cosine_logits(z, z_all, temperature), self_col)
    return torch.logsumexp(logits, 1) - _pick(logits, pos_col)


def xcl_anchor_terms(
    z_x: Tensor, z_y_all: Tensor, self_col: Tensor, pos_col: Tensor, temperature: float, literal: bool
) -> Tensor:
    """One direction of Eq. 7 for each anchor m: sum over n in {m, partner(m)} of -log softmax.

    ``literal`` keeps Eq. 7's indicator 1[k != m] in the denominator (the matched pair's own
    logit is then left out of it); otherwise the softmax runs over every candidate.
    """
    logits = _cosine_logits(z_x, z_y_all, temperature)
    denom_logits = _exclude(logits, self_col) if literal else logits
    denom = torch.logsumexp(denom_logits, 1)
    return (denom - _pick(logits, self_col)) + (denom - _pick(logits, pos_col))


def partner_index(n_pairs: int, device: torch.device | None = None) -> Tensor:
    """Items are [view a of pairs 0..N-1, view b of pairs 0..N-1]; the partner of i is i +- N."""
    idx = torch.arange(2 * n_pairs, device=device)
    return torch.where(idx < n_pairs, idx + n_pairs, idx - n_pairs)


def contrastive_terms(
    z_v: Tensor,
    z_w: Tensor,
    temperature: float,
    gather: Gather = no_gather,
    xcl_denominator: str = "all",
) -> dict[str, LossTerm]:
    """Sums of L_SCL and L_XCL over this rank's 2N anchors, counts = 2N (normalise by the global 2N).

    Summed over all anchors and divided by 2N_c this is the paper's
    L_CL-all = 1/(2N_c) sum_{(i,j)} [L_SCL(i,j) + L_SCL(j,i) + L_XCL(i,j)]: each positive pair
    (i, j) contributes its two anchors to L_SCL, and L_XCL(i, j) = the sum of both anchors' terms.
    """
    two_n = z_v.shape[0]
    if z_w.shape[0] != two_n or two_n % 2:
        raise ValueError(
            f"contrastive_terms needs 2N visual and 2N text vectors, got {z_v.shape[0]} and {z_w.shape[0]}"
        )
    zv_all, offset = gather(z_v)
    zw_all, _ = gather(z_w)
    local = torch.arange(two_n, device=z_v.device)
    self_col = local + offset
    pos_col = partner_index(two_n // 2, z_v.device) + offset
    scl = scl_anchor_terms(z_v, zv_all, self_col, pos_col, temperature) + scl_anchor_terms(
        z_w, zw_all, self_col, pos_col, temperature
    )
    literal = xcl_denominator == "literal"
    xcl = xcl_anchor_terms(z_v, zw_all, self_col, pos_col, temperature, literal) + xcl_anchor_terms(
        z_w, zv_all, self_col, pos_col, temperature, literal
    )
    count = torch.tensor(float(two_n), device=z_v.device)
    return {"scl": (scl.sum(), count), "xcl": (xcl.sum(), count)}
