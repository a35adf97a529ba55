#!/usr/bin/env python3
"""Which stereo downmix the audio path should use, measured on WER (whisper-tiny.en, espeak-ng speech).

Five stereo situations people record: both channels alike, two spaced microphones (one 1.2 ms later and
quieter), speech on one channel and a noisy second microphone on the other, each speaker on their own
channel (phone / podcast), and channels in opposite phase (a miswired microphone). Each is turned into mono
three ways: the mean of the channels, the louder channel of each decoded frame (1024 samples), and
:func:`stream.capture.pcm.downmix` (the mean, unless it cancels: then the first near-loudest channel). Every
mono signal then takes the same :class:`~stream.capture.pcm.LevelNormaliser` and is transcribed in one call.

    python benchmarks/downmix_wer.py            # about a minute of CPU
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extractors.asr import create_asr, word_error_rate  # noqa: E402
from stream.capture.pcm import LevelNormaliser, downmix  # noqa: E402
from tests.voicing import Line, voice_lines  # noqa: E402

RATE = 16000
FRAME = 1024
LINES = [("A", "The meeting moved to Thursday because the room was booked on Wednesday."),
         ("B", "That is fine with me, but somebody has to tell the people in London."),
         ("A", "I will send them an email this afternoon with the new agenda."),
         ("B", "Please attach the budget figures as well, they asked for them twice.")]


def per_frame(x: np.ndarray, pick: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    return np.concatenate([pick(x[:, i:i + FRAME]) for i in range(0, x.shape[1], FRAME)])


def mean(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=0)


def louder(x: np.ndarray) -> np.ndarray:
    return x[int(np.argmax((x.astype(np.float64) ** 2).sum(axis=1)))]


def ours(x: np.ndarray) -> np.ndarray:
    return downmix(x)


def situations(speech: np.ndarray, turns: list[tuple[int, int]], rng: np.random.Generator) -> dict[str, np.ndarray]:
    s = speech * (0.95 / float(np.abs(speech).max()))
    delay = int(0.0012 * RATE)
    late = np.concatenate([np.zeros(delay, np.float32), s[:-delay]]) * 0.6
    noise = rng.normal(0, 1, s.size).astype(np.float32)
    noise *= 0.5 * float(np.sqrt(np.mean(s ** 2))) / float(np.sqrt(np.mean(noise ** 2)))
    a, b = np.zeros_like(s), np.zeros_like(s)
    for i, (t0, t1) in enumerate(turns):
        (a if i % 2 == 0 else b)[t0:t1] = s[t0:t1]
    return {"alike": np.stack([s, s]), "spaced mics": np.stack([s, late]),
            "speech + noisy mic": np.stack([s, np.clip(s * 0.3 + noise, -1, 1)]),
            "one speaker per channel": np.stack([a, b]), "opposite phase": np.stack([s, -s])}


def main() -> int:
    from benchmarks.machine import header, load

    print(header())
    v = voice_lines([Line(sp, t) for sp, t in LINES], name="downmix")
    turns = [(int(g.t_start * RATE), int(g.t_end * RATE)) for g in v.segments]
    gold = [" ".join(t for _, t in LINES)]
    asr = create_asr("whisper-tiny.en")
    methods = {"mean": mean, "louder/frame": louder, "downmix()": ours}
    rows = []
    for name, x in situations(v.audio, turns, np.random.default_rng(0)).items():
        wers = []
        for m in methods.values():
            mono = LevelNormaliser()(per_frame(x, m).astype(np.float32))
            t0 = time.perf_counter()
            text = asr.transcribe(mono, RATE, None).text or ""
            wers.append((word_error_rate(gold, [text]), time.perf_counter() - t0))
        rows.append((name, wers))
    print(f"{'situation':26s}" + "".join(f"{m:>14s}" for m in methods) + "   (WER, whisper-tiny.en)")
    for name, wers in rows:
        print(f"{name:26s}" + "".join(f"{w:14.3f}" for w, _ in wers))
    print(f"{'mean over situations':26s}" + "".join(f"{np.mean([r[1][i][0] for r in rows]):14.3f}"
                                                      for i in range(len(methods))))
    print(f"load average after: {load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
