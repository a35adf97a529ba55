"""Microphone capture: PortAudio blocks -> voice-activity segments -> utterances.

The PortAudio callback runs on a device thread and only copies the block into the event loop
(``loop.call_soon_threadsafe``) through a bounded channel (full policy: drop newest, counted); the rest of
the path (VAD, ASR, diarisation) is :class:`.speech.SpeechSource`'s, shared with recordings. The energy
:class:`VadSegmenter` is plain numpy and is what the tests drive with recorded blocks. ``sounddevice`` is imported lazily, and both a missing PortAudio library (``OSError``
at import) and a missing input device become one clear message while the session continues.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..channel import FullPolicy
from ..params import MicParams, VadParams
from .base import SessionClock, UtteranceSink
from .speech import AudioUnavailable, SpeechSource

log = logging.getLogger(__name__)


class MicUnavailable(AudioUnavailable):
    """No usable microphone (PortAudio missing, no input device, device busy)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One voiced stretch of audio; times in seconds on the stream's sample clock."""

    audio: np.ndarray
    t_start: float
    t_end: float


class VadSegmenter:
    """Energy-based voice activity segmentation over fixed frames (pure numpy, no device).

    Args:
        sample_rate: Hz of the incoming samples.
        params: thresholds and durations.
    """

    def __init__(self, sample_rate: int, params: VadParams) -> None:
        self.sr = sample_rate
        self.p = params
        self.frame = max(1, int(sample_rate * params.frame_ms / 1000))
        self._buf = np.zeros(0, dtype=np.float32)
        self._pos = 0  # samples consumed into frames so far
        self._pre: list[np.ndarray] = []
        self._speech: list[np.ndarray] = []
        self._start = 0
        self._voiced = 0
        self._silence = 0
        self._in_speech = False
        self._threshold = 10 ** (params.threshold_dbfs / 20.0)

    def _frame_is_speech(self, fr: np.ndarray) -> bool:
        return float(np.sqrt(np.mean(fr.astype(np.float64) ** 2))) > self._threshold

    def feed(self, block: np.ndarray) -> list[Segment]:
        """Add samples (any length; mono or (n, channels)); returns the segments completed by them."""
        x = np.asarray(block, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1)
        self._buf = np.concatenate([self._buf, x.reshape(-1)])
        out: list[Segment] = []
        pre_frames = max(0, self.p.pre_roll_ms // self.p.frame_ms)
        min_frames = max(1, self.p.min_speech_ms // self.p.frame_ms)
        sil_frames = max(1, self.p.vad_silence_ms // self.p.frame_ms)
        max_frames = max(1, int(self.p.max_utterance_s * 1000 / self.p.frame_ms))
        while self._buf.size >= self.frame:
            fr, self._buf = self._buf[: self.frame], self._buf[self.frame:]
            at = self._pos
            self._pos += self.frame
            speech = self._frame_is_speech(fr)
            if not self._in_speech:
                if speech:
                    self._in_speech = True
                    self._speech = [*self._pre, fr]
                    self._start = at - len(self._pre) * self.frame
                    self._voiced, self._silence = 1, 0
                    self._pre = []
                else:
                    self._pre.append(fr)
                    if len(self._pre) > pre_frames:
                        self._pre.pop(0)
                continue
            self._speech.append(fr)
            if speech:
                self._voiced += 1
                self._silence = 0
            else:
                self._silence += 1
            if self._silence >= sil_frames or len(self._speech) >= max_frames:
                seg = self._close(trim=self._silence)
                if seg is not None and self._voiced >= min_frames:
                    out.append(seg)
        return out

    def _close(self, trim: int) -> Segment | None:
        frames = self._speech[: len(self._speech) - trim] if trim else self._speech
        self._in_speech = False
        self._speech = []
        if not frames:
            return None
        audio = np.concatenate(frames)
        return Segment(audio, self._start / self.sr, (self._start + audio.size) / self.sr)

    def flush(self) -> list[Segment]:
        """End of stream: close an open segment."""
        if not self._in_speech:
            return []
        voiced = self._voiced
        seg = self._close(trim=self._silence)
        return [seg] if seg is not None and voiced >= max(1, self.p.min_speech_ms // self.p.frame_ms) else []


class SileroSegmenter:
    """:class:`VadSegmenter`'s interface over the extractors' silero-vad segmenter (16 kHz only)."""

    def __init__(self, sample_rate: int, params: VadParams) -> None:
        from extractors.vad import VadSegmenter as Silero

        self._seg = Silero(sample_rate, min_silence_ms=params.silero_silence_ms, min_speech_ms=params.min_speech_ms,
                           max_speech_s=params.max_utterance_s, speech_pad_ms=params.silero_pad_ms)

    def _conv(self, segs: list[Any]) -> list[Segment]:
        return [Segment(s.audio, s.start_s, s.end_s) for s in segs]

    def feed(self, block: np.ndarray) -> list[Segment]:
        x = np.asarray(block, dtype=np.float32)
        return self._conv(self._seg.push(x.mean(axis=1) if x.ndim == 2 else x.reshape(-1)))

    def flush(self) -> list[Segment]:
        return self._conv(self._seg.flush())


def make_segmenter(kind: str, sample_rate: int, params: VadParams) -> VadSegmenter | SileroSegmenter:
    """"silero", "energy" or "auto" (silero when the extractors can build it, else energy)."""
    if kind not in ("auto", "silero", "energy"):
        raise ValueError(f"unknown VAD {kind!r} (expected auto, silero or energy)")
    if kind != "energy":
        try:
            return SileroSegmenter(sample_rate, params)
        except Exception as e:  # noqa: BLE001 - ExtractorError, ImportError: fall back with a reason
            if kind == "silero":
                raise MicUnavailable(f"silero VAD unavailable: {e}") from None
            log.info("silero VAD unavailable (%s); using the energy VAD", e)
    return VadSegmenter(sample_rate, params)


StreamFactory = Callable[..., Any]
"""Builds an input stream: ``factory(samplerate=, blocksize=, channels=, dtype=, device=, callback=)``,
an object with ``start()``, ``stop()`` and ``close()`` (``sounddevice.InputStream``)."""


def default_stream_factory() -> StreamFactory:
    """``sounddevice.InputStream``, or MicUnavailable with the reason."""
    try:
        import sounddevice as sd
    except OSError as e:  # "PortAudio library not found": not an ImportError
        raise MicUnavailable(f"PortAudio is not installed ({e}); install libportaudio2") from None
    except ImportError as e:
        raise MicUnavailable(f"sounddevice is not installed ({e})") from None
    return sd.InputStream  # type: ignore[no-any-return]


class MicrophoneSource(SpeechSource):
    """Segments microphone audio into utterances (:class:`SpeechSource` does the audio path).

    Args:
        session_id: the session.
        mic: device, rate, block size, VAD, ASR and speaker name.
        vad: segmentation parameters.
        stream_factory: builds the PortAudio stream (tests inject one that plays recorded blocks).
        clock: the session clock (utterance times are on it).
        max_blocks: queued blocks before new ones are dropped.
        options: :class:`SpeechSource`'s (the shared ASR service, diarisation parameters, voice encoder).
    """

    def __init__(self, session_id: str, mic: MicParams, vad: VadParams, *,
                 stream_factory: StreamFactory | None = None, clock: SessionClock | None = None,
                 max_blocks: int = 512, **options: Any) -> None:
        super().__init__(session_id, mic, vad, max_blocks=max_blocks, block_policy=FullPolicy.DROP_NEWEST,
                         **options)
        self.stream_factory = stream_factory
        self.clock = clock or SessionClock()
        self.name = "mic"
        self.status_flags = 0
        self.dropped_on_device = 0
        self._inflight = 0  # blocks handed to the loop but not yet queued
        self._inflight_lock = threading.Lock()

    stall_timeout_s: float | None = 3.0
    """No audio block for this long while capturing = the device is gone (reported, source ends)."""
    input_kind = "microphone"

    def callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """The PortAudio callback (device thread): copy and hand over, nothing else."""
        if status:
            self.status_flags += 1
        with self._inflight_lock:
            if self._inflight + len(self.blocks) >= self.blocks.maxsize:
                # full: drop here, on the device thread, instead of flooding the loop with callbacks that
                # would only drop it there (a device faster than real time would starve the loop)
                self.dropped_on_device += 1
                return
            self._inflight += 1
        block = np.array(indata, dtype=np.float32, copy=True)
        self._loop.call_soon_threadsafe(self._offer, (time.monotonic_ns(), block))

    def _offer(self, item: tuple[int, np.ndarray]) -> None:
        with self._inflight_lock:
            self._inflight -= 1
        if not self.blocks.closed:
            self.blocks.put_nowait(item)

    async def run(self, sink: UtteranceSink) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            factory = self.stream_factory or default_stream_factory()
            blocksize = int(self.mic.sample_rate_hz * self.mic.block_ms / 1000)

            def open_stream() -> Any:  # PortAudio calls block (device probing): keep them off the loop
                st = factory(samplerate=self.mic.sample_rate_hz, blocksize=blocksize, channels=1,
                             dtype="float32", device=self.mic.device, callback=self.callback)
                st.start()
                return st
            stream = await asyncio.to_thread(open_stream)
        except MicUnavailable as e:
            self.report(sink, f"no microphone: {e}")
            return
        except Exception as e:  # noqa: BLE001 - PortAudioError and friends: report, keep the session
            self.report(sink, f"no microphone: cannot open input device {self.mic.device!r} ({e})")
            return
        try:
            # models load in threads (blocks queue meanwhile): the loop keeps serving other sessions
            await self.prepare()
        except (AudioUnavailable, ValueError) as e:
            self._close(stream)
            self.report(sink, f"microphone not used: {e}")
            return
        log.info("microphone open (%d Hz, device %s)", self.mic.sample_rate_hz, self.mic.device)
        try:
            await self.consume(sink)
        finally:
            # Pa_StopStream waits for the callback thread: never on the loop thread
            closing = asyncio.get_running_loop().run_in_executor(None, self._close, stream)
            try:
                await asyncio.wait_for(asyncio.shield(closing), 5.0)
            except TimeoutError:
                log.warning("microphone stream did not stop within 5 s")

    @staticmethod
    def _close(stream: Any) -> None:
        for op in ("stop", "close"):
            try:
                getattr(stream, op)()
            except Exception as e:  # noqa: BLE001 - closing a failed device must not mask the cause
                log.debug("mic %s(): %s", op, e)
