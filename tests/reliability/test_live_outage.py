"""End to end: ``live.py --replay ... --mqtt ... --spool DIR`` while the real broker is SIGKILLed and restarted.

A persistent-session subscriber (an outside robot) must receive every emotion and shift event that
the analyzer produced (the JSONL log is the record of what was produced) at least once, the emotion
events first-seen in production order.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from stream.mqtt.client import install_loop_exception_handler
from stream.mqtt.settings import MqttSettings

from .subscriber import persistent_subscriber

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
pytestmark = [pytest.mark.mqtt, pytest.mark.slow]
DEMO_TOPICS = ["pcgnet/demo/emotion", "pcgnet/demo/shift"]


def test_live_replay_survives_broker_kill(broker_factory, tiny_checkpoint: Path, tmp_path: Path) -> None:
    broker = broker_factory(persistence=True)
    broker.start()
    events_file = tmp_path / "events.jsonl"

    async def main() -> tuple[int, str, list[dict]]:
        install_loop_exception_handler()
        got: list[dict] = []
        ready = asyncio.Event()
        settings = MqttSettings.from_url(broker.url, client_id="robot", env={})
        sub = asyncio.create_task(persistent_subscriber(settings, DEMO_TOPICS, got, ready))
        await asyncio.wait_for(ready.wait(), 10)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "live.py"), "--replay", str(DEMO), "--speed", "3", "--no-tui",
            "--checkpoint", str(tiny_checkpoint), "--mqtt", broker.url, "--spool", str(tmp_path / "spool"),
            "--events", str(events_file), "--log-level", "INFO", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out_task = asyncio.create_task(proc.communicate())
        for _ in range(1200):  # wait for the first two emotion events, then pull the plug
            if sum(e["type"] == "emotion" for e in got) >= 2 or out_task.done():
                break
            await asyncio.sleep(0.05)
        broker.kill()
        await asyncio.sleep(3.0)  # several utterances are produced while the broker is away
        broker.start()
        out, _ = await asyncio.wait_for(out_task, 120)
        produced = [json.loads(x) for x in events_file.read_text().splitlines() if x.strip()]
        want = {e["event_id"] for e in produced if e["type"] in ("emotion", "shift")}
        for _ in range(400):
            if want <= {e["event_id"] for e in got}:
                break
            await asyncio.sleep(0.05)
        sub.cancel()
        await asyncio.gather(sub, return_exceptions=True)
        return proc.returncode or 0, out.decode(errors="replace"), got

    rc, out, got = asyncio.run(main())
    assert rc == 0, out
    produced = [json.loads(x) for x in events_file.read_text().splitlines() if x.strip()]
    produced = [e for e in produced if e["type"] in ("emotion", "shift")]
    ids = [e["event_id"] for e in produced]
    received = [e["event_id"] for e in got]
    lost = set(ids) - set(received)
    print(f"\nlive outage: produced {len(ids)} emotion/shift events, received {len(received)} "
          f"({len(received) - len(set(received))} duplicates), lost {len(lost)}")
    assert not lost, out
    emo = [e["event_id"] for e in produced if e["type"] == "emotion"]
    first_seen = [i for i in dict.fromkeys(received) if i in set(emo)]
    assert first_seen == emo  # in order
    # what a robot relies on survived the outage: no gap in `index`, every shift coherent with its emotion events
    emotions = {e["utterance_id"]: e for e in got if e["type"] == "emotion"}
    assert sorted(e["index"] for e in emotions.values()) == list(range(len(emo)))
    for s in (e for e in got if e["type"] == "shift"):
        assert s["to"] == emotions[s["utterance_id"]]["expression"], s
        assert s["from"] == emotions[s["previous_utterance_id"]]["expression"], s
    assert "unavailable" in out  # the outage was noticed and logged ...
    assert "Traceback" not in out  # ... as one line, not a traceback wall


def test_spooled_events_survive_a_killed_analyzer(broker_factory, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Broker down, analyzer SIGKILLed with undelivered events: the next run delivers them first."""
    broker = broker_factory(persistence=True)
    broker.start()
    spool = tmp_path / "spool"
    events1 = tmp_path / "events1.jsonl"
    transcript = tmp_path / "t.txt"
    transcript.write_text("Dana: good morning\nEve: morning, all good?\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    base = [sys.executable, str(ROOT / "live.py"), "--no-tui", "--checkpoint", str(tiny_checkpoint),
            "--mqtt", broker.url, "--spool", str(spool), "--speed", "0"]

    async def main() -> tuple[list[dict], str]:
        install_loop_exception_handler()
        got: list[dict] = []
        ready = asyncio.Event()
        settings = MqttSettings.from_url(broker.url, client_id="robot", env={})
        sub = asyncio.create_task(persistent_subscriber(settings, ["pcgnet/+/emotion"], got, ready))
        await asyncio.wait_for(ready.wait(), 10)
        broker.kill()
        # run 1: broker away; kill -9 once every event is produced (logged) but none can be delivered
        p1 = await asyncio.create_subprocess_exec(*base, "--replay", str(DEMO), "--events", str(events1),
                                                  cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL,
                                                  stderr=asyncio.subprocess.DEVNULL)
        for _ in range(1200):
            if events1.exists() and sum('"emotion"' in x for x in events1.read_text().splitlines()) >= 11:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        p1.kill()
        await p1.wait()
        broker.start()
        # run 2: another session; the spooled events of run 1 go out first
        p2 = await asyncio.create_subprocess_exec(*base, "--transcript", str(transcript), "--session", "s2",
                                                  cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
                                                  stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(p2.communicate(), 120)
        want = {json.loads(x)["event_id"] for x in events1.read_text().splitlines()
                if x.strip() and json.loads(x)["type"] == "emotion"}
        for _ in range(200):
            if want <= {e["event_id"] for e in got}:
                break
            await asyncio.sleep(0.05)
        sub.cancel()
        await asyncio.gather(sub, return_exceptions=True)
        return got, out.decode(errors="replace")

    got, out = asyncio.run(main())
    produced = [json.loads(x) for x in events1.read_text().splitlines() if x.strip()]
    emo1 = [e["event_id"] for e in produced if e["type"] == "emotion"]
    received = [e["event_id"] for e in got if e.get("type") == "emotion"]
    print(f"\nkilled analyzer: run 1 produced {len(emo1)} emotion events while the broker was down, "
          f"received after restart {len(set(emo1) & set(received))}, "
          f"run 2 events received {sum(e.get('session') == 's2' for e in got if e.get('type') == 'emotion')}")
    assert set(emo1) <= set(received), out
    order = [i for i in dict.fromkeys(received)]
    assert [i for i in order if i in set(emo1)] == emo1
    s2 = [e for e in got if e.get("type") == "emotion" and e.get("session") == "s2"]
    assert len(s2) == 2
    assert max(order.index(i) for i in emo1) < min(order.index(e["event_id"]) for e in s2)  # backlog first
