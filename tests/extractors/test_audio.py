"""Acoustic extractors on real espeak-ng speech; the shared input rules on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from extractors import registry
from extractors.base import Extractor, ExtractorError, UtteranceMedia
from tests.real_parts import require_module

require_module("opensmile")

NAMES = {"egemaps": 88, "is10": 1582, "mfcc": 95}


@pytest.fixture(scope="module", params=list(NAMES))
def ext(request):
    return registry.create(request.param)


def test_shape_dtype_and_determinism(ext, speech):
    assert isinstance(ext, Extractor) and ext.modality == "a" and ext.dim == NAMES[ext.name]
    m = UtteranceMedia(audio=speech.sent1, sample_rate=16000)
    f = ext(m)
    assert f.valid and f.vector.shape == (ext.dim,) and f.vector.dtype == np.float32
    assert np.isfinite(f.vector).all()
    np.testing.assert_array_equal(f.vector, ext(m).vector)
    assert [g.valid for g in ext.batch([m, UtteranceMedia()])] == [True, False]


def test_features_separate_voices(ext, speech):
    """A male and a female espeak voice saying the same sentence differ more than a repeat of one voice."""
    male = ext(UtteranceMedia(audio=speech.sent2, sample_rate=16000)).vector
    female = ext(UtteranceMedia(audio=speech.female, sample_rate=16000)).vector
    assert not np.allclose(male, female, rtol=0.05)


def test_other_rates_are_resampled(ext, speech):
    from extractors.audio import resample

    at16 = ext(UtteranceMedia(audio=speech.sent1, sample_rate=16000)).vector
    at8 = ext(UtteranceMedia(audio=resample(speech.sent1, 16000, 8000), sample_rate=8000))
    assert at8.valid and at8.vector.shape == at16.shape


def test_rate_mismatch_error_names_both_rates(speech):
    ext = registry.create("egemaps", resample=False)
    with pytest.raises(ExtractorError, match="22050.*16000"):
        ext(UtteranceMedia(audio=speech.sent1, sample_rate=22050))


@pytest.mark.parametrize(
    ("audio", "rate", "match"),
    [
        (np.array([0.1, np.nan] * 8000, np.float32), 16000, "NaN or inf"),
        (np.array([0.1, np.inf] * 8000, np.float32), 16000, "NaN or inf"),
        (np.full(16000, 3.0, np.float32), 16000, r"outside \[-1, 1\]"),
        ((np.ones(16000) * 1000).astype(np.int16), 16000, "dtype int16"),
        (np.zeros((2, 16000), np.float32), 16000, "mono"),
        (np.zeros(16000, np.float32), None, "sample_rate is missing"),
        (np.zeros(16000, np.float32), 100, "unsupported sample_rate"),
        ("not audio", 16000, "numpy array"),
    ],
)
def test_bad_audio_is_a_clear_error(ext, audio, rate, match):
    with pytest.raises(ExtractorError, match=match):
        ext(UtteranceMedia(audio=audio, sample_rate=rate))


def test_absent_and_too_short_are_masks(ext):
    for audio in (None, np.zeros(0, np.float32)):
        f = ext(UtteranceMedia(audio=audio, sample_rate=16000))
        assert not f.valid and not f.vector.any() and f.vector.shape == (ext.dim,)
    short = ext(UtteranceMedia(audio=np.full(400, 0.01, np.float32), sample_rate=16000))
    assert short.vector.shape == (ext.dim,) and np.isfinite(short.vector).all()
    if ext.name != "mfcc":  # openSMILE cannot measure 25 ms: a documented mask, not NaN
        assert not short.valid and not short.vector.any()


def test_silence_and_clipping_give_real_features(ext, speech, caplog):
    silent = ext(UtteranceMedia(audio=np.zeros(16000, np.float32), sample_rate=16000))
    assert silent.valid and np.isfinite(silent.vector).all()
    clipped = np.clip(speech.sent1 * 20, -1, 1)
    with caplog.at_level("WARNING"):
        f = ext(UtteranceMedia(audio=clipped, sample_rate=16000))
    assert f.valid and np.isfinite(f.vector).all()
    assert "clipped" in caplog.text or ext._warned_clip


def test_2d_single_channel_and_float64_are_accepted(ext, speech):
    base = ext(UtteranceMedia(audio=speech.sent1, sample_rate=16000)).vector
    col = ext(UtteranceMedia(audio=speech.sent1[:, None].astype(np.float64), sample_rate=16000)).vector
    np.testing.assert_allclose(base, col, rtol=1e-5, atol=1e-5)
