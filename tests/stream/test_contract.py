"""The event contract (issue 15): docs/asyncapi.yaml and its JSON Schemas, checked against the real analyzer.

The subscriber test uses only the document: it picks the topics from the channels of the "send" operations
tagged ``events``, validates each payload with the schema the channel's message names, and drops
duplicates by the documented key; two consecutive runs of the demo must arrive complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import pytest

from tests.contract import asyncapi, check_events, check_message, payload_schema, resolve, validate
from tests.support.broker import Mosquitto
from tests.support.subscriber import DocumentSubscriber, documented_event_id

from .test_replay_e2e import DEMO, ROOT, read_jsonl, run_live

pytestmark = pytest.mark.mqtt


@contextlib.asynccontextmanager
async def _following(sub: DocumentSubscriber, port: int,
                     also: Callable[[aiomqtt.Message], None] | None = None) -> AsyncIterator[None]:
    """While the block runs, a client "robot" on every filter of the document feeds ``sub`` (and ``also``)."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="robot", protocol=aiomqtt.ProtocolVersion.V5) as client:
        for f in sub.filters:
            await client.subscribe(f, qos=1)

        async def listen() -> None:
            async for m in client.messages:
                sub.on_message(str(m.topic), bytes(m.payload), bool(m.retain))  # type: ignore[arg-type]
                if also is not None:
                    also(m)

        task = asyncio.create_task(listen())
        try:
            yield
        finally:
            task.cancel()


async def _until_offline(sub: DocumentSubscriber, count: int) -> None:
    """Wait (up to 5 s) until ``sub`` accepted ``count`` status records saying ``offline``."""
    for _ in range(100):
        if sum(o["state"] == "offline" for n, o, _ in sub.accepted if n == "status") >= count:
            return
        await asyncio.sleep(0.05)


def test_schemas_are_valid_and_every_example_validates() -> None:
    doc = asyncapi()
    assert doc["asyncapi"].startswith("3.0") and doc["info"]["version"] == "1"
    checked = 0
    for name, message in doc["components"]["messages"].items():
        schema = payload_schema(message)
        jsonschema.Draft202012Validator.check_schema(schema)
        for example in message.get("examples", []):
            validate(example["payload"], schema, f"example of {name}")
            if example["payload"].get("type") in ("emotion", "shift", "speaker", "session"):
                assert example["payload"]["event_id"] == documented_event_id(example["payload"]), name
            checked += 1
    assert checked >= 8  # 8 examples since the cluster records left the contract (issue 25: state is in NATS)
    # every operation's channel and every channel's message resolve
    for op in doc["operations"].values():
        channel = resolve(op["channel"]["$ref"])
        assert channel["messages"] and op["bindings"]["mqtt"]["qos"] == 1


def test_event_ids_are_recomputed_from_the_documented_recipe(make_runtime) -> None:
    """A client that knows only the document recomputes every stable id of a real run."""
    from stream.capture.replay import ReplaySource
    from tests.support.replay import CollectSink

    sink = CollectSink()

    async def go() -> None:
        rt = make_runtime([sink])
        rt.add_source(ReplaySource(DEMO, speed=0), finite=True)
        assert await rt.run() == 0

    asyncio.run(go())
    events = check_events(sink.events)
    stable = [e for e in events if e["type"] in ("emotion", "shift", "speaker")]
    assert {e["type"] for e in stable} == {"emotion", "shift", "speaker"}
    for e in stable:
        assert e["event_id"] == documented_event_id(e), e
    # the documented order within one utterance: emotion, then shift (if any), then speaker
    by_utt: dict[str, list[str]] = {}
    for e in stable:
        by_utt.setdefault(e["utterance_id"], []).append(e["type"])
    assert all(kinds in (["emotion", "speaker"], ["emotion", "shift", "speaker"]) for kinds in by_utt.values()), by_utt
    assert len({e["run_id"] for e in stable}) == 1
    # the run is framed by its session records, whose ids recompute too
    assert [(e["type"], e["state"]) for e in (events[0], events[-1])] == [("session", "started"), ("session", "ended")]
    assert all(e["event_id"] == documented_event_id(e) for e in (events[0], events[-1]))


