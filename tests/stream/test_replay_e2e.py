"""End to end: ``live.py --replay`` of the bundled demo through a real mosquitto to an outside subscriber,
the JSONL log, and a recording that replays to the same predictions."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import wave
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from tests.contract import check_events, check_message

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
pytestmark = pytest.mark.mqtt


async def run_live(*args: str, timeout_s: float = 120) -> tuple[int, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "live.py"), *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    return proc.returncode or 0, out.decode(errors="replace")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


async def collect(port: int, topic: str, stop: asyncio.Event, into: list[tuple[str, dict[str, Any], bool]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="outside-consumer") as c:
        await c.subscribe(topic, qos=1)
        ready.set()
        async for m in c.messages:
            assert isinstance(m.payload, bytes | bytearray)
            payload = check_message(str(m.topic), bytes(m.payload))
            if payload is not None:  # None: a run's retained speaker state cleared at its end
                into.append((str(m.topic), payload, bool(m.retain)))
            if stop.is_set():
                return


ready = asyncio.Event()


def test_replay_to_mqtt_jsonl_and_record_then_replay_reproduces(mosquitto, tiny_checkpoint: Path,
                                                                  tmp_path: Path) -> None:
    events_file, rec = tmp_path / "events.jsonl", tmp_path / "rec"

    async def go() -> tuple[int, str, list[tuple[str, dict[str, Any], bool]], list[tuple[str, dict[str, Any], bool]]]:
        global ready
        ready = asyncio.Event()
        got: list[tuple[str, dict[str, Any], bool]] = []
        stop = asyncio.Event()
        sub = asyncio.create_task(collect(mosquitto.port, "pcgnet/#", stop, got))
        await asyncio.wait_for(ready.wait(), 10)
        rc, out = await run_live("--replay", str(DEMO), "--speed", "0", "--no-tui", "--checkpoint",
                                 str(tiny_checkpoint), "--mqtt", mosquitto.url, "--events", str(events_file),
                                 "--record", str(rec))
        for _ in range(100):  # QoS 1 deliveries may trail the publisher's exit slightly
            if any(t.startswith("pcgnet/$status/") and p["state"] == "offline" for t, p, _ in got):
                break
            await asyncio.sleep(0.05)
        stop.set()
        sub.cancel()
        # a subscriber arriving after the run: its retained per-speaker state was cleared at the clean exit
        late: list[tuple[str, dict[str, Any], bool]] = []
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="late") as c:
            await c.subscribe("pcgnet/demo/speakers/+", qos=1)
            try:
                async with asyncio.timeout(1.0):
                    async for m in c.messages:
                        late.append((str(m.topic), json.loads(m.payload), bool(m.retain)))  # type: ignore[arg-type]
            except TimeoutError:
                pass
        return rc, out, got, late

    rc, out, got, late = asyncio.run(go())
    assert rc == 0, out
    utts = read_jsonl(DEMO / "utterances.jsonl")
    logged = check_events(read_jsonl(events_file))
    emo_log = [e for e in logged if e["type"] == "emotion"]
    emo_mqtt = [p for t, p, _ in got if t == "pcgnet/demo/emotion"]
    # every utterance -> exactly one emotion event, identical on MQTT and in the JSONL log, in order
    assert [e["utterance_id"] for e in emo_log] == [u["utterance_id"] for u in utts]
    assert emo_mqtt == emo_log
    for e, u in zip(emo_log, utts, strict=True):
        assert e["speaker"] == u["speaker"] and e["text"] == u["text"] and e["session"] == "demo"
        assert abs(sum(e["scores"].values()) - 1.0) < 1e-3 and e["modalities"] == ["text"]
        assert e["latency_ms"] >= 0
    # shift events: exactly when a speaker's expression differs from their previous one
    last: dict[str, dict[str, Any]] = {}
    expected_shifts = []
    for e in emo_log:
        prev = last.get(e["speaker"])
        if prev is not None and prev["expression"] != e["expression"]:
            expected_shifts.append((e["utterance_id"], prev["expression"], e["expression"], prev["utterance_id"]))
        last[e["speaker"]] = e
    shifts = [p for t, p, _ in got if t == "pcgnet/demo/shift"]
    assert expected_shifts, "the test checkpoint should produce at least one shift on the demo"
    assert [(s["utterance_id"], s["from"], s["to"], s["previous_utterance_id"]) for s in shifts] == expected_shifts
    assert all(0.0 <= s["probability"] <= 1.0 for s in shifts)
    # status: online then offline (retained), speakers retained with the latest state
    states = [p["state"] for t, p, _ in got if t.startswith("pcgnet/$status/")]
    assert states[0] == "online" and states[-1] == "offline"
    # the text encoder's dtype and the CPU, in the startup line and on the online status record (issue 21)
    online = next(p for t, p, _ in got if t.startswith("pcgnet/$status/") and p["state"] == "online")
    assert online["text_dtype"] == "float32" and online["cpu"].endswith("bfloat16)")  # minilm-l6: float32 only
    assert online["text_backend"] == "torch" and f"text encoder in float32 (torch) on {online['cpu']}" in out
    speaker_state = {t.rsplit("/", 1)[1]: p for t, p, _ in got if "/speakers/" in t}  # the latest per speaker
    assert set(speaker_state) == {"Alice", "Bob", "Carol"}
    for spk, p in speaker_state.items():
        assert p["expression"] == last[spk]["expression"] and p["utterances"] == sum(
            1 for u in utts if u["speaker"] == spk)
    # a clean exit clears the run's retained speaker state: a subscriber arriving later finds none
    assert not [t for t, _, r in late if r]

    # the recording: readable folder with audio aligned to the original, events as produced
    meta = json.loads((rec / "meta.json").read_text())
    assert meta["format"] == "pcgnet-session" and meta["audio"]["file"] == "audio.wav"
    assert [u["utterance_id"] for u in read_jsonl(rec / "utterances.jsonl")] == [u["utterance_id"] for u in utts]
    with wave.open(str(rec / "audio.wav")) as w, wave.open(str(DEMO / "audio.wav")) as w0:
        assert w.getframerate() == 16000 and abs(w.getnframes() - w0.getnframes()) < 16000
    rec_events = [e for e in read_jsonl(rec / "events.jsonl") if e["type"] == "emotion"]
    assert [e["event_id"] for e in rec_events] == [e["event_id"] for e in emo_log]

    # replaying the recording reproduces the predictions
    ev2 = tmp_path / "events2.jsonl"
    rc2, out2 = asyncio.run(run_live("--replay", str(rec), "--speed", "0", "--no-tui", "--checkpoint",
                                     str(tiny_checkpoint), "--events", str(ev2)))
    assert rc2 == 0, out2
    again = [e for e in read_jsonl(ev2) if e["type"] == "emotion"]
    assert [e["event_id"] for e in again] == [e["event_id"] for e in rec_events]
    for a, b in zip(again, rec_events, strict=True):
        assert a["expression"] == b["expression"]
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-4)
