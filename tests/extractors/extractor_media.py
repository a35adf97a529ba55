"""Real offline test media helpers for the extractor tests (a uniquely named module: several conftest.py
files exist in this repository, so nothing imports from ``conftest``)."""

from __future__ import annotations

import json
import subprocess
import wave
from pathlib import Path

import numpy as np

from tests.real_parts import require_binary

RATE = 16000
SENT1 = "Hello, I am really happy to see you today. This is wonderful news."
SENT2 = "I cannot believe you did that. I am so angry right now."


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return (pcm.astype(np.float32) / 32768.0), w.getframerate()


def write_wav(path: Path, audio: np.ndarray, rate: int = RATE) -> None:
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def espeak(text: str, path: Path, voice: str = "en-us") -> np.ndarray:
    """espeak-ng speech resampled to 16 kHz mono float32."""
    require_binary("espeak-ng")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), text], check=True)
    audio, rate = read_wav(path)
    from extractors.audio import resample

    return resample(audio, rate, RATE)


def make_session(root: Path, session_id: str, speech, photos, *, video: bool,
                 texts=("I am so happy to see you today", "I am so angry right now", ""),
                 emotions=("joy", "anger", None)) -> Path:
    """Three utterances: sent1 (speaker A, face shown), sent2 (speaker B, no face), 1 s of silence (A)."""
    root.mkdir(parents=True)
    gap = np.zeros(RATE // 2, np.float32)
    parts, spans, t = [], [], 0.0
    for clip in (speech.sent1, speech.sent2, np.zeros(RATE, np.float32)):
        parts += [gap, clip]
        t0 = t + gap.size / RATE
        t = t0 + clip.size / RATE
        spans.append((round(t0, 3), round(t, 3)))
    audio = np.concatenate(parts + [gap])
    write_wav(root / "audio.wav", audio)
    meta = {"format": "pcgnet-session", "version": 1, "session_id": session_id, "created_at": "2026-11-25T00:00:00Z",
            "audio": {"file": "audio.wav", "sample_rate": RATE}, "video": None, "speakers": ["A", "B"],
            "checkpoint": None, "labels": None}
    if video:
        import cv2

        fps, size = 5.0, (160, 160)
        face = cv2.resize(photos["smiling"], size)
        blank = np.full((size[1], size[0], 3), 80, np.uint8)
        w = cv2.VideoWriter(str(root / "video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        for i in range(int(np.ceil(audio.size / RATE * fps))):
            ts = i / fps
            w.write(face if spans[0][0] <= ts < spans[0][1] else blank)
        w.release()
        meta["video"] = {"file": "video.mp4", "fps": fps}
    (root / "meta.json").write_text(json.dumps(meta))
    with (root / "utterances.jsonl").open("w") as f:
        for i, ((t0, t1), text, emo) in enumerate(zip(spans, texts, emotions, strict=True)):
            obj = {"utterance_id": f"u{i + 1:04d}", "speaker": "AB"[i % 2] if i < 2 else "A",
                   "t_start": t0, "t_end": t1, "text": text}
            if emo is not None:
                obj["emotion"] = emo
            f.write(json.dumps(obj) + "\n")
    return root