def test_a_subscriber_written_from_the_document_gets_every_event_of_two_runs(
        mosquitto: Mosquitto, tiny_checkpoint: Path, tmp_path: Path) -> None:
    sub = DocumentSubscriber()
    utts = read_jsonl(DEMO / "utterances.jsonl")

    expiries: list[int | None] = []

    def note_expiry(m: aiomqtt.Message) -> None:
        if "/speakers/" in str(m.topic) and m.payload:
            expiries.append(getattr(m.properties, "MessageExpiryInterval", None))

    async def go() -> list[list[dict[str, Any]]]:
        logs = []
        async with _following(sub, mosquitto.port, note_expiry):
            for run in range(2):
                log = tmp_path / f"run{run}.jsonl"
                rc, out = await run_live("--replay", str(DEMO), "--speed", "0", "--no-tui", "--checkpoint",
                                         str(tiny_checkpoint), "--mqtt", mosquitto.url, "--events", str(log))
                assert rc == 0, out
                logs.append(read_jsonl(log))
                await _until_offline(sub, run + 1)  # the offline record is the last message of a run
        return logs

    logs = asyncio.run(go())
    events = [(n, o) for n, o, retained in sub.accepted if n in ("emotion", "shift", "speaker")]
    runs = [log[0]["run_id"] for log in logs]
    assert runs[0] != runs[1]
    for run_id, log in zip(runs, logs, strict=True):
        got = [o for _, o in events if o["run_id"] == run_id]
        # every live update of each run arrived and survived the duplicate filter, in order
        assert [(o["type"], o["event_id"]) for o in got] == [(e["type"], e["event_id"]) for e in check_events(log)
                                                            if e["type"] in ("emotion", "shift", "speaker")]
        assert [o["utterance_id"] for o in got if o["type"] == "emotion"] == [u["utterance_id"] for u in utts]
    # the same input gives the same ids in both runs; the run id keeps them apart
    ids = [[(o["type"], o["event_id"]) for _, o in events if o["run_id"] == r] for r in runs]
    assert ids[0] == ids[1]
    # retained speaker state expires (MQTT 5 message expiry, the documented 3600 s) ...
    expiry = asyncapi()["operations"]["sendSpeaker"]["bindings"]["mqtt"]["messageExpiryInterval"]
    assert expiries and all(e is not None and 0 < e <= expiry for e in expiries), expiries
    # ... and each run cleared its own at its clean exit, so the second run started without stale state
    speakers = {u["speaker"] for u in utts}
    assert len(sub.cleared) == 2 * len(speakers)
    states = [o["state"] for n, o, _ in sub.accepted if n == "status"]
    assert states.count("online") >= 2 and states.count("offline") == 2
    # coherent, gap-free, ids from the recipe; each run announced its start (wall clock) and end
    assert sub.problems() == []
    assert sub.duplicates == 0 and sum(len(v.shifts) for v in sub.runs.values()) > 0
    for run_id in runs:
        view = sub.runs["demo", run_id]
        started, ended = view.session["started"], view.session["ended"]
        assert started["started_at"] == ended["started_at"] and ended["utterances"] == len(utts)
        assert started["process"] == ended["process"] and ended["reason"] == "end"
        status = [o for n, o, _ in sub.accepted if n == "status" and o["client_id"] == started["process"]]
        assert status and status[-1]["state"] == "offline" and status[0]["keepalive_s"] == 60
        speakers_of_run = [o for n, o, _ in sub.accepted if n == "speaker" and o["run_id"] == run_id]
        assert {o["process"] for o in speakers_of_run} == {started["process"]}


def test_the_last_will_of_a_killed_analyzer_says_lost_and_carries_no_stale_time(
        mosquitto: Mosquitto, tiny_checkpoint: Path) -> None:
    async def go() -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="watcher",
                                  protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.subscribe("pcgnet/$status/+", qos=1)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "live.py"), "--transcript", "mqtt", "--mqtt", mosquitto.url,
                "--checkpoint", str(tiny_checkpoint), "--no-tui", cwd=ROOT, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            try:
                async with asyncio.timeout(240):
                    async for m in client.messages:
                        record = check_message(str(m.topic), bytes(m.payload))  # type: ignore[arg-type]
                        assert record is not None and str(m.topic) == f"pcgnet/$status/{record['client_id']}"
                        records.append(record)
                        if record["state"] == "online" and proc.returncode is None:
                            proc.send_signal(signal.SIGKILL)  # no goodbye: the broker sends the last will
                            await proc.wait()
                        elif record["state"] == "offline":
                            return records
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        return records

    records = asyncio.run(go())
    online, will = records[0], records[-1]
    assert online["state"] == "online" and "at" in online and "queues" in online
    assert will["state"] == "offline" and will["reason"] == "lost" and "at" not in will
    assert will["client_id"] == online["client_id"] and will["connected_at"] == online["connected_at"]


