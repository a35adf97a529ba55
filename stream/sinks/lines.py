"""``--no-tui``: one plain line per event on a text stream (stdout), for logs, pipes and CI."""

from __future__ import annotations

import sys
from typing import IO

from ..frames import ErrorFrame, EventKind
from .base import Sink, SinkFrame


def format_line(frame: SinkFrame) -> str | None:
    """One human-readable line for an event (None for events not shown: speaker state)."""
    if isinstance(frame, ErrorFrame):
        return f"[{frame.session_id or '-'}] ERROR {frame.stage}: {frame.message}"
    p = frame.payload
    if frame.kind is EventKind.EMOTION:
        text = p.get("text") or ""
        if len(text) > 60:
            text = text[:57] + "..."
        mods = "+".join(p.get("modalities") or []) or "none"
        return (f"[{p['session']}] {p['t_end']:7.2f}s {p['utterance_id']:>6} {p['speaker']:<10} "
                f"{p['expression']:<10} {p['confidence']:.2f}  v={p['valence']:+.2f} a={p['arousal']:+.2f} "
                f"{mods:<10} {p['latency_ms']:6.0f} ms  {text}")
    if frame.kind is EventKind.SHIFT:
        prob = "?" if p.get("probability") is None else f"{p['probability']:.2f}"
        return (f"[{p['session']}] {p['t_end']:7.2f}s {p['utterance_id']:>6} {p['speaker']:<10} "
                f"SHIFT {p['from']} -> {p['to']} (p={prob}, since {p['previous_utterance_id']})")
    return None


class LinesSink(Sink):
    """Prints :func:`format_line` of each event."""

    name = "lines"

    def __init__(self, stream: IO[str] | None = None, maxsize: int = 4096) -> None:
        super().__init__(maxsize=maxsize)
        self.stream = stream

    async def handle(self, frame: SinkFrame) -> None:
        line = format_line(frame)
        if line is not None:
            out = self.stream or sys.stdout
            out.write(line + "\n")
            out.flush()
