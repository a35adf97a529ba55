"""Video frames for utterances, at the rate and size the visual path needs: never a whole span, never full HD.

A 40 s 1080p mp4 through ``--video`` once peaked at 8.5 GB: every frame of an utterance's span was decoded to a
6 MB BGR array and kept until the span was thinned to ``max_frames``. Here frames are decoded sequentially
(PyAV) and only the ones picked, at most ``max_frames`` evenly spaced over the span, are converted to BGR,
scaled on the way so their longer side is at most :data:`FRAME_MAX_SIDE` (the face detector looks at 320 px
and the expression model at a 64 px crop, so 640 px loses nothing it uses). Memory is then bounded by
``max_frames`` small frames per utterance, whatever the file's length and resolution.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FRAME_MAX_SIDE = 640


def fitted_size(width: int, height: int, max_side: int = FRAME_MAX_SIDE) -> tuple[int, int]:
    """(width, height) scaled so the longer side is at most ``max_side`` (even numbers; never enlarged)."""
    scale = min(1.0, max_side / max(width, height, 1))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def fit_frame(frame: np.ndarray, max_side: int = FRAME_MAX_SIDE) -> np.ndarray:
    """A camera frame scaled down (OpenCV, area filter) so its longer side is at most ``max_side``."""
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    import cv2

    return np.asarray(cv2.resize(frame, fitted_size(w, h, max_side), interpolation=cv2.INTER_AREA))


class VideoFrames:
    """Sequential reader of a file's first video track: the frames of a time span, evenly sampled, scaled
    (blocking: run it in a thread). Spans are expected in time order; an earlier one seeks back.

    Raises ValueError (one line naming the file) when the file has no readable video track.
    """

    def __init__(self, path: str | Path, max_side: int = FRAME_MAX_SIDE) -> None:
        import av

        self.path = Path(path)
        try:
            self._container = av.open(str(self.path))
        except (av.FFmpegError, OSError) as e:
            raise ValueError(f"{self.path}: cannot open video ({e})") from None
        if not self._container.streams.video:
            self._container.close()
            raise ValueError(f"{self.path}: has no video track")
        self._stream = self._container.streams.video[0]
        cc = self._stream.codec_context
        self.size = fitted_size(int(cc.width or 0), int(cc.height or 0), max_side)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 25.0
        self._decoded: Any = self._container.decode(self._stream)
        self._peek: Any = None  # the first decoded frame past the last span, kept for the next one
        self._last_t = -math.inf
        self._ended = False
        self.converted = 0  # frames turned into arrays (for tests and the benchmark)

    def _next(self) -> Any:
        if self._peek is not None:
            f, self._peek = self._peek, None
            return f
        if self._ended:
            return None
        import av

        try:
            return next(self._decoded)
        except StopIteration:
            self._ended = True
        except av.FFmpegError as e:  # a corrupt tail: the audio goes on without frames
            log.warning("%s: video unreadable after %.1f s (%s); later utterances get no frames", self.path,
                        max(self._last_t, 0.0), e)
            self._ended = True
        return None

    def _seek(self, t: float) -> None:
        import av

        tb = self._stream.time_base
        self._peek, self._ended, self._last_t = None, False, -math.inf
        try:
            self._container.seek(int(max(t, 0.0) / tb) if tb else 0, stream=self._stream, backward=True)
        except av.FFmpegError as e:
            log.warning("%s: cannot seek back to %.1f s (%s); later utterances get no frames", self.path, t, e)
            self._ended = True
        self._decoded = self._container.decode(self._stream)

    def frames_between(self, t0: float, t1: float, max_frames: int) -> tuple[np.ndarray, ...]:
        """Up to ``max_frames`` BGR frames shown in [t0, t1], evenly spaced (the frame shown at the centre of each
        of ``max_frames`` equal parts of the span, each frame once), each at most ``FRAME_MAX_SIDE``."""
        if max_frames < 1 or t1 < t0:
            return ()
        if t0 < self._last_t - 1.0 / self.fps:
            self._seek(t0)
        half = 0.5 / self.fps
        targets = t0 + (np.arange(max_frames) + 0.5) * (t1 - t0) / max_frames  # the centres of n equal parts
        out: list[np.ndarray] = []
        k = 0
        while k < len(targets):
            f = self._next()
            if f is None:
                break
            t = float(f.time) if f.time is not None else self._last_t + 1.0 / self.fps
            if t > t1 + half:
                self._peek = f
                break
            self._last_t = t
            if t + half < targets[k]:
                continue  # decoded, never converted: most frames of a long span end here
            w, h = self.size
            out.append(f.to_ndarray(width=w, height=h, format="bgr24"))
            self.converted += 1
            while k < len(targets) and targets[k] <= t + half:
                k += 1
        return tuple(out)

    def close(self) -> None:
        self._container.close()
