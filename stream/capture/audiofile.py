"""Recordings as input (``live.py --audio FILE`` / ``--video FILE``): the microphone path, fed from a file.

PyAV decodes the audio track (wav, flac, ogg, mp3, the audio of an mp4) to 16 kHz mono in a worker thread;
blocks of ``block_ms`` enter :class:`.speech.SpeechSource`'s channel at ``speed`` (1 real time, 0 as fast as
the pipeline takes them: the channel then blocks instead of dropping, so nothing is lost), and the same
segmenter, ASR, diariser, features, model and sinks as a microphone's do the rest. Times are seconds from
the start of the file. With ``--video`` the utterances also carry the file's frames of their span, as a
camera's would. At the end of the file the segmenter is flushed, so the last utterance is kept.
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
from .base import Pacer, UtteranceSink
from .speech import AudioUnavailable, SpeechSource

log = logging.getLogger(__name__)

RATE = 16000
DECODE_CHUNK_S = 1.0  # decoded per thread hop, then cut into blocks


def _open(path: str | Path) -> tuple[Any, Any]:
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
    return container, container.streams.audio[0]


def iter_audio(path: str | Path, chunk_s: float = DECODE_CHUNK_S) -> Generator[np.ndarray, None, None]:
    """Decode the first audio track to float32 mono 16 kHz, yielding about ``chunk_s`` seconds at a time.

    Raises AudioUnavailable (opening) or ValueError (corrupt data while decoding), each one line.
    """
    import av

    container, stream = _open(path)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    pending: list[np.ndarray] = []
    have = 0
    try:
        def frames() -> Iterator[Any]:
            for frame in container.decode(stream):
                yield from resampler.resample(frame)
            yield from resampler.resample(None)

        try:
            for f in frames():
                x = f.to_ndarray().reshape(-1).astype(np.float32, copy=False)
                pending.append(x)
                have += x.size
                if have >= chunk_s * RATE:
                    yield np.concatenate(pending)
                    pending, have = [], 0
        except av.FFmpegError as e:
            raise ValueError(f"{path}: corrupt audio after {have / RATE:.1f} s of the last chunk ({e})") from None
        if pending:
            yield np.concatenate(pending)
    finally:
        container.close()


def decode_audio(path: str | Path) -> np.ndarray:
    """The whole first audio track as float32 mono 16 kHz (for short files: enrollment voices)."""
    parts = list(iter_audio(path))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def probe(path: str | Path, *, video: bool = False) -> None:
    """Fail now, before models load, if the file cannot be used (AudioUnavailable, one line)."""
    container, _ = _open(path)
    try:
        if video and not container.streams.video:
            raise AudioUnavailable(f"{path}: has no video track (use --audio for sound only)")
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
        options: :class:`SpeechSource`'s (the shared ASR service, diarisation parameters, voice encoder).
    """

    def __init__(self, session_id: str, path: str | Path, mic: MicParams, vad: VadParams, *, speed: float = 1.0,
                 video: bool = False, max_frames_per_utterance: int = 8, max_blocks: int = 512,
                 **options: Any) -> None:
        if mic.sample_rate_hz != RATE:
            raise ValueError(f"audio files are decoded at {RATE} Hz (got sample_rate_hz={mic.sample_rate_hz})")
        super().__init__(session_id, mic, vad, max_blocks=max_blocks, block_policy=FullPolicy.BLOCK, speed=speed,
                         **options)
        self.path = Path(path)
        self.video = video
        self.max_frames = max_frames_per_utterance
        self.name = f"{'video' if video else 'audio'}:{self.path.name}"
        self.failed: str | None = None
        self.pacer: Pacer | None = None
        self._video: Any = None

    async def run(self, sink: UtteranceSink) -> None:
        try:
            try:
                await self.prepare()
                if self.video:
                    from .replay import VideoReader

                    self._video = await asyncio.to_thread(VideoReader, self.path, 25.0)
            except (AudioUnavailable, ValueError) as e:
                self.failed = str(e)
                self.report(sink, f"{self.path}: not analysed: {e}", ErrorCategory.INPUT)
                return
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._feed(sink))
                tg.create_task(self.consume(sink))
        finally:
            if self._video is not None:
                self._video.close()
            sink.end_session(self.session_id)

    async def _feed(self, sink: UtteranceSink) -> None:
        """Decode in a thread, cut into blocks, release each when its end is due; close the channel at the end."""
        block = int(RATE * self.mic.block_ms / 1000)
        chunks = iter_audio(self.path)
        self.pacer = pacer = Pacer(self.speed)
        pos = 0
        try:
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                for i in range(0, chunk.size, block):
                    b = chunk[i:i + block]
                    pos += b.size
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
