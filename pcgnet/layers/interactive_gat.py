"""The interactive (cross-task) graph attention operator of PCGNet (spec 3.8)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import zeros
from torch_geometric.utils import softmax

from pcgnet.layers.functional import dense_target_attention, dropout, weighted_scatter
from pcgnet.layers.pyg_templates import drop_generated_sources


class InteractiveGATConv(MessagePassing):
    r"""Multi-head graph attention over the ERC and shift nodes of the cross-task graph.

    .. math::
        \tilde{\mathbf{x}} = \mathrm{Dropout}_p(\mathbf{x}), \qquad
        \mathbf{z}_k(i) = \mathbf{U}_k \tilde{\mathbf{x}}_i, \qquad
        \alpha_k(j, i) = \mathrm{softmax}_{j \in \mathcal{N}(i)}
        \Big(\mathrm{LeakyReLU}_{0.2}\big(\mathbf{c}_k^\top [\mathbf{z}_k(j) \,\Vert\, \mathbf{z}_k(i)]\big)\Big)

    .. math::
        \mathbf{x}'_i = \big\Vert_k \sum_{j \in \mathcal{N}(i)} \alpha_k(j, i)\, \mathbf{z}_k(j) + \mathbf{b}

    No self-loops are added: in PCGNet's graph the same-utterance modality pairs (types 0 and 3, which
    include m -> m) already give every node one.

    .. note::
        The original also allocates "relational" position-encoding parameters (8 x heads weight and bias)
        that it never reads. They are left out here: 64 fewer parameters per layer at 4 heads.

    Args:
        in_channels (int): input size.
        out_channels (int): output size, split evenly over the heads.
        heads (int, optional): number of attention heads. (default: :obj:`1`)
        dropout (float, optional): dropout on the layer input, hard-coded to 0.6 in the original.
            (default: :obj:`0.6`)
        negative_slope (float, optional): LeakyReLU slope. (default: :obj:`0.2`)
        bias (bool, optional): add a zero-initialised bias. (default: :obj:`True`)

    Shapes:
        - **input:** node features :math:`(|\mathcal{V}|, F_{in})`, edge indices :math:`(2, |\mathcal{E}|)`
        - **output:** :math:`(|\mathcal{V}|, F_{out})`
    """

    def __init__(self, in_channels: int, out_channels: int, heads: int = 1, dropout: float = 0.6,
                 negative_slope: float = 0.2, bias: bool = True, **kwargs):
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        drop_generated_sources(type(self))  # PyG's generated modules: not left in the temp folder
        if out_channels % heads:
            raise ValueError(f"Expected out_channels divisible by heads (got {out_channels} and {heads})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.heads = heads
        self.head_channels = out_channels // heads
        self.dropout = dropout
        self.negative_slope = negative_slope
        self.lin = Linear(in_channels, out_channels, bias=False, weight_initializer="glorot")
        self.att_src = Parameter(torch.empty(1, heads, self.head_channels))
        self.att_dst = Parameter(torch.empty(1, heads, self.head_channels))
        if bias:
            self.bias = Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin.reset_parameters()
        bound = math.sqrt(6.0 / (2 * self.head_channels + 1))  # glorot of a Linear(2d, 1) per head
        torch.nn.init.uniform_(self.att_src, -bound, bound)
        torch.nn.init.uniform_(self.att_dst, -bound, bound)
        zeros(self.bias)

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-node values (N, H, C) and source / target score halves (N, H) each (no dropout here)."""
        z = self.lin(x).view(-1, self.heads, self.head_channels)  # (N, H, C)
        return z, (z * self.att_src).sum(-1), (z * self.att_dst).sum(-1)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = dropout(x, self.dropout, self.training)
        z, score_src, score_dst = self.project(x)
        # Attention weights per edge, softmax over each target's in-edges (as PyG's GATConv does).
        alpha = self.edge_updater(edge_index, score_src=score_src, score_dst=score_dst,
                                  size=(x.size(0), x.size(0)))  # (E, H)
        # The weighted sum itself runs as a fused, chunked scatter rather than ``propagate``: the
        # interactive graph is the largest of PCGNet, and the generic path keeps two (E, H, C) tensors.
        out = weighted_scatter(z, alpha, edge_index).reshape(-1, self.out_channels)
        if self.bias is not None:
            out = out + self.bias
        return out

    def forward_targets(self, z_src: Tensor, score_src: Tensor, score_dst: Tensor, mask: Tensor) -> Tensor:
        """Outputs for T targets only, from their padded (T, K) sources as given by ``project`` (eval mode:
        the input dropout is the caller's business). Used by streaming with cached source projections.
        """
        out = dense_target_attention(z_src, score_src, score_dst, mask, self.negative_slope)
        return out + self.bias if self.bias is not None else out

    def edge_update(self, score_src_j: Tensor, score_dst_i: Tensor, index: Tensor, ptr: Tensor | None,
                    size_i: int | None) -> Tensor:
        alpha = F.leaky_relu(score_src_j + score_dst_i, self.negative_slope)
        return softmax(alpha, index, ptr, size_i)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, heads={self.heads})"
