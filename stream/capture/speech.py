"""The audio path shared by the microphone and recordings: blocks -> VAD segments -> speaker turns -> ASR +
speaker -> utterances (one per turn: people answer each other faster than the VAD's end-of-utterance silence).

:class:`SpeechSource` owns a bounded channel of ``(arrival_ns, block)`` pairs that a feeder fills (the
PortAudio callback in :mod:`.mic`, a file decoder in :mod:`.audiofile`), and turns them into utterances:
segmentation and speaker embedding run in worker threads (torch), speech-to-text in the process-wide
:class:`AsrService` (a bounded pool of threads; CTranslate2 releases the GIL, pocketsphinx, which does not,
runs in its own process). So the event loop never waits on audio work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..channel import Channel, ChannelClosed, FullPolicy
from ..frames import ErrorCategory, ErrorFrame, Utterance
from ..params import DEFAULT_ASR, AsrParams, MicParams, SpeakerParams, VadParams
from ..tasks import task_name
from .base import UtteranceSink

log = logging.getLogger(__name__)


class AudioUnavailable(RuntimeError):
    """An audio input or tool that cannot be used (no device, no model, unreadable file)."""


def build_recognizer(spec: str, params: AsrParams) -> Any | None:
    """The recogniser named by ``spec`` (``--asr``), None for "none" (or "auto" when the default is missing).

    pocketsphinx holds the GIL while it decodes, so it is put in its own process (:class:`ProcessAsr`).
    """
    if spec == "none":
        return None
    from extractors.asr import create_asr
    from extractors.workers import ProcessAsr

    name = DEFAULT_ASR if spec == "auto" else spec
    try:
        if name == "pocketsphinx":
            return ProcessAsr(name)
        options: dict[str, Any] = {"num_workers": params.workers, "beam_size": params.beam_size,
                                   "window_s": params.window_s} \
            if name.startswith(("whisper-", "faster-whisper:")) else {}
        return create_asr(name, **options)
    except Exception as e:  # noqa: BLE001 - ExtractorError, ImportError, a broken worker process
        if spec != "auto":
            raise AudioUnavailable(f"ASR {spec!r} unavailable: {e}") from None
        log.warning("default ASR %s unavailable (%s); audio utterances have no text", name, e)
        return None


class AsrService:
    """One recogniser for every audio session of the process, called from ``workers`` threads at most.

    The recogniser is built on first use (in a thread). Each session awaits its own segment before sending
    the next, so at most one call per session waits here: the backlog is bounded by the session count.
    """

    def __init__(self, spec: str, params: AsrParams | None = None) -> None:
        self.spec = spec
        self.params = params or AsrParams()
        self.recognizer: Any | None = None
        self._built = False
        self._lock = asyncio.Lock()
        self._pool = ThreadPoolExecutor(max_workers=self.params.workers, thread_name_prefix="asr")

    async def start(self) -> None:
        """Build the recogniser (AudioUnavailable when an explicitly named one cannot be)."""
        async with self._lock:
            if not self._built:
                self.recognizer = await asyncio.get_running_loop().run_in_executor(
                    self._pool, build_recognizer, self.spec, self.params)
                self._built = True

    @property
    def name(self) -> str:
        return str(getattr(self.recognizer, "name", "none"))

    async def transcribe(self, audio: np.ndarray, sample_rate: int, prompt: str | None) -> str | None:
        """Text of one segment, or None (no recogniser, nothing recognised)."""
        await self.start()
        if self.recognizer is None:
            return None
        if not self.params.prompt_previous:
            prompt = None
        tr = await asyncio.get_running_loop().run_in_executor(
            self._pool, self.recognizer.transcribe, audio, sample_rate, prompt)
        return tr.text or None

    def close(self) -> None:
        closer = getattr(self.recognizer, "close", None)
        if closer is not None:
            closer()
        self._pool.shutdown(wait=False, cancel_futures=True)


class SpeakerNamer:
    """Names the speaker of each segment: one fixed name, or an online diariser of this session.

    Args:
        fixed: the name every utterance gets (``--speaker NAME``: no diarisation); None to diarise.
        params: the speaker cap and the voices to enroll.
        encoder: a shared :class:`extractors.speaker.VoiceEncoder` (one per process; built when None).
    """

    def __init__(self, fixed: str | None, params: SpeakerParams, encoder: Any | None = None) -> None:
        self.fixed = fixed
        self.params = params
        self.encoder = encoder
        self.diarizer: Any | None = None

    def start(self) -> None:
        """Build the diariser and enroll the known voices (blocking: run in a thread)."""
        if self.fixed is not None or self.diarizer is not None:
            return
        from extractors.speaker import OnlineDiarizer

        from .audiofile import RATE, decode_audio

        self.diarizer = OnlineDiarizer(max_speakers=self.params.max_speakers, encoder=self.encoder,
                                       min_speakers=self.params.min_speakers, params=self.params.cluster)
        for name, path in self.params.voices:
            self.diarizer.enroll(name, decode_audio(path), RATE)

    def turns(self, audio: np.ndarray, sample_rate: int) -> list[Any]:
        """The speaker turns inside one VAD segment (blocking: run in a thread); one when not diarising."""
        from extractors.turns import Turn

        if self.fixed is not None or self.diarizer is None:
            return [Turn(0, int(audio.shape[0]))]
        return list(self.diarizer.turns(audio, sample_rate))

    def name(self, audio: np.ndarray, sample_rate: int) -> str:
        """The speaker of one segment (blocking: run in a thread)."""
        if self.fixed is not None:
            return self.fixed
        assert self.diarizer is not None, "SpeakerNamer.start() first"
        name = str(self.diarizer.assign(audio, sample_rate))
        for retired, kept in self.diarizer.clusterer.take_merges():
            # the correction hook: earlier utterances named ``retired`` were ``kept`` (no event type carries it
            # yet; the events already sent keep their names)
            log.info("speakers merged: %s is %s", retired, kept)
        return name


class SpeechSource:
    """Segments an audio stream of one session into analysed utterances (subclasses feed the blocks).

    Args:
        session_id: the session.
        mic: rate, VAD kind, fixed speaker name.
        vad: segmentation parameters.
        asr: the shared speech-to-text service (a private one from ``mic.asr`` when None).
        speakers: diarisation parameters (used when ``mic.speaker`` is None).
        encoder: a shared voice encoder for the diariser.
        max_blocks: queued blocks; ``block_policy`` says what happens when full (a device drops, a file waits).
        speed: pace of the feeder (1 real time; 0 as fast as possible), to place speech ends in time.
    """

    stall_timeout_s: float | None = None
    """No block for this long = the feeder died (reported, source ends); None = wait forever."""
    input_kind = "audio input"
    """What the feeder is called in messages."""

    def __init__(self, session_id: str, mic: MicParams, vad: VadParams, *, asr: AsrService | None = None,
                 speakers: SpeakerParams | None = None, encoder: Any | None = None, max_blocks: int = 512,
                 block_policy: FullPolicy = FullPolicy.DROP_NEWEST, speed: float = 1.0) -> None:
        self.session_id = session_id
        self.mic = mic
        self.vad = vad
        self.asr = asr or AsrService(mic.asr)
        self._own_asr = asr is None
        self.speaker = SpeakerNamer(mic.speaker, speakers or SpeakerParams(), encoder)
        self.speed = speed
        self.blocks: Channel[tuple[int, np.ndarray]] = Channel(f"audio[{session_id}]", max_blocks, block_policy)
        self.segmenter: Any | None = None
        self.sent = 0
        self._fed = 0  # samples given to the segmenter
        self._prev_text: str | None = None

    async def prepare(self) -> None:
        """Load the VAD, the recogniser and the diariser in threads (AudioUnavailable or ValueError on failure)."""
        from .mic import make_segmenter

        self.segmenter = await asyncio.to_thread(make_segmenter, self.mic.vad, self.mic.sample_rate_hz, self.vad)
        await self.asr.start()
        try:
            await asyncio.to_thread(self.speaker.start)
        except Exception as e:  # noqa: BLE001 - ExtractorError, a bad --voice file
            raise AudioUnavailable(f"speaker diarisation unavailable: {e}") from None
        log.info("audio session %s: %s, ASR %s, speakers %s", self.session_id, type(self.segmenter).__name__,
                 self.asr.name, self.speaker.fixed or f"diarised (max {self.speaker.params.max_speakers})")

    def report(self, sink: UtteranceSink, message: str, category: ErrorCategory = ErrorCategory.DEVICE) -> None:
        sink.report(ErrorFrame(session_id=self.session_id, stage=task_name(self.session_id, "audio"),
                               message=message, category=category))

    async def consume(self, sink: UtteranceSink) -> None:
        """Segment queued blocks until the block channel is closed (end of a finite stream), then flush.

        Whatever blocks are queued are segmented together in a worker thread, so a backlog is absorbed in few
        calls.
        """
        if self.segmenter is None:
            await self.prepare()
        seg = self.segmenter
        assert seg is not None
        try:
            while True:
                try:
                    first = await asyncio.wait_for(self.blocks.get(), self.stall_timeout_s)
                except ChannelClosed:
                    break
                except TimeoutError:
                    self.report(sink, f"{self.input_kind} stopped delivering audio (nothing for {self.stall_timeout_s:g} s); "
                                      "the session continues without it")
                    break
                more = [first]
                while (b := self.blocks.get_nowait()) is not None:
                    more.append(b)
                arrived_ns = more[-1][0]
                data = np.concatenate([np.asarray(b, np.float32).reshape(len(b), -1).mean(axis=1) for _, b in more])
                self._fed += data.size
                for s in await asyncio.to_thread(seg.feed, data):
                    await self._emit(sink, s, arrived_ns)
            for s in await asyncio.to_thread(seg.flush):
                await self._emit(sink, s, time.monotonic_ns())
        finally:
            if self._own_asr:
                self.asr.close()

    def _speech_end_ns(self, t_end: float, arrived_ns: int) -> int:
        """When the segment's last sample was heard: the newest block arrived at ``arrived_ns`` and ended
        ``fed - t_end`` seconds of audio later (scaled by the feeder's pace)."""
        if self.speed <= 0:
            return arrived_ns
        after_s = max(0.0, self._fed / self.mic.sample_rate_hz - t_end)
        return arrived_ns - int(after_s / self.speed * 1e9)

    async def frames(self, t_start: float, t_end: float) -> tuple[np.ndarray, ...]:
        """Video frames of the segment's span (none here; a video file source overrides this)."""
        return ()

    async def _transcribe(self, audio: np.ndarray) -> str | None:
        try:
            return await self.asr.transcribe(audio, self.mic.sample_rate_hz, self._prev_text)
        except Exception as e:  # noqa: BLE001 - one undecodable segment: keep its audio, no text
            log.warning("ASR failed on a segment (%s); utterance kept without text", e)
            return None

    async def _speaker(self, audio: np.ndarray) -> str:
        try:
            return await asyncio.to_thread(self.speaker.name, audio, self.mic.sample_rate_hz)
        except Exception as e:  # noqa: BLE001 - a segment the encoder rejects: keep it, unnamed
            log.warning("speaker of a segment unknown (%s)", e)
            return "Speaker ?"

    async def _turns(self, audio: np.ndarray) -> list[Any]:
        try:
            return await asyncio.to_thread(self.speaker.turns, audio, self.mic.sample_rate_hz)
        except Exception as e:  # noqa: BLE001 - a segment the encoder rejects: keep it whole
            log.warning("speaker turns of a segment unknown (%s); kept whole", e)
            from extractors.turns import Turn

            return [Turn(0, int(audio.shape[0]))]

    async def _emit(self, sink: UtteranceSink, seg: Any, arrived_ns: int) -> None:
        """One VAD segment -> one utterance per speaker turn in it (people answer within ~0.2 s, under the
        VAD's end-of-utterance silence, so a segment may hold several turns)."""
        ended = self._speech_end_ns(seg.t_end, arrived_ns)
        sr = self.mic.sample_rate_hz
        for turn in await self._turns(seg.audio):
            audio = seg.audio[turn.start:turn.end]
            t_start, t_end = seg.t_start + turn.start / sr, seg.t_start + turn.end / sr
            # transcription (ASR pool), the speaker embedding and video frames (worker threads) run side by side
            text, speaker, frames = await asyncio.gather(self._transcribe(audio), self._speaker(audio),
                                                         self.frames(t_start, t_end))
            if text:
                self._prev_text = text
            self.sent += 1
            await sink.submit(Utterance(
                session_id=self.session_id, utterance_id=f"a{self.sent:04d}", speaker=speaker,
                t_start=round(t_start, 3), t_end=round(t_end, 3), text=text, audio=audio,
                sample_rate=sr, frames=frames, ended_ns=ended, overlap=turn.overlap))
