"""Acoustic utterance features: openSMILE functionals (default) and a numpy/scipy MFCC alternative.

Input rules, shared by every audio extractor, VAD, ASR and the speaker encoder (see :func:`prepare_audio`):

* ``audio is None`` or zero samples -> the modality is absent: ``Feature(zeros, valid=False)``.
* too short for the feature set to measure (openSMILE returns NaN, e.g. under ~0.1 s) -> ``valid=False``.
* not a 1-d (or single-channel 2-d) float array, no ``sample_rate``, NaN/inf samples, or samples outside
  [-1, 1] -> :class:`~extractors.base.ExtractorError` (a ``ValueError``) naming the problem.
* a sample rate other than the extractor's -> resampled (polyphase), or with ``resample=False`` an error
  naming both rates.
* clipped (saturated) audio is processed, with one warning per extractor: its features are distorted but real.
* silence is a real signal: it gets valid (low-energy) features.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Sequence

import numpy as np

from extractors.base import ExtractorError, Feature, UtteranceMedia

log = logging.getLogger(__name__)

CLIP_LEVEL = 0.999  # |x| at or above this counts as a clipped sample
CLIP_FRACTION = 0.01  # warn when more than this fraction of samples is clipped
MIN_RATE, MAX_RATE = 4000, 192000


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy), float32 in and out."""
    if orig_rate == target_rate:
        return audio
    from scipy.signal import resample_poly

    g = math.gcd(int(orig_rate), int(target_rate))
    out = resample_poly(audio.astype(np.float64), target_rate // g, orig_rate // g)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def prepare_audio(
    audio: object, sample_rate: object, target_rate: int, resample_ok: bool = True, what: str = "audio"
) -> np.ndarray | None:
    """Validate one utterance's samples and bring them to ``target_rate``; None when absent (no samples).

    Raises:
        ExtractorError: wrong type/shape/dtype, missing or unsupported rate, NaN/inf, values outside [-1, 1],
            or a rate mismatch when ``resample_ok`` is False.
    """
    if audio is None:
        return None
    if not isinstance(audio, np.ndarray):
        raise ExtractorError(f"{what}: expected a numpy array (got {type(audio).__name__})")
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise ExtractorError(f"{what}: expected mono samples of shape (n,) (got shape {audio.shape})")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ExtractorError(f"{what}: expected float32 samples in [-1, 1] (got dtype {audio.dtype})")
    if audio.size == 0:
        return None
    if sample_rate is None:
        raise ExtractorError(f"{what}: sample_rate is missing")
    if not isinstance(sample_rate, int | np.integer) or not MIN_RATE <= int(sample_rate) <= MAX_RATE:
        raise ExtractorError(f"{what}: unsupported sample_rate {sample_rate!r} (expected {MIN_RATE}..{MAX_RATE} Hz)")
    if not np.isfinite(audio).all():
        raise ExtractorError(f"{what}: contains NaN or inf samples")
    peak = float(np.abs(audio).max())
    if peak > 1.0 + 1e-6:
        raise ExtractorError(f"{what}: samples outside [-1, 1] (peak {peak:.3g}); scale int16 by 1/32768")
    audio = audio.astype(np.float32, copy=False)
    if int(sample_rate) != target_rate:
        if not resample_ok:
            raise ExtractorError(
                f"{what}: sample_rate {int(sample_rate)} Hz differs from the {target_rate} Hz this extractor expects"
            )
        audio = resample(audio, int(sample_rate), target_rate)
    return audio


def clipped_fraction(audio: np.ndarray) -> float:
    return float(np.mean(np.abs(audio) >= CLIP_LEVEL)) if audio.size else 0.0


