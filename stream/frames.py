"""Typed frames that flow through the live runtime.

Two families, as in pipecat but frozen (record/replay and several sinks share one instance):

* ``DataFrame``: ordered payload (:class:`Utterance`, :class:`EventFrame`).
* ``SystemFrame``: immediate (:class:`ErrorFrame`).

Shutdown is not a frame: the end of a finite source closes its session channels (a drain) and a signal
cancels the runtime's tasks (see ``stream.runtime``).

Every frame carries the ``session_id`` it belongs to and ``t_ns``, a monotonic timestamp taken when the
frame was made (``time.monotonic_ns``), which latency figures are computed from.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

import numpy as np

from .events import EventPayload


def _now_ns() -> int:
    return time.monotonic_ns()


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """Base of all frames.

    Parameters:
        session_id: the conversation the frame belongs to ("" for process-wide frames).
        t_ns: monotonic creation time in nanoseconds.
    """

    session_id: str = ""
    t_ns: int = field(default_factory=_now_ns)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataFrame(Frame):
    """Ordered payload."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemFrame(Frame):
    """Immediate: skips queued data."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Utterance(DataFrame):
    """One complete utterance, the unit the model steps on.

    Parameters:
        utterance_id: unique within the session (``u0001``...); with ``session_id`` it makes event ids.
        speaker: display name of the speaker as given by the source.
        t_start: start time in seconds since the session start (session clock).
        t_end: end time in seconds since the session start.
        text: transcript, or None when unknown (microphone without ASR).
        audio: float32 mono samples in [-1, 1], or None.
        sample_rate: samples per second of ``audio``.
        frames: BGR uint8 video frames seen during the utterance.
        gold: a reference emotion label carried by a recording (never used for prediction).
        ended_ns: monotonic time at which the utterance ended in this process (its last sample/line
            arrived); end-to-end latency is measured from here. Defaults to ``t_ns``.
        overlap: the audio path cut this utterance from a neighbouring speaker's without a pause between
            them (talking over each other): its audio may hold some of the other voice.
    """

    utterance_id: str
    speaker: str
    t_start: float
    t_end: float
    text: str | None = None
    audio: np.ndarray | None = field(default=None, repr=False)
    sample_rate: int | None = None
    frames: tuple[np.ndarray, ...] = field(default=(), repr=False)
    gold: str | None = None
    ended_ns: int | None = None
    overlap: bool = False

    @property
    def ended_at_ns(self) -> int:
        return self.ended_ns if self.ended_ns is not None else self.t_ns


class EventKind(enum.StrEnum):
    """What an :class:`EventFrame` carries, and so which topic it goes to (docs/asyncapi.yaml). Errors are
    :class:`ErrorFrame` everywhere (one error type on the wire)."""

    EMOTION = "emotion"
    SHIFT = "shift"
    SPEAKER = "speaker"  # retained current state of one speaker
    SESSION = "session"  # retained: a run of a session started / ended (wall-clock start)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventFrame(DataFrame):
    """An outgoing event: the same JSON object goes to MQTT, the JSONL log and the UI.

    Parameters:
        kind: which event family.
        payload: the JSON-serialisable event object (schema in docs/events.md).
        speaker: set for SPEAKER events (topic ``pcgnet/<session>/speakers/<speaker>``).
    """

    kind: EventKind
    payload: EventPayload
    speaker: str | None = None


class ErrorCategory(enum.StrEnum):
    """How bad an error is for the stage that raised it."""

    INPUT = "input"  # one bad input (malformed message, corrupt file): dropped, everything continues
    DEVICE = "device"  # a capture device is missing or failed: that source stops, the session continues
    SINK = "sink"  # an output is unavailable (broker down): other sinks continue
    FATAL = "fatal"  # the runtime cannot continue (no checkpoint)


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorFrame(SystemFrame):
    """A problem reported by a stage: shown in the UI, logged, written to the event log.

    Parameters:
        stage: the task/stage name (``stream[<session>].mic``).
        message: one line a user can act on.
        category: see :class:`ErrorCategory`.
    """

    stage: str
    message: str
    category: ErrorCategory = ErrorCategory.INPUT
    utterance_id: str | None = None  # the input this error is about, when it names one

