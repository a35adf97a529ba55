"""The JetStream primitives against a real nats-server: partitions, de-duplication, pinned pulls, CAS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import paho.mqtt.client as paho
import pytest
from nats.js.errors import KeyNotFoundError

from stream.cluster.jetstream import (
    Layout,
    PinLost,
    PinnedPuller,
    StoredInput,
    create_all,
    next_input,
    publish_input,
    session_of,
    subject_token,
)
from stream.cluster.progress import Fenced, Progress, ProgressStore
from stream.cluster.statecodec import StateBlob
from tests.support.nats import NatsServer

LAYOUT = Layout(partitions=4, priority_timeout_s=1.0, ack_wait_s=2.0)


def run(server: NatsServer, body: Callable[[Any], Awaitable[None]], layout: Layout = LAYOUT) -> None:
    async def main() -> None:
        nc = await nats.connect(server.url)
        try:
            await create_all(nc, layout)
            async with asyncio.timeout(30):
                await body(nc)
        finally:
            await nc.close()
    asyncio.run(main())


async def take(it: AsyncIterator[Any], n: int) -> list[Any]:
    return [await anext(it) for _ in range(n)]


@pytest.mark.parametrize("session", ["m-1", "a.b", "Ünïcode meeting", "x*y", "a/b+c#"])
def test_subject_token_round_trips(session: str) -> None:
    token = subject_token(session)
    assert " " not in token and "/" not in token.replace("//", "") and "." not in token
    assert session_of(token) == session


def test_inputs_are_partitioned_by_session_and_resends_absorbed(nats_server: NatsServer) -> None:
    async def body(nc: Any) -> None:
        js = nc.jetstream()
        seqs = {}
        for s in (f"meeting-{i}" for i in range(12)):
            seqs[s] = await publish_input(js, LAYOUT, s, b'{"speaker":"A","text":"hi"}', "u0001")
        again = await publish_input(js, LAYOUT, "meeting-3", b'{"speaker":"A","text":"hi"}', "u0001")
        assert again == seqs["meeting-3"], "a re-send with the same message id must be absorbed"
        info = await js.stream_info(LAYOUT.stream)
        assert info.state.messages == 12
        parts = {}
        for s, seq in seqs.items():
            got = await next_input(js, LAYOUT, f"{LAYOUT.root}-in.*.{subject_token(s)}", seq)
            assert got is not None and got.seq == seq and got.session == s
            parts[s] = int(got.subject.split(".")[1])
        assert len(set(parts.values())) > 1, f"every session landed in one partition: {parts}"
        assert all(0 <= p < LAYOUT.partitions for p in parts.values())
        # the same session always lands in the same partition
        seq2 = await publish_input(js, LAYOUT, "meeting-5", b'{"speaker":"B","text":"yo"}', "u0002")
        got = await next_input(js, LAYOUT, LAYOUT.stored_subject(parts["meeting-5"], subject_token("meeting-5")),
                               seqs["meeting-5"] + 1)
        assert got is not None and got.seq == seq2
    run(nats_server, body)


def test_mqtt_publish_lands_in_the_partitioned_stream(nats_server: NatsServer) -> None:
    """NATS's MQTT 3.1.1 listener: the documented input topic works unchanged."""
    async def body(nc: Any) -> None:
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="pub", protocol=paho.MQTTv311)
        c.connect("127.0.0.1", nats_server.mqtt_port or 0)
        c.loop_start()
        try:
            info = c.publish("pcgnet/team.sync/in/utterance", json.dumps({"speaker": "A", "text": "hello"}), qos=1)
            await asyncio.to_thread(info.wait_for_publish, 10)
        finally:
            c.loop_stop()
            c.disconnect()
        js = nc.jetstream()
        sub = await js.pull_subscribe(f"{LAYOUT.root}-in.*.{subject_token('team.sync')}", stream=LAYOUT.stream)
        (m,) = await sub.fetch(1, timeout=10)  # the server waits for the input to be stored
        assert StoredInput(m.metadata.sequence.stream, m.subject, m.data).session == "team.sync"
        assert json.loads(m.data)["text"] == "hello" and m.subject.split(".")[1] in {"0", "1", "2", "3"}
    run(nats_server, body)


