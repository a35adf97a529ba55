"""The persona-infused graph attention operator of PCGNet (spec 3.5)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn import Parameter
from torch_geometric.nn import MessagePassing
from torch_geometric.nn.dense.linear import Linear
from torch_geometric.nn.inits import zeros
from torch_geometric.utils import add_self_loops, remove_self_loops, softmax

from pcgnet.layers.functional import dense_target_attention
from pcgnet.layers.pyg_templates import drop_generated_sources


class PersonaGATConv(MessagePassing):
    r"""Graph attention whose scores come from gated persona keys (Tu et al., SIGIR 2024).

    For every head :math:`k` the content of a node only enters the score through a scalar gate:

    .. math::
        g_k(i) = \mathbf{w}_k^\top \mathbf{x}_i + \beta_k, \qquad
        \mathbf{q}_k(i) = g_k(i)\, \mathbf{Q}_k \boldsymbol{\pi}_i, \qquad
        \mathbf{z}_k(i) = \mathbf{V}_k \mathbf{x}_i

    .. math::
        \alpha_k(j, i) = \mathrm{softmax}_{j \in \mathcal{N}(i) \cup \{i\}}
        \Big(\mathrm{LeakyReLU}_{0.2}\big(\mathbf{a}_k^\top [\mathbf{q}_k(j) \,\Vert\, \mathbf{q}_k(i)]\big)\Big),
        \qquad \mathbf{x}'_i = \big\Vert_k \sum_j \alpha_k(j, i)\, \mathbf{z}_k(j) + \mathbf{b}

    The poster writes the score without the gate and with ReLU; the original code (authoritative) uses the
    gate and LeakyReLU(0.2), as here. There is no attention dropout (the original's argument is unused).

    Args:
        in_channels (int): size of the content features :math:`\mathbf{x}`.
        persona_channels (int): size of the (transformed) persona vectors :math:`\boldsymbol{\pi}`.
        out_channels (int): output size, split evenly over the heads.
        heads (int, optional): number of attention heads. (default: :obj:`1`)
        negative_slope (float, optional): LeakyReLU slope. (default: :obj:`0.2`)
        add_self_loops (bool, optional): replace any self-loops by exactly one per node, as the original
            layer does. (default: :obj:`True`)
        bias (bool, optional): add a zero-initialised bias. (default: :obj:`True`)

    Shapes:
        - **input:** content :math:`(|\mathcal{V}|, F_{in})`, persona :math:`(|\mathcal{V}|, P)`,
          edge indices :math:`(2, |\mathcal{E}|)`
        - **output:** :math:`(|\mathcal{V}|, F_{out})`
    """

    def __init__(self, in_channels: int, persona_channels: int, out_channels: int, heads: int = 1,
                 negative_slope: float = 0.2, add_self_loops: bool = True, bias: bool = True, **kwargs):
        kwargs.setdefault("aggr", "add")
        super().__init__(node_dim=0, **kwargs)
        drop_generated_sources(type(self))  # PyG's generated modules: not left in the temp folder
        if out_channels % heads:
            raise ValueError(f"Expected out_channels divisible by heads (got {out_channels} and {heads})")
        self.in_channels = in_channels
        self.persona_channels = persona_channels
        self.out_channels = out_channels
        self.heads = heads
        self.head_channels = out_channels // heads
        self.negative_slope = negative_slope
        self.add_self_loops = add_self_loops
        # The H per-head scalar gates and projections are stacked; same parameter count as the original's
        # per-head ModuleLists.
        self.lin_gate = Linear(in_channels, heads, bias=True, weight_initializer="glorot")
        self.lin_persona = Linear(persona_channels, out_channels, bias=False, weight_initializer="glorot")
        self.lin_value = Linear(in_channels, out_channels, bias=False, weight_initializer="glorot")
        # a_k = [att_src_k || att_dst_k] in R^{2 d}: the source half scores q(j), the target half q(i).
        self.att_src = Parameter(torch.empty(1, heads, self.head_channels))
        self.att_dst = Parameter(torch.empty(1, heads, self.head_channels))
        if bias:
            self.bias = Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin_gate.reset_parameters()
        self.lin_persona.reset_parameters()
        self.lin_value.reset_parameters()
        # Glorot of the original's per-head Linear(2d, 1) attention vector.
        bound = math.sqrt(6.0 / (2 * self.head_channels + 1))
        torch.nn.init.uniform_(self.att_src, -bound, bound)
        torch.nn.init.uniform_(self.att_dst, -bound, bound)
        zeros(self.bias)

    def project(self, x: Tensor, persona: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-node values (N, H, C) and source / target score halves (N, H) each."""
        H, C = self.heads, self.head_channels
        # Persona keys gated by a scalar computed from the content of the same node.
        gate = self.lin_gate(x).unsqueeze(-1)  # (N, H, 1)
        q = self.lin_persona(persona).view(-1, H, C) * gate  # (N, H, C)
        z = self.lin_value(x).view(-1, H, C)  # (N, H, C)
        # a^T [q_j || q_i] splits into a per-source and a per-target scalar: no per-edge concatenation.
        return z, (q * self.att_src).sum(-1), (q * self.att_dst).sum(-1)

    def forward(self, x: Tensor, persona: Tensor, edge_index: Tensor) -> Tensor:
        z, score_src, score_dst = self.project(x, persona)
        if self.add_self_loops:
            edge_index, _ = remove_self_loops(edge_index)
            edge_index, _ = add_self_loops(edge_index, num_nodes=x.size(0))
        out = self.propagate(edge_index, z=z, score_src=score_src, score_dst=score_dst,
                             size=(x.size(0), x.size(0)))  # (N, H, C)
        out = out.reshape(-1, self.out_channels)
        if self.bias is not None:
            out = out + self.bias
        return out

    def forward_targets(self, z_src: Tensor, score_src: Tensor, score_dst: Tensor, mask: Tensor) -> Tensor:
        """Outputs for T targets only, from their padded (T, K) sources as given by ``project``.

        The caller includes each target itself among its sources (the self-loop). Used by streaming,
        where only the newest utterance needs an output and the sources' projections are cached.
        """
        out = dense_target_attention(z_src, score_src, score_dst, mask, self.negative_slope)
        return out + self.bias if self.bias is not None else out

    def message(self, z_j: Tensor, score_src_j: Tensor, score_dst_i: Tensor, index: Tensor,
                ptr: Tensor | None, size_i: int | None) -> Tensor:
        alpha = F.leaky_relu(score_src_j + score_dst_i, self.negative_slope)
        alpha = softmax(alpha, index, ptr, size_i)  # over all incoming edges of the target
        return z_j * alpha.unsqueeze(-1)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.in_channels}, {self.out_channels}, "
                f"persona={self.persona_channels}, heads={self.heads})")