def test_two_processes_on_one_session_keep_their_own_status_and_run_records(
        mosquitto: Mosquitto, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Two analyzers replaying the same session at once: one process's exit or status never overwrites the
    other's (one status topic per process, one session record per run), and a late subscriber finds both
    runs' retained `ended` records and both processes' `offline` records."""
    sub = DocumentSubscriber()

    async def go() -> list[tuple[str, dict[str, Any]]]:
        async with _following(sub, mosquitto.port):
            results = await asyncio.gather(*(
                run_live("--replay", str(DEMO), "--speed", "0", "--no-tui", "--checkpoint", str(tiny_checkpoint),
                         "--mqtt", mosquitto.url) for _ in range(2)))
            assert all(rc == 0 for rc, _ in results), results
            await _until_offline(sub, 2)
        retained: list[tuple[str, dict[str, Any]]] = []
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="late",
                                  protocol=aiomqtt.ProtocolVersion.V5) as late:
            await late.subscribe("pcgnet/$status/+", qos=1)
            await late.subscribe("pcgnet/+/session/+", qos=1)
            try:
                async with asyncio.timeout(2):
                    async for m in late.messages:
                        if m.retain and m.payload:
                            retained.append((str(m.topic), json.loads(bytes(m.payload))))  # type: ignore[arg-type]
            except TimeoutError:
                pass
        return retained

    retained = asyncio.run(go())
    assert sub.problems() == []
    runs = [r for (session, r) in sub.runs if session == "demo"]
    assert len(runs) == 2
    processes = {sub.runs["demo", r].session["started"]["process"] for r in runs}
    assert len(processes) == 2
    status = {o["client_id"]: o["state"] for t, o in retained if o["type"] == "status"}
    assert {p: status.get(p) for p in processes} == {p: "offline" for p in processes}
    ended = {o["run_id"] for t, o in retained if o["type"] == "session" and o["state"] == "ended"}
    assert ended == set(runs)
    for t, o in retained:
        check_message(t, o)


def test_the_examples_in_events_md_validate_and_their_ids_recompute() -> None:
    """docs/events.md's JSON examples (taken from a real demo run) are valid events whose ids follow the recipe."""
    text = (ROOT / "docs" / "events.md").read_text(encoding="utf-8")
    blocks = [json.loads(b.split("```", 1)[0]) for b in text.split("```json\n")[1:]]
    kinds = []
    for obj in blocks:
        if "type" not in obj:  # the input example
            continue
        kinds.append(obj["type"])
        if obj["type"] == "status":
            validate(obj, payload_schema(asyncapi()["components"]["messages"]["status"]), "status example")
            continue
        check_events([obj])
        if obj["type"] in ("emotion", "shift", "speaker", "session"):
            assert obj["event_id"] == documented_event_id(obj), obj
    assert {"emotion", "shift", "speaker", "session", "error", "status"} <= set(kinds)
    # the shift example is coherent with the emotion example of the same utterance
    emo = next(o for o in blocks if o.get("type") == "emotion")
    shift = next(o for o in blocks if o.get("type") == "shift")
    assert shift["utterance_id"] == emo["utterance_id"] and shift["to"] == emo["expression"]
    assert shift["probability"] == emo["shift_probability"]


class _Resender:
    """Posts u0001, u0002, then u0001 again (a re-sent input) with an earlier time, then u0003."""

    name = "resender"

    async def run(self, sink: Any) -> None:
        from stream.frames import Utterance

        for uid, speaker, t in (("u0001", "A", 0.0), ("u0002", "B", 2.0), ("u0001", "A", 0.0), ("u0003", "A", 4.0)):
            await sink.submit(Utterance(session_id="re", utterance_id=uid, speaker=speaker, t_start=t, t_end=t + 1.5,
                                        text=f"line {uid} said at {t}"))
        sink.end_session("re")


def test_a_resent_utterance_id_is_an_input_error_naming_it(make_runtime) -> None:
    from tests.support.replay import CollectSink

    sink = CollectSink()

    async def go() -> None:
        rt = make_runtime([sink])
        rt.add_source(_Resender(), finite=True)
        assert await rt.run() == 0

    asyncio.run(go())
    events = check_events(sink.events)
    errors = [e for e in events if e["type"] == "error"]
    assert len(errors) == 1 and errors[0]["utterance_id"] == "u0001" and errors[0]["category"] == "input"
    assert "already processed" in errors[0]["message"]
    assert [e["utterance_id"] for e in events if e["type"] == "emotion"] == ["u0001", "u0002", "u0003"]
    ended = [e for e in events if e["type"] == "session" and e["state"] == "ended"]
    assert len(ended) == 1 and ended[0]["utterances"] == 3


def test_a_hung_analyzer_is_declared_lost_within_one_and_a_half_keepalives(
        mosquitto: Mosquitto, tiny_checkpoint: Path) -> None:
    """SIGSTOP (a hang that keeps the TCP connection): the broker publishes the will once the documented
    1.5 x keepalive_s passed without a packet (with keepalive 2 s, long before this test's timeout, while the
    default 60 s would not); the will names the process, so its runs are known dead."""
    async def go() -> tuple[list[dict[str, Any]], float]:
        records: list[dict[str, Any]] = []
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="watcher",
                                  protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.subscribe("pcgnet/$status/+", qos=1)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "live.py"), "--transcript", "mqtt", "--mqtt", mosquitto.url,
                "--mqtt-keepalive", "2", "--status-interval", "30", "--checkpoint", str(tiny_checkpoint),
                "--no-tui", cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            stopped_at = 0.0
            try:
                async with asyncio.timeout(240):
                    async for m in client.messages:
                        record = check_message(str(m.topic), bytes(m.payload))  # type: ignore[arg-type]
                        assert record is not None
                        records.append(record)
                        if record["state"] == "online" and not stopped_at:
                            proc.send_signal(signal.SIGSTOP)
                            stopped_at = asyncio.get_running_loop().time()
                        elif record["state"] == "offline":
                            return records, asyncio.get_running_loop().time() - stopped_at
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        return records, -1.0

    records, waited = asyncio.run(go())
    online, will = records[0], records[-1]
    assert online["keepalive_s"] == 2 and will["reason"] == "lost" and will["client_id"] == online["client_id"]
    assert waited > 0  # after the hang (how long: printed; the bound is the broker's, docs/events.md)
    print(f"\nwill of the stopped analyzer {waited:.1f} s after SIGSTOP (keepalive 2 s)")


