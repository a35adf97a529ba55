#!/usr/bin/env python3
"""Make the bundled demo session ``examples/demo`` (record format v1) with espeak-ng voices.

A scripted three-person dialogue with clear emotion changes, voiced by espeak-ng with a different
voice per speaker and prosody per emotion (pitch, rate, loudness), resampled to 16 kHz mono by sox,
laid out on one timeline with short pauses. Gold labels (MELD classes) go into ``utterances.jsonl``.

    python examples/make_demo.py [--out examples/demo]

Needs the Debian packages espeak-ng and sox (scripts/install.sh installs them). The output is
deterministic for a given espeak-ng version.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
PAUSE_S = 0.6

VOICES = {"Alice": "en-us+f3", "Bob": "en-us+m3", "Carol": "en-gb+f4"}

# emotion -> espeak-ng (words/minute, pitch 0-99, amplitude 0-200)
PROSODY = {
    "neutral": (175, 50, 100),
    "joy": (185, 72, 130),
    "surprise": (175, 80, 140),
    "sadness": (140, 30, 70),
    "anger": (190, 40, 180),
    "fear": (200, 70, 90),
    "disgust": (140, 35, 120),
}

SCRIPT = [
    ("Alice", "neutral", "Morning. Let's check the launch numbers."),
    ("Bob", "joy", "We doubled our sign ups! Wonderful!"),
    ("Carol", "surprise", "Wait, doubled? Really? Wow!"),
    ("Alice", "joy", "Fantastic work, I am so happy."),
    ("Bob", "neutral", "Also, payments failed last night."),
    ("Alice", "anger", "What? Nobody told me! Unacceptable!"),
    ("Carol", "fear", "I'm scared we lost the orders."),
    ("Bob", "sadness", "I am sorry. It was my fault."),
    ("Alice", "neutral", "Okay. Let's restore the orders first."),
    ("Carol", "joy", "Good news, the backup has everything!"),
    ("Bob", "joy", "Oh, what a relief! Thank you!"),
]


def voice(text: str, speaker: str, emotion: str, tmp: Path, i: int) -> np.ndarray:
    rate, pitch, amp = PROSODY[emotion]
    raw, res = tmp / f"{i}.raw.wav", tmp / f"{i}.wav"
    subprocess.run(["espeak-ng", "-v", VOICES[speaker], "-s", str(rate), "-p", str(pitch), "-a", str(amp),
                    "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", str(res)], check=True,
                   capture_output=True)
    with wave.open(str(res), "rb") as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    # trim espeak's leading/trailing silence so utterance times match the speech
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 300)
    return pcm[max(0, loud[0] - 800): loud[-1] + 800] if loud.size else pcm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).with_name("demo")))
    args = ap.parse_args()
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise SystemExit(f"make_demo.py: {tool} not found (apt-get install espeak-ng sox)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pieces: list[np.ndarray] = []
    utts = []
    t = 0.3
    pieces.append(np.zeros(int(t * SAMPLE_RATE), dtype="<i2"))
    with tempfile.TemporaryDirectory() as d:
        for i, (spk, emo, text) in enumerate(SCRIPT):
            pcm = voice(text, spk, emo, Path(d), i)
            dur = pcm.size / SAMPLE_RATE
            utts.append({"utterance_id": f"u{i + 1:04d}", "speaker": spk, "t_start": round(t, 3),
                         "t_end": round(t + dur, 3), "text": text, "emotion": emo})
            pieces.append(pcm)
            pieces.append(np.zeros(int(PAUSE_S * SAMPLE_RATE), dtype="<i2"))
            t += dur + PAUSE_S
    audio = np.concatenate(pieces)
    with wave.open(str(out / "audio.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(audio.tobytes())
    with open(out / "utterances.jsonl", "w", encoding="utf-8") as f:
        for u in utts:
            f.write(json.dumps(u) + "\n")
    meta = {"format": "pcgnet-session", "version": 1, "session_id": "demo", "created_at": "2026-11-25T00:00:00Z",
            "audio": {"file": "audio.wav", "sample_rate": SAMPLE_RATE}, "video": None,
            "speakers": list(VOICES), "checkpoint": None,
            "labels": ["neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger"],
            "generator": "examples/make_demo.py (espeak-ng voices)"}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"{out}: {len(utts)} utterances, {audio.size / SAMPLE_RATE:.1f} s, "
          f"{(out / 'audio.wav').stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
