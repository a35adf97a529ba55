"""``--web``: feeds the dashboard's hub (stream/web/) with every event, and pushes the latency and queue
figures the terminal UI shows (computed by the same :class:`~stream.sinks.tui.TuiModel`) once a second.

Delivery to browsers happens in the server's per-page tasks; this sink only serialises and enqueues, so
it keeps up whatever the browsers do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from ..params import UiParams, WebParams
from ..web.hub import DashboardHub
from .base import Sink, SinkFrame
from .jsonl import frame_json
from .tui import TuiModel


class WebSink(Sink):
    """Events -> the dashboard hub.

    Args:
        hub: where pages read from.
        params: the figures' push period.
        ui: the latency and rate windows (the same as the terminal UI's).
        queue_depths: called for each figures message.
    """

    name = "web"

    def __init__(self, hub: DashboardHub, params: WebParams | None = None, ui: UiParams | None = None, *,
                 queue_depths: Callable[[], Mapping[str, int]] | None = None, worker_id: str | None = None,
                 maxsize: int = 4096) -> None:
        super().__init__(maxsize=maxsize)
        self.hub = hub
        self.params = params or WebParams()
        self.figures = TuiModel(ui or UiParams())
        self.queue_depths = queue_depths or (lambda: {})
        self.worker_id = worker_id
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick(), name="stream[-].web.figures")

    async def handle(self, frame: SinkFrame) -> None:
        self.figures.add(frame)
        self.hub.publish(frame_json(frame, self.worker_id))

    def push_figures(self, running: bool = True) -> None:
        s = self.figures.snapshot(self.queue_depths())
        self.hub.publish_transient({
            "type": "figures", "running": running, "latency_p50_ms": s.latency_p50_ms,
            "latency_p95_ms": s.latency_p95_ms, "utterances_per_s": round(s.utterances_per_s, 3),
            "events": s.events, "queues": dict(s.queue_depths),
            "dropped": self.inbox.dropped})

    async def _tick(self) -> None:
        while True:
            self.push_figures()
            await asyncio.sleep(self.params.figures_period_s)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        self.push_figures(running=False)
