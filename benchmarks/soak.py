"""Soak benchmark: replay sessions for a long time at accelerated speed; watch memory and per-session state.

A live analyzer runs for days, so anything that grows per utterance or per session is a slow leak.
This drives the real runtime in-process (the same ``Runtime``/``Analyzer`` as ``live.py``) with

* ``--sessions`` long-lived sessions that loop the demo conversation for the whole run (fresh utterance
  ids each loop), so their conversation state must stay bounded by the model's window, and
* short sessions that start every ``--churn-every-s`` seconds, play the demo once and end, so finished
  sessions must be released,

and samples every ``--sample-s`` seconds: resident memory (VmRSS), sessions held by the analyzer and
the runtime, the largest per-session state (model tensors + JSON part), queue depths and utterances
processed. It prints one line per sample and a summary with the RSS slope after warm-up.

It runs the shipped model (``checkpoints/default`` with its fine-tuned text extractor and persona
estimator), so the memory it watches is the memory of a real deployment; ``--tiny`` swaps in the tiny
untrained checkpoint of the plumbing tests.

Usage::

    python benchmarks/soak.py                      # 3 minutes, 4 sessions at 10x, shipped model
    python benchmarks/soak.py --minutes 30         # a long run: leaks show as an RSS slope
    nice -n 10 python benchmarks/soak.py --json runs/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def model_state_bytes(st: Any) -> int:
    """Bytes of a session's model state (the conversation window's tensors)."""
    import torch

    return sum(v.numel() * v.element_size() for v in st.model_state.to_tensors().values()
               if isinstance(v, torch.Tensor))


def state_bytes(st: Any) -> int:
    """Bytes of one session's state: model tensors, the JSON-able part and the index -> utterance id map."""
    n = model_state_bytes(st) + len(json.dumps(st.export()))
    n += sum(8 + len(v) for v in st.index_to_utterance.values())
    return n


class LoopSource:
    """Plays the demo's utterances over and over into one session until ``stop_at`` (monotonic seconds)."""

    def __init__(self, session_id: str, utterances: list[Any], duration_s: float, speed: float,
                 stop_at: float | None, loops: int | None = None) -> None:
        self.name = f"soak:{session_id}"
        self.session_id = session_id
        self.utterances = utterances
        self.duration_s = duration_s
        self.speed = speed
        self.stop_at = stop_at
        self.loops = loops
        self.sent = 0

    async def run(self, sink: Any) -> None:
        from stream.frames import Utterance

        start = time.monotonic()
        loop = 0
        try:
            while (self.loops is None or loop < self.loops) and (self.stop_at is None or time.monotonic() < self.stop_at):
                offset = loop * (self.duration_s + 1.0)
                for u in self.utterances:
                    due = start + (offset + u.t_end) / self.speed
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if self.stop_at is not None and time.monotonic() >= self.stop_at:
                        return
                    await sink.submit(Utterance(
                        session_id=self.session_id, utterance_id=f"L{loop}-{u.utterance_id}", speaker=u.speaker,
                        t_start=offset + u.t_start, t_end=offset + u.t_end, text=u.text))
                    self.sent += 1
                loop += 1
        finally:
            sink.end_session(self.session_id)


@dataclasses.dataclass
class Sample:
    t_s: float
    rss_mb: float
    processed: int
    events: int
    sessions_analyzer: int
    sessions_runtime: int
    max_state_bytes: int
    long_state_bytes: int
    long_model_bytes: int
    max_queue: int