class _AudioBase:
    """Shared validation, the absent mask and the one-time clipping warning."""

    name: str
    dim: int
    modality = "a"
    sample_rate = 16000
    resample_ok = True
    _warned_clip = False

    def _absent(self) -> Feature:
        return Feature(np.zeros(self.dim, np.float32), valid=False)

    def _prepare(self, media: UtteranceMedia) -> np.ndarray | None:
        audio = prepare_audio(media.audio, media.sample_rate, self.sample_rate, self.resample_ok, what=self.name)
        if audio is not None and not self._warned_clip and clipped_fraction(audio) > CLIP_FRACTION:
            self._warned_clip = True
            log.warning("%s: %.1f%% of samples are clipped; features will be distorted (warned once)",
                        self.name, 100 * clipped_fraction(audio))
        return audio

    def _features(self, audio: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def __call__(self, media: UtteranceMedia) -> Feature:
        audio = self._prepare(media)
        if audio is None:
            return self._absent()
        vec = self._features(audio)
        if vec is None or not np.isfinite(vec).all():
            return self._absent()
        return Feature(vec.astype(np.float32))

    def batch(self, media: Sequence[UtteranceMedia]) -> list[Feature]:
        # Per utterance: both backends are sequential per signal, so batching would not pay.
        return [self(m) for m in media]


OPENSMILE_SETS = {
    # name -> (opensmile FeatureSet member or config path relative to the package, functional dim)
    "eGeMAPSv02": ("eGeMAPSv02", 88),
    "ComParE_2016": ("ComParE_2016", 6373),
    "emobase": ("emobase", 988),
    "IS10_paraling": ("core/config/is09-13/IS10_paraling_compat.conf", 1582),
}


class OpenSmileExtractor(_AudioBase):
    """openSMILE functionals of the whole utterance (libSMILE through ``opensmile``, no CLI binary needed).

    Args:
        feature_set: ``"eGeMAPSv02"`` (88, default), ``"IS10_paraling"`` (1582, the paper's IEMOCAP audio),
            ``"emobase"`` (988), ``"ComParE_2016"`` (6373).
        resample: resample other rates to 16 kHz; False makes a mismatch an error naming both rates.
        name: registry name (default derived from the set).

    Licence: the audEERING research licence (non-commercial use), although the Python wrapper is MIT.
    """

    def __init__(self, feature_set: str = "eGeMAPSv02", resample: bool = True, name: str | None = None) -> None:
        try:
            import opensmile
        except ImportError as e:
            raise ExtractorError("opensmile is not installed (pip install '.[audio]')") from e
        if feature_set not in OPENSMILE_SETS:
            raise ExtractorError(f"feature_set: expected one of {sorted(OPENSMILE_SETS)} (got {feature_set!r})")
        member, dim = OPENSMILE_SETS[feature_set]
        if member.endswith(".conf"):
            config: object = os.path.join(os.path.dirname(opensmile.__file__), member)
            level: object = "func"
        else:
            config, level = opensmile.FeatureSet[member], opensmile.FeatureLevel.Functionals
        self._smile = opensmile.Smile(feature_set=config, feature_level=level)
        self._lock = threading.Lock()  # one libSMILE pipeline per instance: not re-entrant
        if len(self._smile.feature_names) != dim:
            raise ExtractorError(f"{feature_set}: expected {dim} functionals (got {len(self._smile.feature_names)})")
        self.feature_set = feature_set
        self.dim = dim
        self.resample_ok = resample
        self.name = name or {"eGeMAPSv02": "egemaps", "IS10_paraling": "is10"}.get(feature_set, feature_set.lower())

    def __repr__(self) -> str:
        return f"OpenSmileExtractor({self.feature_set!r}, dim={self.dim})"

    @property
    def feature_names(self) -> list[str]:
        return list(self._smile.feature_names)

    def _features(self, audio: np.ndarray) -> np.ndarray | None:
        import warnings

        with self._lock, warnings.catch_warnings():
            # "Segment too short, filling with NaN": reported to the caller as valid=False instead.
            warnings.simplefilter("ignore", UserWarning)
            out = self._smile(audio, self.sample_rate)
        return np.asarray(out, dtype=np.float32).reshape(-1)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Slaney-style triangular mel filters (area-normalised), shape (n_mels, n_fft // 2 + 1)."""
    fmax = fmax or sample_rate / 2

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        lin = f / (200.0 / 3)
        log_part = 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(f >= 1000.0, log_part, lin)

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        m = np.asarray(m, dtype=np.float64)
        lin = m * (200.0 / 3)
        log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0))
        return np.where(m >= 15.0, log_part, lin)

    fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_pts = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_pts[2:n_mels + 2] - mel_pts[:n_mels]))[:, None]
    return weights.astype(np.float32)


