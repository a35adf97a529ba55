"""Real offline test media: espeak-ng speech, photos shipped in wheels, a generated video."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.extractors.extractor_media import RATE, SENT1, SENT2, espeak, write_wav
from tests.real_parts import missing, require_module


@dataclass(frozen=True)
class Speech:
    sent1: np.ndarray  # clear sentence 1, 16 kHz
    sent2: np.ndarray
    dialogue: np.ndarray  # 1.5 s silence, sent1, 2 s silence, sent2, 1 s silence, with -50 dB noise
    spans: tuple[tuple[float, float], tuple[float, float]]  # true speech spans (s) in the dialogue
    female: np.ndarray  # sent2 in a female espeak voice
    dir: Path
    text1: str = SENT1
    text2: str = SENT2


@pytest.fixture(scope="session")
def speech(tmp_path_factory) -> Speech:
    d = tmp_path_factory.mktemp("speech")
    s1 = espeak(SENT1, d / "s1.wav")
    s2 = espeak(SENT2, d / "s2.wav")
    f1 = espeak(SENT2, d / "f1.wav", voice="en+f3")
    rng = np.random.default_rng(0)

    def trim(x: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(np.abs(x) > 1e-3)
        return x[idx[0]: idx[-1] + 1]

    s1t, s2t = trim(s1), trim(s2)
    gap = [np.zeros(int(RATE * t), np.float32) for t in (1.5, 2.0, 1.0)]
    dialogue = np.concatenate([gap[0], s1t, gap[1], s2t, gap[2]])
    dialogue = (dialogue + rng.standard_normal(dialogue.size).astype(np.float32) * 0.003).clip(-1, 1)
    a0 = 1.5
    a1 = a0 + s1t.size / RATE
    b0 = a1 + 2.0
    b1 = b0 + s2t.size / RATE
    write_wav(d / "dialogue.wav", dialogue)
    return Speech(s1, s2, dialogue.astype(np.float32), ((a0, a1), (b0, b1)), f1, d)


def _shipped(package: str, rel: str) -> Path:
    from extractors.registry import package_dir

    root = package_dir(package)
    if root is None or not (root / rel).is_file():
        missing(f"{package} (which ships {rel}) is not installed")
    return root / rel


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real photos shipped inside wheels: a neutral face, a smiling face, and a landscape with no face."""
    cv2 = require_module("cv2")
    paths = {
        "neutral": _shipped("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
        "smiling": _shipped("skimage", "data/astronaut.png"),  # read as a file; skimage is never imported
        "noface": _shipped("sklearn", "datasets/images/china.jpg"),
    }
    return {k: cv2.imread(str(p), cv2.IMREAD_COLOR) for k, p in paths.items()}
