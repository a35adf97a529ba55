"""The kinds of recordings people have, made at test time from 16 kHz mono speech: sox for wav/flac/ogg at any
rate, channel layout and level; PyAV (FFmpeg's libraries) for mp3/m4a/mp4/mkv/webm and video tracks."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

RATE = 16000


@dataclass(frozen=True)
class Variant:
    """One file kind: ``remix`` places the speech in channels (sox remix: "1" speech, "0" silence), ``gain_db``
    its level (None: as spoken; "max": peaks at -0.1 dBFS), ``codec`` None for sox, else a PyAV encoder."""

    name: str
    suffix: str
    rate: int = RATE
    remix: tuple[str, ...] = ("1",)
    gain_db: float | str | None = None
    codec: str | None = None
    video: bool = False


def need(*modules: str) -> None:
    """Skip when a real part is missing here; with CI=true it fails instead."""
    from extractors.registry import package_dir

    for m in modules:
        if package_dir(m) is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{m} is not installed (scripts/install.sh installs it)")
            pytest.skip(f"{m} is not installed")


def sox(ref: Path, out: Path, v: Variant) -> None:
    if shutil.which("sox") is None:
        raise FileNotFoundError("sox not found (scripts/install.sh installs it)")
    effects = ["remix", *v.remix]
    if v.gain_db == "max":
        effects += ["gain", "-n", "-0.1"]
    elif v.gain_db is not None:
        effects += ["gain", str(v.gain_db)]
    effects += ["rate", str(v.rate)] if v.rate != RATE else []
    subprocess.run(["sox", "-q", str(ref), str(out), *effects], check=True, capture_output=True)


def place(audio: np.ndarray, remix: tuple[str, ...]) -> np.ndarray:
    """(channels, n) with the speech in the channels marked "1"."""
    return np.stack([audio if c == "1" else np.zeros_like(audio) for c in remix])


def encode(path: Path, channels: np.ndarray, rate: int, codec: str, *, video: bool = False,
           size: tuple[int, int] = (64, 48), fps: int = 15) -> None:
    """Encode ``(channels, n)`` float audio at ``rate`` (and a frame-counter video) with PyAV."""
    import av

    from extractors.audio import resample

    if codec == "libopus" and rate != 48000:
        channels, rate = np.stack([resample(c, rate, 48000) for c in channels]), 48000
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels.shape[0]]
    n = channels.shape[1]
    with av.open(str(path), "w") as c:
        vs = None
        if video:
            vs = c.add_stream("libvpx" if path.suffix == ".webm" else "mpeg4", rate=fps)
            vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
        a = c.add_stream(codec, rate=rate, layout=layout)
        if vs is not None:
            for i in range(int(n / rate * fps)):
                img = np.zeros((size[1], size[0], 3), np.uint8)
                img[:, :, 1] = i % 256
                for p in vs.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                    c.mux(p)
            for p in vs.encode():
                c.mux(p)
        step = a.codec_context.frame_size or 1024
        fmt = a.codec_context.format
        for i in range(0, n, step):
            chunk = channels[:, i:i + step].astype(np.float32)
            ints = {"s16": np.int16, "s32": np.int32}.get(fmt.name[:3])
            data = chunk if ints is None else (np.clip(chunk, -1, 1) * np.iinfo(ints).max).astype(ints)
            if not fmt.is_planar:
                data = data.T.reshape(1, -1)
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt.name, layout=layout)
            f.sample_rate, f.pts = rate, i
            for p in a.encode(f):
                c.mux(p)
        for p in a.encode():
            c.mux(p)


def make(ref_wav: Path, ref_audio: np.ndarray, out_dir: Path, v: Variant) -> Path:
    """The variant of the 16 kHz mono speech (``ref_wav`` holds ``ref_audio``) as a file in ``out_dir``."""
    out = out_dir / f"{v.name}.{v.suffix}"
    if v.codec is None:
        sox(ref_wav, out, v)
        return out
    from extractors.audio import resample

    audio = ref_audio if v.rate == RATE else resample(ref_audio, RATE, v.rate)
    if v.gain_db == "max":
        audio = audio * (0.99 / float(np.abs(audio).max()))
    elif v.gain_db is not None:
        audio = audio * 10 ** (float(v.gain_db) / 20)
    encode(out, place(audio, v.remix), v.rate, v.codec, video=v.video)
    return out
