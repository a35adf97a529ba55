"""What the web dashboard costs the analyzer's event loop per event (not a test).

``WebSink.handle`` (fold into the latency figures, serialise once, keep in history, enqueue for every open
page) with 0, 1, 8 and 32 pages attached that never read (the worst case: every page queue is full and
drops its oldest event on each publish), against ``JsonlSink.handle`` (serialise + write + flush a line)
in the same process. Realistic emotion events built by ``stream.events``.

    .venv/bin/python benchmarks/web_fanout.py            # 7 runs x 3000 events per setting, ~10 s
    .venv/bin/python benchmarks/web_fanout.py --runs 3

The machine's CPUs are shared: the load average is printed before and after, read the numbers with it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream.events import emotion_event  # noqa: E402
from stream.frames import EventFrame, EventKind  # noqa: E402
from stream.params import WebParams  # noqa: E402
from stream.sinks.base import Sink  # noqa: E402
from stream.sinks.jsonl import JsonlSink  # noqa: E402
from stream.sinks.web import WebSink  # noqa: E402
from stream.web.hub import DashboardHub  # noqa: E402

LABELS = ["neutral", "joy", "surprise", "fear", "sadness", "disgust", "anger"]


def frames(n: int) -> list[EventFrame]:
    out = []
    for i in range(n):
        probs = [0.05] * 7
        probs[i % 7] = 0.7
        out.append(EventFrame(session_id="bench", kind=EventKind.EMOTION, payload=emotion_event(
            session="bench", utterance_id=f"u{i:05d}", speaker=f"Speaker {i % 4}", t_start=i * 2.0,
            t_end=i * 2.0 + 1.5, text="We doubled our sign ups this week, which is wonderful news for everyone.",
            labels=LABELS, probs=probs, modalities=["t"], index=i, latency_ms=20.0)))
    return out


async def per_event_us(sink: Sink, evs: list[EventFrame]) -> float:
    t0 = time.perf_counter()
    for f in evs:
        await sink.handle(f)
    return (time.perf_counter() - t0) / len(evs) * 1e6


async def main_async(runs: int, n: int) -> None:
    evs = frames(n)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(runs):
            jsonl = JsonlSink(Path(tmp) / f"events{r}.jsonl")
            await jsonl.start()
            results.setdefault("jsonl (reference)", []).append(await per_event_us(jsonl, evs))
            await jsonl.stop()
            for pages in (0, 1, 8, 32):
                hub = DashboardHub(WebParams())
                for _ in range(pages):
                    hub.attach()
                results.setdefault(f"web, {pages:2d} stalled pages", []).append(
                    await per_event_us(WebSink(hub), evs))
    ref = statistics.median(results["jsonl (reference)"])
    print(f"{'sink':<24} {'median us/event':>16} {'p95':>8} {'vs jsonl':>9}")
    for name, xs in results.items():
        xs = sorted(xs)
        p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
        print(f"{name:<24} {statistics.median(xs):16.1f} {p95:8.1f} {statistics.median(xs) / ref:8.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--events", type=int, default=3000)
    args = ap.parse_args()
    from benchmarks.machine import header
    print(header(), flush=True)  # CPU, flags, text dtype, load: speed figures depend on them
    logging.getLogger("stream.channel").setLevel(logging.ERROR)  # the stalled pages' "queue full" warnings
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    asyncio.run(main_async(args.runs, args.events))
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
