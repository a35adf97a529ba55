#!/usr/bin/env python3
"""Audio path latency and capacity: end of speech (last voiced sample) -> emotion event at an MQTT subscriber.

N sessions play one voiced MELD dev dialogue (``python -m tests.voicing``) through ``AudioFileSource`` at real
time (the microphone path: silero VAD, ASR, diariser, features, model), their starts spread over
``--stagger-s``, in one analyzer process with a real mosquitto on a loopback port; a subscriber in another
process stamps each event with CLOCK_MONOTONIC (system-wide, so comparable with the analyzer's clock).

Latency = receive time - (the session's start + the gold end of speech of the turn the event covers). It
includes the VAD's end-of-utterance silence (500 ms), ASR, the speaker embedding, features, the model and
the MQTT hop. "in-proc" is the analyzer's own latency_ms (from the segment end it computed, to publish).
All ASR calls of the process share one pool of ``--asr-workers`` threads.

    python benchmarks/audio_latency.py --session runs/voiced/dev2/meld-dev-1039          # per ASR, N = 1
    python benchmarks/audio_latency.py --session DIR --asr whisper-tiny.en --sessions 1,2,4,6
    python benchmarks/audio_latency.py --session DIR --asr whisper-tiny.en --search      # largest N, p95 <= 2 s
    python benchmarks/audio_latency.py --session DIR --batch-check   # does batching ASR across sessions pay?
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from benchmarks.stream_latency import subscriber_main  # noqa: E402

MARGIN_S = 0.05  # tests.voicing keeps 50 ms after the last loud sample in a turn's t_end


class Recording:
    """Between sources and the runtime: keeps each utterance's (t_start, t_end) by (session, utterance id)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.spans: dict[tuple[str, str], tuple[float, float]] = {}

    async def submit(self, utt: Any) -> None:
        self.spans[(utt.session_id, utt.utterance_id)] = (utt.t_start, utt.t_end)
        await self.runtime.submit(utt)

    def end_session(self, sid: str) -> None:
        self.runtime.end_session(sid)

    def report(self, e: Any) -> None:
        self.runtime.report(e)


class Delayed:
    """A source that starts after ``delay_s`` and hands its utterances to ``sink``."""

    def __init__(self, source: Any, delay_s: float, sink: Recording) -> None:
        self.source, self.delay_s, self.sink, self.name = source, delay_s, sink, source.name

    async def run(self, _runtime: Any) -> None:
        await asyncio.sleep(self.delay_s)
        await self.source.run(self.sink)


def run_once(n: int, asr_spec: str, args: argparse.Namespace, checkpoint: Path, port: int, workdir: Path,
             gold_ends: list[tuple[float, float]]) -> dict[str, Any]:
    import numpy as np

    from extractors.speaker import VoiceEncoder
    from stream.analyzer import load_analyzer
    from stream.capture.audiofile import AudioFileSource
    from stream.capture.speech import AsrService
    from stream.mqtt.settings import MqttSettings
    from stream.params import AsrParams, LiveParams, MicParams
    from stream.runtime import Runtime
    from stream.sinks.base import SinkSet
    from stream.sinks.mqtt import MqttSink

    ctx = mp.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    out = workdir / f"recv_{asr_spec.replace('/', '_')}_{n}.tsv"
    sub = ctx.Process(target=subscriber_main, args=(port, str(out), ready, stop), daemon=True)
    sub.start()
    if not ready.wait(30):
        raise SystemExit("subscriber did not start")
    label = asr_spec
    asr_spec, _, decoding = asr_spec.partition("@")  # whisper-tiny.en@1@30: beam 1 on the full 30 s window
    asr_params = AsrParams(workers=args.asr_workers or AsrParams.workers)
    if decoding:
        beam, window = decoding.split("@")
        asr_params = dataclasses.replace(asr_params, beam_size=int(beam),
                                         window_s=None if float(window) >= 30 else float(window))
    params = LiveParams(drain_timeout_s=60.0, asr=asr_params)
    analyzer = load_analyzer(checkpoint, params)
    asr = AsrService(asr_spec, params.asr)
    encoder = VoiceEncoder()
    sources: list[Any] = []

    async def go() -> tuple[float, Recording]:
        await asr.start()  # loading is not latency
        rt = Runtime(analyzer, SinkSet([MqttSink(MqttSettings.from_url(f"mqtt://127.0.0.1:{port}"))]), params)
        shim = Recording(rt)
        rng = random.Random(n)
        for i in range(n):
            src = AudioFileSource(f"a{i:03d}", args.audio, MicParams(asr=asr_spec, vad="silero"), params.vad,
                                  speed=1.0, asr=asr, speakers=params.speakers, encoder=encoder)
            sources.append(src)
            rt.add_source(Delayed(src, rng.uniform(0, args.stagger_s), shim), finite=True)
        t0 = time.monotonic()
        await rt.run()
        for e in rt.errors[:3]:
            print(f"  runtime error: {e.message}", file=sys.stderr)
        return time.monotonic() - t0, shim

    try:
        wall, shim = asyncio.run(go())
    finally:
        asr.close()
    time.sleep(0.5)
    stop.set()
    sub.join(60)
    start = {s.session_id: s.pacer.start_ns for s in sources if s.pacer is not None}
    lat, inproc = [], []
    for r in (line.split("\t") for line in out.read_text().splitlines() if line.strip()):
        span = shim.spans.get((r[0], r[1]))
        if span is None or r[0] not in start:
            continue
        # the gold turn this event covers most: its end of speech, on the session's clock
        best = max(gold_ends, key=lambda g: min(g[1], span[1]) - max(g[0], span[0]))
        end_ns = start[r[0]] + int((best[1] - MARGIN_S) * 1e9)
        lat.append((int(r[2]) - end_ns) / 1e6)
        inproc.append(float(r[3]))
    q = np.percentile(lat, [50, 95, 99]) if lat else [float("nan")] * 3
    return {"n": n, "asr": label, "expected": n * len(gold_ends), "received": len(lat),
            "p50_ms": float(q[0]), "p95_ms": float(q[1]), "p99_ms": float(q[2]),
            "inproc_p50_ms": float(np.median(inproc)) if inproc else float("nan"), "wall_s": wall}


