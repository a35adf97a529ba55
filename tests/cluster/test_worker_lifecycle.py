"""A worker's own lifetime: its backend's background work runs under the worker's supervisor, and a
backend that dies stops the worker (it exits, its partitions go to the others) instead of leaving it
pulling inputs with steps that can never finish."""

from __future__ import annotations

import asyncio

import pytest

from stream.cluster.jetstream import Layout
from stream.cluster.worker import Worker
from stream.params import WorkerParams
from stream.sinks.mqtt import MqttSink
from tests.support.broker import Mosquitto
from tests.support.nats import NatsServer
from tests.support.toy_backend import ToyBackend

pytestmark = pytest.mark.mqtt


class DyingBackend(ToyBackend):
    """The toy backend whose micro-batchers fail once the worker pulls."""

    def __init__(self, worker_id: str, ready: asyncio.Event) -> None:
        super().__init__(worker_id)
        self.ready = ready

    async def run(self) -> None:
        await self.ready.wait()
        raise RuntimeError("batcher thread died")


def test_a_dying_backend_stops_the_worker(nats_server: NatsServer, broker: Mosquitto) -> None:
    async def go() -> Worker:
        ready = asyncio.Event()
        worker = Worker(nats_server.url, Layout(partitions=2), DyingBackend("a", ready),
                        MqttSink(broker.settings, worker_id="a"), WorkerParams("a"))
        run = asyncio.get_running_loop().create_task(worker.run())
        await asyncio.wait_for(worker.ready.wait(), 20)
        ready.set()
        await asyncio.wait_for(run, 30)  # returns by itself: nobody called stop()
        return worker

    worker = asyncio.run(go())
    assert worker.fatal is not None and "batcher thread died" in worker.fatal
