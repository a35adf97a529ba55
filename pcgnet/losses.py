"""PCGNet's training objective (spec 4.1): focal ERC loss, shift NLL, shift-aware contrastive loss, and
their self-normalised sum.

Labels of -1 (padding or unlabelled utterances) are ignored everywhere; a shift sample is ignored when
either of its two utterances is unlabelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pcgnet.graph import shift_labels

# Pair pseudo-labels of the contrastive loss (spec 2.3).
PAIR_IDENTICAL, PAIR_SAME_FRONT, PAIR_SAME_BACK, PAIR_DIFFERENT, PAIR_REVERSED = 0, 1, 2, 3, 4


@dataclass
class LossTerms:
    """The loss of one batch.

    Parameters:
        total: the self-normalised sum to call ``backward()`` on; every non-zero term has value 1.
        erc: focal ERC loss. shift: transition NLL. cl: contrastive loss. Disabled terms are None.
    """

    total: Tensor
    erc: Tensor
    shift: Tensor | None
    cl: Tensor | None

    @property
    def logged(self) -> float:
        """The raw sum the original logs as "loss": erc + shift (+ cl)."""
        return float(sum(float(t.detach()) for t in (self.erc, self.shift, self.cl) if t is not None))


def focal_loss(logp: Tensor, labels: Tensor, gamma: float = 0.5, alpha: Tensor | None = None) -> Tensor:
    """Mean of -(1 - p_t)^gamma * alpha_y * log p_t over labelled rows.

    Kept as in the original: the modulating factor (1 - p_t)^gamma is detached (no gradient through it),
    and alpha (the paper's 1/freq class weights, 4-11.5 on IEMOCAP) is not normalised (spec 7.1-7).
    """
    valid = labels >= 0
    if not bool(valid.any()):
        return logp.sum() * 0.0
    y = labels[valid]
    logp_t = logp[valid].gather(1, y.unsqueeze(1)).squeeze(1)
    weight = (1.0 - logp_t.detach().exp()).clamp_min(0.0) ** gamma
    if alpha is not None:
        weight = weight * alpha.to(logp.device, logp.dtype)[y]
    return -(weight * logp_t).mean()


def shift_nll(shift_logp: Tensor, labels: Tensor) -> Tensor:
    """NLL over the C*C transition classes (the original's CE on log-probs is the same thing; 7.1-6)."""
    if not bool((labels >= 0).any()):
        return shift_logp.sum() * 0.0
    return F.nll_loss(shift_logp, labels, ignore_index=-1)


def pair_labels(labels: Tensor, n_classes: int) -> Tensor:
    """(n, n) pair pseudo-labels of n transition labels (spec 2.3), identical pairs checked first.

    The original checks "reversed" (f1 = b2 and b1 = f2) before "identical", so two identical non-shift
    transitions x->x, x->x land in class 4 "reversed" (spec 7.1-9). They are identical, so here they
    get class 0; genuinely reversed shifts x->y, y->x keep class 4.
    """
    f, b = labels // n_classes, labels % n_classes
    f1, b1 = f.unsqueeze(1), b.unsqueeze(1)
    f2, b2 = f.unsqueeze(0), b.unsqueeze(0)
    out = torch.full((labels.numel(), labels.numel()), PAIR_DIFFERENT, dtype=torch.long, device=labels.device)
    out[(f1 != f2) & (b1 == b2)] = PAIR_SAME_BACK
    out[(f1 == f2) & (b1 != b2)] = PAIR_SAME_FRONT
    out[(f1 == b2) & (b1 == f2)] = PAIR_REVERSED
    out[(f1 == f2) & (b1 == b2)] = PAIR_IDENTICAL
    return out


def shift_contrastive_loss(hidden: Tensor, labels: Tensor, n_classes: int, n_samples: int = 50,
                           tau: float = 0.07, generator: torch.Generator | None = None) -> Tensor:
    """Shift-aware supervised contrastive loss over ordered pairs of shift samples (spec 4.1, "CKSCL").

    n = min(n_samples, P) labelled shift samples are drawn without replacement (from ``generator``, for
    reproducibility); every ordered pair (a, b), a != b, has the feature [phi_a || phi_b] and a pair label.
    Kept from the original: L2-normalised pair features, sim = exp(cos / tau) without max-subtraction, the
    "sum inside the log" SupCon form log(pos / (pos + neg)) with the 1e-7 smoothing, unnormalised
    inverse-frequency pair-label weights, and inf/NaN replaced by 0.

    Cost: the original materialises the n(n-1) x 2d pair features and their n(n-1) x n(n-1) Gram matrix
    (2 450 x 4 800 at n = 50; ~29 GFLOP per batch at IEMOCAP sizes). The dot product of two pair features
    is phi_a.phi_c + phi_b.phi_d and a pair's squared norm is |phi_a|^2 + |phi_b|^2, so everything follows
    exactly from the n x n Gram matrix of the samples (~1 GFLOP with the backward instead of ~90; pos + neg
    is the row sum, so no K x K label mask is built either).
    """
    valid = (labels >= 0).nonzero().squeeze(1)
    n = min(n_samples, valid.numel())
    if n < 2:
        return hidden.sum() * 0.0
    pick = valid[torch.randperm(valid.numel(), generator=generator)[:n].to(valid.device)]
    phi, y = hidden[pick], labels[pick]  # (n, d), (n,)
    a, b = (~torch.eye(n, dtype=torch.bool, device=phi.device)).nonzero(as_tuple=True)  # K = n(n-1) pairs
    pl = pair_labels(y, n_classes)[a, b]  # (K,)
    gram = phi @ phi.t()  # (n, n)
    sq = gram.diagonal()
    norm = (sq[a] + sq[b]).clamp_min(0.0).sqrt().clamp_min(1e-12)  # (K,) = |f_ab|, with F.normalize's eps
    # cos(f_p, f_q) / tau = (G[a_p, a_q] + G[b_p, b_q]) / (|f_p| |f_q| tau): one (K, 2n) x (2n, 2n) x (2n, K)
    # product with the norms folded into one-hot selectors (no K x 2d pair features, and no gather whose
    # backward would scatter K^2 values into n^2 slots).
    sel = torch.cat([F.one_hot(a, n), F.one_hot(b, n)], 1).to(phi.dtype) / norm.unsqueeze(1)  # (K, 2n)
    block = torch.block_diag(gram, gram) / tau  # (2n, 2n)
    logits = (sel @ block) @ sel.t()  # (K, K)
    logits.diagonal().fill_(float("-inf"))  # only y != x
    sim = torch.exp(logits)  # no max-subtraction, as the original
    total = sim.sum(1)  # sum over y != x of sim(x, y) = pos_x + neg_x
    same = (sim @ F.one_hot(pl, 5).to(sim.dtype)).gather(1, pl.unsqueeze(1)).squeeze(1)
    pos = same + 1e-7 * total  # sum of sim * (1[l_x = l_y] + 1e-7)
    counts = torch.bincount(pl, minlength=5).to(sim.dtype)
    weight = (pl.numel() / counts)[pl]
    loss = -(weight * torch.log(pos / total)).mean()
    if not bool(torch.isfinite(loss)):
        return hidden.sum() * 0.0
    return loss


def self_normalised(terms: list[Tensor | None]) -> Tensor:
    """sum_k L_k / sg(L_k) over the terms whose value is not exactly 0 (spec 4.1).

    Kept as in the original: every term has value 1 and the gradient is sum_k grad(L_k) / L_k, so there
    are no task weights to tune (spec 7.1-8).
    """
    live = [t for t in terms if t is not None and float(t.detach()) != 0.0]
    if not live:
        base = next(t for t in terms if t is not None)
        return base * 0.0
    return sum(t / t.detach() for t in live)


def pcgnet_loss(output, labels: Tensor, n_classes: int, *, gamma: float = 0.5,
                class_weights: Tensor | None = None, use_shift_cl: bool = True, use_shift_task: bool = True,
                n_samples: int = 50, tau: float = 0.07, generator: torch.Generator | None = None) -> LossTerms:
    """The full objective for one ``PCGNetOutput`` and its (N,) flat labels (``graph.flat_labels``).

    ``use_shift_task=False`` trains emotion recognition alone (the "without the shift task" ablation).
    """
    erc = focal_loss(output.emotion_logp, labels, gamma, class_weights)
    if not use_shift_task:
        return LossTerms(self_normalised([erc, None, None]), erc, None, None)
    y_shift = shift_labels(labels, output.shift_prev, output.shift_cur, n_classes)
    shift = shift_nll(output.shift_logp, y_shift)
    cl = None
    if use_shift_cl:
        cl = shift_contrastive_loss(output.shift_hidden, y_shift, n_classes, n_samples, tau, generator)
    return LossTerms(self_normalised([erc, shift, cl]), erc, shift, cl)
