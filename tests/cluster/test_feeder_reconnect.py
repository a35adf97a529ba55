"""The feeder is on the one reconnecting MQTT loop: a broker restart mid-conversation loses no input."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from stream.cluster.feeder import Feeder
from stream.cluster.worker import Worker
from stream.params import WorkerParams
from tests.contract import check_events
from tests.reliability.subscriber import persistent_subscriber
from tests.support.broker import Mosquitto
from tests.support.toy_backend import ToyBackend

from .test_protocol import reference, utt

pytestmark = pytest.mark.mqtt


def test_feeder_and_worker_ride_out_a_broker_restart(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker", persistence=True).start()  # retained state survives the restart
    settings = broker.settings

    async def main() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        ready = asyncio.Event()
        robot = asyncio.create_task(persistent_subscriber(settings.with_client_id("robot"), ["pcgnet/+/emotion"],
                                                          got, ready))
        worker = Worker(settings, ToyBackend("a"), WorkerParams("a"))
        serving = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(ready.wait(), 10)
            await asyncio.wait_for(worker.connected.wait(), 10)
            async with Feeder(settings, resend_after_s=1.0) as feeder:
                for k in range(3):
                    await feeder.send("bumpy", utt(k))
                assert await feeder.wait_acked(10)
                await asyncio.to_thread(broker.stop)
                for _ in range(200):  # until the feeder knows: from then on only its re-send can deliver
                    if not feeder.connected:
                        break
                    await asyncio.sleep(0.05)
                assert not feeder.connected
                resent = feeder.stats.resent
                for k in range(3, 6):  # sent while the broker is down: kept until acknowledged
                    await feeder.send("bumpy", utt(k))
                await asyncio.to_thread(broker.start)
                assert await feeder.wait_acked(30), "inputs sent during the outage were never acknowledged"
                assert feeder.stats.resent - resent >= 3  # they went out again, not from a client-side queue
                for _ in range(200):
                    if len({e["utterance_id"] for e in got}) == 6:
                        break
                    await asyncio.sleep(0.05)
        finally:
            worker.stop()
            await asyncio.wait_for(serving, 15)
            robot.cancel()
            broker.stop()
        return got

    got = asyncio.run(main())
    first: dict[str, dict[str, Any]] = {}
    for e in check_events(got):
        first.setdefault(e["utterance_id"], e)
    assert sorted(first) == [f"u{k:04d}" for k in range(6)]
    assert len({e["event_id"] for e in got}) == 6  # duplicates, if any, carry the same id
    ref = asyncio.run(reference("bumpy", 6))
    assert [first[f"u{k:04d}"]["scores"] for k in range(6)] == ref  # resumed from the retained state
