"""pcgnet.streaming: step-by-step inference equals the causal forward, never looks back, stays bounded."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from pcgnet import graph
from pcgnet.batch import DialogueBatch
from pcgnet.config import PCGNetConfig
from pcgnet.model import PCGNet
from pcgnet.streaming import ConversationState

DIMS = {"t": 12, "a": 7, "v": 5}
SPEAKERS = [0, 0, 1, 2, 0, 1, 1, 3, 2, 0, 0, 1, 2, 3, 3, 1]
LEAK_ATOL = 1e-5  # float rounding between two computations: <= 5e-7 seen; a one-edge leak: ~0.1

def causal_model(seed=0, device="cpu", **kw) -> PCGNet:
    base = dict(dims=dict(DIMS), hidden=8, persona_heads=2, interactive_heads=2, n_speakers=4, causal=True,
                window_utterances=16)
    base.update(kw)
    torch.manual_seed(seed)
    return PCGNet(PCGNetConfig(**base)).eval().to(device)


def dialogue(T, seed=0, speakers=None):
    g = torch.Generator().manual_seed(seed)
    spk = torch.tensor(speakers if speakers is not None else torch.randint(0, 4, (T,), generator=g).tolist())
    feats = {m: torch.randn(T, d, generator=g) for m, d in DIMS.items()}
    return feats, spk, torch.rand(T, 5, generator=g)


def run_steps(model, feats, spk, persona, state=None):
    state = state or model.init_state()
    results = []
    for t in range(spk.numel()):
        r, state = model.step(state, {m: feats[m][t] for m in model.config.modalities}, int(spk[t]), persona[t])
        results.append(r)
    return results, state


def forward_whole(model, feats, spk, persona):
    T = spk.numel()
    batch = DialogueBatch({m: x.unsqueeze(0) for m, x in feats.items()}, spk.unsqueeze(0),
                          torch.ones(1, T, dtype=torch.bool), persona.unsqueeze(0),
                          torch.zeros(1, T, dtype=torch.long), [0])
    with torch.no_grad():
        return model(batch.to(next(model.parameters()).device))


@pytest.mark.parametrize("kw", [
    dict(),
    dict(persona_layers=2, interactive_layers=2, erc_windows=2, shift_windows=3, interactive_windows=2),
    dict(modalities=("t", "a")),
    dict(modalities=("v",), persona_transform=False),
    dict(use_persona=False, use_crosstask=False),
    dict(use_graph=False),
])
def test_steps_equal_causal_forward(kw, device):
    model = causal_model(device=device, **kw)
    feats, spk, persona = dialogue(16, speakers=SPEAKERS)  # 16 <= window + 1, four speakers
    results, _ = run_steps(model, feats, spk, persona)
    out = forward_whole(model, feats, spk, persona)
    shift_of = {int(c): k for k, c in enumerate(out.shift_cur)}
    for t, r in enumerate(results):
        assert r.index == t and r.speaker_slot == SPEAKERS[t]
        torch.testing.assert_close(r.emotion_probs.log(), out.emotion_logp[t], atol=1e-5, rtol=0)
        if t in shift_of:
            k = shift_of[t]
            assert r.prev_index == int(out.shift_prev[k])
            torch.testing.assert_close(r.shift_probs.log(), out.shift_logp[k], atol=1e-5, rtol=0)
        else:
            assert r.shift_probs is None and r.prev_index is None
    assert len(shift_of) == sum(1 for r in results if r.shift_probs is not None)


def test_changing_a_later_utterance_never_changes_earlier_outputs():
    # On the whole dialogue at once (the training path): stepping cannot see later utterances anyway, so
    # only the full forward can show a leak from the future.
    model = causal_model(persona_layers=2, interactive_layers=2)
    feats, spk, persona = dialogue(12, seed=1)
    t = 7
    feats2 = {m: x.clone() for m, x in feats.items()}
    for x in feats2.values():
        x[t] += 1.0
    persona2 = persona.clone()
    persona2[t] += 0.3
    spk2 = spk.clone()
    spk2[t] = (spk[t] + 1) % 4
    base = forward_whole(model, feats, spk, persona)
    changed = forward_whole(model, feats2, spk2, persona2)
    # Not bitwise: the two forwards are different float computations (4.8e-7 apart in a shift log-prob on an
    # AVX2 CPU, issue 21). A real leak is far above LEAK_ATOL: one future edge per node in the window
    # graphs moves these earlier outputs by 0.098 (emotion) and 0.092 (shift), measured once by mutation.
    torch.testing.assert_close(base.emotion_logp[:t], changed.emotion_logp[:t], atol=LEAK_ATOL, rtol=0)
    assert not torch.allclose(base.emotion_logp[t], changed.emotion_logp[t])
    base_shift = {int(c): k for k, c in enumerate(base.shift_cur) if c < t}
    changed_shift = {int(c): k for k, c in enumerate(changed.shift_cur) if c < t}
    assert base_shift.keys() == changed_shift.keys() and base_shift
    for c, k in base_shift.items():
        torch.testing.assert_close(base.shift_logp[k], changed.shift_logp[changed_shift[c]], atol=LEAK_ATOL, rtol=0)


def test_state_is_bounded_over_a_long_conversation():
    model = causal_model(window_utterances=8)
    feats, spk, persona = dialogue(300, seed=2)
    state = model.init_state()
    sizes = []
    for t in range(300):
        r, state = model.step(state, {m: feats[m][t] for m in DIMS}, int(spk[t]), persona[t])
        sizes.append(state.nbytes)
        assert torch.isfinite(r.emotion_probs).all() and abs(float(r.emotion_probs.sum()) - 1) < 1e-5
        if r.shift_probs is not None:
            assert abs(float(r.shift_probs.sum()) - 1) < 1e-5
    assert state.cached == 8 and state.n_utterances == 300
    assert max(sizes) == sizes[7] == sizes[-1]  # constant once the window is full


def test_beyond_the_window_only_the_window_is_seen():
    # Past the window, the step equals the causal forward on the dialogue whose persona/turn windows are
    # clamped: here, with everyone speaking every other turn, no window reaches further back than 2, so
    # the outputs still equal the full forward exactly.
    model = causal_model(window_utterances=4)
    T = 20
    feats, _, persona = dialogue(T, seed=3)
    spk = torch.tensor([0, 1] * (T // 2))
    results, _ = run_steps(model, feats, spk, persona)
    out = forward_whole(model, feats, spk, persona)
    got = torch.stack([r.emotion_probs.log() for r in results])
    torch.testing.assert_close(got, out.emotion_logp, atol=1e-5, rtol=0)
    # A speaker silent for longer than the window: its turn window is clamped, so outputs may differ
    # from the full forward, but stay well-defined.
    spk = torch.tensor([0] + [1] * 10 + [0] * 9)
    results, state = run_steps(model, feats, spk, persona)
    assert state.cached == 4 and all(torch.isfinite(r.emotion_probs).all() for r in results)
    assert results[11].prev_index == 0  # the shift pair still reaches the speaker's last turn


def clamped_window_starts(W: int):
    """``graph.window_starts`` with every window clamped to the step's cache: no source before i - W."""
    unclamped = graph.window_starts

    def starts(index: graph.DialogueIndex, w: int) -> torch.Tensor:
        oldest = index.dialogue_start + (index.position - W).clamp(min=0)
        return torch.maximum(unclamped(index, w), oldest)
    return starts


