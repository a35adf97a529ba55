"""Recordings as input (``live.py --audio FILE`` / ``--video FILE``): the microphone path, fed from a file.

PyAV decodes the audio track (wav, flac, ogg, mp3, m4a, the audio of an mp4/mkv/webm; any channel count
and rate a recording has) in a worker thread; :mod:`.pcm` downmixes each frame without clipping, it is
resampled to 16 kHz and normalised in level, so the VAD takes any ordinary recording;
blocks of ``block_ms`` enter :class:`.speech.SpeechSource`'s channel at ``speed`` (1 real time, 0 as fast as
the pipeline takes them: the channel then blocks instead of dropping, so nothing is lost), and the same
segmenter, ASR, diariser, features, model and sinks as a microphone's do the rest. Times are seconds from
the start of the file. With ``--video`` the utterances also carry up to ``max_frames_per_utterance`` frames
of their span, decoded and scaled as the visual path needs them (:mod:`.video`: memory stays bounded
whatever the file's length and resolution), as a camera's would. At the end of the file the segmenter is
flushed, so the last utterance is kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..channel import FullPolicy
from ..frames import ErrorCategory
from ..params import MicParams, VadParams
from ..tasks import failure_reason
from .base import Pacer, UtteranceSink
from .pcm import LevelNormaliser, downmix, to_channels
from .speech import AudioUnavailable, SpeechSource

log = logging.getLogger(__name__)

RATE = 16000
DECODE_CHUNK_S = 1.0  # decoded per thread hop, then cut into blocks
MIN_FILE_RATE, MAX_FILE_RATE = 4000, 384000  # a header outside this is not a recording (a 1 Hz wav ran 300 s)
MAX_CHANNELS = 64


def _open(path: str | Path, channel: int | None = None) -> tuple[Any, Any]:
    """(container, first audio stream); AudioUnavailable with one clear line when unusable."""
    try:
        import av
    except ImportError as e:
        raise AudioUnavailable(f"PyAV is not installed ({e}); pip install '.[asr]'") from None
    p = Path(path)
    if not p.is_file():
        raise AudioUnavailable(f"{path}: no such file")
    try:
        container = av.open(str(p))
    except (av.FFmpegError, OSError, ValueError) as e:
        raise AudioUnavailable(f"{path}: not a readable audio/video file ({e})") from None
    if not container.streams.audio:
        container.close()
        raise AudioUnavailable(f"{path}: has no audio track")
    stream = container.streams.audio[0]
    try:
        _check_format(path, int(stream.codec_context.sample_rate or 0),
                      int(stream.codec_context.layout.nb_channels or 0), channel)
    except AudioUnavailable:
        container.close()
        raise
    return container, stream


def _check_format(path: str | Path, rate: int, channels: int, channel: int | None) -> None:
    """The header's rate and channel count are a recording's, and ``channel`` exists (AudioUnavailable)."""
    if not MIN_FILE_RATE <= rate <= MAX_FILE_RATE:
        raise AudioUnavailable(f"{path}: sample rate {rate} Hz is not a recording's "
                               f"(expected {MIN_FILE_RATE}..{MAX_FILE_RATE} Hz)")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioUnavailable(f"{path}: {channels} audio channels (expected 1..{MAX_CHANNELS})")
    if channel is not None and not 0 <= channel < channels:
        raise AudioUnavailable(f"{path}: has {channels} channel(s); --channel {channel + 1} does not exist")


def iter_audio(path: str | Path, chunk_s: float = DECODE_CHUNK_S, *, channel: int | None = None,
               normalise: bool = True) -> Generator[np.ndarray, None, None]:
    """Decode the first audio track to float32 mono 16 kHz, yielding about ``chunk_s`` seconds at a time.

    Each decoded frame is downmixed at its own rate (:func:`.pcm.downmix`: the average of the channels, or
    only ``channel``, 0-based), then resampled; each chunk is scaled by a :class:`.pcm.LevelNormaliser`
    (``normalise``), so what reaches the VAD is within [-1, 1] whatever the file's channels and level.
    Raises AudioUnavailable (opening, an absurd header) or ValueError (corrupt data while decoding), each
    one line.
    """
    import av

    container, stream = _open(path, channel)
    level = LevelNormaliser() if normalise else None
    pending: list[np.ndarray] = []
    have = 0
    try:
        def mono_frames() -> Iterator[Any]:
            resampler: Any = None
            rate = 0
            for frame in container.decode(stream):
                if frame.sample_rate != rate:  # a rate change mid-stream: flush and start a new resampler
                    _check_format(path, int(frame.sample_rate), frame.layout.nb_channels, channel)
                    if resampler is not None:
                        yield from resampler.resample(None)
                    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
                    rate = frame.sample_rate
                x = to_channels(frame.to_ndarray(), frame.layout.nb_channels, frame.format.is_planar)
                if channel is not None and channel >= x.shape[0]:
                    raise ValueError(f"{path}: channel {channel + 1} disappeared mid-stream")
                mono = av.AudioFrame.from_ndarray(downmix(x, channel).reshape(1, -1), format="flt", layout="mono")
                mono.sample_rate = rate
                yield from resampler.resample(mono)
            if resampler is not None:
                yield from resampler.resample(None)

        def out(parts: list[np.ndarray]) -> np.ndarray:
            x = np.concatenate(parts)
            return level(x) if level is not None else x

        try:
            for f in mono_frames():
                x = f.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                pending.append(x)
                have += x.size
                if have >= chunk_s * RATE:
                    yield out(pending)
                    pending, have = [], 0
        except av.FFmpegError as e:
            raise ValueError(f"{path}: corrupt audio after {have / RATE:.1f} s of the last chunk ({e})") from None
        if pending:
            yield out(pending)
    finally:
        container.close()


def decode_audio(path: str | Path) -> np.ndarray:
    """The whole first audio track as float32 mono 16 kHz (for short files: enrollment voices)."""
    parts = list(iter_audio(path))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def probe(path: str | Path, *, video: bool = False, channel: int | None = None) -> int:
    """Fail now, before models load, if the file cannot be used (AudioUnavailable, one line); returns the number
    of channels of its audio track."""
    container, stream = _open(path, channel)
    try:
        if video and not container.streams.video:
            raise AudioUnavailable(f"{path}: has no video track (use --audio for sound only)")
        return int(stream.codec_context.layout.nb_channels)
    finally:
        container.close()


class AudioFileSource(SpeechSource):
    """One recording played through the audio path as one session.

    Args:
        session_id: the session.
        path: the audio or video file.
        mic: VAD, ASR, speaker and block size (as for a microphone).
        vad: segmentation parameters.
        speed: 1 real time, 2 twice as fast, 0 as fast as possible.
        video: also attach the file's video frames to utterances (``--video``).
        max_frames_per_utterance: frames attached per utterance.
        channel: analyse only this channel (0-based; ``--channel N`` is 1-based), else the downmix of all.
        options: :class:`SpeechSource`'s (the shared ASR service, diarisation parameters, voice encoder).
    """

    def __init__(self, session_id: str, path: str | Path, mic: MicParams, vad: VadParams, *, speed: float = 1.0,
                 video: bool = False, max_frames_per_utterance: int = 8, max_blocks: int = 512,
                 channel: int | None = None, **options: Any) -> None:
        if mic.sample_rate_hz != RATE:
            raise ValueError(f"audio files are decoded at {RATE} Hz (got sample_rate_hz={mic.sample_rate_hz})")
        super().__init__(session_id, mic, vad, max_blocks=max_blocks, block_policy=FullPolicy.BLOCK, speed=speed,
                         **options)
        self.path = Path(path)
        self.video = video
        self.channel = channel
        self.max_frames = max_frames_per_utterance
        self.name = f"{'video' if video else 'audio'}:{self.path.name}"
        self.failed: str | None = None
        """One line naming the file and why it was not (fully) analysed; None when it was."""
        self.decoded_s = 0.0
        """Seconds of audio decoded so far (the whole file's duration once it ended)."""
        self.pacer: Pacer | None = None
        self._video: Any = None

    async def run(self, sink: UtteranceSink) -> None:
        try:
            try:
                await self.prepare()
                if self.video:
                    from .video import VideoFrames

                    self._video = await asyncio.to_thread(VideoFrames, self.path)
            except (AudioUnavailable, ValueError) as e:
                self.failed = str(e)
                self.report(sink, f"{self.path}: not analysed: {e}", ErrorCategory.INPUT)
                return
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._feed(sink))
                    tg.create_task(self.consume(sink))
            except Exception as e:  # noqa: BLE001 - the VAD, ASR or diariser failed: this file's run failed
                self.failed = f"{self.path}: stopped after {self.decoded_s:.1f} s: {failure_reason(e)}"
                self.report(sink, self.failed, ErrorCategory.INPUT)
        finally:
            if self._video is not None:
                self._video.close()
            sink.end_session(self.session_id)

    async def _feed(self, sink: UtteranceSink) -> None:
        """Decode in a thread, cut into blocks, release each when its end is due; close the channel at the end."""
        block = int(RATE * self.mic.block_ms / 1000)
        chunks = iter_audio(self.path, channel=self.channel)
        self.pacer = pacer = Pacer(self.speed)
        pos = 0
        try:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                for i in range(0, chunk.size, block):
                    b = chunk[i:i + block]
                    pos += b.size
                    self.decoded_s = pos / RATE
                    due = await pacer.wait(pos / RATE)
                    await self.blocks.put((due if due is not None else time.monotonic_ns(), b))
        except (AudioUnavailable, ValueError) as e:
            self.failed = str(e)
            self.report(sink, f"{self.path}: stopped: {e}", ErrorCategory.INPUT)
        finally:
            self.blocks.close()
            await asyncio.to_thread(chunks.close)

    async def frames(self, t_start: float, t_end: float) -> tuple[np.ndarray, ...]:
        if self._video is None:
            return ()
        return await asyncio.to_thread(self._video.frames_between, t_start, t_end, self.max_frames)
