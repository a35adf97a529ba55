"""Optional online speaker clustering from GE2E d-vectors, for when only a microphone is available.

The voice encoder is Resemblyzer's (3-layer LSTM over 40 mel bands -> 256-d unit vector), re-built in torch
and loaded from the ``pretrained.pt`` its wheel ships with ``torch.load(weights_only=True)`` (tensors only,
no code runs). The mel front end is computed here in numpy (the same Slaney mel filters and periodic Hann
STFT as librosa's defaults), so neither librosa nor numba is needed and there is no JIT warm-up.

:class:`VoicePrinter` adds what the d-vector misses on synthetic and similar voices: the mean MFCCs (timbre,
from :class:`extractors.audio.MfccExtractor`) and the median pitch (:func:`extractors.audio.voiced_f0`).
:class:`OnlineDiarizer` clusters those prints online (:mod:`extractors.diarize`). On espeak-ng voiced MELD
dialogues the d-vector cosines of one speaker's and of two speakers' utterances overlap widely, so no
threshold on them alone separates voices well (benchmarks/diarization.py prints the percentiles and the
clustering figures).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from extractors.audio import MfccExtractor, mel_filterbank, prepare_audio, voiced_f0
from extractors.base import ExtractorError, UtteranceMedia
from extractors.diarize import N_TIMBRE, ClusterParams, SpeakerClusterer, VoicePrint
from extractors.turns import Turn, TurnParams, TurnProbe, find_turns

log = logging.getLogger(__name__)

RATE = 16000
N_FFT, HOP, N_MELS = 400, 160, 40  # 25 ms windows every 10 ms
PARTIAL_FRAMES = 160  # 1.6 s per partial utterance
PARTIAL_RATE, MIN_COVERAGE = 1.3, 0.75  # partials per second; keep a last partial covering >= 75%
MIN_SAMPLES = RATE // 4  # a voice print needs >= 0.25 s of audio
TARGET_DBFS = -30.0  # quiet input is raised to this loudness (never lowered), as the encoder was trained


def resemblyzer_weights_path() -> Path:
    from extractors.registry import shipped_file

    return shipped_file("resemblyzer", "pretrained.pt",
                        "resemblyzer weights not found: pip install --no-deps resemblyzer==0.1.4 (done by scripts/install.sh)")


def mel_frames(audio: np.ndarray) -> np.ndarray:
    """(T, 40) mel power spectrogram: centred zero-padded STFT, periodic Hann, Slaney mel filters."""
    padded = np.pad(audio, (N_FFT // 2, N_FFT // 2))
    n = 1 + (padded.size - N_FFT) // HOP
    idx = np.arange(n)[:, None] * HOP + np.arange(N_FFT)[None, :]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    power = np.abs(np.fft.rfft(padded[idx] * window, n=N_FFT)) ** 2
    return (power @ _MEL.T).astype(np.float32)


_MEL = mel_filterbank(N_MELS, N_FFT, RATE).astype(np.float64)


def normalize_volume(audio: np.ndarray, target_dbfs: float = TARGET_DBFS) -> np.ndarray:
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    if rms <= 1e-9:
        return audio
    gain_db = target_dbfs - 20 * np.log10(rms)
    return audio * np.float32(10 ** (gain_db / 20)) if gain_db > 0 else audio


def partial_slices(n_samples: int) -> list[slice]:
    """Mel-frame slices of 1.6 s partial utterances, 1.3 per second, covering the utterance."""
    n_frames = int(np.ceil((n_samples + 1) / HOP))
    step = max(1, int(round(RATE / PARTIAL_RATE / HOP)))
    starts = list(range(0, max(1, n_frames - PARTIAL_FRAMES + step + 1), step))
    slices = [slice(s, s + PARTIAL_FRAMES) for s in starts]
    last = slices[-1]
    coverage = (n_samples - last.start * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(slices) > 1:
        slices.pop()
    return slices


class VoiceEncoder:
    """Utterance -> 256-d unit-norm speaker embedding (GE2E d-vector, Apache-2.0 weights)."""

    dim = 256

    def __init__(self, num_threads: int | None = 1) -> None:
        import torch
        from torch import nn

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self._torch = torch
        self.lstm = nn.LSTM(N_MELS, 256, num_layers=3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        path = resemblyzer_weights_path()
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        state = ckpt.get("model_state") if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise ExtractorError(f"{path}: no model_state in the checkpoint")
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        self.lstm.eval()
        self.linear.eval()
        self._lock = threading.Lock()

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mean of the partial-utterance embeddings, L2-normalised; ExtractorError on empty/bad audio."""
        torch = self._torch
        samples = prepare_audio(audio, sample_rate, RATE, what="speaker")
        if samples is None:
            raise ExtractorError("speaker: no samples to embed")
        samples = normalize_volume(samples)
        slices = partial_slices(samples.size)
        need = slices[-1].stop * HOP
        if need > samples.size:
            samples = np.pad(samples, (0, need - samples.size))
        mel = mel_frames(samples)
        mels = np.stack([mel[s] for s in slices])  # (P, 160, 40)
        with self._lock, torch.inference_mode():
            _, (hidden, _) = self.lstm(torch.from_numpy(mels))
            partial = torch.relu(self.linear(hidden[-1]))
            partial = partial / partial.norm(dim=1, keepdim=True).clamp(min=1e-12)
        raw = partial.mean(0).numpy()
        return (raw / max(float(np.linalg.norm(raw)), 1e-12)).astype(np.float32)

    def windows(self, samples: np.ndarray, window: int, hop: int) -> np.ndarray:
        """(W, 256) unit embeddings of windows of ``window`` samples every ``hop`` (16 kHz), one batched pass:
        the sliding-window stage of :func:`extractors.turns.find_turns`."""
        torch = self._torch
        mel = mel_frames(normalize_volume(np.asarray(samples, np.float32)))
        w, h = max(1, window // HOP), max(1, hop // HOP)
        starts = range(0, max(1, mel.shape[0] - w + 1), h)
        mels = np.stack([mel[s:s + w] for s in starts if mel[s:s + w].shape[0] == w] or [mel[:w]])
        with self._lock, torch.inference_mode():
            _, (hidden, _) = self.lstm(torch.from_numpy(np.ascontiguousarray(mels)))
            e = torch.relu(self.linear(hidden[-1]))
            return (e / e.norm(dim=1, keepdim=True).clamp(min=1e-12)).numpy()


class VoicePrinter:
    """Utterance -> :class:`~extractors.diarize.VoicePrint` (d-vector, mean MFCC 1-19, median pitch)."""

    def __init__(self, encoder: VoiceEncoder | None = None) -> None:
        self.encoder = encoder or VoiceEncoder()
        self._mfcc = MfccExtractor()

    def __call__(self, audio: np.ndarray, sample_rate: int) -> VoicePrint:
        samples = prepare_audio(audio, sample_rate, RATE, what="speaker")
        if samples is None or samples.size < MIN_SAMPLES:
            raise ExtractorError(f"speaker: {0 if samples is None else samples.size / RATE:.2f} s of audio is "
                                 f"too short to tell a voice (need >= {MIN_SAMPLES / RATE:.2f} s)")
        mfcc = self._mfcc(UtteranceMedia(audio=samples, sample_rate=RATE))
        if not mfcc.valid:
            raise ExtractorError("speaker: no MFCCs could be measured")
        f0 = voiced_f0(samples, RATE)
        return VoicePrint(self.encoder.embed(samples, RATE), mfcc.vector[1:1 + N_TIMBRE].astype(np.float64),
                          float(np.median(f0)) if f0.size else float("nan"), samples.size / RATE)


class OnlineDiarizer:
    """Who is speaking, per utterance: ``assign(audio, sample_rate) -> "Speaker 1"`` (or an enrolled name).

    One per session; thread-safe (a worker thread may call it). ``voices`` maps known people's names to
    ``(audio, sample_rate)`` samples of their voice (``live.py --voice NAME=FILE``).
    """

    def __init__(self, threshold: float | None = None, max_speakers: int = 9, encoder: VoiceEncoder | None = None,
                 *, voices: Mapping[str, tuple[np.ndarray, int]] | None = None,
                 params: ClusterParams | None = None, turn_params: TurnParams | None = None,
                 min_speakers: int = 1) -> None:
        params = params or ClusterParams()
        self.turn_params = turn_params or TurnParams()
        if threshold is not None:
            params = replace(params, threshold=threshold)
        self.printer = VoicePrinter(encoder)
        self.clusterer = SpeakerClusterer(params, max_speakers, min_speakers)
        self._lock = threading.Lock()
        for name, (audio, rate) in (voices or {}).items():
            self.enroll(name, audio, rate)

    def enroll(self, name: str, audio: np.ndarray, sample_rate: int) -> None:
        """Name a known voice; ExtractorError for unusable audio, ValueError for a bad name or no free slot."""
        p = self.printer(audio, sample_rate)
        with self._lock:
            self.clusterer.enroll(name, p)

    def assign(self, audio: np.ndarray, sample_rate: int) -> str:
        p = self.printer(audio, sample_rate)
        with self._lock:
            return self.clusterer.assign(p)

    def turns(self, audio: np.ndarray, sample_rate: int) -> list[Turn]:
        """The speaker turns of one voiced stretch (:func:`extractors.turns.find_turns`), in samples of
        ``audio`` at ``sample_rate``; one turn covering it when it is too short to hold two."""
        samples = prepare_audio(audio, sample_rate, RATE, what="speaker")
        n = int(np.asarray(audio).shape[0])
        if samples is None or samples.size < 2 * self.turn_params.min_piece_s * RATE:
            return [Turn(0, n)]

        def same(group: Sequence[VoicePrint], p: VoicePrint) -> bool:
            with self._lock:
                return self.clusterer.same_voice(group, p)

        probe = TurnProbe(voice=lambda a: self.printer(a, RATE), same=same, windows=self.printer.encoder.windows)
        turns = find_turns(samples, RATE, probe, self.turn_params)
        scale = sample_rate / RATE
        out = [Turn(int(round(t.start * scale)), int(round(t.end * scale)), t.overlap) for t in turns]
        out[-1] = replace(out[-1], end=n)  # rounding must not lose the last samples
        return out


def diarize_recording(audio: np.ndarray, sample_rate: int, diarizer: OnlineDiarizer, *, vad: object | None = None,
                      turns: bool = True) -> list[tuple[float, float, str, bool]]:
    """Who spoke when in a whole recording, as the live audio path does it: silero segments, the speaker turns
    in each (``turns=False``: one per segment), a name per turn; ``(start_s, end_s, name, overlap)`` in order.
    For tests and benchmarks (the live path is :class:`stream.capture.speech.SpeechSource`)."""
    from extractors.vad import SileroVad, detect_speech

    out: list[tuple[float, float, str, bool]] = []
    for s in detect_speech(audio, sample_rate, vad=vad if isinstance(vad, SileroVad) else None):
        for t in diarizer.turns(s.audio, RATE) if turns else [Turn(0, s.audio.size)]:
            try:
                name = diarizer.assign(s.audio[t.start:t.end], RATE)
            except ExtractorError:
                name = "Speaker ?"
            out.append((s.start_s + t.start / RATE, s.start_s + t.end / RATE, name, t.overlap))
    return out