# A speaker silent for longer than the window (0 after index 0 until 13), first turns after W utterances
# (2 at 11, 3 at 13) and a long monologue (1 from 14 to 22): every kind of window that reaches past the cache.
CLAMPED_SPEAKERS = [0, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 2, 3]


@pytest.mark.parametrize("kw", [
    dict(),
    dict(persona_layers=2, interactive_layers=2, erc_windows=2, shift_windows=3, interactive_windows=2),
])
def test_past_the_window_steps_equal_a_forward_with_clamped_windows(kw, monkeypatch, device):
    W = 4
    model = causal_model(window_utterances=W, device=device, **kw)
    spk = torch.tensor(CLAMPED_SPEAKERS)
    feats, _, persona = dialogue(spk.numel(), seed=6)
    results, _ = run_steps(model, feats, spk, persona)
    got = torch.stack([r.emotion_probs.log() for r in results])
    unclamped = forward_whole(model, feats, spk, persona)
    assert (got - unclamped.emotion_logp).abs().max() > 1e-3  # the clamping matters on this dialogue
    monkeypatch.setattr(graph, "window_starts", clamped_window_starts(W))
    ref = forward_whole(model, feats, spk, persona)
    torch.testing.assert_close(got, ref.emotion_logp, atol=1e-5, rtol=0)
    shift_of = {int(c): k for k, c in enumerate(ref.shift_cur)}
    assert len(shift_of) == sum(r.shift_probs is not None for r in results)
    for t, r in enumerate(results):
        if r.shift_probs is not None:
            k = shift_of[t]
            assert r.prev_index == int(ref.shift_prev[k])
            torch.testing.assert_close(r.shift_probs.log(), ref.shift_logp[k], atol=1e-5, rtol=0)


