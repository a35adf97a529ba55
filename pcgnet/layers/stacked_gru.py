"""Several GRUs over the same set of variable-length sequences, run in lockstep (PCGNet's encoders)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pcgnet.layers.functional import dropout


def stacked_gru(grus: list[nn.GRU], inputs: list[Tensor], seq: Tensor, step: Tensor, lengths: Tensor,
                training: bool) -> list[Tensor]:
    r"""Run each ``grus[g]`` over ``inputs[g]`` grouped into sequences, every sequence on its own.

    Row r of every input is element ``step[r]`` of sequence ``seq[r]`` (``lengths`` gives each sequence's
    length). The result equals running each GRU on the packed sequences (``pack_padded_sequence``):
    outputs never depend on other sequences or on padding. All GRUs must have the same shape (layers,
    hidden size, direction); PCGNet's three party GRUs share their sequences, and the two directions of a
    bidirectional GRU are run together too.

    Why not ``nn.GRU`` on a ``PackedSequence``: on CPU it runs two small matrix products per time step, layer,
    direction and GRU, and its backward accumulates the input weights' gradient step by step. Here the input
    projections of a layer are one batched product over all rows, and each time step is one batched product
    for all GRUs and directions, with the reverse direction run as a forward pass over each sequence reversed
    within its own length (so both directions have the same active sequences at every step).

    Args:
        grus: G GRU modules with ``batch_first=False`` semantics (their parameters are used as is).
        inputs: G tensors (N, F_in).
        seq, step: (N,) sequence id and position of each row. lengths: (S,) sequence lengths (all >= 1).
        training: apply the GRUs' inter-layer dropout.

    Returns:
        G tensors (N, dirs * hidden), the last layer's outputs, both directions concatenated.
    """
    g0 = grus[0]
    hd, n_layers, dirs = g0.hidden_size, g0.num_layers, 2 if g0.bidirectional else 1
    for g in grus:
        assert (g.hidden_size, g.num_layers, g.bidirectional) == (hd, n_layers, g0.bidirectional), \
            "stacked GRUs must share their shape"
    G, K = len(grus), len(grus) * dirs
    dev = inputs[0].device
    # Sequences sorted by length (descending): at time t the active ones are the first batch_sizes[t].
    order = torch.argsort(lengths, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=dev)
    sorted_len = lengths[order]
    t_max = int(sorted_len[0])
    batch_sizes_t = (sorted_len.unsqueeze(0) > torch.arange(t_max, device=dev).unsqueeze(1)).sum(1)
    offsets_t = torch.cumsum(batch_sizes_t, 0) - batch_sizes_t
    batch_sizes = batch_sizes_t.tolist()
    # Packed (time-major) position of each row, for the forward and for the reversed sequences.
    pos = [offsets_t[step] + rank[seq]]
    if dirs == 2:
        pos.append(offsets_t[lengths[seq] - 1 - step] + rank[seq])
    inv = []
    for p in pos:
        i = torch.empty_like(p)
        i[p] = torch.arange(p.numel(), device=dev)
        inv.append(i)  # packed position -> row

    x = torch.stack(inputs)  # (G, N, F)
    for layer in range(n_layers):
        sfx = [f"_l{layer}", f"_l{layer}_reverse"][:dirs]
        w_ih = torch.stack([getattr(g, "weight_ih" + s) for g in grus for s in sfx])  # (K, 3hd, F)
        w_hh = torch.stack([getattr(g, "weight_hh" + s) for g in grus for s in sfx])  # (K, 3hd, hd)
        b_ih = torch.stack([getattr(g, "bias_ih" + s) for g in grus for s in sfx])  # (K, 3hd)
        b_hh = torch.stack([getattr(g, "bias_hh" + s) for g in grus for s in sfx])
        # Inputs in packed order per direction, then all input projections at once.
        xp = torch.stack([x.index_select(1, i) for i in inv], 1).reshape(K, -1, x.size(-1))  # (K, N, F)
        gi = torch.baddbmm(b_ih.unsqueeze(1), xp, w_ih.transpose(1, 2))  # (K, N, 3hd)
        w_hh_t = w_hh.transpose(1, 2)  # (K, hd, 3hd)
        b_hh = b_hh.unsqueeze(1)
        h = x.new_zeros(K, batch_sizes[0], hd)
        outs = []
        # One split (not a slice per step): each slice's backward would allocate a zero tensor of gi's size.
        for t, gx in enumerate(gi.split(batch_sizes, dim=1)):  # gx (K, bt, 3hd)
            h = h[:, :batch_sizes[t]]
            gh = torch.baddbmm(b_hh, h, w_hh_t)  # (K, bt, 3hd)
            r = torch.sigmoid(gx[..., :hd] + gh[..., :hd])
            z = torch.sigmoid(gx[..., hd:2 * hd] + gh[..., hd:2 * hd])
            n = torch.tanh(gx[..., 2 * hd:] + r * gh[..., 2 * hd:])
            h = n + z * (h - n)  # = (1 - z) * n + z * h
            outs.append(h)
        out = torch.cat(outs, 1).view(G, dirs, -1, hd)  # packed order
        x = torch.cat([out[:, d].index_select(1, pos[d]) for d in range(dirs)], -1)  # (G, N, dirs*hd)
        if layer < n_layers - 1:
            x = dropout(x, g0.dropout, training)
    return list(x.unbind(0))
