"""Worker processes on JetStream (real nats-server, real mosquitto for events): the issue's acceptance tests."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from stream.cluster.jetstream import Layout
from tests.support.broker import Mosquitto
from tests.support.cluster import (
    EventWatch,
    WorkerProcess,
    make_script,
    publish_script,
    start_js_worker,
)
from tests.support.nats import NatsServer

from .checks import check_exactly_once

pytestmark = pytest.mark.mqtt

PARTITIONS = 4
LAYOUT = Layout(partitions=PARTITIONS, priority_timeout_s=1.0, ack_wait_s=2.0)
ARGS = ("--partitions", str(PARTITIONS), "--priority-timeout-s", "1", "--ack-wait-s", "2", "--standby-delay-s", "2",
        "--state-every", "3")


def start_workers(nats_server: NatsServer, broker: Mosquitto, tmp_path: Path, n: int) -> dict[str, WorkerProcess]:
    return {f"w{i}": start_js_worker(f"w{i}", nats_server.url, broker.port, tmp_path, *ARGS, "--member", f"{i}/{n}")
            for i in range(n)}


def stop_all(workers: dict[str, WorkerProcess]) -> str:
    for w in workers.values():
        w.proc.send_signal(signal.SIGCONT)
        w.stop()
    logs = "\n".join(f"--- {w.worker_id}\n{w.log_tail(1500)}" for w in workers.values())
    assert "Traceback" not in logs, logs
    return logs


def run_scenario(broker: Mosquitto, workers: dict[str, WorkerProcess], body: Callable[[EventWatch], Awaitable[None]],
                 online_timeout_s: float = 60) -> tuple[EventWatch, str]:
    """Runs ``body`` with an :class:`EventWatch` on the broker once every worker in ``workers`` is online, then
    stops the workers (also when it fails; a worker ``body`` adds to ``workers`` is stopped too)."""

    async def scenario() -> EventWatch:
        async with EventWatch(broker.settings) as watch:
            await watch.until(lambda: watch.online >= set(workers), online_timeout_s, "workers online")
            await body(watch)
            return watch

    try:
        watch = asyncio.run(scenario())
    finally:
        logs = stop_all(workers)
    return watch, logs


def test_mqtt_in_events_out_with_two_workers(nats_server: NatsServer, broker: Mosquitto, tmp_path: Path) -> None:
    """Inputs published with MQTT 3.1.1 to NATS's MQTT listener; events read from the MQTT 5 broker."""
    script = make_script(8, 6, seed=4)
    workers = start_workers(nats_server, broker, tmp_path, 2)

    async def scenario(watch: EventWatch) -> None:
        await publish_mqtt(nats_server.mqtt_port or 0, script, range(6))
        await watch.until(lambda: watch.have_all(script), 60, "an event for every utterance")

    watch, logs = run_scenario(broker, workers, scenario)
    figures = check_exactly_once(watch, script)
    assert set(figures["load"]) == {"w0", "w1"}, f"one worker took everything: {figures}\n{logs}"
    print(figures)


def _victim(watch: EventWatch, workers: dict[str, WorkerProcess]) -> str:
    load = watch.run.load()
    return max((w for w in load if w in workers), key=lambda w: load[w])


def _sessions_of(watch: EventWatch, worker: str) -> set[str]:
    return {ev["session"] for ev in watch.run.events if ev.get("worker_id") == worker}


def test_sigkill_of_the_pinned_worker(nats_server: NatsServer, broker: Mosquitto, tmp_path: Path) -> None:
    """The survivor takes the dead worker's partitions; every utterance committed once, as a replay."""
    script = make_script(12, 10, seed=5)
    workers = start_workers(nats_server, broker, tmp_path, 2)
    killed: list[str] = []

    async def scenario(watch: EventWatch) -> None:
        async def maybe_kill(k: int) -> None:
            if k == 4:  # mid-meeting; the state blob is every 3 steps, so the survivor replays some
                await watch.until(lambda: len(watch.run.events) >= 12 * 5, 30, "rounds 0-4 processed")
                victim = _victim(watch, workers)
                workers[victim].kill()
                killed.append(victim)

        await publish_script(nats_server.url, LAYOUT, script, interval_s=0.05, on_round=maybe_kill)
        await watch.until(lambda: watch.have_all(script), 60, "an event for every utterance")

    watch, logs = run_scenario(broker, workers, scenario)
    figures = check_exactly_once(watch, script)
    (victim,) = killed
    survivor = next(w for w in workers if w != victim)
    moved = _sessions_of(watch, victim) & _sessions_of(watch, survivor)
    assert moved, f"no conversation moved to the survivor: {figures}\n{logs}"
    print(figures, "moved:", len(moved))


