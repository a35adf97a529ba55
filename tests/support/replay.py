"""Replaying a recorded session through a fresh runtime, collecting every event: tests and bug reports."""

from __future__ import annotations

import asyncio
from pathlib import Path

from stream.events import EventPayload
from stream.sinks.base import Sink, SinkFrame, SinkSet
from stream.sinks.jsonl import frame_json


class CollectSink(Sink):
    """A sink that keeps every event object in memory (tests and bug reproductions)."""

    name = "collect"

    def __init__(self) -> None:
        super().__init__()
        self.events: list[EventPayload] = []

    async def handle(self, frame: SinkFrame) -> None:
        self.events.append(frame_json(frame))


def replay_events(checkpoint: str | Path, folder: str | Path, *, speed: float = 0.0,
                  session_id: str | None = None) -> list[EventPayload]:
    """Replay a recorded session folder through a fresh runtime; returns every event object, in order.

    The shortest reproduction of a live-analyzer bug: ``replay_events("checkpoints/default", "runs/x")``.
    """
    from stream.analyzer import load_analyzer  # torch: imported only when a replay is asked for
    from stream.capture.replay import ReplaySource
    from stream.params import LiveParams
    from stream.runtime import Runtime

    async def go() -> list[EventPayload]:
        params = LiveParams()
        sink = CollectSink()
        rt = Runtime(load_analyzer(checkpoint, params), SinkSet([sink]), params)
        rt.add_source(ReplaySource(folder, speed=speed, session_id=session_id), finite=True)
        await rt.run()
        return list(sink.events)

    return asyncio.run(go())
