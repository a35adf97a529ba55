"""Overload: a source far faster than inference and a sink far slower than the analyzer.

Policy under test (docs/reliability.md): the per-session utterance queue blocks the source
(back-pressure: no utterance lost, bounded memory); each sink's inbox drops its oldest events beyond its
bound (counted and logged) so a slow consumer can never stall the analysis or other sinks; the queue
depths are visible (``Runtime.queue_depths()``, shown in the TUI footer).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stream.frames import Utterance
from stream.params import LiveParams, QueueParams
from stream.sinks.base import Sink
from stream.sinks.jsonl import JsonlSink
from tests.waiting import until

N = 150


class SlowSink(Sink):
    """A consumer that needs 50 ms per event (a congested network link)."""

    name = "slow"

    async def handle(self, frame: Any) -> None:
        await asyncio.sleep(0.05)


class Firehose:
    """Submits N utterances as fast as the runtime accepts them, noting how full the session queue was before
    each submit (a submit that finds the queue full must wait: that is back-pressure, seen without a clock)."""

    name = "firehose"

    def __init__(self) -> None:
        self.depth: Callable[[], int] = lambda: 0
        self.depth_before: list[int] = []

    async def run(self, sink: Any) -> None:
        for i in range(N):
            self.depth_before.append(self.depth())
            await sink.submit(Utterance(session_id="hot", utterance_id=f"u{i:04d}", speaker="AB"[i % 2],
                                        t_start=float(i), t_end=i + 0.5, text=f"sentence number {i} of the flood"))
        sink.end_session("hot")


def test_back_pressure_and_drop_oldest(runtime_factory, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.WARNING)
    params = LiveParams(queues=QueueParams(utterances_per_session=8, sink_events=32),
                        drain_timeout_s=1.0, cancel_timeout_s=2.0)
    slow = SlowSink(maxsize=params.queues.sink_events)
    events = tmp_path / "ev.jsonl"
    src = Firehose()
    depths: list[dict[str, int]] = []

    async def main() -> int:
        rt = runtime_factory([JsonlSink(events), slow], params)
        src.depth = lambda: rt.queue_depths().get("session[hot]", 0)
        rt.add_source(src, finite=True)

        async def watch() -> None:
            while True:
                depths.append(dict(rt.queue_depths()))
                await asyncio.sleep(0.02)

        w = asyncio.create_task(watch())
        try:
            return await rt.run()
        finally:
            w.cancel()

    assert asyncio.run(main()) == 0
    emo = [json.loads(x) for x in events.read_text().splitlines() if '"emotion"' in x]
    # back-pressure: nothing lost on the blocking link, in order
    assert [e["utterance_id"] for e in emo] == [f"u{i:04d}" for i in range(N)]
    held = sum(d >= 8 for d in src.depth_before)
    assert held > 0  # the source found the session queue full: with the bound checked below, it had to wait
    # bounded memory: no queue ever held more than its bound
    session_q = max(d.get("session[hot]", 0) for d in depths)
    slow_q = max(d.get("sink.slow", 0) for d in depths)
    assert 0 < session_q <= 8 and 0 < slow_q <= 32, (session_q, slow_q)
    # the slow consumer shed its oldest events, counted and logged, without slowing the analysis
    assert slow.inbox.dropped > 0
    assert any("queue sink.slow is full" in r.getMessage() for r in caplog.records)
    print(f"\noverload: {N} utterances, all analysed in order; {held} submits found the session queue full; "
          f"max depth session={session_q}/8 slow-sink={slow_q}/32; slow sink delivered {slow.delivered}, "
          f"dropped {slow.inbox.dropped} (oldest first)")


def test_overload_is_visible_on_the_status_topic(broker_factory, runtime_factory, tmp_path: Path) -> None:
    import aiomqtt

    from stream.mqtt.client import install_loop_exception_handler
    from stream.mqtt.settings import MqttSettings
    from stream.sinks.mqtt import MqttSink

    broker = broker_factory()
    broker.start()
    settings = MqttSettings.from_url(broker.url, env={})
    params = LiveParams(queues=QueueParams(utterances_per_session=8), drain_timeout_s=5.0, cancel_timeout_s=2.0)
    mqtt = MqttSink(settings, spool_dir=str(tmp_path / "spool"))
    mqtt.status_interval_s = 0.1
    records: list[dict[str, Any]] = []

    async def main() -> int:
        install_loop_exception_handler()
        rt = runtime_factory([mqtt], params)
        mqtt.status_provider = rt.queue_depths
        rt.add_source(Firehose(), finite=True)
        async with aiomqtt.Client(**settings.with_client_id("dashboard").client_kwargs()) as c:
            await c.subscribe("pcgnet/$status/+", qos=1)

            async def collect() -> None:
                async for m in c.messages:
                    records.append(json.loads(bytes(m.payload)))

            col = asyncio.create_task(collect())
            rc = await rt.run()
            await until(lambda: any(r["state"] == "offline" for r in records), "the offline status record")
            col.cancel()
        return rc

    assert asyncio.run(main()) == 0
    online = [r for r in records if r["state"] == "online"]
    assert len(online) >= 3 and records[-1]["state"] == "offline"
    hot = [r["queues"].get("session[hot]", 0) for r in online if "queues" in r]
    assert max(hot) > 0  # the backlog of the flooded session was visible to subscribers
    assert all("spool" in r and "pending" in r["spool"] for r in online)
    print(f"\nstatus topic: {len(online)} online records during the flood, session queue depth seen up to "
          f"{max(hot)}/8, spool {online[-1]['spool']}")
