"""The sink interface: where events go (MQTT, terminal, JSONL log, ...).

A sink never blocks the analyzer: :meth:`Sink.offer` enqueues into the sink's own bounded channel
(full policy: drop oldest, counted), and the sink's :meth:`Sink.run` task delivers at its own pace. At
the end of a run :meth:`Sink.close` lets ``run`` drain what is queued and return.

To add a sink, subclass :class:`Sink` and implement :meth:`Sink.handle` (and optionally
:meth:`Sink.start` / :meth:`Sink.stop`); hand an instance to the runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..channel import Channel, FullPolicy
from ..frames import ErrorFrame, EventFrame

log = logging.getLogger(__name__)

SinkFrame = EventFrame | ErrorFrame


class Sink:
    """Base class: a bounded inbox and a delivery task.

    Args:
        name: shown in logs and the queue-depth footer.
        maxsize: inbox size; when full the oldest event is dropped (and counted).
    """

    name = "sink"

    def __init__(self, name: str | None = None, maxsize: int = 4096) -> None:
        if name is not None:
            self.name = name
        self.inbox: Channel[SinkFrame] = Channel(f"sink.{self.name}", maxsize, FullPolicy.DROP_OLDEST)
        self.delivered = 0

    def offer(self, frame: SinkFrame) -> None:
        """Enqueue without waiting (never blocks the analyzer)."""
        if not self.inbox.closed:
            self.inbox.put_nowait(frame)

    async def start(self) -> None:
        """Open resources (called inside the running loop before ``run``)."""

    async def handle(self, frame: SinkFrame) -> None:
        """Deliver one frame."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Release resources after the inbox is drained (or on cancellation)."""

    async def run(self) -> None:
        await self.start()
        try:
            async for frame in self.inbox:
                try:
                    await self.handle(frame)
                    self.delivered += 1
                except Exception as e:  # noqa: BLE001 - one undeliverable event must not stop the sink
                    log.error("sink %s: could not deliver an event: %s: %s", self.name, type(e).__name__, e)
        finally:
            await self.stop()

    def close(self) -> None:
        """No more events; ``run`` returns once the inbox is drained."""
        self.inbox.close()


class SinkSet:
    """Fan-out of every frame to every sink."""

    def __init__(self, sinks: Iterable[Sink] = ()) -> None:
        self.sinks: list[Sink] = list(sinks)

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def emit(self, frames: Iterable[SinkFrame]) -> None:
        for f in frames:
            for s in self.sinks:
                s.offer(f)

    def close(self) -> None:
        for s in self.sinks:
            s.close()

    def depths(self) -> dict[str, int]:
        return {s.inbox.name: len(s.inbox) for s in self.sinks}
