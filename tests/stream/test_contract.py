"""The event contract (issue 15): docs/asyncapi.yaml and its JSON Schemas, checked against the real analyzer.

The subscriber test uses only the document: it picks the topics from the channels of the "send" operations
tagged ``events``, validates each payload with the schema the channel's message names, and drops
duplicates by the documented key; two consecutive runs of the demo must arrive complete.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import jsonschema
import pytest

from tests.contract import asyncapi, check_events, check_message, payload_schema, resolve, validate
from tests.support.broker import Mosquitto

from .test_replay_e2e import DEMO, ROOT, read_jsonl, run_live

pytestmark = pytest.mark.mqtt


def documented_event_id(event: dict[str, Any]) -> str:
    """The event id as a client computes it from the document's ``x-event-id`` recipe alone."""
    recipe = asyncapi()["info"]["x-event-id"]
    name = recipe["name"][event["type"]].format(**event)
    return str(uuid.uuid5(uuid.UUID(recipe["namespace"]), name))


def test_schemas_are_valid_and_every_example_validates() -> None:
    doc = asyncapi()
    assert doc["asyncapi"].startswith("3.0") and doc["info"]["version"] == "1"
    checked = 0
    for name, message in doc["components"]["messages"].items():
        schema = payload_schema(message)
        jsonschema.Draft202012Validator.check_schema(schema)
        for example in message.get("examples", []):
            validate(example["payload"], schema, f"example of {name}")
            if example["payload"].get("type") in ("emotion", "shift", "speaker"):
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


class DocumentSubscriber:
    """A robot's subscriber written from docs/asyncapi.yaml only (topics, schemas, duplicate rule)."""

    def __init__(self) -> None:
        doc = asyncapi()
        self.channels: list[tuple[re.Pattern[str], str, dict[str, Any]]] = []
        self.filters: list[str] = []
        for op in doc["operations"].values():
            if op["action"] != "send" or {"name": "events"} not in op.get("tags", []):
                continue
            channel = resolve(op["channel"]["$ref"])
            address = channel["address"]
            self.filters.append(re.sub(r"\{[^}]+\}", "+", address))
            pattern = re.escape(address)
            for param in channel.get("parameters", {}):
                pattern = pattern.replace(re.escape("{" + param + "}"), "[^/]+")
            (message,) = channel["messages"].values()
            self.channels.append((re.compile(pattern + "$"), message["$ref"].rsplit("/", 1)[1], payload_schema(message)))
        self.key = doc["info"]["x-duplicate-filter"]["key"]
        self.seen: dict[tuple[str, str], set[tuple[Any, ...]]] = {}  # (session, run_id) -> keys
        self.current_run: dict[str, str] = {}
        self.accepted: list[tuple[str, dict[str, Any], bool]] = []
        self.duplicates = 0
        self.cleared: list[str] = []

    def on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        name, schema = next((n, s) for p, n, s in self.channels if p.match(topic))
        if not payload:
            assert name == "speaker"
            self.cleared.append(topic)
            return
        obj = json.loads(payload)
        jsonschema.validate(obj, schema)
        if name not in ("emotion", "shift", "speaker"):
            self.accepted.append((name, obj, retained))
            return
        session, run = obj["session"], obj["run_id"]
        if not retained and self.current_run.get(session) != run:
            for old in [k for k in self.seen if k[0] == session and k[1] != run]:
                del self.seen[old]  # the documented reset: a new run of the session started
            self.current_run[session] = run
        seen = self.seen.setdefault((session, run), set())
        key = tuple(obj[k] for k in self.key)
        if key in seen:
            self.duplicates += 1
            return
        seen.add(key)
        self.accepted.append((name, obj, retained))


def test_a_subscriber_written_from_the_document_gets_every_event_of_two_runs(
        mosquitto: Mosquitto, tiny_checkpoint: Path, tmp_path: Path) -> None:
    sub = DocumentSubscriber()
    utts = read_jsonl(DEMO / "utterances.jsonl")

    expiries: list[int | None] = []

    async def go() -> list[list[dict[str, Any]]]:
        logs = []
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="robot",
                                  protocol=aiomqtt.ProtocolVersion.V5) as client:
            for f in sub.filters:
                await client.subscribe(f, qos=1)

            async def listen() -> None:
                async for m in client.messages:
                    sub.on_message(str(m.topic), bytes(m.payload), bool(m.retain))  # type: ignore[arg-type]
                    if "/speakers/" in str(m.topic) and m.payload:
                        expiries.append(getattr(m.properties, "MessageExpiryInterval", None))

            task = asyncio.create_task(listen())
            for run in range(2):
                log = tmp_path / f"run{run}.jsonl"
                rc, out = await run_live("--replay", str(DEMO), "--speed", "0", "--no-tui", "--checkpoint",
                                         str(tiny_checkpoint), "--mqtt", mosquitto.url, "--events", str(log))
                assert rc == 0, out
                logs.append(read_jsonl(log))
                for _ in range(100):  # the offline record is the last message of a run
                    if sum(o["state"] == "offline" for n, o, _ in sub.accepted if n == "status") > run:
                        break
                    await asyncio.sleep(0.05)
            task.cancel()
        return logs

    logs = asyncio.run(go())
    events = [(n, o) for n, o, retained in sub.accepted if n in ("emotion", "shift", "speaker")]
    runs = [log[0]["run_id"] for log in logs]
    assert runs[0] != runs[1]
    for run_id, log in zip(runs, logs, strict=True):
        got = [o for _, o in events if o["run_id"] == run_id]
        # every live update of each run arrived and survived the duplicate filter, in order
        assert [(o["type"], o["event_id"]) for o in got] == [(e["type"], e["event_id"]) for e in check_events(log)
                                                            if e["type"] != "error"]
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


def test_the_last_will_of_a_killed_analyzer_says_lost_and_carries_no_stale_time(
        mosquitto: Mosquitto, tiny_checkpoint: Path) -> None:
    async def go() -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="watcher",
                                  protocol=aiomqtt.ProtocolVersion.V5) as client:
            await client.subscribe("pcgnet/status", qos=1)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "live.py"), "--transcript", "mqtt", "--mqtt", mosquitto.url,
                "--checkpoint", str(tiny_checkpoint), "--no-tui", cwd=ROOT, env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
            try:
                async with asyncio.timeout(240):
                    async for m in client.messages:
                        record = check_message(str(m.topic), bytes(m.payload))  # type: ignore[arg-type]
                        assert record is not None
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