def frame_signal(audio: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """(n_frames, frame) view of ``audio`` zero-padded to at least one frame."""
    if audio.size < frame:
        audio = np.pad(audio, (0, frame - audio.size))
    n = 1 + (audio.size - frame) // hop
    return np.lib.stride_tricks.as_strided(
        audio, shape=(n, frame), strides=(audio.strides[0] * hop, audio.strides[0]), writeable=False
    )


def voiced_f0(audio: np.ndarray, sample_rate: int, hop_s: float = 0.010) -> np.ndarray:
    """log2 F0 (Hz) of the voiced frames, by normalised autocorrelation (60-400 Hz) on 40 ms frames.

    A frame is voiced when it is not silent and its autocorrelation peak reaches 0.45 of its energy.
    Shared by the MFCC prosody statistics and the diarizer's pitch feature."""
    sr = sample_rate
    frames = frame_signal(audio, int(0.040 * sr), int(hop_s * sr))
    frames = frames - frames.mean(1, keepdims=True)
    n = 2048
    spec = np.fft.rfft(frames * np.hanning(frames.shape[1]), n=n)
    ac = np.fft.irfft(np.abs(spec) ** 2, n=n)[:, : frames.shape[1]]
    energy = ac[:, :1]
    lo, hi = int(sr / 400), int(sr / 60)
    norm = ac[:, lo:hi] / np.maximum(energy, 1e-10)
    lag = norm.argmax(1) + lo
    voiced = (norm.max(1) > 0.45) & (energy[:, 0] > 1e-6 * frames.shape[1])
    return np.log2(sr / lag[voiced])


class MfccExtractor(_AudioBase):
    """MFCC and prosody statistics in numpy/scipy: no model, no numba, no research-only licence.

    Frames of 25 ms every 10 ms. Per frame: 20 MFCCs (40 mel bands) and their deltas, log energy, zero-crossing
    rate, spectral centroid, roll-off and flatness; F0 by normalised autocorrelation (60-400 Hz) on 40 ms
    frames. Output (95-d): mean and std of MFCC (40), delta (40), the five spectral/energy tracks (10), then
    F0 mean, std, min, max in log2 Hz over voiced frames and the voiced fraction (5; zeros when unvoiced).
    """

    N_MFCC = 20
    dim = 95

    def __init__(self, resample: bool = True, name: str = "mfcc") -> None:
        from scipy.fft import dct

        self._dct = dct
        self.name = name
        self.resample_ok = resample
        self.frame = int(0.025 * self.sample_rate)
        self.hop = int(0.010 * self.sample_rate)
        self.n_fft = 512
        self._window = np.hamming(self.frame).astype(np.float32)
        self._mel = mel_filterbank(40, self.n_fft, self.sample_rate, 20.0, 7600.0)
        self._freqs = np.linspace(0, self.sample_rate / 2, self.n_fft // 2 + 1, dtype=np.float32)

    def __repr__(self) -> str:
        return f"MfccExtractor(dim={self.dim})"

    @staticmethod
    def _stats(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x.mean(0), x.std(0)])

    def _f0(self, audio: np.ndarray) -> np.ndarray:
        f0 = voiced_f0(audio, self.sample_rate)
        if not f0.size:
            return np.zeros(5, np.float32)
        n_frames = frame_signal(audio, int(0.040 * self.sample_rate), self.hop).shape[0]
        return np.array([f0.mean(), f0.std(), f0.min(), f0.max(), f0.size / n_frames], dtype=np.float32)

    def _features(self, audio: np.ndarray) -> np.ndarray | None:
        emph = np.append(audio[:1], audio[1:] - 0.97 * audio[:-1]).astype(np.float32)
        frames = frame_signal(emph, self.frame, self.hop) * self._window
        power = np.abs(np.fft.rfft(frames, n=self.n_fft)) ** 2 / self.n_fft  # (T, F)
        logmel = np.log(power @ self._mel.T + 1e-10)
        mfcc = self._dct(logmel, type=2, axis=1, norm="ortho")[:, : self.N_MFCC]
        delta = np.gradient(mfcc, axis=0) if mfcc.shape[0] > 1 else np.zeros_like(mfcc)
        total = power.sum(1) + 1e-10
        raw = frame_signal(audio, self.frame, self.hop)
        log_energy = np.log(np.mean(raw ** 2, axis=1) + 1e-10)
        zcr = np.mean(np.abs(np.diff(np.sign(raw), axis=1)) > 0, axis=1)
        centroid = (power @ self._freqs) / total / (self.sample_rate / 2)
        rolloff = np.argmax(np.cumsum(power, 1) >= 0.85 * total[:, None], axis=1) / power.shape[1]
        flatness = np.exp(np.mean(np.log(power + 1e-10), 1)) / (np.mean(power, 1) + 1e-10)
        tracks = np.stack([log_energy, zcr, centroid, rolloff, flatness], axis=1)
        return np.concatenate(
            [self._stats(mfcc), self._stats(delta), self._stats(tracks), self._f0(audio)]
        ).astype(np.float32)
