"""What every source hands utterances to, and the session clock they share."""

from __future__ import annotations

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


class SessionClock:
    """Seconds since a session started, on the monotonic clock (shared by mic, camera and transcripts)."""

    def __init__(self, start_ns: int | None = None) -> None:
        self.start_ns = time.monotonic_ns() if start_ns is None else start_ns

    def now_s(self) -> float:
        return (time.monotonic_ns() - self.start_ns) / 1e9

    def to_ns(self, t_s: float) -> int:
        return self.start_ns + int(t_s * 1e9)