async def soak(args: argparse.Namespace) -> list[Sample]:
    import torch

    torch.set_num_threads(1)
    from stream.analyzer import load_analyzer
    from stream.params import LiveParams
    from stream.record import read_session
    from stream.runtime import Runtime
    from stream.sinks.base import Sink, SinkSet

    class CountingSink(Sink):
        name = "count"

        async def handle(self, frame: Any) -> None:
            return None

    params = LiveParams(drain_timeout_s=5.0, cancel_timeout_s=2.0)
    if args.tiny:
        from extractors import registry
        from tests.support.checkpoints import make_tiny_checkpoint

        tiny = make_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="soak-ckpt-")) / "tiny")
        analyzer = load_analyzer(tiny, params, extractors={"t": registry.create("minilm-l6")})
    else:  # the checkpoint's own extractors, as live.py builds them
        analyzer = load_analyzer(args.checkpoint, params)
    sinks: list[Sink] = [CountingSink()]
    if args.mqtt:
        from stream.mqtt.settings import MqttSettings
        from stream.sinks.mqtt import MqttSink

        sinks.append(MqttSink(MqttSettings.from_url(args.mqtt), spool_dir=args.spool))
    runtime = Runtime(analyzer, SinkSet(sinks), params)

    rec = read_session(args.replay)
    utts = sorted(rec.utterances, key=lambda u: u.t_end)
    duration = max(u.t_end for u in utts)
    t0 = time.monotonic()
    stop_at = t0 + args.minutes * 60
    long_ids = [f"long{i}" for i in range(args.sessions)]
    for sid in long_ids:
        runtime.add_source(LoopSource(sid, utts, duration, args.speed, stop_at), finite=True)

    class Churn:
        """Starts a short session every ``churn_every_s`` (each plays the demo once, then ends)."""

        name = "soak:churn"

        async def run(self, sink: Any) -> None:
            n = 0
            tasks: set[asyncio.Task[Any]] = set()
            while time.monotonic() + duration / args.speed < stop_at:
                src = LoopSource(f"short{n}", utts, duration, args.speed, stop_at, loops=1)
                t = asyncio.create_task(src.run(sink), name=f"stream[short{n}].source")
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                n += 1
                await asyncio.sleep(args.churn_every_s)
            await asyncio.gather(*tasks)

    if args.churn_every_s > 0:
        runtime.add_source(Churn(), finite=True)

    samples: list[Sample] = []

    async def sampler() -> None:
        while True:
            await asyncio.sleep(args.sample_s)
            sessions = dict(analyzer.sessions)
            sizes = {sid: state_bytes(st) for sid, st in sessions.items()}
            s = Sample(
                t_s=round(time.monotonic() - t0, 1), rss_mb=round(rss_mb(), 1), processed=analyzer.processed,
                events=runtime.events_emitted, sessions_analyzer=len(sessions), sessions_runtime=len(runtime.workers),
                max_state_bytes=max(sizes.values(), default=0),
                long_state_bytes=max((sizes.get(s, 0) for s in long_ids), default=0),
                long_model_bytes=max((model_state_bytes(sessions[s]) for s in long_ids if s in sessions), default=0),
                max_queue=max(runtime.queue_depths().values(), default=0))
            samples.append(s)
            print(f"{s.t_s:8.1f} s  rss {s.rss_mb:7.1f} MiB  utts {s.processed:7d}  events {s.events:7d}  "
                  f"sessions {s.sessions_analyzer:4d}/{s.sessions_runtime:4d}  "
                  f"state max {s.max_state_bytes / 1024:6.1f} KiB (long {s.long_state_bytes / 1024:5.1f}, "
                  f"model {s.long_model_bytes / 1024:5.1f})  "
                  f"queue max {s.max_queue}", flush=True)

    samp = asyncio.create_task(sampler())
    try:
        rc = await runtime.run()
    finally:
        samp.cancel()
        (err,) = await asyncio.gather(samp, return_exceptions=True)
        if err is not None and not isinstance(err, asyncio.CancelledError):
            raise err
    if rc != 0:
        print(f"runtime ended with rc={rc}: {runtime.fatal}", file=sys.stderr)
    return samples


def slope_per_10min(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return float("nan")
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return (sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den) * 600 if den else float("nan")


def summarize(samples: list[Sample], warmup_s: float) -> dict[str, Any]:
    steady = [s for s in samples if s.t_s >= warmup_s] or samples
    if not steady:
        return {}
    rss = [s.rss_mb for s in steady]
    live = [s for s in steady if s.long_model_bytes > 0] or steady  # the last sample may follow the end
    return {
        "samples": len(samples),
        "duration_s": samples[-1].t_s,
        "utterances": samples[-1].processed,
        "events": samples[-1].events,
        "rss_after_warmup_mb": rss[0],
        "rss_end_mb": rss[-1],
        "rss_min_mb": min(rss),
        "rss_max_mb": max(rss),
        "rss_slope_mb_per_10min": round(slope_per_10min([s.t_s for s in steady], rss), 2),
        "long_session_state_kib_first": round(live[0].long_state_bytes / 1024, 1),
        "long_session_state_kib_last": round(live[-1].long_state_bytes / 1024, 1),
        "long_session_state_kib_max": round(max(s.long_state_bytes for s in steady) / 1024, 1),
        "long_session_model_state_kib_first": round(live[0].long_model_bytes / 1024, 1),
        "long_session_model_state_kib_last": round(live[-1].long_model_bytes / 1024, 1),
        "sessions_held_first": live[0].sessions_analyzer,
        "sessions_held_last": live[-1].sessions_analyzer,
        "max_queue_depth": max(s.max_queue for s in samples),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=3.0, help="how long to run (default 3)")
    p.add_argument("--sessions", type=int, default=4, help="long-lived sessions looping the demo (default 4)")
    p.add_argument("--speed", type=float, default=10.0, help="replay speed-up (default 10x)")
    p.add_argument("--churn-every-s", type=float, default=5.0,
                   help="start a short session (one demo pass) this often; 0 = none (default 5)")
    p.add_argument("--sample-s", type=float, default=10.0, help="sampling interval (default 10 s)")
    p.add_argument("--warmup-s", type=float, default=45.0, help="samples before this are not in the slope")
    p.add_argument("--replay", default=str(ROOT / "examples" / "demo"), help="session folder to loop")
    p.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "default"),
                   help="causal checkpoint (default: the shipped checkpoints/default)")
    p.add_argument("--tiny", action="store_true", help="a tiny untrained checkpoint instead (plumbing only)")
    p.add_argument("--mqtt", help="also publish to this broker (mqtt://host:port)")
    p.add_argument("--spool", help="with --mqtt: on-disk spool directory")
    p.add_argument("--json", help="write samples and summary to this file")
    args = p.parse_args(argv)
    from benchmarks.machine import header
    print(header(), flush=True)  # CPU, flags, text dtype, load: speed figures depend on them
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"soak: {args.minutes:g} min, {'tiny checkpoint' if args.tiny else args.checkpoint}, {args.sessions} long "
          f"sessions at {args.speed:g}x, a short session every {args.churn_every_s:g} s, sampling every "
          f"{args.sample_s:g} s; load average {os.getloadavg()[0]:.2f} (1 min) at start", flush=True)
    samples = asyncio.run(soak(args))
    summary = summarize(samples, min(args.warmup_s, args.minutes * 60 / 4))
    print("summary: " + json.dumps(summary))
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) at the end")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "summary": summary,
                                               "samples": [dataclasses.asdict(s) for s in samples]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
