"""Broker outage: kill the real mosquitto while events are produced, restart it on the same port.

Events go through the on-disk spool and :class:`SpoolPublisher`; a persistent-session subscriber
(``clean_start=False``, session expiry) must receive every event at least once, first copies in order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from pathlib import Path

import aiomqtt
import pytest

from stream.mqtt.backoff import Backoff
from stream.mqtt.client import install_loop_exception_handler
from stream.mqtt.publisher import SpoolPublisher
from stream.mqtt.settings import MqttSettings
from stream.mqtt.spool import Spool

from .subscriber import persistent_subscriber

pytestmark = [pytest.mark.mqtt]

TOPIC = "pcgnet/s1/emotion"


def test_no_event_lost_across_broker_kill(broker_factory, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO)
    asyncio.run(_outage(broker_factory, tmp_path, caplog))


async def _outage(broker_factory, tmp_path: Path, caplog) -> None:
    install_loop_exception_handler()
    broker = broker_factory(persistence=True)
    broker.start()
    pub_settings = MqttSettings.from_url(broker.url, client_id="analyzer", env={})
    sub_settings = MqttSettings.from_url(broker.url, client_id="robot-1", env={})

    spool = Spool(tmp_path / "spool", max_bytes=1 << 20)
    publisher = SpoolPublisher(spool, publish_timeout_s=2.0, backoff=Backoff(initial_s=0.05, max_s=0.5),
                               label=pub_settings.redacted_url())
    got: list[str] = []
    ready = asyncio.Event()
    n = 300
    produced: list[str] = []
    async with asyncio.TaskGroup() as tg:
        sub = tg.create_task(persistent_subscriber(sub_settings, [TOPIC], got, ready, lambda e: e["event_id"]))
        await asyncio.wait_for(ready.wait(), 10)
        pub = tg.create_task(publisher.run(lambda: aiomqtt.Client(**pub_settings.client_kwargs())))
        rng = random.Random(3)
        for i in range(n):
            if i == 100:
                broker.kill()  # SIGKILL: no goodbye, sockets just die
            if i == 200:
                await asyncio.sleep(1.5)  # a longer outage: the publisher retries with back-off meanwhile
                broker.start()  # same port, same persistence file
            eid = f"e{i:04d}"
            produced.append(eid)
            publisher.submit(TOPIC, json.dumps({"event_id": eid, "i": i}).encode())
            await asyncio.sleep(rng.uniform(0.002, 0.01))
        for _ in range(600):  # up to 30 s for the backlog to drain
            if not len(spool) and set(got) == set(produced):
                break
            await asyncio.sleep(0.05)
        pub.cancel()
        sub.cancel()

    unique_in_order = list(dict.fromkeys(got))
    lost = sorted(set(produced) - set(got))
    print(f"\nbroker outage: produced {len(produced)}, received {len(got)} "
          f"({len(got) - len(set(got))} duplicates), lost {len(lost)}, reconnects {publisher.reconnects}, "
          f"spool pending {len(spool)}")
    assert lost == []
    assert unique_in_order == produced  # first copies arrive in production order
    assert len(spool) == 0 and spool.dropped == 0
    assert publisher.reconnects >= 1
    assert any("unavailable" in r.getMessage() for r in caplog.records)
    spool.close()