def test_round_trip_through_safetensors_continues_identically(tmp_path):
    model = causal_model(persona_layers=2)
    feats, spk, persona = dialogue(14, seed=4)
    first, state = run_steps(model, {m: x[:9] for m, x in feats.items()}, spk[:9], persona[:9])
    d = state.to_tensors()
    tensors = {k: v if isinstance(v, torch.Tensor) else torch.tensor(v) for k, v in d.items()}
    save_file(tensors, str(tmp_path / "state.safetensors"))
    restored = ConversationState.from_tensors(load_file(str(tmp_path / "state.safetensors")))
    rest_a, _ = run_steps(model, {m: x[9:] for m, x in feats.items()}, spk[9:], persona[9:], restored)
    rest_b, _ = run_steps(model, {m: x[9:] for m, x in feats.items()}, spk[9:], persona[9:], state)
    for a, b in zip(rest_a, rest_b, strict=True):
        assert a.index == b.index and torch.equal(a.emotion_probs, b.emotion_probs)
    assert rest_a[0].index == 9
    # a JSON hand-off: nested lists and plain ints
    as_json = {k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in d.items()}
    from_json = ConversationState.from_tensors({k: torch.tensor(v) if isinstance(v, list) else v
                                                for k, v in as_json.items()})
    rest_c, _ = run_steps(model, {m: x[9:] for m, x in feats.items()}, spk[9:], persona[9:], from_json)
    for a, c in zip(rest_a, rest_c, strict=True):
        torch.testing.assert_close(a.emotion_probs, c.emotion_probs, atol=1e-6, rtol=0)


def test_step_many_equals_separate_steps(device):
    model = causal_model(device=device)
    convs = [dialogue(6, seed=s) for s in range(3)]
    states = [model.init_state() for _ in convs]
    for t in range(6):
        inputs = [(st, {m: f[m][t] for m in DIMS}, int(sp[t]), p[t]) for st, (f, sp, p) in zip(states, convs, strict=True)]
        together = model.step_many(inputs)
        for (r, _), inp in zip(together, inputs, strict=True):
            r1, _ = model.step(*inp)
            torch.testing.assert_close(r.emotion_probs, r1.emotion_probs, atol=1e-6, rtol=0)
            assert (r.shift_probs is None) == (r1.shift_probs is None)
        states = [st for _, st in together]


def test_step_leaves_the_given_state_untouched():
    model = causal_model()
    feats, spk, persona = dialogue(5, seed=5)
    _, state = run_steps(model, feats, spk, persona)
    snapshot = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in state.to_tensors().items()}
    model.step(state, {m: feats[m][0] for m in DIMS}, 1, persona[0])
    for k, v in state.to_tensors().items():
        assert torch.equal(v, snapshot[k]) if isinstance(v, torch.Tensor) else v == snapshot[k]


def test_clear_errors():
    model = causal_model()
    state = model.init_state()
    x = {m: torch.zeros(d) for m, d in DIMS.items()}
    with pytest.raises(ValueError, match="speaker_slot must be an int in"):
        model.step(state, x, 4, torch.zeros(5))
    with pytest.raises(ValueError, match=r"features\['a'\] has shape \(3,\), expected \(7,\)"):
        model.step(state, {**x, "a": torch.zeros(3)}, 0, torch.zeros(5))
    with pytest.raises(ValueError, match="persona must be"):
        model.step(state, x, 0, None)
    with pytest.raises(ValueError, match="state 'party_h' has shape"):
        causal_model(n_speakers=2).step(state, x, 0, torch.zeros(5))
    d = state.to_tensors()
    with pytest.raises(ValueError, match="version 7 is not supported"):
        ConversationState.from_tensors({**d, "version": 7})
    with pytest.raises(ValueError, match="missing keys"):
        ConversationState.from_tensors({k: v for k, v in d.items() if k != "party_h"})
    model.train()
    with pytest.raises(RuntimeError, match=r"model.eval\(\)"):
        model.step(state, x, 0, torch.zeros(5))
    with pytest.raises(ValueError, match="needs a causal model"):
        PCGNet(PCGNetConfig(dims=dict(DIMS), hidden=8, persona_heads=2, interactive_heads=2)).eval().step(
            state, x, 0, torch.zeros(5))
