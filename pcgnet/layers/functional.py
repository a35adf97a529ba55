"""Functional helpers of PCGNet's operators: target-only attention and a faster dropout.

Target-only attention: when only a few target nodes need outputs (the newest utterance in streaming), gathering each target's
sources into a padded (T, K) block and doing a masked softmax is far cheaper than message passing over a
graph, and it computes the same function: LeakyReLU scores, softmax over the target's in-edges, weighted
sum of the sources' values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dense_target_attention(z_src: Tensor, score_src: Tensor, score_dst: Tensor, mask: Tensor,
                           negative_slope: float) -> Tensor:
    """Attention of T targets over K padded sources each.

    Args:
        z_src: (T, K, H, C) source values.
        score_src: (T, K, H) per-source score halves.
        score_dst: (T, H) per-target score halves.
        mask: (T, K) True on real sources; every target needs at least one.
        negative_slope: LeakyReLU slope.

    Returns:
        (T, H * C) aggregated values (no bias).
    """
    e = F.leaky_relu(score_src + score_dst.unsqueeze(1), negative_slope)  # (T, K, H)
    e = e.masked_fill(~mask.unsqueeze(-1), float("-inf"))
    alpha = e.softmax(dim=1)  # over each target's sources
    return (alpha.unsqueeze(-1) * z_src).sum(1).reshape(z_src.size(0), -1)


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout, as ``F.dropout``, with the mask drawn by ``rand_like``.

    On CPU ``F.dropout``'s Bernoulli sampling costs about twice as much as a uniform draw and a compare;
    PCGNet drops out large tensors (the 6N x h interactive graph input, twice), so this matters for
    training throughput. Same distribution, different random stream.
    """
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    keep = torch.rand_like(x) >= p
    return x * keep * (1.0 / (1.0 - p))
