"""Helpers for tests, benchmarks and bug reports: a tiny deterministic causal checkpoint.

The real model (``checkpoints/default``) is trained on MELD; plumbing tests and latency benchmarks need
only a causal PCGNet with the right interfaces, made here from a fixed seed in well under a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .sinks.base import Sink, SinkFrame
from .sinks.jsonl import frame_json


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


class CollectSink(Sink):
    """A sink that keeps every event object in memory (tests and bug reproductions)."""

    name = "collect"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict[str, Any]] = []

    async def handle(self, frame: SinkFrame) -> None:
        self.events.append(frame_json(frame))


def replay_events(checkpoint: str | Path, folder: str | Path, *, speed: float = 0.0,
                  session_id: str | None = None) -> list[dict[str, Any]]:
    """Replay a recorded session folder through a fresh runtime; returns every event object, in order.

    The shortest reproduction of a live-analyzer bug: ``replay_events("checkpoints/default", "runs/x")``.
    """
    import asyncio

    from .analyzer import load_analyzer
    from .capture.replay import ReplaySource
    from .params import LiveParams
    from .runtime import Runtime
    from .sinks.base import SinkSet

    async def go() -> list[dict[str, Any]]:
        params = LiveParams()
        sink = CollectSink()
        rt = Runtime(load_analyzer(checkpoint, params), SinkSet([sink]), params)
        rt.add_source(ReplaySource(folder, speed=speed, session_id=session_id), finite=True)
        await rt.run()
        return list(sink.events)

    return asyncio.run(go())
