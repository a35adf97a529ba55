"""Exact incremental inference for causal PCGNet: one utterance at a time, O(window) per step.

In the causal model (``config.causal``: forward-only GRUs) no state of a past utterance ever changes once
computed (spec 7.2), so caching them is exact (spec 8.2). A ``ConversationState`` holds:

* the text context GRU's hidden state and, per modality and speaker slot, the party GRU's hidden state;
* a window of the last ``config.window_utterances`` utterances: their speaker slots and, for every
  persona-GAT layer (per modality) and every interactive-GAT layer (ERC and shift copies, per modality),
  the projections those utterances contribute as attention sources (values and source-score halves), so
  a step never re-projects the past;
* per speaker slot, the index of its last turn and that turn's final shift-node features (for the
  shift head's [prev || cur] pair, even when prev has left the window).

A step derives the new utterance's in-edges from the cached speaker slots with the rules of
``pcgnet.graph`` (persona window, ERC / shift turn windows, same-utterance modality pairs, cross-task
edges), gathers each target's sources into a padded block, and runs attention, gates and heads only for
the new utterance's nodes (nanoGPT's last-position idea).

Window semantics: with a window of W, a dialogue of up to W + 1 utterances gives exactly the outputs of
``PCGNet.forward`` on the whole dialogue (tested to 1e-5). In longer conversations the graphs only see
the window: a turn window or persona neighbourhood that would reach further back (a speaker silent for
more than W turns, or a first turn after W utterances) is clamped to the oldest cached utterance. The
GRU states and the shift pair are unaffected, and the step stays well-defined with bounded memory.

States are immutable values: ``step`` returns a new state and never modifies the one passed in, so a
caller may keep, copy or discard old states freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from pcgnet.model import PCGNet

STATE_VERSION = 2  # 2: caches hold source projections (v1 held layer inputs)

_TENSOR_KEYS = ("context_h", "party_h", "last_turn", "last_shift", "cache_speaker", "cache_persona_z",
                "cache_persona_s", "cache_inter_z", "cache_inter_s")
_INT_KEYS = ("version", "n_utterances", "window")


@dataclass(frozen=True)
class StepResult:
    """The outputs for one new utterance.

    Parameters:
        index: the utterance's 0-based index in the conversation.
        speaker_slot: its speaker slot.
        emotion_probs: (C,) emotion probabilities.
        shift_probs: (C*C,) transition probabilities (class C*prev + cur) against the same speaker's
            previous utterance, or None on a speaker's first turn.
        prev_index: conversation index of that previous utterance, or None.
    """

    index: int
    speaker_slot: int
    emotion_probs: Tensor
    shift_probs: Tensor | None
    prev_index: int | None


@dataclass(frozen=True)
class ConversationState:
    """Everything a causal PCGNet needs to continue a conversation; bounded by the window.

    Shapes (L = 2 GRU layers, M modalities, S speaker slots, h hidden, n <= window cached utterances,
    Lp / Lx persona / interactive layers and Hp / Hx their heads, 0 layers when that part is disabled):

    Parameters:
        n_utterances: utterances seen so far (= the next utterance's index).
        window: maximum number of cached past utterances.
        context_h: (L, h) text context GRU state.
        party_h: (M, S, L, h) party GRU state per modality and speaker slot.
        last_turn: (S,) index of each slot's last turn, -1 if it has not spoken.
        last_shift: (S, M, h) final shift-node features of each slot's last turn.
        cache_speaker: (n,) speaker slots of the cached utterances (the last n, in order).
        cache_persona_z: (Lp, M, n, h) persona-GAT values of the cached utterances, per layer.
        cache_persona_s: (Lp, M, n, Hp) their source-score halves.
        cache_inter_z: (Lx, 2, M, n, h) interactive-GAT values of their ERC (0) and shift (1) nodes.
        cache_inter_s: (Lx, 2, M, n, Hx) their source-score halves.
    """

    n_utterances: int
    window: int
    context_h: Tensor
    party_h: Tensor
    last_turn: Tensor
    last_shift: Tensor
    cache_speaker: Tensor
    cache_persona_z: Tensor
    cache_persona_s: Tensor
    cache_inter_z: Tensor
    cache_inter_s: Tensor

    @property
    def cached(self) -> int:
        return self.cache_speaker.numel()

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, k).numel() * getattr(self, k).element_size() for k in _TENSOR_KEYS)

    def to_tensors(self) -> dict[str, Tensor | int]:
        """A flat dict of tensors and ints (versioned), e.g. for safetensors or JSON; no pickle."""
        d: dict[str, Tensor | int] = {"version": STATE_VERSION, "n_utterances": self.n_utterances,
                                      "window": self.window}
        for k in _TENSOR_KEYS:
            d[k] = getattr(self, k).detach().clone()
        return d

    @classmethod
    def from_tensors(cls, d: dict[str, Tensor | int]) -> ConversationState:
        """Inverse of ``to_tensors``; checks version, keys and shape consistency (ValueError naming the key)."""
        missing = [k for k in _INT_KEYS + _TENSOR_KEYS if k not in d]
        if missing:
            raise ValueError(f"conversation state: missing keys {missing}")
        ints = {}
        for k in _INT_KEYS:
            v = d[k]
            v = int(v.item()) if isinstance(v, Tensor) and v.numel() == 1 else v
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"conversation state: {k!r} must be an int (got {type(v).__name__})")
            ints[k] = v
        if ints["version"] != STATE_VERSION:
            raise ValueError(f"conversation state: version {ints['version']} is not supported "
                             f"(expected {STATE_VERSION})")
        t = {}
        for k in _TENSOR_KEYS:
            if not isinstance(d[k], Tensor):
                raise ValueError(f"conversation state: {k!r} must be a tensor (got {type(d[k]).__name__})")
            t[k] = d[k]
        for k in ("cache_speaker", "last_turn"):  # index tensors, whatever dtype a JSON round trip gave them
            t[k] = t[k].long()
        n, w = t["cache_speaker"].numel(), ints["window"]
        checks = [
            ("window", w >= 1, "must be >= 1"),
            ("cache_speaker", t["cache_speaker"].dim() == 1 and n <= w, f"must be 1-D with at most window={w} rows"),
            ("n_utterances", ints["n_utterances"] >= n, f"must be >= the {n} cached utterances"),
            ("context_h", t["context_h"].dim() == 2, "must be (layers, h)"),
            ("party_h", t["party_h"].dim() == 4, "must be (M, S, layers, h)"),
            ("last_turn", t["last_turn"].dim() == 1 and bool((t["last_turn"] < ints["n_utterances"]).all()),
             "must be (S,) turn indices below n_utterances"),
            ("last_shift", t["last_shift"].dim() == 3, "must be (S, M, h)"),
            ("cache_persona_z", t["cache_persona_z"].dim() == 4 and t["cache_persona_z"].shape[2] == n,
             f"must be (Lp, M, {n}, h)"),
            ("cache_persona_s", t["cache_persona_s"].dim() == 4 and t["cache_persona_s"].shape[2] == n,
             f"must be (Lp, M, {n}, Hp)"),
            ("cache_inter_z", t["cache_inter_z"].dim() == 5 and t["cache_inter_z"].shape[3] == n,
             f"must be (Lx, 2, M, {n}, h)"),
            ("cache_inter_s", t["cache_inter_s"].dim() == 5 and t["cache_inter_s"].shape[3] == n,
             f"must be (Lx, 2, M, {n}, Hx)"),
        ]
        for key, ok, why in checks:
            if not ok:
                raise ValueError(f"conversation state: {key!r} {why}")
        return cls(n_utterances=ints["n_utterances"], window=w, **t)


StepInput = tuple[ConversationState, dict[str, Tensor], int, Tensor | None]


def _dims(model: PCGNet) -> dict[str, int]:
    cfg = model.config
    return {
        "L": 2, "h": cfg.hidden, "M": len(cfg.modalities), "S": cfg.n_speakers,
        "Lp": cfg.persona_layers if model.has_persona else 0, "Hp": cfg.persona_heads,
        "Lx": cfg.interactive_layers if cfg.use_graph else 0, "Hx": cfg.interactive_heads,
    }


def init_state(model: PCGNet) -> ConversationState:
    """An empty conversation for ``model`` (on its device and dtype)."""
    d = _dims(model)
    p = next(model.parameters())
    z = lambda *shape: torch.zeros(*shape, device=p.device, dtype=p.dtype)  # noqa: E731
    L, h, M, S, Lp, Lx = d["L"], d["h"], d["M"], d["S"], d["Lp"], d["Lx"]
    return ConversationState(
        n_utterances=0, window=model.config.window_utterances,
        context_h=z(L, h), party_h=z(M, S, L, h),
        last_turn=torch.full((S,), -1, dtype=torch.long, device=p.device), last_shift=z(S, M, h),
        cache_speaker=torch.zeros(0, dtype=torch.long, device=p.device),
        cache_persona_z=z(Lp, M, 0, h), cache_persona_s=z(Lp, M, 0, d["Hp"]),
        cache_inter_z=z(Lx, 2, M, 0, h), cache_inter_s=z(Lx, 2, M, 0, d["Hx"]),
    )


def _check_inputs(model: PCGNet, inputs: list[StepInput]) -> None:
    cfg = model.config
    d = _dims(model)
    want = {
        "context_h": (d["L"], d["h"]), "party_h": (d["M"], d["S"], d["L"], d["h"]), "last_turn": (d["S"],),
        "last_shift": (d["S"], d["M"], d["h"]),
    }
    for b, item in enumerate(inputs):
        if len(item) != 4:
            raise ValueError(f"step input {b}: expected (state, features, speaker_slot, persona)")
        state, feats, slot, persona = item
        if not isinstance(state, ConversationState):
            raise ValueError(f"step input {b}: state must be a ConversationState (got {type(state).__name__})")
        n = state.cached
        caches = {"cache_persona_z": (d["Lp"], d["M"], n, d["h"]), "cache_persona_s": (d["Lp"], d["M"], n, d["Hp"]),
                  "cache_inter_z": (d["Lx"], 2, d["M"], n, d["h"]), "cache_inter_s": (d["Lx"], 2, d["M"], n, d["Hx"])}
        for k, shape in (want | caches).items():
            if tuple(getattr(state, k).shape) != shape:
                raise ValueError(f"step input {b}: state {k!r} has shape {tuple(getattr(state, k).shape)}, "
                                 f"this model needs {shape} (state from a different model?)")
        if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < cfg.n_speakers:
            raise ValueError(f"step input {b}: speaker_slot must be an int in [0, {cfg.n_speakers}) (got {slot!r})")
        for m in cfg.modalities:
            x = feats.get(m)
            if x is None:
                raise ValueError(f"step input {b}: no features for modality {m!r} (model needs {cfg.modalities})")
            if x.shape != (cfg.dims[m],):
                raise ValueError(f"step input {b}: features[{m!r}] has shape {tuple(x.shape)}, "
                                 f"expected ({cfg.dims[m]},)")
        if model.has_persona and (persona is None or persona.shape != (cfg.persona_dim,)):
            got = None if persona is None else tuple(persona.shape)
            raise ValueError(f"step input {b}: persona must be a ({cfg.persona_dim},) tensor (got {got})")


def _keep_last(window: int, t: Tensor, dim: int) -> Tensor:
    """The last ``window`` entries of ``t`` along ``dim``, as a fresh tensor (so old batches are freed)."""
    n = t.shape[dim]
    return t.narrow(dim, max(0, n - window), min(window, n)).clone()


def step_many(model: PCGNet, inputs: list[StepInput]) -> list[tuple[StepResult, ConversationState]]:
    """One new utterance for each of several conversations, computed together.

    The input projections, GRU cells, gates, attention (over the padded source lists of all the new nodes)
    and heads each run once for the whole micro-batch; only the edge lists and the state bookkeeping loop
    over conversations.
    """
    cfg = model.config
    if not cfg.causal:
        raise ValueError("incremental inference needs a causal model (config.causal=True): the bidirectional "
                         "GRUs of the paper's model see the future (spec 8.1)")
    if model.training:
        raise RuntimeError("call model.eval() before step(): incremental inference is deterministic")
    if not inputs:
        return []
    _check_inputs(model, inputs)
    with torch.no_grad():
        return _step_many(model, inputs)


def _turn_start(own_positions: list[int], w: int) -> int:
    """Local start of a turn window: the speaker's w-th last cached turn, else the oldest cached utterance.

    Equal to ``pcgnet.graph.window_starts`` whenever that start lies inside the window, and clamped to the
    window otherwise.
    """
    return own_positions[-w] if len(own_positions) >= w else 0


def _pad(rows: list[list[int]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Ragged source lists -> (T, K) index (0-padded) and mask."""
    K = max(len(r) for r in rows)
    idx = torch.tensor([r + [0] * (K - len(r)) for r in rows], dtype=torch.long, device=device)
    mask = torch.tensor([[True] * len(r) + [False] * (K - len(r)) for r in rows], device=device)
    return idx, mask


def _pool(cached: list[Tensor], new: Tensor) -> Tensor:
    """Per-conversation [cached rows..., new rows...] concatenated; ``new`` is (B, R, ...)."""
    parts = []
    for b, c in enumerate(cached):
        parts += [c, new[b]]
    return torch.cat(parts)


def _step_many(model: PCGNet, inputs: list[StepInput]) -> list[tuple[StepResult, ConversationState]]:
    cfg = model.config
    p0 = next(model.parameters())
    dev, dt = p0.device, p0.dtype
    states = [it[0] for it in inputs]
    slots = [it[2] for it in inputs]
    B, M, h = len(inputs), len(cfg.modalities), cfg.hidden

    # 1. Encoders: one GRU call per GRU for the whole micro-batch.
    enc: list[Tensor] = []
    new_context: Tensor | None = None
    new_party: list[Tensor] = []
    for mi, m in enumerate(cfg.modalities):
        raw = torch.stack([it[1][m].to(dev, dt) for it in inputs])  # (B, D_m)
        x = model.project(m, raw)  # (B, h)
        own = x
        if m == "t":
            hx = torch.stack([s.context_h for s in states], 1)  # (L, B, h)
            out, new_context = model.context_gru(x.unsqueeze(0), hx)
            own = out[0]
        hx = torch.stack([s.party_h[mi, sl] for s, sl in zip(states, slots, strict=True)], 1)  # (L, B, h)
        out, hn = model.party_gru[m](x.unsqueeze(0), hx)
        new_party.append(hn)
        enc.append(model.combine(m, own, out[0]))  # (B, h)

    new_pz = new_ps = new_iz = new_is = None  # the new utterances' contributions to the caches
    if cfg.use_graph:
        ns = [s.cached for s in states]
        own_turns = [[p for p, x in enumerate(s.cache_speaker.tolist()) if x == sl]
                     for s, sl in zip(states, slots, strict=True)]

        # 2. Persona graph: the new utterance hears every cached utterance since its speaker's last turn,
        #    and itself (spec 3.5).
        fused = enc
        new_pz = enc[0].new_zeros(0, M, B, h)  # empty unless the persona graph is on
        new_ps = enc[0].new_zeros(0, M, B, cfg.persona_heads)
        if model.has_persona:
            rows, base = [], 0
            for n, own in zip(ns, own_turns, strict=True):
                rows.append(list(range(base + _turn_start(own, 1), base + n + 1)))
                base += n + 1
            idx, mask = _pad(rows, dev)  # (B, K)
            pk = model.persona_key(torch.stack([it[3].to(dev, dt) for it in inputs]))  # (B, P)
            fused, pz, ps = [], [], []
            for mi, m in enumerate(cfg.modalities):
                x = enc[mi]
                zs, ss = [], []
                for li, conv in enumerate(model.persona_gat[m]):
                    z, s_src, s_dst = conv.project(x, pk)  # (B, H, C), (B, H), (B, H)
                    zs.append(z.reshape(B, h))
                    ss.append(s_src)
                    pool_z = _pool([s.cache_persona_z[li, mi] for s in states], z.reshape(B, 1, h))
                    pool_s = _pool([s.cache_persona_s[li, mi] for s in states], s_src.unsqueeze(1))
                    out = conv.forward_targets(pool_z[idx].view(B, -1, conv.heads, conv.head_channels),
                                               pool_s[idx], s_dst, mask)
                    x = model.persona_residual(x, out)
                pz.append(torch.stack(zs))
                ps.append(torch.stack(ss))
                fused.append(model.fuse(m, enc[mi], x))
            new_pz, new_ps = torch.stack(pz, 1), torch.stack(ps, 1)  # (Lp, M, B, h), (Lp, M, B, Hp)

        # 3. Interactive graph (spec 3.7) for the 2M new nodes of each conversation. Pool layout per
        #    conversation: cached (task, modality, j) rows, then the new (task, modality) rows.
        we, ws, wx = cfg.erc_windows, cfg.shift_windows, cfg.interactive_windows
        rows, base = [], 0
        for n, own in zip(ns, own_turns, strict=True):
            starts = (_turn_start(own, we), _turn_start(own, ws))
            new = lambda t, m, base=base, n=n: base + 2 * M * n + t * M + m  # noqa: E731
            cached = lambda t, m, j, base=base, n=n: base + (t * M + m) * n + j  # noqa: E731
            for t in (0, 1):
                for m in range(M):
                    src = [new(t, m2) for m2 in range(M)]  # types 0 / 3
                    src += [cached(t, m, j) for j in range(starts[t], n)]  # types 1/2, 4/5
                    if cfg.use_crosstask:  # types 6 / 7: same and w_x previous utterances, other task
                        src.append(new(1 - t, m))
                        src += [cached(1 - t, m, n - k) for k in range(1, wx + 1) if n - k >= 0]
                    rows.append(src)
            base += 2 * M * (n + 1)
        idx, mask = _pad(rows, dev)  # (B*2M, K)
        f = torch.stack(fused, 1)  # (B, M, h)
        z0 = torch.stack([f, f], 1)  # (B, 2, M, h): ERC nodes and their shift clones
        y = z0
        iz, is_ = [], []
        for li, conv in enumerate(model.interactive_gat):
            z, s_src, s_dst = conv.project(y.reshape(B * 2 * M, h))
            iz.append(z.reshape(B, 2, M, h))
            is_.append(s_src.reshape(B, 2, M, -1))
            pool_z = _pool([s.cache_inter_z[li].reshape(-1, h) for s in states], z.reshape(B, 2 * M, h))
            pool_s = _pool([s.cache_inter_s[li].reshape(-1, conv.heads) for s in states],
                           s_src.reshape(B, 2 * M, -1))
            out = conv.forward_targets(pool_z[idx].view(B * 2 * M, -1, conv.heads, conv.head_channels),
                                       pool_s[idx], s_dst, mask)
            y = model.interactive_residual(y, out.view(B, 2, M, h))
        new_iz, new_is = torch.stack(iz), torch.stack(is_)  # (Lx, B, 2, M, h), (Lx, B, 2, M, Hx)
        z = model.output_gate(z0, y)
        erc_nodes, shift_nodes = z[:, 0], z[:, 1]  # (B, M, h)
    else:
        erc_nodes = shift_nodes = torch.stack(enc, 1)  # (B, M, h)

    # 4. Heads, only for the new nodes.
    emotion_logp, _ = model.erc_from_nodes(erc_nodes.reshape(B, M * h))
    prev = torch.stack([s.last_shift[sl] for s, sl in zip(states, slots, strict=True)])  # (B, M, h)
    shift_logp, _ = model.shift_from_nodes(prev, shift_nodes)

    # 5. New states (fresh tensors; the inputs stay untouched).
    results = []
    for b, (s, sl) in enumerate(zip(states, slots, strict=True)):
        i = s.n_utterances
        prev_turn = int(s.last_turn[sl])
        party_h = s.party_h.clone()
        party_h[:, sl] = torch.stack([hn[:, b] for hn in new_party])  # (M, L, h)
        last_turn = s.last_turn.clone()
        last_turn[sl] = i
        last_shift = s.last_shift.clone()
        last_shift[sl] = shift_nodes[b]
        caches = dict(cache_speaker=s.cache_speaker, cache_persona_z=s.cache_persona_z,
                      cache_persona_s=s.cache_persona_s, cache_inter_z=s.cache_inter_z,
                      cache_inter_s=s.cache_inter_s)
        if cfg.use_graph:
            w = s.window
            caches["cache_speaker"] = _keep_last(w, torch.cat([s.cache_speaker, s.cache_speaker.new_tensor([sl])]), 0)
            caches["cache_persona_z"] = _keep_last(w, torch.cat([s.cache_persona_z, new_pz[:, :, b:b + 1]], 2), 2)
            caches["cache_persona_s"] = _keep_last(w, torch.cat([s.cache_persona_s, new_ps[:, :, b:b + 1]], 2), 2)
            caches["cache_inter_z"] = _keep_last(w, torch.cat([s.cache_inter_z, new_iz[:, b].unsqueeze(3)], 3), 3)
            caches["cache_inter_s"] = _keep_last(w, torch.cat([s.cache_inter_s, new_is[:, b].unsqueeze(3)], 3), 3)
        new_state = ConversationState(
            n_utterances=i + 1, window=s.window,
            context_h=new_context[:, b].clone() if new_context is not None else s.context_h,
            party_h=party_h, last_turn=last_turn, last_shift=last_shift, **caches,
        )
        result = StepResult(
            index=i, speaker_slot=sl, emotion_probs=emotion_logp[b].exp(),
            shift_probs=shift_logp[b].exp() if prev_turn >= 0 else None,
            prev_index=prev_turn if prev_turn >= 0 else None,
        )
        results.append((result, new_state))
    return results
