"""JSONL event log: one event object per line, exactly the JSON published on MQTT (``--events FILE``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import IO

from ..events import EventPayload, error_event
from ..frames import ErrorFrame
from .base import Sink, SinkFrame

log = logging.getLogger(__name__)


def frame_json(frame: SinkFrame, worker_id: str | None = None) -> EventPayload:
    """The JSON object of a frame (error frames become error events; session ``_`` when they concern none,
    as on the topic ``<root>/_/error``)."""
    if isinstance(frame, ErrorFrame):
        return error_event(session=frame.session_id or "_", stage=frame.stage, category=frame.category.value,
                           message=frame.message, worker_id=worker_id, utterance_id=frame.utterance_id)
    return frame.payload


def dumps(obj: EventPayload) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class JsonlSink(Sink):
    """Appends events to a file, flushed per event so a crash loses at most the line being written.

    Args:
        path: the log file (appended to; parent folders are created).
        include_speaker_state: also write the per-speaker state events (default True).
    """

    name = "jsonl"

    def __init__(self, path: str | Path, *, include_speaker_state: bool = True, worker_id: str | None = None,
                 maxsize: int = 4096) -> None:
        super().__init__(maxsize=maxsize)
        self.path = Path(path)
        self.include_speaker_state = include_speaker_state
        self.worker_id = worker_id
        self._f: IO[str] | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115, ASYNC230 - once at start; closed in stop()

    async def handle(self, frame: SinkFrame) -> None:
        obj = frame_json(frame, self.worker_id)
        if not self.include_speaker_state and obj.get("type") == "speaker":
            return
        assert self._f is not None
        self._f.write(dumps(obj) + "\n")
        self._f.flush()

    async def stop(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
