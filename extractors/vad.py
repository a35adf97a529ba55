"""Voice activity detection with silero-vad: cut a mono stream into utterances, offline or block by block.

The network is re-built here in plain torch and loaded from the ``silero_vad_16k.safetensors`` file that the
``silero-vad`` wheel ships, so no TorchScript/pickle archive is ever loaded. Per 32 ms chunk (512 samples plus
64 samples of left context) it gives a speech probability. With the JIT model's weights this module
reproduces the JIT outputs to 1e-5 (tested); the shipped safetensors is a sibling checkpoint of the same
network (weights correlate ~0.95), so probabilities differ a little while segments agree with the package's
``get_speech_timestamps`` (tested within 0.1 s). The front end (STFT conv + 4 convs) runs batched over all chunks of a block and only the
LSTM cell steps sequentially, so an offline pass over a whole file is fast.

Segmentation is hysteresis on those probabilities: speech starts at ``p >= threshold`` and ends after
``min_silence_ms`` below ``threshold - 0.15``; segments shorter than ``min_speech_ms`` are dropped and
longer than ``max_speech_s`` are cut, so a live utterance has bounded latency.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extractors.audio import prepare_audio
from extractors.base import ExtractorError

log = logging.getLogger(__name__)

RATE = 16000
CHUNK = 512  # samples per VAD decision (32 ms)
CONTEXT = 64  # samples of left context the model sees with each chunk


def silero_weights_path() -> Path:
    from extractors.registry import shipped_file

    return shipped_file("silero_vad", "data/silero_vad_16k.safetensors",
                        "silero-vad is not installed (pip install '.[audio]'): no silero_vad_16k.safetensors")


def _build_model():  # -> torch.nn.Module, built lazily so importing this module does not import torch
    import torch
    from torch import nn

    class SileroVad(nn.Module):
        """silero-vad v6 (16 kHz), layer names as in the shipped safetensors."""

        def __init__(self) -> None:
            super().__init__()
            self.stft_conv = nn.Conv1d(1, 258, kernel_size=256, stride=128, bias=False)
            self.conv1 = nn.Conv1d(129, 128, 3, padding=1)
            self.conv2 = nn.Conv1d(128, 64, 3, stride=2, padding=1)
            self.conv3 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
            self.conv4 = nn.Conv1d(64, 128, 3, padding=1)
            self.lstm_cell = nn.LSTMCell(128, 128)
            self.final_conv = nn.Conv1d(128, 1, 1)

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            """(N, CONTEXT + CHUNK) windows -> (N, 128) per-chunk encodings (independent, so batched)."""
            x = nn.functional.pad(x.unsqueeze(1), (0, 64), mode="reflect")
            x = self.stft_conv(x)
            x = (x[:, :129] ** 2 + x[:, 129:] ** 2).sqrt()
            for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
                x = torch.relu(conv(x))
            return x.squeeze(-1)

        def decode(self, enc: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
            """Step the LSTM over (N, 128) encodings in order -> (N,) probabilities and the new state."""
            hs = []
            for i in range(enc.shape[0]):
                state = self.lstm_cell(enc[i:i + 1], state)
                hs.append(state[0])
            h = torch.relu(torch.cat(hs).unsqueeze(-1))  # (N, 128, 1)
            return torch.sigmoid(self.final_conv(h)).reshape(-1), state

    return SileroVad()


@dataclass
class VadState:
    """One stream's recurrent state: the LSTM (h, c) and the last 64 samples (the next chunk's context)."""

    lstm: Any = None
    context: np.ndarray = field(default_factory=lambda: np.zeros(CONTEXT, np.float32))


class SileroVad:
    """The silero network, loaded once and shareable: every stream keeps its own :class:`VadState`, so one
    model serves many sessions (and threads: inference mutates nothing shared)."""

    def __init__(self, num_threads: int | None = 1) -> None:
        import torch
        from safetensors.torch import load_file

        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self._torch = torch
        self.model = _build_model().eval()
        self.model.load_state_dict(load_file(str(silero_weights_path())))

    def probs(self, chunks: np.ndarray, state: VadState) -> np.ndarray:
        """Speech probability of each chunk; ``chunks`` is (N, 512) float32 continuing ``state``'s stream,
        and ``state`` is advanced in place."""
        torch = self._torch
        if chunks.shape[0] == 0:
            return np.zeros(0, np.float32)
        flat = np.concatenate([state.context, chunks.reshape(-1)])
        idx = np.arange(chunks.shape[0])[:, None] * CHUNK + np.arange(CONTEXT + CHUNK)[None, :]
        windows = torch.from_numpy(np.ascontiguousarray(flat[idx]))
        with torch.inference_mode():
            p, state.lstm = self.model.decode(self.model.encode(windows), state.lstm)
        state.context = flat[-CONTEXT:].copy()
        return p.numpy().astype(np.float32)


@dataclass(frozen=True)
class SpeechSegment:
    """One voiced stretch: times in seconds from the stream start, and its 16 kHz samples (with padding)."""

    start_s: float
    end_s: float
    audio: np.ndarray

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


class VadSegmenter:
    """Incremental utterance segmenter: feed blocks of any size with :meth:`push`, get finished segments.

    Args:
        sample_rate: rate of the pushed blocks; must be 16000 (open the microphone at 16 kHz).
        threshold: speech probability that starts speech.
        min_silence_ms: silence that ends an utterance (500 ms splits sentences of a turn less often).
        min_speech_ms: shorter voiced stretches are dropped (clicks, breaths).
        speech_pad_ms: audio kept before and after each segment.
        max_speech_s: a longer utterance is cut here so the live path never waits unboundedly.
        vad: a shared :class:`SileroVad` (the model only; this segmenter keeps its own state); a new one is
            built when None.
    """

    def __init__(
        self,
        sample_rate: int = RATE,
        threshold: float = 0.5,
        min_silence_ms: int = 500,
        min_speech_ms: int = 250,
        speech_pad_ms: int = 30,
        max_speech_s: float = 20.0,
        vad: SileroVad | None = None,
    ) -> None:
        if sample_rate != RATE:
            raise ExtractorError(f"VadSegmenter: sample_rate {sample_rate} Hz differs from the {RATE} Hz silero-vad expects")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold: expected 0 < threshold < 1 (got {threshold})")
        self.threshold = threshold
        self.neg_threshold = max(threshold - 0.15, 0.01)
        self.min_silence = int(min_silence_ms * RATE / 1000)
        self.min_speech = int(min_speech_ms * RATE / 1000)
        self.pad = int(speech_pad_ms * RATE / 1000)
        self.max_speech = int(max_speech_s * RATE)
        self.vad = vad or SileroVad()
        self._state = VadState()
        self._pending = np.zeros(0, np.float32)  # samples not yet a whole chunk
        self._buf = np.zeros(0, np.float32)  # recent audio, bounded: starts at self._buf_start
        self._buf_start = 0
        self._pos = 0  # samples classified so far
        self._start: int | None = None  # current speech start (sample), None when in silence
        self._temp_end: int | None = None  # first silent sample after speech, while waiting min_silence

    def __repr__(self) -> str:
        return (f"VadSegmenter(threshold={self.threshold}, min_silence_ms={1000 * self.min_silence // RATE}, "
                f"max_speech_s={self.max_speech / RATE})")

    @property
    def in_speech(self) -> bool:
        return self._start is not None

    def push(self, block: np.ndarray) -> list[SpeechSegment]:
        """Add samples (float32 mono in [-1, 1] at 16 kHz); return the segments that ended within them."""
        block = prepare_audio(block, RATE, RATE, resample_ok=False, what="vad block")
        if block is None:
            return []
        data = np.concatenate([self._pending, block])
        n_chunks = data.size // CHUNK
        self._pending = data[n_chunks * CHUNK:].copy()
        if n_chunks == 0:
            return []
        chunks = data[: n_chunks * CHUNK].reshape(n_chunks, CHUNK)
        self._buf = np.concatenate([self._buf, chunks.reshape(-1)])
        out: list[SpeechSegment] = []
        for p in self.vad.probs(chunks, self._state):
            out.extend(self._step(float(p)))
            self._pos += CHUNK
        self._trim()
        return out

    def flush(self) -> list[SpeechSegment]:
        """End of stream: close an open segment (the pending partial chunk is zero-padded first)."""
        out: list[SpeechSegment] = []
        if self._pending.size:
            tail = self._pending.size
            out.extend(self.push(np.zeros(CHUNK - tail, np.float32)))
        if self._start is not None:
            end = self._temp_end if self._temp_end is not None else self._pos
            seg = self._emit(self._start, end)
            if seg is not None:
                out.append(seg)
        self._start = self._temp_end = None
        return out

    def _step(self, p: float) -> list[SpeechSegment]:
        pos = self._pos
        if self._start is None:
            if p >= self.threshold:
                self._start = pos
                self._temp_end = None
            return []
        if p >= self.threshold:
            self._temp_end = None
        elif p < self.neg_threshold and self._temp_end is None:
            self._temp_end = pos
        if self._temp_end is not None and pos + CHUNK - self._temp_end >= self.min_silence:
            seg = self._emit(self._start, self._temp_end)
            self._start = self._temp_end = None
            return [seg] if seg is not None else []
        if pos + CHUNK - self._start >= self.max_speech:
            seg = self._emit(self._start, pos + CHUNK)
            self._start, self._temp_end = pos + CHUNK, None  # keep going: the speaker has not stopped
            return [seg] if seg is not None else []
        return []

    def _emit(self, start: int, end: int) -> SpeechSegment | None:
        if end - start < self.min_speech:
            return None
        a = max(start - self.pad, self._buf_start)
        b = min(end + self.pad, self._buf_start + self._buf.size)
        audio = self._buf[a - self._buf_start: b - self._buf_start].copy()
        return SpeechSegment(a / RATE, b / RATE, audio)

    def _trim(self) -> None:
        """Keep only audio a future segment can still need (bounded memory on endless streams)."""
        keep_from = self._pos - self.pad - CHUNK
        if self._start is not None:
            keep_from = min(keep_from, self._start - self.pad)
        drop = max(0, keep_from - self._buf_start)
        if drop:
            self._buf = self._buf[drop:]
            self._buf_start += drop


def detect_speech(
    audio: np.ndarray, sample_rate: int, vad: SileroVad | None = None, **options: object
) -> list[SpeechSegment]:
    """Cut a whole recording into utterances (any rate; resampled to 16 kHz, segment audio is 16 kHz).

    ``options`` are :class:`VadSegmenter`'s (``min_silence_ms``, ``threshold``, ...).
    """
    samples = prepare_audio(audio, sample_rate, RATE, what="vad")
    if samples is None:
        return []
    seg = VadSegmenter(vad=vad, **options)  # type: ignore[arg-type]
    return seg.push(samples) + seg.flush()
