"""pcgnet.model: parameter counts vs the original, the output seam, batch independence, causality."""

from __future__ import annotations

import pytest
import torch

from pcgnet import graph
from pcgnet.batch import DialogueBatch
from pcgnet.config import DATASETS, PCGNetConfig
from pcgnet.losses import pcgnet_loss
from pcgnet.model import PCGNet, count_parameters, expected_parameters

DIMS = {"t": 12, "a": 7, "v": 5}
ORIGINAL_POSITION_PARAMS = 2 * 8 * 4  # the original's unused position encodings per interactive conv

def tiny(**kw) -> PCGNetConfig:
    base = dict(dims=dict(DIMS), hidden=8, persona_heads=2, interactive_heads=2, n_speakers=3)
    base.update(kw)
    return PCGNetConfig(**base)


def make_batch(lengths, n_speakers=3, seed=0, dims=DIMS, n_classes=7) -> DialogueBatch:
    g = torch.Generator().manual_seed(seed)
    B, T = len(lengths), max(lengths)
    mask = torch.arange(T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    spk = torch.randint(0, n_speakers, (B, T), generator=g).masked_fill(~mask, -1)
    feats = {m: torch.randn(B, T, d, generator=g) * mask.unsqueeze(-1) for m, d in dims.items()}
    labels = torch.randint(0, n_classes, (B, T), generator=g).masked_fill(~mask, -1)
    return DialogueBatch(feats, spk, mask, torch.rand(B, T, 5, generator=g), labels, list(range(B)))


def sub_batch(batch: DialogueBatch, b: int) -> DialogueBatch:
    L = int(batch.mask[b].sum())
    return DialogueBatch({m: x[b:b + 1, :L] for m, x in batch.features.items()}, batch.speakers[b:b + 1, :L],
                         batch.mask[b:b + 1, :L], batch.persona[b:b + 1, :L], batch.labels[b:b + 1, :L], [b])


@pytest.mark.parametrize("name,h,heads,original", [("IEMOCAP", 400, 8, 10_435_730), ("MELD", 200, 4, 2_695_332)])
def test_parameter_count_against_the_original(name, h, heads, original):
    ds = DATASETS[name]
    cfg = PCGNetConfig(labels=ds.labels, dims=dict(ds.dims), n_speakers=ds.n_speakers, hidden=h,
                       persona_heads=heads, interactive_heads=4)
    n = count_parameters(PCGNet(cfg))
    assert n == expected_parameters(cfg)
    # Identical except the original's unused position encodings (8 x 4 weight + 8 x 4 bias).
    assert n + ORIGINAL_POSITION_PARAMS == original


@pytest.mark.parametrize("kw", [dict(), dict(causal=True), dict(use_persona=False), dict(use_graph=False),
                                dict(modalities=("t", "v"), persona_transform=False, persona_layers=2,
                                     interactive_layers=3)])
def test_parameter_formula_for_variants(kw):
    cfg = tiny(**kw)
    assert count_parameters(PCGNet(cfg)) == expected_parameters(cfg)


@pytest.mark.parametrize("kw", [dict(), dict(causal=True), dict(modalities=("a",)), dict(modalities=("t", "v")),
                                dict(use_persona=False), dict(use_crosstask=False), dict(use_graph=False),
                                dict(persona_layers=2, interactive_layers=2, erc_windows=2)])
def test_output_seam(kw):
    cfg = tiny(**kw)
    model = PCGNet(cfg)
    batch = make_batch([6, 3, 5])
    out = model(batch)
    M, h, C = len(cfg.modalities), cfg.hidden, cfg.n_classes
    prev, cur = graph.shift_pairs(graph.index_dialogues(batch.mask, batch.speakers, cfg.n_speakers))
    P = prev.numel()
    assert out.emotion_logp.shape == (14, C) and out.emotion_hidden.shape == (14, M * h)
    assert out.shift_logp.shape == (P, C * C) and out.shift_hidden.shape == (P, 2 * M * h)
    assert torch.equal(out.shift_prev, prev) and torch.equal(out.shift_cur, cur)
    torch.testing.assert_close(out.emotion_logp.exp().sum(-1), torch.ones(14))
    loss = pcgnet_loss(out, graph.flat_labels(batch), C, generator=torch.Generator().manual_seed(0))
    loss.total.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("causal", [False, True])
def test_dialogue_outputs_do_not_depend_on_batch_mates(causal):
    # The original's unpacked BiGRUs over padded batches changed log-probs by up to 0.117 (spec 7.1-3).
    torch.manual_seed(0)
    model = PCGNet(tiny(causal=causal)).eval()
    batch = make_batch([4, 9, 2, 7])
    with torch.no_grad():
        full = model(batch)
        starts = [0, 4, 13, 15]
        for b in range(4):
            alone = model(sub_batch(batch, b))
            L = int(batch.mask[b].sum())
            torch.testing.assert_close(alone.emotion_logp, full.emotion_logp[starts[b]:starts[b] + L],
                                       atol=1e-5, rtol=0)


def _perturb(batch: DialogueBatch, t: int) -> DialogueBatch:
    feats = {m: x.clone() for m, x in batch.features.items()}
    for x in feats.values():
        x[0, t] += 1.0
    persona = batch.persona.clone()
    persona[0, t] += 0.5
    return DialogueBatch(feats, batch.speakers, batch.mask, persona, batch.labels, batch.dialogue_ids)


def test_causal_model_never_looks_ahead_and_bidirectional_does():
    batch = make_batch([10], seed=3)
    t = 6
    for causal in (True, False):
        torch.manual_seed(1)
        model = PCGNet(tiny(causal=causal, persona_layers=2, interactive_layers=2)).eval()
        with torch.no_grad():
            a, b = model(batch), model(_perturb(batch, t))
        delta = (a.emotion_logp - b.emotion_logp).abs().amax(-1)
        assert float(delta[t]) > 1e-4
        if causal:
            # Two different float computations: rounding (<= 5e-7 seen), never bitwise; a leak is >= 1e-4.
            assert float(delta[:t].max()) < 1e-5
        else:
            assert float(delta[:t].max()) > 1e-4


def test_invalid_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="interactive_layers must be >= 1"):
        PCGNet(tiny(interactive_layers=0))
    with pytest.raises(ValueError, match="hidden must be even"):
        PCGNet(tiny(hidden=9, persona_heads=3, interactive_heads=3))


def test_missing_modality_is_a_clear_error():
    model = PCGNet(tiny())
    batch = make_batch([3])
    del batch.features["a"]
    with pytest.raises(ValueError, match="no features for modality 'a'"):
        model(batch)


def test_training_learns_a_learnable_signal():
    # Labels are a function of the text features: a few Adam steps must fit them clearly above chance.
    torch.manual_seed(0)
    cfg = tiny(hidden=16, labels=("x", "y", "z"))
    model = PCGNet(cfg)
    batch = make_batch([12, 10, 8, 12], n_classes=3, seed=5)
    labels = (batch.features["t"][..., :3].argmax(-1)).masked_fill(~batch.mask, -1)
    batch.labels = labels
    y = graph.flat_labels(batch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        opt.zero_grad()
        pcgnet_loss(model(batch), y, 3, generator=gen).total.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(batch).emotion_logp.argmax(-1) == y).float().mean()
    assert float(acc) > 0.8