def test_pinned_partition_fails_over_and_refuses_the_stale_puller(nats_server: NatsServer) -> None:
    async def body(nc: Any) -> None:
        js = nc.jetstream()
        session = ""
        for i in range(100):  # a session of partition 0 (its probe input is the partition's first message)
            if await _partition(js, f"s{i}") == 0:
                session = f"s{i}"
                break
        first, second = PinnedPuller(nc, LAYOUT, 0), PinnedPuller(nc, LAYOUT, 0)
        it1 = first.messages(batch=10, expires_s=0.5)
        await publish_input(js, LAYOUT, session, b"{}", "u1")
        for m in await take(it1, 2):
            await m.ack()
        assert first.pin_id, "the server pins the first puller"
        # A second puller gets nothing while the first keeps pulling.
        it2 = second.messages(batch=10, expires_s=0.3)
        waiting = asyncio.ensure_future(anext(it2))
        await publish_input(js, LAYOUT, session, b"{}", "u2")
        (m2,) = await take(it1, 1)
        await m2.ack()
        assert not waiting.done()
        # The first stops pulling (paused): after the priority timeout the second is pinned.
        await it1.aclose()
        await publish_input(js, LAYOUT, session, b"{}", "u3")
        m3 = await waiting
        assert second.pin_id and second.pin_id != first.pin_id
        assert m3.metadata.sequence.stream > m2.metadata.sequence.stream
        await m3.ack()
        # The first comes back with its old pin id: refused.
        with pytest.raises(PinLost):
            await take(first.messages(batch=10, expires_s=0.3), 1)
        await it2.aclose()
    run(nats_server, body)


async def _partition(js: Any, session: str) -> int:
    seq = await publish_input(js, LAYOUT, session, b"{}", "probe")
    got = await next_input(js, LAYOUT, f"{LAYOUT.root}-in.*.{subject_token(session)}", seq)
    assert got is not None
    return int(got.subject.split(".")[1])


def test_progress_is_compare_and_set(nats_server: NatsServer) -> None:
    async def body(nc: Any) -> None:
        js = nc.jetstream()
        store = ProgressStore(await js.key_value(LAYOUT.progress_bucket), await js.key_value(LAYOUT.state_bucket),
                              max_state_bytes=1 << 20)
        p, rev = await store.load(2, "meeting.1")
        assert (p, rev) == (Progress(), 0)
        rev_a = await store.commit(2, "meeting.1", Progress(last_seq=5, steps=1, worker="a"), rev)
        with pytest.raises(Fenced):  # a second "first writer"
            await store.commit(2, "meeting.1", Progress(last_seq=5, steps=1, worker="b"), 0)
        rev_b = await store.commit(2, "meeting.1", Progress(last_seq=7, steps=2, worker="b"), rev_a)
        with pytest.raises(Fenced):  # a stale writer still at rev_a
            await store.commit(2, "meeting.1", Progress(last_seq=7, steps=2, worker="a"), rev_a)
        p, rev = await store.load(2, "meeting.1")
        assert rev == rev_b and (p.last_seq, p.worker) == (7, "b")
        import numpy as np
        key = await store.put_blob(StateBlob("meeting.1", 2, "b", 8, ["u1"], {"engine": "toy"},
                                             {"h": np.arange(4.0)}))
        blob = await store.get_blob("meeting.1", key)
        assert blob.epoch == 2 and blob.next_seq == 8 and list(blob.arrays["h"]) == [0, 1, 2, 3]
        await store.drop_blob(key)
        with pytest.raises(KeyNotFoundError):
            await store.get_blob("meeting.1", key)
    run(nats_server, body)