def test_sigstop_past_the_timeout_then_sigcont(nats_server: NatsServer, broker: Mosquitto, tmp_path: Path) -> None:
    """A paused worker loses its partitions and is refused when it returns: no double commit, and nothing
    published after its return for the inputs that arrived since."""
    script = make_script(12, 10, seed=6)
    workers = start_workers(nats_server, broker, tmp_path, 2)
    paused: list[str] = []
    resumed_at: list[int] = []

    async def scenario(watch: EventWatch) -> None:
        async def pause_resume(k: int) -> None:
            if k == 3:
                await watch.until(lambda: len(watch.run.events) >= 12 * 4, 30, "rounds 0-3 processed")
                victim = _victim(watch, workers)
                workers[victim].proc.send_signal(signal.SIGSTOP)
                paused.append(victim)
            if k == 5:  # the other worker has served the paused one's conversations: resume it
                theirs = _sessions_of(watch, paused[0])
                await watch.until(lambda: any(ev["session"] in theirs and ev.get("worker_id") != paused[0]
                                              for ev in watch.run.events), 30, "takeover of the paused worker")
                workers[paused[0]].proc.send_signal(signal.SIGCONT)
                resumed_at.append(len(watch.run.events))

        await publish_script(nats_server.url, LAYOUT, script, interval_s=0.05, on_round=pause_resume)
        await watch.until(lambda: watch.have_all(script), 60, "an event for every utterance")

    watch, logs = run_scenario(broker, workers, scenario)
    figures = check_exactly_once(watch, script)
    stale = paused[0]
    late = {(ev["session"], ev["utterance_id"]) for ev in watch.run.events[resumed_at[0]:]
            if ev.get("worker_id") == stale and int(ev["utterance_id"][1:]) > 6}
    assert not late, f"the stale worker published events for inputs that arrived after it was replaced: {late}"
    assert "pin-id mismatch" in workers[stale].log_tail(20000).lower() or "another worker owns" in \
        workers[stale].log_tail(20000), f"the stale worker was not refused:\n{logs}"
    print(figures)


async def publish_mqtt(port: int, script: dict[str, list[dict[str, Any]]], rounds: range) -> None:
    """Rounds of the script with MQTT 3.1.1 QoS 1 to NATS's MQTT listener (no message id: a re-send is a new
    message in the stream, and the worker's utterance-id window drops it)."""
    pub = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="asr-box", protocol=paho.MQTTv311)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        for k in rounds:
            for session, utts in script.items():
                info = pub.publish(f"pcgnet/{session}/in/utterance", json.dumps(utts[k]), qos=1)
                await asyncio.to_thread(info.wait_for_publish, 10)
    finally:
        pub.loop_stop()
        pub.disconnect()


@pytest.mark.parametrize("via", ["nats", "mqtt"])
def test_publisher_restart_mid_meeting_loses_nothing(nats_server: NatsServer, broker: Mosquitto, tmp_path: Path,
                                                     via: str) -> None:
    """A publisher that restarts and re-sends the meeting from its start: re-sends absorbed (by the stream's
    message ids with nats-py, by the worker's utterance-id window through MQTT), nothing lost."""
    script = make_script(6, 8, seed=7)
    workers = start_workers(nats_server, broker, tmp_path, 2)

    async def send(rounds: range) -> None:
        if via == "nats":
            await publish_script(nats_server.url, LAYOUT, script, rounds=rounds)
        else:
            await publish_mqtt(nats_server.mqtt_port or 0, script, rounds)

    async def scenario(watch: EventWatch) -> None:
        await send(range(0, 5))  # then it crashes
        await send(range(0, 8))  # restarted: sends everything again
        await watch.until(lambda: watch.have_all(script), 60, "an event for every utterance")

    watch, logs = run_scenario(broker, workers, scenario)
    figures = check_exactly_once(watch, script)
    assert figures["events_raw"] == figures["unique"] == 6 * 8, f"{figures}\n{logs}"


@pytest.mark.slow
def test_sigkill_with_the_pcgnet_backend(nats_server: NatsServer, broker: Mosquitto, tmp_path: Path) -> None:
    """The same takeover with the causal PCGNet (tiny deterministic checkpoint, real MiniLM extractor)."""
    from stream.cluster.pcgnet_backend import PCGNetBackend
    from tests.support.checkpoints import make_tiny_checkpoint

    ck = make_tiny_checkpoint(tmp_path / "ck", seed=3, hidden=16, n_speakers=4, window_utterances=8)
    script = make_script(8, 8, seed=2)
    workers = {f"p{i}": start_js_worker(f"p{i}", nats_server.url, broker.port, tmp_path, *ARGS, "--member",
                                        f"{i}/2", "--checkpoint", str(ck), toy=False) for i in range(2)}
    killed: list[str] = []

    async def scenario(watch: EventWatch) -> None:
        async def maybe_kill(k: int) -> None:
            if k == 4:
                await watch.until(lambda: len(watch.run.events) >= 8 * 5, 60, "rounds 0-4 processed")
                victim = _victim(watch, workers)
                workers[victim].kill()
                killed.append(victim)

        await publish_script(nats_server.url, LAYOUT, script, interval_s=0.2, on_round=maybe_kill)
        await watch.until(lambda: watch.have_all(script), 120, "an event for every utterance")

    watch, logs = run_scenario(broker, workers, scenario, online_timeout_s=240)
    figures = check_exactly_once(watch, script, PCGNetBackend.from_checkpoint(ck, worker_id="replay"), atol=2e-5)
    survivor = next(w for w in workers if w not in killed)
    assert _sessions_of(watch, killed[0]) & _sessions_of(watch, survivor), f"no takeover: {figures}\n{logs}"


