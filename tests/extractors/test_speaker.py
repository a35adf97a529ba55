"""The voice encoder (resemblyzer d-vectors) on espeak voices; the online diarizer is in test_diarize.py."""

from __future__ import annotations

import numpy as np
import pytest

from extractors.base import ExtractorError
from extractors.registry import package_dir

if package_dir("resemblyzer") is None:
    pytest.skip("resemblyzer weights not installed (scripts/install-nodeps.txt)", allow_module_level=True)

from extractors.speaker import VoiceEncoder  # noqa: E402


@pytest.fixture(scope="module")
def encoder():
    return VoiceEncoder()


def test_embedding_shape_norm_determinism(encoder, speech):
    e = encoder.embed(speech.sent1, 16000)
    assert e.shape == (256,) and e.dtype == np.float32 and abs(np.linalg.norm(e) - 1) < 1e-5
    np.testing.assert_array_equal(e, encoder.embed(speech.sent1, 16000))


def test_same_voice_closer_than_other_voice(encoder, speech):
    male1, male2 = encoder.embed(speech.sent1, 16000), encoder.embed(speech.sent2, 16000)
    female = encoder.embed(speech.female, 16000)
    assert male1 @ male2 > male1 @ female + 0.1
    assert male2 @ female < 0.78 <= male1 @ male2


def test_bad_audio(encoder):
    with pytest.raises(ExtractorError, match="no samples"):
        encoder.embed(np.zeros(0, np.float32), 16000)
    with pytest.raises(ExtractorError, match="outside"):
        encoder.embed(np.full(16000, 2.0, np.float32), 16000)
    short = encoder.embed(np.random.default_rng(0).standard_normal(800).astype(np.float32) * 0.1, 16000)
    assert short.shape == (256,) and np.isfinite(short).all()


def test_matches_resemblyzer_and_librosa_when_installed(encoder, speech):
    """Optional cross-check (librosa is not a dependency): our numpy mel equals librosa's, and our embedding
    equals resemblyzer's own ``embed_utterance``. Measured: mel rel. diff 1e-7, cosine 1.0000."""
    librosa = pytest.importorskip("librosa")
    resemblyzer = pytest.importorskip("resemblyzer")
    from extractors.speaker import mel_frames

    ref = librosa.feature.melspectrogram(y=speech.sent1, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    ours = mel_frames(speech.sent1)
    assert np.abs(ours - ref).max() <= 1e-5 * np.abs(ref).max()
    rv = resemblyzer.VoiceEncoder(device="cpu", verbose=False)
    assert float(rv.embed_utterance(speech.sent1) @ encoder.embed(speech.sent1, 16000)) > 0.999
