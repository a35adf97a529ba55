"""pcgnet.layers: the two attention operators against dense reference computations on tiny graphs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pcgnet.layers import InteractiveGATConv, PersonaGATConv

EDGES = torch.tensor([[0, 1, 0, 2, 1], [1, 2, 2, 3, 3]])  # 4 nodes, past -> present

def _dense_attention(score_src, score_dst, z, adj):
    """out_i = sum_j softmax_j(LeakyReLU(s_src[j] + s_dst[i])) z_j over j with adj[j, i]; per head."""
    n, H, _ = z.shape
    e = F.leaky_relu(score_src.unsqueeze(1) + score_dst.unsqueeze(0), 0.2)  # (j, i, H)
    e = e.masked_fill(~adj.unsqueeze(-1), float("-inf"))
    alpha = torch.softmax(e, dim=0).nan_to_num(0.0)  # over sources j
    return torch.einsum("jih,jhc->ihc", alpha, z).reshape(n, -1), alpha


def test_persona_gat_matches_dense_reference():
    torch.manual_seed(0)
    conv = PersonaGATConv(6, 3, 8, heads=2)
    assert str(conv) == "PersonaGATConv(6, 8, persona=3, heads=2)"
    torch.nn.init.normal_(conv.bias)
    x, p = torch.randn(4, 6), torch.randn(4, 3)
    out = conv(x, p, EDGES)
    assert out.shape == (4, 8)
    gate = conv.lin_gate(x).unsqueeze(-1)
    q = conv.lin_persona(p).view(4, 2, 4) * gate
    z = conv.lin_value(x).view(4, 2, 4)
    adj = torch.eye(4, dtype=torch.bool)  # exactly one self-loop per node
    adj[EDGES[0], EDGES[1]] = True
    ref, alpha = _dense_attention((q * conv.att_src).sum(-1), (q * conv.att_dst).sum(-1), z, adj)
    torch.testing.assert_close(out, ref + conv.bias)
    assert torch.allclose(alpha.sum(0), torch.ones(4, 2))
    # node 0 hears only itself: its output is its own value projection
    torch.testing.assert_close(out[0], z[0].reshape(-1) + conv.bias)


def test_persona_gat_replaces_given_self_loops():
    torch.manual_seed(1)
    conv = PersonaGATConv(5, 5, 4, heads=1)
    x, p = torch.randn(4, 5), torch.randn(4, 5)
    with_loops = torch.cat([EDGES, torch.tensor([[2, 2, 3], [2, 2, 3]])], 1)
    torch.testing.assert_close(conv(x, p, with_loops), conv(x, p, EDGES))


def test_persona_gat_content_enters_scores_only_through_the_gate():
    # Same persona everywhere and equal gates -> uniform attention, whatever the content.
    torch.manual_seed(2)
    conv = PersonaGATConv(4, 2, 2, heads=1)
    with torch.no_grad():
        conv.lin_gate.weight.zero_()
        conv.lin_gate.bias.fill_(1.0)
    x, p = torch.randn(4, 4), torch.ones(4, 2)
    out = conv(x, p, EDGES)
    z = conv.lin_value(x)
    torch.testing.assert_close(out[3], (z[1] + z[2] + z[3]) / 3)


def test_interactive_gat_matches_dense_reference_in_eval():
    torch.manual_seed(3)
    conv = InteractiveGATConv(6, 8, heads=4).eval()
    assert str(conv) == "InteractiveGATConv(6, 8, heads=4)"
    x = torch.randn(4, 6)
    edges = torch.cat([EDGES, torch.arange(4).repeat(2, 1)], 1)  # graph-provided self pairs
    out = conv(x, edges)
    z = conv.lin(x).view(4, 4, 2)
    adj = torch.zeros(4, 4, dtype=torch.bool)
    adj[edges[0], edges[1]] = True
    ref, _ = _dense_attention((z * conv.att_src).sum(-1), (z * conv.att_dst).sum(-1), z, adj)
    torch.testing.assert_close(out, ref + conv.bias)


def test_interactive_gat_adds_no_self_loops_and_drops_input_in_training():
    torch.manual_seed(4)
    conv = InteractiveGATConv(3, 4, heads=2, dropout=0.6)
    x = torch.randn(4, 3)
    conv.eval()
    out = conv(x, EDGES)
    assert torch.equal(out[0], conv.bias)  # no incoming edges: nothing aggregated
    conv.train()
    a, b = conv(x, EDGES), conv(x, EDGES)
    assert not torch.allclose(a, b)  # the hard-coded input dropout is active in training
    conv.eval()
    torch.testing.assert_close(conv(x, EDGES), out)


def test_reset_parameters_reinitialises():
    conv = PersonaGATConv(4, 4, 4, heads=2)
    before = [p.detach().clone() for p in conv.parameters()]
    conv.reset_parameters()
    changed = [not torch.equal(a, b) for a, b in zip(before, conv.parameters(), strict=True)]
    assert sum(changed) >= 4 and torch.equal(conv.bias, torch.zeros(4))


def test_weighted_scatter_matches_gather_scatter_with_gradients():
    from pcgnet.layers.functional import weighted_scatter

    torch.manual_seed(5)
    z = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    alpha = torch.rand(11, 2, dtype=torch.float64, requires_grad=True)
    ei = torch.randint(0, 6, (2, 11))
    ref = torch.zeros(6, 2, 3, dtype=torch.float64).index_add(0, ei[1], z[ei[0]] * alpha.unsqueeze(-1))
    got = weighted_scatter(z, alpha, ei, chunk=4)  # several chunks
    torch.testing.assert_close(got, ref)
    assert torch.autograd.gradcheck(lambda a, b: weighted_scatter(a, b, ei, chunk=4), (z, alpha))


def _packed_reference(gru, x, seq, step, lengths):
    """nn.GRU on pack_padded_sequence: the behaviour stacked_gru must reproduce."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    padded = x.new_zeros(int(lengths.numel()), int(lengths.max()), x.size(-1))
    padded[seq, step] = x
    out, _ = gru(pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False))
    out, _ = pad_packed_sequence(out, batch_first=True)
    return out[seq, step]


@pytest.mark.parametrize("bidirectional,hidden", [(True, 4), (False, 6)])
def test_stacked_gru_equals_packed_gru_values_and_gradients(bidirectional, hidden):
    from pcgnet.layers.stacked_gru import stacked_gru

    torch.manual_seed(6)
    grus = [torch.nn.GRU(5, hidden, 2, bidirectional=bidirectional, dropout=0.3).double().eval() for _ in range(3)]
    lengths = torch.tensor([4, 1, 6, 2, 6])
    seq = torch.repeat_interleave(torch.arange(5), lengths)
    step = torch.cat([torch.arange(int(n)) for n in lengths])
    perm = torch.randperm(seq.numel())  # rows in any order
    seq, step = seq[perm], step[perm]
    xs = [torch.randn(seq.numel(), 5, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    got = stacked_gru(grus, xs, seq, step, lengths, training=False)
    ref = [_packed_reference(g, x, seq, step, lengths) for g, x in zip(grus, xs, strict=True)]
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b)
    w = [torch.randn_like(r) for r in ref]
    wrt = [*xs, grus[1].weight_hh_l1, grus[2].weight_ih_l0]
    ga = torch.autograd.grad(sum((a * v).sum() for a, v in zip(got, w, strict=True)), wrt)
    gb = torch.autograd.grad(sum((a * v).sum() for a, v in zip(ref, w, strict=True)), wrt)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b)
