"""Replay of a recorded session folder (Seam 6) at a given speed, as if it happened live.

Each utterance is released when the replay clock reaches its ``t_end`` (``speed`` 1.0 = real time,
2.0 = twice as fast, 0 = as fast as the pipeline takes them), carrying its slice of the recorded audio
and the recorded video frames of its time span, so the analyzer sees what it saw when recording.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import numpy as np

from ..frames import Utterance
from ..record import RecordedSession, read_session
from .base import Pacer, UtteranceSink
from .video import VideoFrames

log = logging.getLogger(__name__)


class ReplaySource:
    """Plays one recorded session into the runtime.

    Args:
        path: the session folder.
        speed: 1.0 real time, >1 faster, 0 as fast as possible.
        session_id: overrides the recorded session id (to replay one recording as several sessions).
        max_frames_per_utterance: video frames attached per utterance.
    """

    def __init__(self, path: str | Path, *, speed: float = 1.0, session_id: str | None = None,
                 max_frames_per_utterance: int = 8) -> None:
        if speed < 0:
            raise ValueError(f"--speed must be >= 0 (got {speed})")
        self.recording: RecordedSession = read_session(path)
        self.speed = speed
        self.session_id = session_id or self.recording.session_id
        self.max_frames = max_frames_per_utterance
        self.name = f"replay:{Path(path).name}"
        self.sent = 0

    async def run(self, sink: UtteranceSink) -> None:
        rec = self.recording
        video = None
        if rec.video_path is not None:
            try:
                video = VideoFrames(rec.video_path)
            except (ValueError, ImportError) as e:
                log.warning("replay %s: video not used (%s)", self.session_id, e)
        pacer = Pacer(self.speed)
        try:
            for u in sorted(rec.utterances, key=lambda x: (x.t_end, x.t_start)):
                due = await pacer.wait(u.t_end)
                audio = None
                if rec.audio is not None and rec.sample_rate:
                    a = rec.audio[int(u.t_start * rec.sample_rate): int(u.t_end * rec.sample_rate)]
                    audio = a if a.size else None
                frames: tuple[np.ndarray, ...] = ()
                if video is not None:
                    frames = await asyncio.to_thread(video.frames_between, u.t_start, u.t_end, self.max_frames)
                ended = time.monotonic_ns()
                if due is not None:
                    ended = min(ended, due)
                await sink.submit(Utterance(
                    session_id=self.session_id, utterance_id=u.utterance_id, speaker=u.speaker,
                    t_start=u.t_start, t_end=u.t_end, text=u.text, audio=audio,
                    sample_rate=rec.sample_rate if audio is not None else None, frames=frames, gold=u.emotion,
                    ended_ns=ended))
                self.sent += 1
        finally:
            if video is not None:
                video.close()
            sink.end_session(self.session_id)
