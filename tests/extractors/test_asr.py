"""pocketsphinx on real espeak-ng sentences, decoded whole after VAD."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pocketsphinx")

from extractors.asr import create_asr  # noqa: E402
from extractors.base import ExtractorError  # noqa: E402


def _words(text: str) -> list[str]:
    return [w.strip(".,!?").lower() for w in text.split()]


@pytest.fixture(scope="module")
def asr():
    return create_asr("pocketsphinx")


@pytest.mark.parametrize("which", [1, 2])
def test_recovers_most_words_of_a_clear_sentence(asr, speech, which):
    tr = asr.transcribe(getattr(speech, f"sent{which}"), 16000)
    ref, hyp = _words(getattr(speech, f"text{which}")), set(_words(tr.text))
    hits = sum(w in hyp for w in ref)
    assert hits >= 0.6 * len(ref), tr.text
    assert tr.words and all(0 <= w.start_s < w.end_s for w in tr.words)


def test_deterministic_and_rate_independent(asr, speech):
    from extractors.audio import resample

    a = asr.transcribe(speech.sent2, 16000).text
    assert a == asr.transcribe(speech.sent2, 16000).text
    assert asr.transcribe(resample(speech.sent2, 16000, 22050), 22050).text


def test_empty_and_silence(asr):
    assert asr.transcribe(np.zeros(0, np.float32), 16000).text == ""
    assert len(asr.transcribe(np.zeros(16000, np.float32), 16000).text.split()) <= 1


def test_errors(asr, tmp_path):
    with pytest.raises(ExtractorError, match="NaN"):
        asr.transcribe(np.full(1600, np.nan, np.float32), 16000)
    with pytest.raises(ExtractorError, match="does not exist"):
        create_asr(f"vosk:{tmp_path / 'missing'}")
    with pytest.raises(ExtractorError, match="needs a local model directory"):
        create_asr("faster-whisper")
    with pytest.raises(ExtractorError, match="unknown ASR"):
        create_asr("whisper-cloud")
