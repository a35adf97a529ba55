"""A tiny causal checkpoint for plumbing tests and latency benchmarks.

The real model (``checkpoints/default``) is trained on MELD; plumbing tests and latency benchmarks need
only a causal PCGNet with the right interfaces, made here from a fixed seed in well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def make_tiny_checkpoint(path: str | Path, *, seed: int = 3, hidden: int = 16, n_speakers: int = 4,
                         window_utterances: int = 16, extractor: str = "minilm-l6", dim: int = 384,
                         persona: dict[str, Any] | None = None) -> Path:
    """Save a randomly initialised causal text-only PCGNet (MELD labels) to ``path``; returns the path."""
    import torch

    from pcgnet.checkpoint import save_checkpoint
    from pcgnet.config import MELD_LABELS, PCGNetConfig
    from pcgnet.model import PCGNet

    cfg = PCGNetConfig(labels=MELD_LABELS, modalities=("t",), dims={"t": dim}, n_speakers=n_speakers,
                       hidden=hidden, persona_heads=4, interactive_heads=4, causal=True,
                       window_utterances=window_utterances)
    torch.manual_seed(seed)
    model = PCGNet(cfg).eval()
    return save_checkpoint(path, model, extractors={"t": {"name": extractor, "dim": dim}},
                           persona=persona or {"source": "none"}, training={"note": "untrained, for tests"})
