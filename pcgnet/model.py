"""PCGNet, all of it in this file: encoders, persona graph, cross-task interactive graph, heads.

Re-implements Tu et al., "A Persona-Infused Cross-Task Graph Network for Multimodal Emotion Recognition with
Emotion Shift Detection in Conversations" (SIGIR 2024) from the written spec
(``shared/design/pcgnet-spec.md``, section 3). Differences from the original code, each on purpose:

* Each dialogue is encoded on its own (the text GRU per dialogue, the party GRUs per (dialogue, speaker),
  with packed-sequence semantics, ``pcgnet.layers.stacked_gru``), so a dialogue's outputs never depend on
  its batch-mates or on padding (the original runs unpacked BiGRUs over padded batches; spec 7.1-3).
* The contrastive pair label of two identical non-shift transitions is "identical" (``pcgnet.losses``;
  spec 7.1-9).
* Edges are built vectorised without size caps (``pcgnet.graph``; spec 7.1-15).
* The interactive conv's unused position-encoding parameters are not allocated (spec 3.8, 7.1-12).
* ``config.causal``: the four BiGRUs become forward-only GRUs, which makes the whole model causal and
  lets ``pcgnet.streaming`` run it one utterance at a time, exactly (spec 7.2, 8.2).

Shape symbols: B dialogues, T padded length, N real utterances, M modalities, h hidden, C classes,
P shift samples (consecutive same-speaker turns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pcgnet import graph
from pcgnet.batch import DialogueBatch
from pcgnet.config import PCGNetConfig
from pcgnet.layers import InteractiveGATConv, PersonaGATConv
from pcgnet.layers.functional import dropout
from pcgnet.layers.stacked_gru import stacked_gru

if TYPE_CHECKING:
    from pcgnet.streaming import ConversationState, StepInput, StepResult


@dataclass
class PCGNetOutput:
    """What ``PCGNet.forward`` returns (architecture Seam 1).

    Parameters:
        emotion_logp: (N, C) log-probabilities, N real utterances in (dialogue, time) order.
        shift_logp: (P, C*C) transition log-probabilities; class = C*prev + cur.
        emotion_hidden: (N, M*h) input of the ERC head's last linear layer.
        shift_hidden: (P, 2*M*h) input of the shift head's last linear layer; feeds the contrastive loss.
        shift_prev: (P,) flat index of the same speaker's previous utterance.
        shift_cur: (P,) flat index of the current utterance.
    """

    emotion_logp: Tensor
    shift_logp: Tensor
    emotion_hidden: Tensor
    shift_hidden: Tensor
    shift_prev: Tensor
    shift_cur: Tensor


def _xavier_linear(n_in: int, n_out: int) -> nn.Linear:
    lin = nn.Linear(n_in, n_out)
    nn.init.xavier_uniform_(lin.weight)
    return lin


def _gate(lin_a: nn.Linear, a: Tensor, lin_b: nn.Linear, b: Tensor) -> Tensor:
    """sigma(A a) * a + sigma(B b) * b: the element-wise gated sum used at four places in PCGNet."""
    return torch.sigmoid(lin_a(a)) * a + torch.sigmoid(lin_b(b)) * b


class PCGNet(nn.Module):
    """The PCGNet model; ``config.causal`` selects the streaming-safe variant.

    Example::

        model = PCGNet(PCGNetConfig())
        out = model(batch)                  # PCGNetOutput
        out.emotion_logp.argmax(-1)         # (N,) predicted emotions
    """

    def __init__(self, config: PCGNetConfig):
        super().__init__()
        self.config = cfg = config
        h, M, C = cfg.hidden, len(cfg.modalities), cfg.n_classes
        if not cfg.causal and h % 2:
            raise ValueError(f"hidden must be even for the bidirectional GRUs (got {h})")
        for name, value, low in (("persona_layers", cfg.persona_layers, 1), ("interactive_layers", cfg.interactive_layers, 1),
                                 ("erc_windows", cfg.erc_windows, 1), ("shift_windows", cfg.shift_windows, 1),
                                 ("interactive_windows", cfg.interactive_windows, 0),
                                 ("window_utterances", cfg.window_utterances, 1)):
            if value < low:
                raise ValueError(f"{name} must be >= {low} (got {value})")

        def gru() -> nn.GRU:
            # Non-causal: 2-layer BiGRU, h/2 per direction (output h). Causal: forward-only, hidden h.
            if cfg.causal:
                return nn.GRU(h, h, num_layers=2, dropout=cfg.dropout_gru, batch_first=False)
            return nn.GRU(h, h // 2, num_layers=2, dropout=cfg.dropout_gru, bidirectional=True)

        self.proj = nn.ModuleDict({m: _xavier_linear(cfg.dims[m], h) for m in cfg.modalities})
        # Text gets a dialogue-level context GRU; audio and visual do not (spec 3.3).
        self.context_gru = gru() if "t" in cfg.modalities else None
        self.party_gru = nn.ModuleDict({m: gru() for m in cfg.modalities})
        self.gate_own = nn.ModuleDict({m: _xavier_linear(h, h) for m in cfg.modalities})
        self.gate_party = nn.ModuleDict({m: _xavier_linear(h, h) for m in cfg.modalities})

        self.has_persona = cfg.use_graph and cfg.use_persona
        self.persona_proj: nn.Linear | None = None
        if self.has_persona:
            p_dim = h if cfg.persona_transform else cfg.persona_dim
            if cfg.persona_transform:
                self.persona_proj = nn.Linear(cfg.persona_dim, h)
            self.persona_gat = nn.ModuleDict({
                m: nn.ModuleList(PersonaGATConv(h, p_dim, h, heads=cfg.persona_heads)
                                 for _ in range(cfg.persona_layers))
                for m in cfg.modalities})
            self.fuse_enc = nn.ModuleDict({m: _xavier_linear(h, h) for m in cfg.modalities})
            self.fuse_persona = nn.ModuleDict({m: _xavier_linear(h, h) for m in cfg.modalities})
        if cfg.use_graph:
            self.interactive_gat = nn.ModuleList(
                InteractiveGATConv(h, h, heads=cfg.interactive_heads, dropout=cfg.dropout_conv)
                for _ in range(cfg.interactive_layers))
            self.out_gate_in = _xavier_linear(h, h)
            self.out_gate_gat = _xavier_linear(h, h)
        self.erc_head = _xavier_linear(M * h, C)
        self.shift_head = _xavier_linear(2 * M * h, C * C)

    # ------------------------------------------------------------------ building blocks (shared with streaming)

    def project(self, m: str, raw: Tensor) -> Tensor:
        """(n, D_m) raw features -> (n, h); dropout on the raw input first (spec 3.2)."""
        return self.proj[m](dropout(raw, self.config.dropout_forward, self.training))

    def combine(self, m: str, own: Tensor, party: Tensor) -> Tensor:
        """E^m = sigma(A own) * own + sigma(A' party) * party; own = context GRU (text) or projection."""
        return _gate(self.gate_own[m], own, self.gate_party[m], party)

    def persona_key(self, persona: Tensor) -> Tensor:
        """(n, 5) persona -> (n, h) when persona_transform is on, else unchanged."""
        return self.persona_proj(persona) if self.persona_proj is not None else persona

    def fuse(self, m: str, enc: Tensor, refined: Tensor) -> Tensor:
        """F^m = sigma(W enc) * enc + sigma(W' refined) * refined: encoder and persona-refined features."""
        return _gate(self.fuse_enc[m], enc, self.fuse_persona[m], refined)

    def persona_residual(self, x: Tensor, conv_out: Tensor) -> Tensor:
        return x + F.elu(dropout(conv_out, self.config.dropout_persona, self.training))

    def interactive_residual(self, y: Tensor, conv_out: Tensor) -> Tensor:
        return y + F.elu(dropout(conv_out, self.config.dropout_interactive, self.training))

    def output_gate(self, z0: Tensor, y: Tensor) -> Tensor:
        """Z = sigma(G1 Z0) * Z0 + sigma(G2 Y) * Y, with the un-dropped Z0 (spec 3.8)."""
        return _gate(self.out_gate_in, z0, self.out_gate_gat, y)

    def erc_from_nodes(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """(n, M*h) concatenated ERC nodes -> (log-probs (n, C), hidden (n, M*h)); dropout, then ReLU."""
        hidden = F.relu(dropout(v, self.config.dropout_smax_erc, self.training))
        return F.log_softmax(self.erc_head(hidden), -1), hidden

    def shift_from_nodes(self, prev: Tensor, cur: Tensor) -> tuple[Tensor, Tensor]:
        """(n, M, h) shift nodes of prev and cur -> (log-probs (n, C*C), hidden (n, 2*M*h)).

        The pair is concatenated [prev || cur] per modality, modalities in (t, a, v) order (spec 3.9).
        """
        s = torch.stack([prev, cur], dim=2).reshape(prev.size(0), 2 * prev.size(1) * prev.size(2))  # (n, M*2*h)
        hidden = F.relu(dropout(s, self.config.dropout_smax_shift, self.training))
        return F.log_softmax(self.shift_head(hidden), -1), hidden

    # ------------------------------------------------------------------ forward

    def encode(self, batch: DialogueBatch, index: graph.DialogueIndex) -> dict[str, Tensor]:
        """Projections, context and party GRUs, gated combination: modality -> E^m (N, h)."""
        mods = self.config.modalities
        mask = batch.mask.bool()
        x = {m: self.project(m, batch.features[m][mask]) for m in mods}  # (N, h) each
        # Every dialogue (text context GRU) and every (dialogue, speaker) sequence (party GRUs) is run on its
        # own, as packed sequences would be: the original ran the BiGRUs over zero-padded batches, so a
        # dialogue's outputs depended on its batch-mates and the backward direction started in the padding
        # (spec 7.1-3). The three party GRUs share their sequences and run in lockstep.
        party = stacked_gru([self.party_gru[m] for m in mods], [x[m] for m in mods], index.party_group,
                            index.party_rank, index.party_lengths, self.training)
        own = dict(x)
        if self.context_gru is not None:
            own["t"] = stacked_gru([self.context_gru], [x["t"]], index.dialogue, index.position, index.lengths,
                                   self.training)[0]
        return {m: self.combine(m, own[m], p) for m, p in zip(mods, party, strict=True)}

    def forward(self, batch: DialogueBatch) -> PCGNetOutput:
        cfg = self.config
        for m in cfg.modalities:
            if m not in batch.features:
                raise ValueError(f"batch has no features for modality {m!r} (model modalities: {cfg.modalities})")
        mask = batch.mask.bool()
        index = graph.index_dialogues(mask, batch.speakers, cfg.n_speakers)
        n, M, h = index.num_nodes, len(cfg.modalities), cfg.hidden
        enc = self.encode(batch, index)

        if not cfg.use_graph:  # ablation: encoders straight into the heads
            nodes = torch.stack([enc[m] for m in cfg.modalities])  # (M, N, h)
            erc_nodes = shift_nodes = nodes
        else:
            if self.has_persona:
                persona = self.persona_key(batch.persona[mask].to(enc[cfg.modalities[0]].dtype))  # (N, h|5)
                p_edges = graph.persona_edges(index)
                fused = []
                for m in cfg.modalities:
                    x = dropout(enc[m], cfg.dropout_persona, self.training)
                    for conv in self.persona_gat[m]:
                        x = self.persona_residual(x, conv(x, persona, p_edges))
                    fused.append(self.fuse(m, enc[m], x))  # F^m (N, h)
            else:
                fused = [enc[m] for m in cfg.modalities]
            # Cross-task graph: M ERC copies then M cloned shift copies of every utterance (spec 3.6).
            f = torch.cat(fused)  # (M*N, h)
            z0 = torch.cat([f, f])  # (2*M*N, h)
            edges, _ = graph.interactive_edges(index, M, cfg.erc_windows, cfg.shift_windows,
                                               cfg.interactive_windows, cfg.use_crosstask)
            y = dropout(z0, cfg.dropout_interactive, self.training)
            for conv in self.interactive_gat:
                y = self.interactive_residual(y, conv(y, edges))
            # = self.output_gate(z0, y); the clones share sigma(G1 z0) * z0, so it is computed once.
            own = torch.sigmoid(self.out_gate_in(f)) * f  # (M*N, h)
            z = (torch.cat([own, own]) + torch.sigmoid(self.out_gate_gat(y)) * y).view(2, M, n, h)
            erc_nodes, shift_nodes = z[0], z[1]  # (M, N, h) each

        emotion_logp, emotion_hidden = self.erc_from_nodes(erc_nodes.permute(1, 0, 2).reshape(n, M * h))
        prev, cur = graph.shift_pairs(index)
        shift_logp, shift_hidden = self.shift_from_nodes(shift_nodes[:, prev].transpose(0, 1),
                                                         shift_nodes[:, cur].transpose(0, 1))
        return PCGNetOutput(emotion_logp, shift_logp, emotion_hidden, shift_hidden, prev, cur)

    # ------------------------------------------------------------------ incremental inference (causal only)

    def init_state(self) -> ConversationState:
        """An empty conversation state for ``step`` (see ``pcgnet.streaming``)."""
        from pcgnet.streaming import init_state

        return init_state(self)

    def step(self, state: ConversationState, features: dict[str, Tensor], speaker_slot: int,
             persona: Tensor | None = None) -> tuple[StepResult, ConversationState]:
        """Process one new utterance; O(window) work. Returns its result and the new state."""
        from pcgnet.streaming import step_many

        return step_many(self, [(state, features, speaker_slot, persona)])[0]

    def step_many(self, inputs: list[StepInput]) -> list[tuple[StepResult, ConversationState]]:
        """``step`` for several conversations at once, micro-batched into one set of tensor ops."""
        from pcgnet.streaming import step_many

        return step_many(self, inputs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def expected_parameters(config: PCGNetConfig) -> int:
    """Closed-form parameter count of ``PCGNet(config)``; see docs/model.md for the term-by-term table.

    For the original's count add 2 * 8 * interactive_heads per interactive layer (its unused position
    encodings), non-causal only.
    """
    h, M, C = config.hidden, len(config.modalities), config.n_classes
    lin = lambda i, o, bias=True: i * o + (o if bias else 0)  # noqa: E731
    if config.causal:
        gru = 2 * (3 * h * (h + h) + 6 * h)  # 2 layers, forward, input h, hidden h
    else:
        hd = h // 2
        gru = 2 * 2 * (3 * hd * (h + hd) + 6 * hd)  # 2 layers x 2 directions, input h (= 2*hd)
    n = sum(lin(config.dims[m], h) for m in config.modalities)
    n += gru * (M + (1 if "t" in config.modalities else 0))
    n += 2 * M * lin(h, h)
    if config.use_graph and config.use_persona:
        p = h if config.persona_transform else config.persona_dim
        n += lin(config.persona_dim, h) if config.persona_transform else 0
        hp, dp = config.persona_heads, h // config.persona_heads
        conv = lin(h, hp) + lin(p, h, False) + lin(h, h, False) + 2 * hp * dp + h
        n += M * (config.persona_layers * conv + 2 * lin(h, h))
    if config.use_graph:
        hx, dx = config.interactive_heads, h // config.interactive_heads
        n += config.interactive_layers * (lin(h, h, False) + 2 * hx * dx + h) + 2 * lin(h, h)
    n += lin(M * h, C) + lin(2 * M * h, C * C)
    return n
