"""Decoded samples -> what the VAD takes: float channels, a downmix that cannot clip, a level normaliser.

Pure numpy, no I/O: :mod:`.audiofile` calls these on each decoded frame and chunk. Why each step exists:

- FFmpeg's own stereo-to-mono matrix adds L and R at -3 dB each, so a normal-level stereo file peaked at up
  to 1.41 and the VAD refused it; an average of channels stays within the channels' own range.
- Averaging cancels channels in opposite phase (a miswired microphone: L = -R); where the mean keeps under a
  tenth of the energy uncorrelated channels would leave it, the louder channel is taken instead (average
  against louder channel measured on WER in ``benchmarks/downmix_wer.py``).
- Files are recorded at any level (a whisper into a far phone, a float wav peaking above 1): the normaliser
  scales each chunk so the loudest sample heard so far sits at ``TARGET_PEAK``, boosting at most
  ``MAX_GAIN``; the gain only ever falls, so a loud passage never clips and quiet speech after it is not
  pumped up again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

TARGET_PEAK = 0.9
MAX_GAIN = 10.0  # +20 dB at most: a quiet recording becomes audible, a noise floor is not made speech
CANCEL_RATIO = 0.1  # mean energy under this fraction of the louder channel's: the channels cancel


def to_channels(samples: np.ndarray, channels: int, planar: bool) -> np.ndarray:
    """A decoded frame's array (PyAV ``to_ndarray``) as float32 ``(channels, n)`` in [-1, 1] for integer
    formats (float formats are kept as they are: they may exceed 1)."""
    x = samples if planar else samples.reshape(-1, channels).T
    if x.dtype == np.uint8:
        return (x.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float32) / float(-np.iinfo(x.dtype).min)
    y = x.astype(np.float32, copy=False)
    return np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0) if not np.isfinite(y).all() else y


def downmix(x: np.ndarray, channel: int | None = None) -> np.ndarray:
    """``(channels, n)`` -> ``(n,)``: one channel when ``channel`` is given (0-based), else the mean of
    all, or the louder channel where the mean cancels. Never louder than the loudest channel."""
    if channel is not None:
        return np.array(x[channel], np.float32)
    c = x.shape[0]
    if c == 1:
        return np.array(x[0], np.float32)
    mean = np.asarray(x.mean(axis=0, dtype=np.float32), np.float32)
    energy = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    # uncorrelated channels give the mean sum(energy) / c**2; far less than that is cancellation
    if float(mean.astype(np.float64) @ mean) < CANCEL_RATIO * float(energy.sum()) / c**2:
        # the first channel near the loudest: opposite channels of equal level always give the same one
        # (alternating between them would flip the sign from frame to frame)
        return np.array(x[int(np.argmax(energy >= 0.5 * energy.max()))], np.float32)
    return mean


@dataclass
class LevelNormaliser:
    """Scales a stream's chunks so its loudest sample so far is ``target`` (at most ``max_gain`` times).

    Causal, per chunk: the chunk's own peak counts before it is scaled, so no output sample exceeds
    ``target``. ``gain`` is what the last chunk got (for logs and tests).
    """

    target: float = TARGET_PEAK
    max_gain: float = MAX_GAIN
    peak: float = 0.0
    gain: float = field(default=1.0, init=False)

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        if chunk.size:
            self.peak = max(self.peak, float(np.abs(chunk).max()))
        self.gain = self.max_gain if self.peak <= 0 else min(self.max_gain, self.target / self.peak)
        return (chunk * np.float32(self.gain)).astype(np.float32, copy=False)
