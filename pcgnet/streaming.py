"""Exact incremental inference for causal PCGNet: one utterance at a time, O(window) per step.

In the causal model (``config.causal``: forward-only GRUs) no state of a past utterance ever changes once
computed (spec 7.2), so caching them is exact (spec 8.2). A ``ConversationState`` holds:

* the text context GRU's hidden state and, per modality and speaker slot, the party GRU's hidden state;
* a window of the last ``config.window_utterances`` utterances: their speaker slots, transformed persona
  keys, the input of every persona-GAT layer (per modality) and of every interactive-GAT layer (ERC and
  shift copies, per modality);
* per speaker slot, the index of its last turn and that turn's final shift-node features (for the
  shift head's [prev || cur] pair, even when prev has left the window).

A step builds a small "local dialogue" per conversation (the cached window plus the new utterance), asks
``pcgnet.graph`` for its edges with the very same rules as the full forward pass, keeps only the edges
into the new utterance's nodes, and runs the heads only for those nodes (nanoGPT's last-position idea).

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

from pcgnet import graph

if TYPE_CHECKING:
    from pcgnet.model import PCGNet

STATE_VERSION = 1

_TENSOR_KEYS = ("context_h", "party_h", "last_turn", "last_shift", "cache_speaker", "cache_persona",
                "cache_persona_x", "cache_inter")
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

    @property
    def shift_probability(self) -> float | None:
        """Binary shift probability: 1 - sum of the diagonal (prev == cur) transitions."""
        if self.shift_probs is None:
            return None
        c = self.emotion_probs.numel()
        return float(1.0 - self.shift_probs.view(c, c).diagonal().sum())


@dataclass(frozen=True)
class ConversationState:
    """Everything a causal PCGNet needs to continue a conversation; bounded by the window.

    Shapes (L = 2 GRU layers, M modalities, S speaker slots, h hidden, n <= window cached utterances,
    Lp / Lx persona / interactive layers, 0 when that part is disabled, P persona key size):

    Parameters:
        n_utterances: utterances seen so far (= the next utterance's index).
        window: maximum number of cached past utterances.
        context_h: (L, h) text context GRU state.
        party_h: (M, S, L, h) party GRU state per modality and speaker slot.
        last_turn: (S,) index of each slot's last turn, -1 if it has not spoken.
        last_shift: (S, M, h) final shift-node features of each slot's last turn.
        cache_speaker: (n,) speaker slots of the cached utterances (the last n, in order).
        cache_persona: (n, P) their persona keys.
        cache_persona_x: (Lp, M, n, h) input of each persona-GAT layer.
        cache_inter: (Lx, 2, M, n, h) input of each interactive-GAT layer, ERC (0) and shift (1) nodes.
    """

    n_utterances: int
    window: int
    context_h: Tensor
    party_h: Tensor
    last_turn: Tensor
    last_shift: Tensor
    cache_speaker: Tensor
    cache_persona: Tensor
    cache_persona_x: Tensor
    cache_inter: Tensor

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
            ("cache_persona", t["cache_persona"].dim() == 2 and t["cache_persona"].shape[0] == n,
             f"must have {n} rows"),
            ("cache_persona_x", t["cache_persona_x"].dim() == 4 and t["cache_persona_x"].shape[2] == n,
             f"must be (Lp, M, {n}, h)"),
            ("cache_inter", t["cache_inter"].dim() == 5 and t["cache_inter"].shape[3] == n,
             f"must be (Lx, 2, M, {n}, h)"),
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
        "Lp": cfg.persona_layers if model.has_persona else 0,
        "Lx": cfg.interactive_layers if cfg.use_graph else 0,
        "P": (cfg.hidden if cfg.persona_transform else cfg.persona_dim) if model.has_persona else 0,
    }


def init_state(model: PCGNet) -> ConversationState:
    """An empty conversation for ``model`` (on its device and dtype)."""
    d = _dims(model)
    p = next(model.parameters())
    z = lambda *shape: torch.zeros(*shape, device=p.device, dtype=p.dtype)  # noqa: E731
    L, h, M, S = d["L"], d["h"], d["M"], d["S"]
    return ConversationState(
        n_utterances=0, window=model.config.window_utterances,
        context_h=z(L, h), party_h=z(M, S, L, h),
        last_turn=torch.full((S,), -1, dtype=torch.long, device=p.device), last_shift=z(S, M, h),
        cache_speaker=torch.zeros(0, dtype=torch.long, device=p.device), cache_persona=z(0, d["P"]),
        cache_persona_x=z(d["Lp"], M, 0, h), cache_inter=z(d["Lx"], 2, M, 0, h),
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
        for k, shape in want.items():
            if tuple(getattr(state, k).shape) != shape:
                raise ValueError(f"step input {b}: state {k!r} has shape {tuple(getattr(state, k).shape)}, "
                                 f"this model needs {shape} (state from a different model?)")
        if (state.cache_persona_x.shape[0], state.cache_inter.shape[0], state.cache_persona.shape[1]) != (
                d["Lp"], d["Lx"], d["P"]):
            raise ValueError(f"step input {b}: state caches do not match this model's graph layers")
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

    The input projections, GRU cells, gates, graph convolutions (over the disjoint union of the local
    graphs) and heads each run once for the whole micro-batch.
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


def _step_many(model: PCGNet, inputs: list[StepInput]) -> list[tuple[StepResult, ConversationState]]:
    cfg = model.config
    p0 = next(model.parameters())
    dev, dt = p0.device, p0.dtype
    states = [it[0] for it in inputs]
    slots = [it[2] for it in inputs]
    B, M, h = len(inputs), len(cfg.modalities), cfg.hidden

    # 1. Encoders: one GRU cell call per GRU for the whole micro-batch.
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

    new_px: Tensor | None = None  # (Lp, M, B, h) persona-GAT layer inputs of the new utterances
    new_inter: Tensor | None = None  # (Lx, 2, M, B, h) interactive-GAT layer inputs
    pk_new: Tensor | None = None
    if cfg.use_graph:
        # 2. Local dialogues: each conversation's cached window plus its new utterance, as one flat batch.
        counts = [s.cached + 1 for s in states]
        n_local = sum(counts)
        new_pos = torch.tensor(counts, device=dev).cumsum(0) - 1  # (B,) flat index of the new nodes
        is_new = torch.zeros(n_local, dtype=torch.bool, device=dev)
        is_new[new_pos] = True
        mask = torch.arange(max(counts), device=dev).unsqueeze(0) < torch.tensor(counts, device=dev).unsqueeze(1)
        spk = torch.full(mask.shape, -1, dtype=torch.long, device=dev)
        spk[mask] = torch.cat([torch.cat([s.cache_speaker, s.cache_speaker.new_tensor([sl])])
                               for s, sl in zip(states, slots, strict=True)])
        lidx = graph.index_dialogues(mask, spk, cfg.n_speakers)

        def local(cached: list[Tensor], new: Tensor, dim: int) -> Tensor:
            """Interleave per-conversation cached rows with the new rows along ``dim`` (local order)."""
            parts = []
            for b, c in enumerate(cached):
                parts += [c, new.narrow(dim, b, 1)]
            return torch.cat(parts, dim)

        fused = enc
        if model.has_persona:
            pk_new = model.persona_key(torch.stack([it[3].to(dev, dt) for it in inputs]))  # (B, P)
            pk = local([s.cache_persona for s in states], pk_new, 0)  # (n_local, P)
            pe = graph.persona_edges(lidx)
            pe = pe[:, is_new[pe[1]]]  # only edges into the new nodes are needed
            layer_inputs = []
            fused = []
            for mi, m in enumerate(cfg.modalities):
                x = enc[mi]
                per_layer = []
                for li, conv in enumerate(model.persona_gat[m]):
                    per_layer.append(x)
                    nodes = local([s.cache_persona_x[li, mi] for s in states], x, 0)  # (n_local, h)
                    x = model.persona_residual(x, conv(nodes, pk, pe)[new_pos])
                layer_inputs.append(torch.stack(per_layer))  # (Lp, B, h)
                fused.append(torch.sigmoid(model.fuse_enc[m](enc[mi])) * enc[mi]
                             + torch.sigmoid(model.fuse_persona[m](x)) * x)
            new_px = torch.stack(layer_inputs, 1)  # (Lp, M, B, h)

        # 3. Interactive graph: same edge rules as the full pass, restricted to edges into new nodes.
        f = torch.stack(fused)  # (M, B, h)
        edges, _ = graph.interactive_edges(lidx, M, cfg.erc_windows, cfg.shift_windows,
                                           cfg.interactive_windows, cfg.use_crosstask)
        edges = edges[:, is_new[edges[1] % n_local]]
        z0 = torch.stack([f, f])  # (2, M, B, h): ERC nodes and their shift clones
        y = z0
        per_layer = []
        for li, conv in enumerate(model.interactive_gat):
            per_layer.append(y)
            nodes = local([s.cache_inter[li] for s in states], y, 2)  # (2, M, n_local, h)
            out = conv(nodes.reshape(-1, h), edges).view(2, M, n_local, h)[:, :, new_pos]
            y = model.interactive_residual(y, out)
        new_inter = torch.stack(per_layer)  # (Lx, 2, M, B, h)
        z = model.output_gate(z0, y)
        erc_nodes, shift_nodes = z[0], z[1]  # (M, B, h)
    else:
        erc_nodes = shift_nodes = torch.stack(enc)

    # 4. Heads, only for the new nodes.
    emotion_logp, _ = model.erc_from_nodes(erc_nodes.transpose(0, 1).reshape(B, M * h))
    cur = shift_nodes.transpose(0, 1)  # (B, M, h)
    prev = torch.stack([s.last_shift[sl] for s, sl in zip(states, slots, strict=True)])  # (B, M, h)
    shift_logp, _ = model.shift_from_nodes(prev, cur)

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
        last_shift[sl] = cur[b]
        if cfg.use_graph:
            cache_speaker = _keep_last(s.window, torch.cat([s.cache_speaker, s.cache_speaker.new_tensor([sl])]), 0)
            cache_persona = s.cache_persona
            cache_persona_x = s.cache_persona_x
            if model.has_persona:
                cache_persona = _keep_last(s.window, torch.cat([s.cache_persona, pk_new[b:b + 1]]), 0)
                cache_persona_x = _keep_last(s.window, torch.cat([s.cache_persona_x, new_px[:, :, b:b + 1]], 2), 2)
            cache_inter = _keep_last(s.window, torch.cat([s.cache_inter, new_inter[:, :, :, b:b + 1]], 3), 3)
        else:
            cache_speaker, cache_persona = s.cache_speaker, s.cache_persona
            cache_persona_x, cache_inter = s.cache_persona_x, s.cache_inter
        new_state = ConversationState(
            n_utterances=i + 1, window=s.window,
            context_h=new_context[:, b].clone() if new_context is not None else s.context_h,
            party_h=party_h, last_turn=last_turn, last_shift=last_shift, cache_speaker=cache_speaker,
            cache_persona=cache_persona, cache_persona_x=cache_persona_x, cache_inter=cache_inter,
        )
        result = StepResult(
            index=i, speaker_slot=sl, emotion_probs=emotion_logp[b].exp(),
            shift_probs=shift_logp[b].exp() if prev_turn >= 0 else None,
            prev_index=prev_turn if prev_turn >= 0 else None,
        )
        results.append((result, new_state))
    return results
