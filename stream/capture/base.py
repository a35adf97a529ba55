"""What every source hands utterances to, and the session clock they share."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from ..frames import ErrorFrame, Utterance


class UtteranceSink(Protocol):
    """The runtime side of a source (implemented by :class:`stream.runtime.Runtime`)."""

    async def submit(self, utt: Utterance) -> None:
        """Queue one utterance of ``utt.session_id`` (waits when the session's queue is full)."""

    def end_session(self, session_id: str) -> None:
        """The source of this session is done: drain what is queued, then close the session."""

    def report(self, error: ErrorFrame) -> None:
        """A problem to show and log; the source decides whether it goes on."""


WORDS_PER_S = 2.5
"""Speaking rate used to estimate how long an utterance without times took."""


def estimate_duration_s(text: str) -> float:
    """Seconds ``text`` takes to say (at least 0.8 s): the duration of an utterance that came without times."""
    return max(0.8, len(text.split()) / WORDS_PER_S)


def default_utterance_id(number: int) -> str:
    """The id of a session's ``number``-th (1-based) utterance when its source gave none: ``u0001``, ...

    Every source without ids of its own (transcript lines, MQTT input, cluster input) numbers this way, so
    the same input gets the same utterance id, and therefore the same event ids, in every deployment.
    """
    return f"u{number:04d}"


class SessionClock:
    """Seconds since a session started, on the monotonic clock (shared by mic, camera and transcripts)."""

    def __init__(self, start_ns: int | None = None) -> None:
        self.start_ns = time.monotonic_ns() if start_ns is None else start_ns

    def now_s(self) -> float:
        return (time.monotonic_ns() - self.start_ns) / 1e9

    def to_ns(self, t_s: float) -> int:
        return self.start_ns + int(t_s * 1e9)


class Pacer:
    """Plays session times out on the monotonic clock: ``speed`` 1.0 real time, 2.0 twice as fast, 0 no waiting.

    Shared by the file sources (recorded sessions, transcript files): an utterance is due when its end
    time, scaled by ``speed``, has passed since the pacer was made.
    """

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.start_ns = time.monotonic_ns()

    def due_ns(self, t_s: float) -> int | None:
        """Monotonic time at which session time ``t_s`` is reached; None when not paced (speed 0)."""
        return self.start_ns + int(t_s / self.speed * 1e9) if self.speed > 0 else None

    async def wait(self, t_s: float) -> int | None:
        """Sleep until session time ``t_s`` is due; returns :meth:`due_ns`."""
        due = self.due_ns(t_s)
        if due is not None:
            delay = (due - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
        return due
