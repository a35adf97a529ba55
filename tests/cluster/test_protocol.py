"""The coordination protocol against a real mosquitto, with in-process workers and the toy backend."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from stream.cluster.inputs import seq_of
from stream.cluster.records import OwnerRecord
from stream.cluster.worker import Worker
from stream.mqtt.settings import MqttSettings
from stream.mqtt.topics import input_topic, owner_topic
from stream.params import WorkerParams
from tests.contract import check_message
from tests.support.broker import Mosquitto
from tests.support.toy_backend import ToyBackend
from tests.waiting import until

pytestmark = pytest.mark.mqtt


@contextlib.asynccontextmanager
async def workers(settings: MqttSettings, *ids: str, **params: Any) -> AsyncIterator[list[Worker]]:
    ws = [Worker(settings, ToyBackend(w), WorkerParams(w, **params)) for w in ids]
    tasks = [asyncio.get_running_loop().create_task(w.run()) for w in ws]
    try:
        for w in ws:
            await asyncio.wait_for(w.connected.wait(), 10)
        yield ws
    finally:
        for w in ws:
            w.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 15)


class Consumer:
    """A plain subscriber: emotion and error events of every session."""

    def __init__(self, settings: MqttSettings) -> None:
        self.settings = settings.with_client_id("test-consumer")
        self.emotion: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        self._changed = asyncio.Event()

    async def __aenter__(self) -> Consumer:
        self._stack = contextlib.AsyncExitStack()
        self.client = await self._stack.enter_async_context(aiomqtt.Client(**self.settings.client_kwargs()))
        await self.client.subscribe("pcgnet/+/emotion", qos=1)
        await self.client.subscribe("pcgnet/+/error", qos=1)
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def _run(self) -> None:
        async for m in self.client.messages:
            ev = check_message(str(m.topic), bytes(m.payload))  # type: ignore[arg-type]
            (self.emotion if str(m.topic).endswith("/emotion") else self.errors).append(ev)
            self._changed.set()

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._stack.aclose()

    async def wait_for(self, pred: Callable[[], bool], timeout_s: float = 30) -> None:
        async with asyncio.timeout(timeout_s):
            while not pred():
                self._changed.clear()
                await self._changed.wait()


async def publish(settings: MqttSettings, session: str, seq: int | None, payload: bytes | dict[str, Any],
                  seq_text: str | None = None) -> None:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    props = None
    if seq is not None or seq_text is not None:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("seq", seq_text if seq_text is not None else str(seq))]
    async with aiomqtt.Client(**settings.with_client_id(f"pub-{session}").client_kwargs()) as c:
        await c.publish(input_topic(session), data, qos=1, properties=props)


def spy_inputs(w: Worker, handled: list[tuple[str, int | None]]) -> Callable[[str, bytes, aiomqtt.Message], None]:
    """``w._on_input`` that also notes (worker, seq) once the worker has decided on a message: a worker
    decides on arrival, so a dropped input is seen without waiting a fixed time for nothing to happen."""
    inner = w._on_input

    def on_input(topic: str, payload: bytes, message: aiomqtt.Message) -> None:
        inner(topic, payload, message)
        handled.append((w.worker_id, seq_of(message)))
    return on_input


def utt(k: int) -> dict[str, Any]:
    return {"speaker": "AB"[k % 2], "text": f"line {k} of the meeting", "utterance_id": f"u{k:04d}",
            "t_start": float(k), "t_end": k + 0.8}


async def reference(session: str, n: int) -> list[dict[str, float]]:
    from .checks import replay

    ref = await replay(ToyBackend("ref"), {session: [utt(k) for k in range(n)]})
    return [ref[(session, f"u{k:04d}")]["scores"] for k in range(n)]


def test_simultaneous_claims_leave_exactly_one_owner(broker: Mosquitto) -> None:
    async def main() -> None:
        async with workers(broker.settings, "a", "b", "c") as ws:
            sessions = [f"race-{i}" for i in range(8)]
            for s in sessions:
                for w in ws:
                    w._start_claim(s)  # all three claim at once, as if each got a first input

            def settled(s: str) -> bool:  # one owner, every view agrees, the losers let go
                owners = [w.worker_id for w in ws if s in w.local and w.local[s].owned]
                return (len(owners) == 1 and sum(s in w.local for w in ws) == 1
                        and {getattr(w.view.owner(s), "worker", None) for w in ws} == set(owners))

            await until(lambda: all(settled(s) for s in sessions))
            for s in sessions:
                owners = [w.worker_id for w in ws if s in w.local and w.local[s].owned]
                assert len(owners) == 1, (s, owners)
                assert all(s not in w.local for w in ws if w.worker_id != owners[0])
                views = {w.view.owner(s).worker for w in ws}  # type: ignore[union-attr]
                assert views == set(owners)
            lost = sum(w.stats.claims_lost for w in ws)
            assert lost == 2 * len(sessions)

    asyncio.run(main())


def test_fenced_owner_stops_publishing(broker: Mosquitto) -> None:
    async def main() -> None:
        async with Consumer(broker.settings) as consumer, workers(broker.settings, "a", "b") as ws:
            for k in range(3):
                await publish(broker.settings, "fence", k, utt(k))
            await consumer.wait_for(lambda: len(consumer.emotion) == 3)
            owner = next(w for w in ws if "fence" in w.local)
            other = next(w for w in ws if w is not owner)
            # The other (live) worker's life takes over at a higher epoch, as after a partition.
            rec = OwnerRecord.claim("fence", other.worker_id, other.incarnation, owner.local["fence"].claim.epoch + 1)
            async with aiomqtt.Client(**broker.settings.with_client_id("usurper").client_kwargs()) as c:
                await c.publish(owner_topic("fence"), rec.encode(), qos=1, retain=True)
            await until(lambda: "fence" not in owner.local)
            assert owner.stats.fenced == 1
            handled: list[tuple[str, int | None]] = []  # (worker, seq) of every "fence" input a worker took in
            for w in ws:
                w._on_input = spy_inputs(w, handled)  # type: ignore[method-assign]
            await publish(broker.settings, "fence", 3, utt(3))
            await until(lambda: any(seq == 3 for _, seq in handled) or len(consumer.emotion) > 3)
            assert "fence" not in owner.local and "fence" not in other.local  # seq 3 was dropped on arrival
            assert len(consumer.emotion) == 3, "the fenced worker published after losing the conversation"

    asyncio.run(main())


def test_graceful_release_hands_over_with_state(broker: Mosquitto) -> None:
    async def main() -> None:
        ref = await reference("calm", 8)
        async with Consumer(broker.settings) as consumer:
            a = Worker(broker.settings, ToyBackend("a"), WorkerParams("a"))
            a_task = asyncio.get_running_loop().create_task(a.run())
            await asyncio.wait_for(a.connected.wait(), 10)
            for k in range(4):
                await publish(broker.settings, "calm", k, utt(k))
            await consumer.wait_for(lambda: len(consumer.emotion) == 4)
            async with workers(broker.settings, "b") as (b,):
                a.stop()  # SIGTERM path: release what it owns, go offline
                await asyncio.wait_for(a_task, 10)
                assert a.stats.released == 1
                for k in range(4, 8):
                    await publish(broker.settings, "calm", k, utt(k))
                await consumer.wait_for(lambda: len(consumer.emotion) == 8)
                assert b.local["calm"].claim.epoch == 3  # claim 1, release 2, claim 3
        assert [ev["worker_id"] for ev in consumer.emotion] == ["a"] * 4 + ["b"] * 4
        assert [ev["scores"] for ev in consumer.emotion] == ref

    asyncio.run(main())


def test_resumes_from_retained_state_after_every_worker_restarted(broker: Mosquitto) -> None:
    async def main() -> None:
        ref = await reference("phoenix", 6)
        async with Consumer(broker.settings) as consumer:
            async with workers(broker.settings, "solo") as (w,):
                for k in range(3):
                    await publish(broker.settings, "phoenix", k, utt(k))
                await consumer.wait_for(lambda: len(consumer.emotion) == 3)
            async with workers(broker.settings, "solo") as (w2,):  # same id, new life
                for k in range(3, 6):
                    await publish(broker.settings, "phoenix", k, utt(k))
                await consumer.wait_for(lambda: len(consumer.emotion) == 6)
        assert [ev["scores"] for ev in consumer.emotion] == ref

    asyncio.run(main())


def test_bad_inputs_give_error_events_and_valid_traffic_continues(broker: Mosquitto) -> None:
    async def main() -> None:
        async with Consumer(broker.settings) as consumer, workers(broker.settings, "a"):
            await publish(broker.settings, "rough", 0, utt(0))
            await publish(broker.settings, "rough", 1, b"{not json")
            await publish(broker.settings, "rough", None, utt(9), seq_text="-3")
            await publish(broker.settings, "rough", 2, {"speaker": "A", "text": "hi", "extra": 1})
            await publish(broker.settings, "rough", 3, utt(3))
            await consumer.wait_for(lambda: len(consumer.emotion) == 2 and len(consumer.errors) >= 3)
        assert [ev["utterance_id"] for ev in consumer.emotion] == ["u0000", "u0003"]
        text = " | ".join(e["message"] for e in consumer.errors)
        assert "seq 1" in text and "invalid JSON" in text
        assert "seq=" in text and "unknown field" in text

    asyncio.run(main())


def test_missing_input_is_skipped_after_the_gap_timeout(broker: Mosquitto) -> None:
    async def main() -> None:
        async with Consumer(broker.settings) as consumer, workers(broker.settings, "a", gap_timeout_s=0.5):
            await publish(broker.settings, "holey", 0, utt(0))
            await publish(broker.settings, "holey", 2, utt(2))  # seq 1 never comes
            await consumer.wait_for(lambda: len(consumer.emotion) == 2)
        assert [ev["utterance_id"] for ev in consumer.emotion] == ["u0000", "u0002"]
        assert any("skipped 1 missing input" in e["message"] for e in consumer.errors)

    asyncio.run(main())


def test_feeder_resends_what_a_new_owner_still_needs(broker: Mosquitto) -> None:
    """Acks drive the publisher: a new owner that resumed from an older state gets the missing inputs again."""
    from stream.cluster.feeder import Feeder
    from stream.cluster.records import AckRecord
    from stream.mqtt.topics import ack_topic

    async def main() -> None:
        seen: list[int] = []
        async with aiomqtt.Client(**broker.settings.with_client_id("spy").client_kwargs()) as spy:
            await spy.subscribe(input_topic("fed"), qos=1)

            async def watch() -> None:
                async for m in spy.messages:
                    seen.append(int(dict(m.properties.UserProperty)["seq"]))  # type: ignore[union-attr]

            task = asyncio.get_running_loop().create_task(watch())
            async with Feeder(broker.settings, resend_after_s=30) as feeder, \
                    aiomqtt.Client(**broker.settings.with_client_id("fake-owner").client_kwargs()) as owner:
                for k in range(5):
                    await feeder.send("fed", utt(k))

                async def ack(epoch: int, worker: str, next_seq: int) -> None:
                    await owner.publish(ack_topic("fed"), AckRecord("fed", next_seq, epoch, worker).encode(), qos=1)

                await ack(1, "w1", 5)
                assert await feeder.wait_acked(5)
                await until(lambda: len(seen) == 5)
                await ack(2, "w2", 3)  # resumed from an older state: needs 3 and 4 again
                await until(lambda: len(seen) == 7)
                assert seen[5:] == [3, 4]
                await ack(1, "w1", 5)  # a deposed owner's ack is ignored
                await ack(2, "w2", 5)
                assert await feeder.wait_acked(5)
                assert feeder.stats.new_epochs == 1 and feeder.stats.resent == 2
            task.cancel()

    asyncio.run(main())


def test_worker_comes_back_after_a_broker_restart(broker: Mosquitto) -> None:
    """Broker killed and restarted on the same port: the worker reconnects as a new life and serves again."""

    async def main() -> None:
        async with workers(broker.settings, "a", gap_timeout_s=0.5) as (w,):
            async with Consumer(broker.settings) as consumer:
                await publish(broker.settings, "boom", 0, utt(0))
                await consumer.wait_for(lambda: len(consumer.emotion) == 1)
            life = w.incarnation
            broker.proc.kill()
            await asyncio.to_thread(broker.proc.wait)
            await until(lambda: not w.connected.is_set())
            await asyncio.to_thread(broker.start)
            await until(lambda: w.connected.is_set(), timeout_s=20)
            assert w.incarnation != life
            async with Consumer(broker.settings) as consumer:
                await publish(broker.settings, "boom", 1, utt(1))  # retained state died with the broker
                await publish(broker.settings, "after", 0, utt(0))
                await consumer.wait_for(lambda: len(consumer.emotion) == 2)
                await consumer.wait_for(lambda: any("skipped 1 missing" in e["message"] for e in consumer.errors))

    asyncio.run(main())
