"""pcgnet.losses: focal loss, shift NLL, pair labels, contrastive loss vs a literal reference, total."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pcgnet import losses


def test_focal_loss_gamma_zero_is_nll_and_ignores_unlabelled():
    logp = torch.randn(6, 4).log_softmax(-1)
    y = torch.tensor([0, 3, -1, 2, 1, -1])
    got = losses.focal_loss(logp, y, gamma=0.0)
    torch.testing.assert_close(got, F.nll_loss(logp, y, ignore_index=-1))


def test_focal_loss_modulating_factor_is_detached_and_alpha_unnormalised():
    raw = torch.randn(5, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 1, 0])
    alpha = torch.tensor([11.5, 6.9, 4.4])
    logp = raw.log_softmax(-1)
    loss = losses.focal_loss(logp, y, gamma=0.5, alpha=alpha)
    (g,) = torch.autograd.grad(loss, raw, retain_graph=True)
    lp_t = logp.gather(1, y.unsqueeze(1)).squeeze(1)
    w = ((1 - lp_t.exp()) ** 0.5 * alpha[y]).detach()
    ref = -(w * lp_t).mean()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(losses.focal_loss(logp, y, 0.5, 2 * alpha), 2 * loss)
    (g_ref,) = torch.autograd.grad(ref, raw)
    torch.testing.assert_close(g, g_ref)


def test_shift_nll_and_empty_inputs():
    logp = torch.randn(4, 9).log_softmax(-1)
    y = torch.tensor([3, -1, 8, 0])
    torch.testing.assert_close(losses.shift_nll(logp, y), F.nll_loss(logp, y, ignore_index=-1))
    assert float(losses.shift_nll(logp, torch.full((4,), -1))) == 0.0
    assert float(losses.focal_loss(logp, torch.full((4,), -1))) == 0.0


def test_pair_labels_fixes_identical_non_shift_pairs():
    C = 3
    t = lambda f, b: C * f + b  # noqa: E731
    y = torch.tensor([t(1, 1), t(1, 1), t(0, 2), t(2, 0), t(0, 2), t(0, 1), t(2, 1)])
    pl = losses.pair_labels(y, C)
    assert pl[0, 1] == losses.PAIR_IDENTICAL  # x->x vs x->x: identical (the original said "reversed")
    assert pl[2, 4] == losses.PAIR_IDENTICAL  # identical genuine shift
    assert pl[2, 3] == losses.PAIR_REVERSED  # 0->2 vs 2->0
    assert pl[2, 5] == losses.PAIR_SAME_FRONT
    assert pl[5, 6] == losses.PAIR_SAME_BACK
    assert pl[0, 2] == losses.PAIR_DIFFERENT
    assert torch.equal(pl.diagonal(), torch.zeros(7, dtype=torch.long))


def _reference_cl(phi, y, C, pick, tau=0.07):
    """Spec 4.1 literally: materialise the n(n-1) pair features and their full similarity matrix."""
    feats, labels = [], []
    pl = losses.pair_labels(y[pick], C)
    for i, a in enumerate(pick.tolist()):
        for j, b in enumerate(pick.tolist()):
            if i != j:
                feats.append(torch.cat([phi[a], phi[b]]))
                labels.append(int(pl[i, j]))
    f = F.normalize(torch.stack(feats), dim=1)
    lab = torch.tensor(labels)
    sim = torch.exp(f @ f.t() / tau)
    same = (lab.unsqueeze(1) == lab.unsqueeze(0)).float()
    off = 1 - torch.eye(len(labels))
    pos = (sim * (same + 1e-7) * off).sum(1)
    neg = (sim * (1 - same - 1e-7) * off).sum(1)
    w = (len(labels) / torch.bincount(lab, minlength=5).float())[lab]
    return -(w * torch.log(pos / (pos + neg))).mean()


def test_contrastive_loss_matches_literal_reference_and_is_reproducible():
    torch.manual_seed(0)
    C = 3
    phi = torch.randn(14, 6, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, C * C, (14,))
    y[5] = -1  # unlabelled samples are never drawn
    got = losses.shift_contrastive_loss(phi, y, C, n_samples=8, generator=torch.Generator().manual_seed(7))
    valid = (y >= 0).nonzero().squeeze(1)
    pick = valid[torch.randperm(valid.numel(), generator=torch.Generator().manual_seed(7))[:8]]
    ref = _reference_cl(phi, y, C, pick)
    torch.testing.assert_close(got, ref)
    g1 = torch.autograd.grad(got, phi, retain_graph=True)[0]
    g2 = torch.autograd.grad(ref, phi)[0]
    torch.testing.assert_close(g1, g2)
    again = losses.shift_contrastive_loss(phi, y, C, n_samples=8, generator=torch.Generator().manual_seed(7))
    assert again.item() == got.item()


def test_contrastive_loss_degenerate_cases_are_zero():
    phi = torch.randn(3, 4, requires_grad=True)
    assert losses.shift_contrastive_loss(phi, torch.tensor([4, -1, -1]), 3).item() == 0.0
    assert losses.shift_contrastive_loss(phi[:0], torch.zeros(0, dtype=torch.long), 3).item() == 0.0


def test_self_normalised_total():
    w = torch.tensor([2.0, 3.0], requires_grad=True)
    a, b, c = w[0] ** 2, w[1] * 5, w.sum() * 0.0
    total = losses.self_normalised([a, b, c, None])
    assert total.item() == 2.0  # every non-zero term has value 1; the exact zero is dropped
    (g,) = torch.autograd.grad(total, w)
    torch.testing.assert_close(g, torch.tensor([2 * 2.0 / 4.0, 5 / 15.0]))  # sum of grad(L_k) / L_k


def test_pcgnet_loss_terms():
    from pcgnet.model import PCGNetOutput

    torch.manual_seed(1)
    C, N = 3, 8
    prev, cur = torch.tensor([0, 1, 2, 4]), torch.tensor([1, 3, 5, 6])
    out = PCGNetOutput(torch.randn(N, C).log_softmax(-1), torch.randn(4, C * C).log_softmax(-1),
                       torch.randn(N, 6), torch.randn(4, 12, requires_grad=True), prev, cur)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, -1])
    terms = losses.pcgnet_loss(out, y, C, generator=torch.Generator().manual_seed(0))
    assert terms.cl is not None and abs(float(terms.total) - 3.0) < 1e-6
    assert abs(terms.logged - float(terms.erc + terms.shift + terms.cl)) < 1e-5
    no_cl = losses.pcgnet_loss(out, y, C, use_shift_cl=False)
    assert no_cl.cl is None and abs(float(no_cl.total) - 2.0) < 1e-6
    erc_only = losses.pcgnet_loss(out, y, C, use_shift_task=False)
    assert erc_only.shift is None and erc_only.cl is None and abs(float(erc_only.total) - 1.0) < 1e-6
    assert abs(erc_only.logged - float(terms.erc)) < 1e-6