def test_a_joining_worker_does_not_take_a_live_conversation(nats_server: NatsServer, broker: Mosquitto,
                                                             tmp_path: Path) -> None:
    """Nothing expires ownership: a worker that joins while conversations run (however old they are) gets
    no partition that another worker holds, so every conversation keeps one owner."""
    script = make_script(8, 8, seed=8)
    first = start_js_worker("w0", nats_server.url, broker.port, tmp_path, *ARGS, "--member", "0/2")
    workers = {"w0": first}

    async def scenario(watch: EventWatch) -> None:
        await publish_script(nats_server.url, LAYOUT, script, rounds=range(0, 4))
        half = {s: u[:4] for s, u in script.items()}
        await watch.until(lambda: watch.have_all(half), 60, "the first half, by w0 alone")
        workers["w1"] = start_js_worker("w1", nats_server.url, broker.port, tmp_path, *ARGS, "--member", "1/2")
        await watch.until(lambda: "w1" in watch.online, 60, "w1 online")
        await publish_script(nats_server.url, LAYOUT, script, rounds=range(4, 8))
        await watch.until(lambda: watch.have_all(script), 60, "an event for every utterance")

    watch, logs = run_scenario(broker, workers, scenario)
    check_exactly_once(watch, script)
    owners = watch.run.workers_of()
    assert all(ws == {"w0"} for ws in owners.values()), f"a conversation changed hands on a join: {owners}\n{logs}"


def test_nats_server_restart_mid_meeting(nats_server: NatsServer, broker: Mosquitto, tmp_path: Path) -> None:
    """SIGKILL of the (single, file-backed) nats-server and a restart: the workers reconnect and every
    utterance is committed once, as a replay predicts."""
    script = make_script(6, 8, seed=9)
    workers = start_workers(nats_server, broker, tmp_path, 2)

    async def scenario(watch: EventWatch) -> None:
        await publish_script(nats_server.url, LAYOUT, script, rounds=range(0, 4))
        await watch.until(lambda: watch.have_all({s: u[:4] for s, u in script.items()}), 60, "rounds 0-3")
        nats_server.kill()
        nats_server.start()
        await publish_script(nats_server.url, LAYOUT, script, rounds=range(4, 8))
        await watch.until(lambda: watch.have_all(script), 90, "an event for every utterance")

    watch, logs = run_scenario(broker, workers, scenario)
    figures = check_exactly_once(watch, script)
    assert figures["unique"] == 6 * 8, logs


def test_sigterm_hands_partitions_over_at_once(nats_server: NatsServer, broker: Mosquitto, tmp_path: Path) -> None:
    """A graceful stop finishes its steps, NAKs what it queued and unpins its partitions: with a priority
    timeout and an ack wait of 120 s, the other worker still serves the rest of the meeting within 30 s."""
    script = make_script(8, 8, seed=10)
    slow = ("--partitions", str(PARTITIONS), "--priority-timeout-s", "120", "--ack-wait-s", "120",
            "--standby-delay-s", "2")
    workers = {f"w{i}": start_js_worker(f"w{i}", nats_server.url, broker.port, tmp_path, *slow, "--member", f"{i}/2")
               for i in range(2)}
    layout = Layout(partitions=PARTITIONS, priority_timeout_s=120, ack_wait_s=120)
    stopped: list[str] = []

    async def scenario(watch: EventWatch) -> None:
        await publish_script(nats_server.url, layout, script, rounds=range(0, 4))
        await watch.until(lambda: watch.have_all({s: u[:4] for s, u in script.items()}), 60, "rounds 0-3")
        victim = _victim(watch, workers)
        assert workers[victim].stop() == 0
        stopped.append(victim)
        await publish_script(nats_server.url, layout, script, rounds=range(4, 8))
        await watch.until(lambda: watch.have_all(script), 30, "the rest, served by the other worker")

    watch, logs = run_scenario(broker, workers, scenario)
    check_exactly_once(watch, script)
    survivor = next(w for w in workers if w not in stopped)
    assert _sessions_of(watch, stopped[0]) & _sessions_of(watch, survivor), logs
