"""Camera capture: an OpenCV ``VideoCapture`` read on its own thread into a bounded, time-stamped ring
buffer of frames scaled to the size the visual path needs (:func:`.video.fit_frame`); utterances take the
frames of their time span from it.

The camera is not an utterance source: it enriches utterances from the microphone or a transcript.
A missing camera is one clear message and the session runs without the visual modality; a camera that
fails mid-session is retried with back-off.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import Any

import numpy as np

from ..frames import ErrorCategory, ErrorFrame
from ..params import CameraParams
from ..tasks import task_name
from .base import SessionClock, UtteranceSink
from .video import fit_frame

log = logging.getLogger(__name__)


class CameraSource:
    """Keeps the last ``buffer_s`` seconds of frames (at most ``fps_hz``) with their session-clock times.

    Args:
        session_id: the session whose utterances get the frames.
        params: device (index or a video file path), rate, buffer and frames per utterance.
        clock: the session clock.
        realtime_file: when the device is a file, read it at its own frame rate (True) or as fast as
            possible (False, for tests).
    """

    def __init__(self, session_id: str, params: CameraParams, *, clock: SessionClock | None = None,
                 realtime_file: bool = True) -> None:
        self.session_id = session_id
        self.params = params
        self.clock = clock or SessionClock()
        self.realtime_file = realtime_file
        self.name = "camera"
        maxlen = max(1, int(params.buffer_s * params.fps_hz))
        self._frames: collections.deque[tuple[float, np.ndarray]] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.frames_read = 0
        self.opened = threading.Event()
        self.finished = threading.Event()
        self.error: str | None = None

    def frames_between(self, t0: float, t1: float) -> tuple[np.ndarray, ...]:
        """Up to ``max_frames_per_utterance`` frames seen in [t0, t1], evenly spaced."""
        with self._lock:
            sel = [f for t, f in self._frames if t0 <= t <= t1]
        n = self.params.max_frames_per_utterance
        if len(sel) > n:
            idx = np.linspace(0, len(sel) - 1, n).round().astype(int)
            sel = [sel[i] for i in idx]
        return tuple(sel)

    def _open(self) -> Any:
        try:
            import cv2
        except ImportError as e:
            raise RuntimeError(f"OpenCV is not installed ({e}); pip install opencv-python-headless") from None
        cap = cv2.VideoCapture(self.params.device)
        if not cap.isOpened():
            cap.release()
            raise RuntimeError(f"cannot open camera {self.params.device!r} (no such device or it is busy)")
        return cap

    def _read_loop(self, cap: Any) -> None:
        """Device thread: read, thin to fps_hz, stamp, keep."""
        import cv2

        is_file = isinstance(self.params.device, str)
        file_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0) or self.params.fps_hz
        min_dt = 1.0 / self.params.fps_hz
        last_t = -1e9
        n = 0
        t_file0 = time.monotonic()
        while not self._stop.is_set():
            ok, frame = cap.read()
            if not ok:
                if is_file:
                    break
                raise RuntimeError("camera stopped delivering frames")
            n += 1
            if is_file:
                t = (n - 1) / file_fps
                if self.realtime_file:
                    delay = t_file0 + t - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            else:
                t = self.clock.now_s()
            if t - last_t + 1e-9 < min_dt:
                continue
            last_t = t
            frame = fit_frame(frame)  # a 30 s ring of 1080p frames would be 2.8 GB; at 640 px, 0.3 GB
            with self._lock:
                self._frames.append((t, frame))
            self.frames_read += 1

    async def run(self, sink: UtteranceSink) -> None:
        stage = task_name(self.session_id, "camera")
        attempt = 0
        while not self._stop.is_set():
            try:
                cap = await asyncio.to_thread(self._open)
            except RuntimeError as e:
                self.error = str(e)
                if attempt == 0:
                    sink.report(ErrorFrame(session_id=self.session_id, stage=stage,
                                           message=f"no camera: {e}; continuing without video",
                                           category=ErrorCategory.DEVICE))
                    return
                await asyncio.sleep(min(10.0, 0.5 * 2 ** attempt))
                attempt += 1
                continue
            self.opened.set()
            try:
                await asyncio.to_thread(self._read_loop, cap)
                self.finished.set()
                return  # a file ended
            except RuntimeError as e:
                attempt += 1
                sink.report(ErrorFrame(session_id=self.session_id, stage=stage,
                                       message=f"camera failed ({e}); retrying", category=ErrorCategory.DEVICE))
            finally:
                cap.release()

    def stop(self) -> None:
        self._stop.set()
