"""A recording interrupted by SIGTERM or SIGKILL leaves a readable session folder that ``--replay`` plays."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
pytestmark = pytest.mark.slow


async def live(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, str(ROOT / "live.py"), *argv, cwd=ROOT, env=ENV,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def record_and_interrupt(rec: Path, sig: int, ckpt: Path) -> tuple[int, str]:
    p = await live("--replay", str(DEMO), "--speed", "2", "--no-tui", "--checkpoint", str(ckpt), "--record", str(rec))
    out_task = asyncio.create_task(p.communicate())
    for _ in range(1200):
        if len(lines(rec / "utterances.jsonl")) >= 4 or out_task.done():
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)  # somewhere between two utterances, or in the middle of one
    p.send_signal(sig)
    out, _ = await asyncio.wait_for(out_task, 60)
    return p.returncode, out.decode(errors="replace")


def test_interrupted_recordings_replay(tiny_checkpoint: Path, runtime_factory, tmp_path: Path) -> None:
    from stream.capture.replay import ReplaySource
    from stream.sinks.jsonl import JsonlSink

    async def main() -> dict[str, tuple[int, str, int, str]]:
        results = {}
        runs = await asyncio.gather(*(record_and_interrupt(tmp_path / name, sig, tiny_checkpoint)
                                      for name, sig in (("term", signal.SIGTERM), ("kill", signal.SIGKILL))))
        for name, (rc, out) in zip(("term", "kill"), runs, strict=True):
            ev = tmp_path / f"{name}-replay.jsonl"
            if name == "kill":  # `live.py --replay` of the killed recording, as a user would run it
                p = await live("--replay", str(tmp_path / name), "--speed", "0", "--no-tui", "--checkpoint",
                               str(tiny_checkpoint), "--events", str(ev))
                out2, _ = await asyncio.wait_for(p.communicate(), 120)
                results[name] = (rc, out, p.returncode or 0, out2.decode(errors="replace"))
            else:  # the same replay in-process (saves a Python + torch start)
                rt = runtime_factory([JsonlSink(ev)])
                rt.add_source(ReplaySource(tmp_path / name, speed=0), finite=True)
                results[name] = (rc, out, await rt.run(), "")
        return results

    results = asyncio.run(main())
    demo_ids = [json.loads(x)["utterance_id"] for x in lines(DEMO / "utterances.jsonl")]
    for name, (rc, out, rc2, out2) in results.items():
        rec = tmp_path / name
        if name == "term":
            assert rc in (0, 130, 143), out  # an orderly stop
            assert "Traceback" not in out, out
        else:
            assert rc == -signal.SIGKILL
        meta = json.loads((rec / "meta.json").read_text())
        assert meta["format"] == "pcgnet-session"
        recorded = [json.loads(x)["utterance_id"] for x in lines(rec / "utterances.jsonl") if x.strip().endswith("}")]
        assert 4 <= len(recorded) < len(demo_ids) and recorded == demo_ids[: len(recorded)]
        assert rc2 == 0, out2
        assert "Traceback" not in out2
        replayed = [json.loads(x) for x in lines(tmp_path / f"{name}-replay.jsonl")]
        emo = [e["utterance_id"] for e in replayed if e["type"] == "emotion"]
        # every complete recorded utterance is replayed (a torn last line is dropped and named)
        assert emo == recorded[: len(emo)] and len(emo) >= len(recorded) - 1, (emo, recorded, out2)
        print(f"\n{name}: recorder rc={rc}, recorded {len(recorded)} of {len(demo_ids)} utterances, "
              f"replayed {len(emo)} emotion events")
