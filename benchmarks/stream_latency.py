#!/usr/bin/env python3
"""End-to-end latency of the live analyzer: utterance end -> emotion event received by a subscriber.

N sessions replay the bundled demo (examples/demo) concurrently at real-time speed, with start times
spread over ``--stagger-s``, through one analyzer process and a real mosquitto on a loopback port. A
plain aiomqtt subscriber in a *separate process* receives ``pcgnet/+/emotion`` and stamps each event with
CLOCK_MONOTONIC (system-wide on Linux, so it compares with the analyzer's utterance-end stamps).

Latency = receive time - the moment the utterance ended on the replay clock; it includes feature
extraction, micro-batched inference, the MQTT publish at QoS 1 and the broker hop.

    python benchmarks/stream_latency.py                      # N = 1, 4, 16 on the first 15 s of the demo
    python benchmarks/stream_latency.py --sessions 1,8,32,64 --duration-s 30
    python benchmarks/stream_latency.py --search             # largest N with p95 < 300 ms (doubling + bisection)

Uses ``checkpoints/default`` when present, else a tiny untrained causal checkpoint (say which in reports).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# -- outside subscriber -----------------------------------------------------------------

def subscriber_main(port: int, out_path: str, ready: Any, stop: Any) -> None:
    """Separate process: record (session, utterance_id, receive CLOCK_MONOTONIC ns) of every emotion event."""
    import aiomqtt

    rows: list[str] = []

    async def run() -> None:
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-subscriber") as c:
            await c.subscribe("pcgnet/+/emotion", qos=1)
            ready.set()

            last = [time.monotonic()]

            async def receive() -> None:
                async for m in c.messages:
                    now = time.monotonic_ns()
                    last[0] = time.monotonic()
                    p = json.loads(m.payload)  # type: ignore[arg-type]
                    rows.append(f"{p['session']}\t{p['utterance_id']}\t{now}\t{p['latency_ms']}")

            # never cancel a pending receive mid-way (that can lose a message): cancel only at the end
            rx = asyncio.create_task(receive())
            await asyncio.to_thread(stop.wait)
            while time.monotonic() - last[0] < 2.0:  # noqa: ASYNC110 - a lagging subscriber first drains what is in flight
                await asyncio.sleep(0.2)
            rx.cancel()

    asyncio.run(run())
    Path(out_path).write_text("\n".join(rows) + "\n")


# -- one run ---------------------------------------------------------------------------------------

@dataclass
class RunResult:
    n_sessions: int
    utterances: int
    received: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    analyzer_p95_ms: float
    utt_per_s: float
    mean_batch: float


class Stamping:
    """Between sources and the runtime: remembers when each utterance ended (CLOCK_MONOTONIC ns)."""

    def __init__(self, runtime: Any, ends: dict[tuple[str, str], int]) -> None:
        self.runtime, self.ends = runtime, ends

    async def submit(self, utt: Any) -> None:
        self.ends[(utt.session_id, utt.utterance_id)] = utt.ended_at_ns
        await self.runtime.submit(utt)

    def end_session(self, sid: str) -> None:
        self.runtime.end_session(sid)

    def report(self, e: Any) -> None:
        self.runtime.report(e)


class DelayedReplay:
    """A replay that starts after ``delay_s`` and hands its utterances to ``sink`` (the stamping shim)."""

    def __init__(self, replay: Any, delay_s: float, sink: Stamping) -> None:
        self.replay, self.delay_s, self.sink, self.name = replay, delay_s, sink, replay.name

    async def run(self, _runtime: Any) -> None:
        await asyncio.sleep(self.delay_s)
        await self.replay.run(self.sink)


def run_once(n: int, args: argparse.Namespace, checkpoint: Path, extractors: dict[str, Any], port: int,
             workdir: Path) -> RunResult:
    import numpy as np

    from stream.analyzer import load_analyzer
    from stream.capture.replay import ReplaySource
    from stream.mqtt.settings import MqttSettings
    from stream.params import LiveParams
    from stream.record import read_session
    from stream.runtime import Runtime
    from stream.sinks.base import SinkSet
    from stream.sinks.mqtt import MqttSink

    demo = read_session(args.demo)
    keep = [u for u in demo.utterances if u.t_end <= args.duration_s]
    demo.utterances = keep
    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    out = workdir / f"recv_{n}.tsv"
    sub = ctx.Process(target=subscriber_main, args=(port, str(out), ready, stop), daemon=True)
    sub.start()
    if not ready.wait(30):
        raise SystemExit("subscriber did not start")
    params = LiveParams(drain_timeout_s=30.0, max_sessions=max(LiveParams().max_sessions, n + 8))
    analyzer = load_analyzer(checkpoint, params, extractors=extractors)
    ends: dict[tuple[str, str], int] = {}

    async def go() -> float:
        rt = Runtime(analyzer, SinkSet([MqttSink(MqttSettings.from_url(f"mqtt://127.0.0.1:{port}"))]), params)
        shim = Stamping(rt, ends)
        rng = random.Random(n)
        for i in range(n):
            src = ReplaySource(args.demo, speed=args.speed, session_id=f"bench{i:04d}")
            src.recording = demo
            rt.add_source(DelayedReplay(src, rng.uniform(0, args.stagger_s), shim), finite=True)
        class WarmUp:
            """Two utterances at t=0 (before any session's first one ends) so timings exclude lazy setup."""

            name = "warmup"

            async def run(self, sink: Any) -> None:
                from stream.frames import Utterance
                for i in range(2):
                    await sink.submit(Utterance(session_id="warmup", utterance_id=f"w{i}", speaker="W",
                                                t_start=0.0, t_end=1.0, text="warming up the analyzer"))
                sink.end_session("warmup")
        rt.add_source(WarmUp(), finite=True)
        t0 = time.monotonic()
        await rt.run()
        for e in rt.errors[:3]:
            print(f"  runtime error: {e.message}", file=sys.stderr)
        return time.monotonic() - t0

    wall = asyncio.run(go())
    time.sleep(0.5)
    stop.set()
    sub.join(30)
    rows = [r.split("\t") for r in out.read_text().splitlines() if r.strip() and not r.startswith("warmup")]
    lat = np.array([(int(r[2]) - ends[(r[0], r[1])]) / 1e6 for r in rows if (r[0], r[1]) in ends])
    if len(rows) != len(ends) or len(rows) != n * len(keep):
        missing = sorted(set(ends) - {(r[0], r[1]) for r in rows})
        print(f"  note: {len(rows)} received, {len(ends)} submitted, {n * len(keep)} expected; missing e.g. "
              f"{missing[:3]} ({len({m[0] for m in missing})} sessions)", file=sys.stderr)
    inproc = np.array([float(r[3]) for r in rows])
    total = n * len(keep)
    q = np.percentile(lat, [50, 95, 99]) if lat.size else np.array([np.nan] * 3)
    return RunResult(n, total, int(lat.size), float(q[0]), float(q[1]), float(q[2]),
                     float(np.percentile(inproc, 95)) if inproc.size else float("nan"),
                     total / wall, analyzer.mean_batch_size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", default="1,4,16", help="comma-separated N values (default 1,4,16)")
    ap.add_argument("--search", action="store_true", help="find the largest N with p95 below --target-ms")
    ap.add_argument("--target-ms", type=float, default=300.0)
    ap.add_argument("--max-n", type=int, default=512)
    ap.add_argument("--duration-s", type=float, default=15.0, help="replay the demo's first S seconds (max 30.5)")
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--stagger-s", type=float, default=2.5, help="session start times spread over this")
    ap.add_argument("--checkpoint", help="default: checkpoints/default, else a tiny untrained one")
    ap.add_argument("--demo", default=str(ROOT / "examples" / "demo"))
    ap.add_argument("--text-dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                    help="the text encoder's dtype (auto: by the CPU, as live.py)")
    ap.add_argument("--text-backend", choices=("torch", "onnx"), default="torch", help="the text encoder's runtime")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from extractors import registry
    from tests.support.broker import Mosquitto
    from tests.support.checkpoints import make_tiny_checkpoint

    workdir = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    if args.checkpoint:
        ck = Path(args.checkpoint)
    elif (ROOT / "checkpoints" / "default" / "config.json").is_file():
        ck = ROOT / "checkpoints" / "default"
    else:
        ck = make_tiny_checkpoint(workdir / "tiny")
    meta = json.loads((ck / "config.json").read_text())
    exs = {m: registry.create(e["name"], dtype=args.text_dtype, backend=args.text_backend)
           for m, e in meta["extractors"].items()
           if m in meta["model"]["modalities"]}
    from benchmarks.machine import header
    print(header(text_dtype=f"{registry.dtype_of(exs['t'])} ({registry.backend_of(exs['t'])})" if "t" in exs
                 else "none"), flush=True)
    broker = Mosquitto(workdir / "mosquitto").start()
    port = broker.port
    print(f"checkpoint {ck} (hidden {meta['model']['hidden']}, modalities {meta['model']['modalities']}); "
          f"demo first {args.duration_s:.0f} s at speed {args.speed}; {os.cpu_count()} CPUs; mosquitto :{port}")
    print(f"{'N':>5} {'utts':>6} {'recv':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'in-proc p95':>11} "
          f"{'utt/s':>7} {'batch':>6}")
    results: dict[int, RunResult] = {}

    def measure(n: int) -> RunResult:
        r = run_once(n, args, ck, exs, port, workdir)
        results[n] = r
        print(f"{r.n_sessions:5d} {r.utterances:6d} {r.received:6d} {r.p50_ms:8.1f} {r.p95_ms:8.1f} {r.p99_ms:8.1f} "
              f"{r.analyzer_p95_ms:11.1f} {r.utt_per_s:7.2f} {r.mean_batch:6.2f}", flush=True)
        return r

    def ok(r: RunResult) -> bool:
        return r.received == r.utterances and r.p95_ms < args.target_ms

    try:
        if args.search:
            lo, hi, n = 0, None, 1
            while n <= args.max_n:
                if ok(measure(n)):
                    lo, n = n, n * 2
                else:
                    hi = n
                    break
            while hi is not None and hi - lo > max(1, lo // 8):
                mid = (lo + hi) // 2
                if ok(measure(mid)):
                    lo = mid
                else:
                    hi = mid
            print(f"largest N with p95 < {args.target_ms:.0f} ms and no lost events: {lo} "
                  f"(first failing N: {hi if hi is not None else '> ' + str(args.max_n)})")
        else:
            for n in [int(x) for x in args.sessions.split(",") if x.strip()]:
                measure(n)
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
