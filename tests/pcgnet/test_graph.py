"""pcgnet.graph: the spec's worked examples and a brute-force reference of the edge rules."""

from __future__ import annotations

import pytest
import torch

from pcgnet import graph
from pcgnet.batch import DialogueBatch


def _index(dialogues: list[list[int]], n_speakers: int = 4) -> graph.DialogueIndex:
    T = max(len(d) for d in dialogues)
    mask = torch.zeros(len(dialogues), T, dtype=torch.bool)
    spk = torch.full((len(dialogues), T), -1)
    for b, d in enumerate(dialogues):
        mask[b, : len(d)] = True
        spk[b, : len(d)] = torch.tensor(d)
    return graph.index_dialogues(mask, spk, n_speakers)


def _edge_set(ei: torch.Tensor, types: torch.Tensor | None = None) -> set:
    if types is None:
        return set(zip(ei[0].tolist(), ei[1].tolist(), strict=True))
    return set(zip(ei[0].tolist(), ei[1].tolist(), types.tolist(), strict=True))


def test_persona_edges_spec_example():
    # Spec 3.5: speakers A A B A B B -> in-edges 0->1; 0,1->2; 1,2->3; 2,3->4; 4->5.
    idx = _index([[0, 0, 1, 0, 1, 1]])
    got = _edge_set(graph.persona_edges(idx))
    assert got == {(0, 1), (0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4), (4, 5)}


def test_shift_pairs_spec_example():
    # Spec 3.10: dialogues of length 6 (A A B A B B) and 3 (A B A): (0,1), (1,3), (2,4), (4,5), (6,8).
    idx = _index([[0, 0, 1, 0, 1, 1], [0, 1, 0]])
    prev, cur = graph.shift_pairs(idx)
    assert list(zip(prev.tolist(), cur.tolist(), strict=True)) == [(0, 1), (1, 3), (2, 4), (4, 5), (6, 8)]


def test_shift_pairs_ordered_by_dialogue_then_speaker_then_time():
    idx = _index([[1, 0, 1, 0, 2, 2], [3, 3, 0, 0]])
    prev, cur = graph.shift_pairs(idx)
    # dialogue 0: speaker 0 (1->3), speaker 1 (0->2), speaker 2 (4->5); dialogue 1: speaker 0, speaker 3.
    assert list(zip(prev.tolist(), cur.tolist(), strict=True)) == [(1, 3), (0, 2), (4, 5), (8, 9), (6, 7)]


def _reference_interactive(dialogues, M, we, ws, wx, crosstask):
    """The spec 3.7 rules, written as plain loops over utterances."""
    n = sum(len(d) for d in dialogues)
    edges = set()
    base = 0
    for d in dialogues:
        for i in range(len(d)):
            u = base + i
            for m1 in range(M):
                for m2 in range(M):
                    edges.add((m1 * n + u, m2 * n + u, 0))
                    edges.add((M * n + m1 * n + u, M * n + m2 * n + u, 3))
            turns = [t for t in range(i) if d[t] == d[i]]
            for w, off, t_intra in ((we, 0, 1), (ws, M * n, 4)):
                start = turns[-w] if len(turns) >= w else 0
                for j in range(start, i):
                    et = t_intra if d[j] == d[i] else t_intra + 1
                    for m in range(M):
                        edges.add((off + m * n + base + j, off + m * n + u, et))
            if crosstask:
                for k in range(wx + 1):
                    if i - k >= 0:
                        for m in range(M):
                            edges.add((m * n + u - k, M * n + m * n + u, 6))
                            edges.add((M * n + m * n + u - k, m * n + u, 7))
        base += len(d)
    return edges


@pytest.mark.parametrize("M,we,ws,wx,crosstask", [(3, 1, 1, 1, True), (2, 2, 3, 0, True), (1, 1, 2, 2, False),
                                                  (3, 3, 1, 1, False)])
def test_interactive_edges_match_reference(M, we, ws, wx, crosstask):
    g = torch.Generator().manual_seed(M * 10 + we)
    dialogues = [torch.randint(0, 3, (int(L),), generator=g).tolist() for L in (7, 1, 12, 4)]
    idx = _index(dialogues)
    ei, types = graph.interactive_edges(idx, M, we, ws, wx, crosstask)
    got = _edge_set(ei, types)
    assert len(got) == ei.shape[1], "duplicate edges"
    assert got == _reference_interactive(dialogues, M, we, ws, wx, crosstask)


def test_erc_window_edges_equal_shift_window_edges_offset():
    idx = _index([[0, 1, 0, 0, 1, 2, 1], [1, 1, 0]])
    n, M = idx.num_nodes, 3
    ei, types = graph.interactive_edges(idx, M, 2, 2, 1)
    erc = ei[:, (types == 1) | (types == 2)]
    shf = ei[:, (types == 4) | (types == 5)]
    assert _edge_set(erc + M * n) == _edge_set(shf)


def test_edges_are_causal_and_inside_dialogues():
    g = torch.Generator().manual_seed(3)
    dialogues = [torch.randint(0, 4, (L,), generator=g).tolist() for L in (9, 5, 13)]
    idx = _index(dialogues)
    n = idx.num_nodes
    ei, _ = graph.interactive_edges(idx, 3, 2, 2, 2)
    src_u, dst_u = ei[0] % n, ei[1] % n
    assert bool((src_u <= dst_u).all())
    assert torch.equal(idx.dialogue[src_u], idx.dialogue[dst_u])
    pe = graph.persona_edges(idx)
    assert bool((pe[0] < pe[1]).all()) and torch.equal(idx.dialogue[pe[0]], idx.dialogue[pe[1]])


def test_no_hard_caps_on_large_batches():
    # The original fills preallocated buffers of 300k interactive-edge columns; a big batch overflows them.
    dialogues = [[0, 1] * 500 for _ in range(8)]
    idx = _index(dialogues)
    ei, types = graph.interactive_edges(idx, 3)
    assert ei.shape[1] > 300_000
    # alternating speakers, w = 1: node i (i >= 2) hears i-2 and i-1 in each modality and task
    assert int((types == 1).sum()) == 8 * 998 * 3
    assert int((types == 2).sum()) == 8 * 999 * 3


def test_window_starts_validation():
    idx = _index([[0, 1]])
    with pytest.raises(ValueError, match="turn windows must be >= 1"):
        graph.window_starts(idx, 0)


def test_index_rejects_bad_batches():
    mask = torch.tensor([[True, False, True]])
    with pytest.raises(ValueError, match="prefix"):
        graph.index_dialogues(mask, torch.zeros(1, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="dialogue 1 of the batch has no utterances"):
        graph.index_dialogues(torch.tensor([[True], [False]]), torch.tensor([[0], [-1]]), 2)
    with pytest.raises(ValueError, match=r"speaker slots must lie in \[0, 2\)"):
        graph.index_dialogues(torch.ones(1, 2, dtype=torch.bool), torch.tensor([[0, 2]]), 2)


def test_flat_and_shift_labels():
    mask = torch.tensor([[True, True, True], [True, True, False]])
    labels = torch.tensor([[1, 2, -1], [0, 3, -1]])
    batch = DialogueBatch({}, torch.zeros(2, 3, dtype=torch.long), mask, torch.zeros(2, 3, 5), labels, [0, 1])
    y = graph.flat_labels(batch)
    assert y.tolist() == [1, 2, -1, 0, 3]
    ys = graph.shift_labels(y, torch.tensor([0, 1, 3]), torch.tensor([1, 2, 4]), 6)
    assert ys.tolist() == [6 * 1 + 2, -1, 3]