def batch_check(rec: Any, repeats: int = 3) -> None:
    """Does batching ASR across sessions pay? One CTranslate2 encode+generate over 4 segments vs 4 calls."""
    import ctranslate2
    import numpy as np
    from faster_whisper import WhisperModel
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    from extractors.whisper import model_dir

    m = WhisperModel(str(model_dir("tiny.en")), device="cpu", compute_type="int8", cpu_threads=1)
    tok = Tokenizer(m.hf_tokenizer, False, task="transcribe", language="en")
    clips = [rec.audio[int(u.t_start * rec.sample_rate): int(u.t_end * rec.sample_rate)] for u in rec.utterances[:4]]

    def run(batch: list[Any]) -> None:
        f = np.stack([pad_or_trim(m.feature_extractor(c)) for c in batch]).astype(np.float32)
        enc = m.model.encode(ctranslate2.StorageView.from_array(f), to_cpu=False)
        m.model.generate(enc, [[tok.sot, tok.no_timestamps]] * len(batch), beam_size=1, max_length=224)

    ratios = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for c in clips:
            run([c])
        t1 = time.perf_counter()
        run(clips)
        ratios.append((time.perf_counter() - t1) / (t1 - t0))
    print(f"batch of {len(clips)} segments / {len(clips)} single calls (tiny.en, 1 thread): "
          f"{', '.join(f'{r:.2f}' for r in ratios)} (below 1 = batching pays)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--session", type=Path, required=True, help="a voiced session folder (tests.voicing)")
    ap.add_argument("--asr", default="whisper-tiny.en,whisper-base,pocketsphinx",
                    help="comma-separated --asr choices; SPEC@BEAM@WINDOW sets the Whisper beam and encoder window "
                         "padding in seconds (30 = the full window), e.g. whisper-tiny.en@1@30 (default: AsrParams')")
    ap.add_argument("--sessions", default="1", help="comma-separated N values")
    ap.add_argument("--search", action="store_true", help="largest N with p95 <= --target-ms (N = 1, 2, 3, ...)")
    ap.add_argument("--target-ms", type=float, default=2000.0)
    ap.add_argument("--max-n", type=int, default=12)
    ap.add_argument("--stagger-s", type=float, default=3.0, help="session starts spread over this")
    ap.add_argument("--asr-workers", type=int, default=None, help="ASR calls running at once (default AsrParams')")
    ap.add_argument("--checkpoint", default=str(ROOT / "checkpoints" / "default"))
    ap.add_argument("--batch-check", action="store_true", help="only measure whether batching ASR calls pays")
    args = ap.parse_args()
    from benchmarks.machine import header
    print(header(), flush=True)  # CPU, flags, text dtype, load: speed figures depend on them

    import torch

    torch.set_num_threads(1)
    from stream.record import read_session
    from tests.support.broker import Mosquitto

    rec = read_session(args.session)
    if args.batch_check:
        batch_check(rec)
        return
    gold = [(u.t_start, u.t_end) for u in rec.utterances]
    args.audio = args.session / "audio.wav"
    workdir = Path(tempfile.mkdtemp(prefix="audio-bench-"))
    broker = Mosquitto(workdir / "mosquitto").start()
    load0 = os.getloadavg()
    print(f"{args.session.name}: {len(gold)} turns, {rec.audio.size / rec.sample_rate:.0f} s; checkpoint "
          f"{Path(args.checkpoint).name}; {args.asr_workers or 'default'} ASR worker thread(s); {os.cpu_count()} CPUs; "
          f"load {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    print(f"{'ASR':18s} {'N':>3s} {'events':>9s} {'p50 ms':>7s} {'p95 ms':>7s} {'p99 ms':>7s} {'in-proc p50':>11s}")
    rows = []

    def measure(n: int, spec: str) -> dict[str, Any]:
        r = run_once(n, spec, args, Path(args.checkpoint), broker.port, workdir, gold)
        rows.append(r)
        print(f"{spec:18s} {n:3d} {r['received']:4d}/{r['expected']:<4d} {r['p50_ms']:7.0f} {r['p95_ms']:7.0f} "
              f"{r['p99_ms']:7.0f} {r['inproc_p50_ms']:11.0f}", flush=True)
        return r

    try:
        for spec in [a.strip() for a in args.asr.split(",") if a.strip()]:
            if args.search:
                best = 0
                for n in range(1, args.max_n + 1):
                    r = measure(n, spec)
                    if r["received"] < r["expected"] or r["p95_ms"] > args.target_ms:
                        break
                    best = n
                print(f"{spec}: largest N with p95 <= {args.target_ms:.0f} ms and no lost events: {best}")
            else:
                for n in [int(x) for x in args.sessions.split(",") if x.strip()]:
                    measure(n, spec)
        base = {r["asr"]: r["p50_ms"] for r in rows if r["n"] == 1}
        if len(base) > 1 and "whisper-tiny.en" in base:
            print("p50 ratio vs whisper-tiny.en (same process, N = 1): " + ", ".join(
                f"{k} {v / base['whisper-tiny.en']:.2f}x" for k, v in base.items()))
        load1 = os.getloadavg()
        print(f"load at the end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
