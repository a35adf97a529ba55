"""Extractor speed, single thread: ms per second of audio, per video frame, per utterance of text.

Real inputs generated offline: espeak-ng sentences (16 kHz), matplotlib's shipped photo, a fixed sentence set.
Each measurement is warmed up, then repeated; the table shows the median and the 90th percentile, and the
real-time factor (RTF = processing time / audio time) where it applies.

    .venv/bin/python benchmarks/extractors.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SENTENCES = [
    "Hello, I am really happy to see you today. This is wonderful news.",
    "I cannot believe you did that. I am so angry right now.",
    "Well, I suppose we could try again tomorrow if the weather is better.",
]
TEXTS = [
    "Oh my god, you got the job? That's amazing!",
    "I don't know, maybe.",
    "Why would you even say that to me?",
    "Okay. See you later then.",
] * 8


def speech(seconds_min: float = 10.0) -> np.ndarray:
    """espeak-ng sentences concatenated to at least ``seconds_min`` of 16 kHz speech."""
    from extractors.audio import resample

    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is needed for the benchmark speech (apt-get install espeak-ng)")
    parts, total = [], 0.0
    with tempfile.TemporaryDirectory() as d:
        i = 0
        while total < seconds_min:
            p = os.path.join(d, f"{i}.wav")
            subprocess.run(["espeak-ng", "-s", "150", "-w", p, SENTENCES[i % len(SENTENCES)]], check=True)
            with wave.open(p, "rb") as w:
                x = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
                rate = w.getframerate()
            parts.append(resample(x, rate, 16000))
            total += parts[-1].size / 16000
            i += 1
    return np.concatenate(parts)


def timeit(fn: Callable[[], object], repeat: int, warmup: int = 1) -> np.ndarray:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return np.array(out) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    from benchmarks.machine import header
    print(header(), flush=True)  # CPU, flags, text dtype, load: speed figures depend on them
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    from extractors import registry
    from extractors.base import UtteranceMedia

    rows: list[tuple[str, str, float, float, str]] = []

    def add(name: str, unit: str, ms: np.ndarray, per: float, extra: str = "") -> None:
        rows.append((name, unit, float(np.median(ms)) / per, float(np.percentile(ms, 90)) / per, extra))

    long = speech(12.0)
    utt = long[: 16000 * 4]  # one 4 s utterance (what speech(4.0) would synthesise again)
    sec = utt.size / 16000
    media = UtteranceMedia(audio=utt, sample_rate=16000)
    for name in ("egemaps", "is10", "mfcc"):
        ex = registry.create(name)
        ms = timeit(lambda ex=ex: ex(media), args.repeat)
        add(f"audio {name} ({ex.dim}-d)", "ms / audio-s", ms, sec, f"RTF {np.median(ms) / 1000 / sec:.3f}")

    from extractors.vad import CHUNK, SileroVad, VadSegmenter, detect_speech

    vad = SileroVad()
    lsec = long.size / 16000
    ms = timeit(lambda: detect_speech(long, 16000, vad=vad), args.repeat)
    add(f"vad silero offline ({lsec:.0f} s file)", "ms / audio-s", ms, lsec, f"RTF {np.median(ms) / 1000 / lsec:.4f}")

    def incremental() -> None:
        seg = VadSegmenter(vad=vad)
        for i in range(0, long.size, CHUNK):
            seg.push(long[i:i + CHUNK])
        seg.flush()

    ms = timeit(incremental, max(3, args.repeat // 2))
    add("vad silero incremental (32 ms blocks)", "ms / audio-s", ms, lsec,
        f"{np.median(ms) / (long.size / CHUNK):.2f} ms per block")

    from extractors.asr import create_asr

    asr = create_asr("pocketsphinx")
    ms = timeit(lambda: asr.transcribe(utt, 16000), max(3, args.repeat // 2))
    add("asr pocketsphinx (full_utt)", "ms / audio-s", ms, sec, f"RTF {np.median(ms) / 1000 / sec:.3f}")

    from extractors.registry import package_dir

    if package_dir("resemblyzer") is not None:
        from extractors.speaker import VoiceEncoder

        enc = VoiceEncoder()
        ms = timeit(lambda: enc.embed(utt, 16000), args.repeat)
        add("speaker resemblyzer d-vector", "ms / audio-s", ms, sec, f"RTF {np.median(ms) / 1000 / sec:.3f}")

    import cv2

    photo = cv2.imread(str(package_dir("matplotlib") / "mpl-data/sample_data/grace_hopper.jpg"))
    fer = registry.create("fer")
    frames = tuple([photo] * fer.max_frames)
    ms = timeit(lambda: fer(UtteranceMedia(frames=frames)), max(3, args.repeat // 2))
    add(f"visual fer, {photo.shape[1]}x{photo.shape[0]} frames (detect+classify)", "ms / frame", ms, len(frames))
    grey = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    ms = timeit(lambda: fer.detector.largest_face(grey), args.repeat)
    add("  of which Haar face detection", "ms / frame", ms, 1)
    crop = fer.crop(grey, fer.detector.largest_face(grey))[None]
    ms = timeit(lambda: fer.classify(crop), args.repeat)
    add("  of which mini-Xception (1 face)", "ms / frame", ms, 1)

    minilm = registry.create("minilm-l6")
    one = [UtteranceMedia(text=TEXTS[0])]
    ms = timeit(lambda: minilm.batch(one), args.repeat * 3)
    add("text minilm-l6, batch 1", "ms / utterance", ms, 1)
    many = [UtteranceMedia(text=t) for t in TEXTS]
    ms = timeit(lambda: minilm.batch(many), args.repeat)
    add(f"text minilm-l6, batch {len(many)}", "ms / utterance", ms, len(many))
    for name in ("vader", "nrc"):
        ex = registry.create(name)
        ms = timeit(lambda ex=ex: ex.batch(many), args.repeat)
        add(f"text {name}", "ms / utterance", ms, len(many))

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"extractors, 1 torch thread, median and p90 of {args.repeat} runs "
                        f"(utterance {sec:.1f} s of espeak-ng speech)")
    for col in ("extractor", "unit", "median", "p90", "note"):
        table.add_column(col, justify="right" if col in ("median", "p90") else "left")
    for name, unit, med, p90, extra in rows:
        table.add_row(name, unit, f"{med:.2f}", f"{p90:.2f}", extra)
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