def test_topic_root_moves_every_topic(mosquitto: Mosquitto, tiny_checkpoint: Path) -> None:
    """`--topic-root robots/lab1`: every message, status included, under the root; nothing under `pcgnet/`."""
    async def go() -> list[tuple[str, bytes]]:
        got: list[tuple[str, bytes]] = []
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="robot",
                                  protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.subscribe("#", qos=1)

            async def listen() -> None:
                async for m in client.messages:
                    got.append((str(m.topic), bytes(m.payload)))  # type: ignore[arg-type]

            task = asyncio.create_task(listen())
            rc, out = await run_live("--replay", str(DEMO), "--speed", "0", "--no-tui", "--checkpoint",
                                     str(tiny_checkpoint), "--mqtt", mosquitto.url, "--topic-root", "robots/lab1")
            assert rc == 0, out
            for _ in range(100):
                if any(b'"offline"' in p for _, p in got):
                    break
                await asyncio.sleep(0.05)
            task.cancel()
        return got

    got = asyncio.run(go())
    assert got and all(t.startswith("robots/lab1/") for t, _ in got), {t for t, _ in got}
    kinds = {check_message(t, p, root="robots/lab1")["type"] for t, p in got if p}  # type: ignore[index]
    assert {"session", "emotion", "shift", "speaker", "status"} <= kinds
    rc, out = asyncio.run(run_live("--replay", str(DEMO), "--topic-root", "a/+/b", "--no-tui"))
    assert rc != 0 and "--topic-root" in out


def test_the_readme_robot_runs_and_prints_every_shift_once(
        mosquitto: Mosquitto, tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's robot, as printed there (only the broker port changed), against a real run of the demo."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = readme.split("## Events on MQTT", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace("1883", str(mosquitto.port)).replace("asyncio.run(robot())", "")
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the documented snippet itself
    log = tmp_path / "events.jsonl"

    async def go() -> None:
        robot = asyncio.create_task(namespace["robot"]())
        await asyncio.sleep(1.0)  # subscribed (a persistent session would also get what it missed)
        rc, out = await run_live("--replay", str(DEMO), "--speed", "0", "--no-tui", "--checkpoint",
                                 str(tiny_checkpoint), "--mqtt", mosquitto.url, "--events", str(log))
        assert rc == 0, out
        shifts = sum(e["type"] == "shift" for e in read_jsonl(log))
        for _ in range(100):
            printed.append(capsys.readouterr().out)
            if "".join(printed).count(" -> ") >= shifts:
                break
            await asyncio.sleep(0.05)
        robot.cancel()
        await asyncio.gather(robot, return_exceptions=True)

    printed: list[str] = []
    capsys.readouterr()
    asyncio.run(go())
    want = [f'{e["speaker"]}: {e["from"]} -> {e["to"]} (p={e["probability"]})' for e in read_jsonl(log)
            if e["type"] == "shift"]
    got = [x for x in "".join(printed).splitlines() if " -> " in x]
    assert want and got == want  # every shift once (duplicates dropped), as the analyzer produced it
