"""Transcript sources: ``Speaker: text`` lines from stdin or a file, and utterances posted over MQTT.

Lines carry no timing, so an utterance's duration is estimated from its length (about 2.5 words per
second) and utterances follow each other with a short gap; from stdin, an utterance ends when its line
arrives. Malformed lines and messages are reported one line each and skipped; the source keeps going.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiomqtt

from ..frames import ErrorCategory, ErrorFrame, Utterance
from ..mqtt import topics
from ..mqtt.backoff import Backoff
from ..mqtt.client import payload_bytes, run_reconnecting
from ..mqtt.inbound import ErrorRateLimiter, InboundError, parse_utterance
from ..mqtt.settings import MqttSettings
from ..mqtt.wire import to_utterance
from ..tasks import task_name
from .base import Pacer, SessionClock, UtteranceSink, default_utterance_id, estimate_duration_s

# Matched against a stripped line, so the text needs no lazy ``.*?\s*$`` (quadratic on long blank runs).
LINE_RE = re.compile(r"(?P<speaker>[^:]{1,64}?)\s*:\s*(?P<text>\S.*)")
GAP_S = 0.3


def parse_line(line: str) -> tuple[str, str] | None:
    """``"Alice: hello"`` -> ("Alice", "hello"); None for blank lines and ``#`` comments.

    Raises:
        ValueError: the line is not of the form ``Speaker: text``.
    """
    s = line.strip()
    if not s or s.startswith("#"):
        return None
    m = LINE_RE.fullmatch(s)
    if not m:
        raise ValueError(f"expected 'Speaker: text', got {s[:60]!r}")
    return m.group("speaker"), m.group("text")


class TranscriptSource:
    """``Speaker: text`` lines from a file (paced by ``speed``) or a stream such as stdin (live).

    Args:
        session_id: the session the lines belong to.
        path: a file, or None to read ``stream``.
        stream: the text stream to read when no path is given (default stdin).
        speed: for files: 1.0 real time by the estimated durations, 0 as fast as possible.
    """

    def __init__(self, session_id: str, *, path: str | Path | None = None, stream: IO[str] | None = None,
                 speed: float = 1.0, clock: SessionClock | None = None) -> None:
        self.session_id = session_id
        self.path = Path(path) if path is not None else None
        self.stream = stream
        self.speed = speed
        self.clock = clock or SessionClock()
        self.name = f"transcript:{self.path or 'stdin'}"
        self.sent = 0

    async def run(self, sink: UtteranceSink) -> None:
        try:
            if self.path is not None:
                await self._run_file(sink)
            else:
                await self._run_stream(sink)
        finally:
            sink.end_session(self.session_id)

    def _report(self, sink: UtteranceSink, message: str) -> None:
        sink.report(ErrorFrame(session_id=self.session_id, stage=task_name(self.session_id, "transcript"),
                               message=message, category=ErrorCategory.INPUT))

    def _parse(self, sink: UtteranceSink, line: str, where: str) -> tuple[str, str] | None:
        """:func:`parse_line`, reporting a malformed line (None: nothing to submit)."""
        try:
            return parse_line(line)
        except ValueError as e:
            self._report(sink, f"{where}: {e}; line skipped")
            return None

    async def _submit(self, sink: UtteranceSink, speaker: str, text: str, t0: float, t1: float,
                      ended: int) -> None:
        self.sent += 1
        await sink.submit(Utterance(session_id=self.session_id, utterance_id=default_utterance_id(self.sent),
                                    speaker=speaker, t_start=round(t0, 3), t_end=round(t1, 3), text=text,
                                    ended_ns=ended))

    async def _run_file(self, sink: UtteranceSink) -> None:
        assert self.path is not None
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            self._report(sink, f"{self.path}: cannot read ({e})")
            return
        t = 0.0
        pacer = Pacer(self.speed)
        for no, line in enumerate(lines, 1):
            parsed = self._parse(sink, line, f"{self.path}:{no}")
            if parsed is None:
                continue
            speaker, text = parsed
            t0, t1 = t, t + estimate_duration_s(text)
            t = t1 + GAP_S
            ended = time.monotonic_ns()
            due = await pacer.wait(t1)
            await self._submit(sink, speaker, text, t0, t1, ended if due is None else due)

    async def _run_stream(self, sink: UtteranceSink) -> None:
        stream = self.stream or sys.stdin
        prev_end = 0.0
        no = 0
        while True:
            line = await asyncio.to_thread(stream.readline)
            if line == "":
                return  # EOF
            no += 1
            parsed = self._parse(sink, line, f"stdin line {no}")
            if parsed is None:
                continue
            speaker, text = parsed
            ended = time.monotonic_ns()
            t1 = self.clock.now_s()
            t0 = max(prev_end, t1 - estimate_duration_s(text))
            prev_end = t1
            await self._submit(sink, speaker, text, t0, t1, ended)


@dataclass
class _InputSession:
    """What the MQTT source remembers per session: messages seen (default ids) and the last end time."""

    messages: int = 0
    prev_end_s: float = 0.0


class MqttTranscriptSource:
    """Utterances posted by an external ASR or agent to ``pcgnet/<session>/in/utterance`` (JSON).

    Any session id on the topic starts a session. Invalid messages are rejected one by one with a
    rate-limited error event on ``pcgnet/<session>/error``; valid traffic keeps flowing. Ids and missing
    times come from :func:`stream.mqtt.wire.to_utterance`, as in the cluster workers.

    Args:
        settings: broker connection.
        root: topic root.
        max_backoff_s: ceiling of the reconnect delay.
    """

    def __init__(self, settings: MqttSettings, *, root: str = topics.DEFAULT_ROOT, max_backoff_s: float = 10.0,
                 ) -> None:
        self.settings = settings.with_client_id(f"pcgnet-live-in-{uuid.uuid4().hex[:8]}")
        self.root = root
        self.max_backoff_s = max_backoff_s
        self.name = "transcript:mqtt"
        self.limiter = ErrorRateLimiter()
        self.subscribed = asyncio.Event()
        self.received = 0
        self.rejected = 0
        self._sessions: OrderedDict[str, _InputSession] = OrderedDict()
        self.max_tracked_sessions = 10_000  # per-session counters kept (a spray of ids cannot grow them)

    def _reject(self, sink: UtteranceSink, topic: str, e: InboundError) -> None:
        self.rejected += 1
        try:
            session = topics.session_from_input_topic(topic, root=self.root)
        except ValueError:
            session = "_"
        adm = self.limiter.admit(session)
        if adm is None:
            return
        extra = f" ({adm.suppressed} similar suppressed)" if adm.suppressed else ""
        sink.report(ErrorFrame(session_id=session, stage=task_name(session, "mqtt-in"),
                               message=f"rejected input on {topic[:120]}: {e.message}{extra}",
                               category=ErrorCategory.INPUT))

    def _session(self, session_id: str) -> _InputSession:
        """The session's counters, marked most recent; the least recent beyond the bound is forgotten."""
        st = self._sessions.pop(session_id, None) or _InputSession()
        self._sessions[session_id] = st
        while len(self._sessions) > self.max_tracked_sessions:
            self._sessions.popitem(last=False)
        return st

    def to_utterance(self, topic: str, payload: bytes) -> Utterance:
        """Validate one message and turn it into an Utterance.

        Every message of a session counts towards its default utterance ids, rejected ones too (as in the
        cluster, where a rejected input still takes its sequence number).

        Raises:
            InboundError: the message is invalid.
        """
        try:
            st: _InputSession | None = self._session(topics.session_from_input_topic(topic, root=self.root))
        except ValueError:
            st = None  # parse_utterance reports the bad topic
        if st is not None:
            st.messages += 1
        msg = parse_utterance(topic, payload, root=self.root)
        assert st is not None  # a message that parsed has a valid topic
        utt = to_utterance(msg, number=st.messages, prev_end_s=st.prev_end_s, ended_ns=time.monotonic_ns())
        st.prev_end_s = max(st.prev_end_s, utt.t_end)  # a re-sent input never moves the clock back
        return utt

    def report_suppressed(self, sink: UtteranceSink) -> int:
        """One error event per session whose rejected inputs were rate-limited since its last report: their
        count (docs/events.md: errors are never folded away silently). Returns how many were reported."""
        counts = self.limiter.drain_suppressed()
        for session, n in counts.items():
            sink.report(ErrorFrame(session_id=session, stage=task_name(session, "mqtt-in"),
                                   message=f"{n} more input(s) rejected without a report of their own (rate limit)",
                                   category=ErrorCategory.INPUT))
        return len(counts)

    async def _report_suppressed_every(self, sink: UtteranceSink, interval_s: float = 5.0) -> None:
        """Every ``interval_s`` of the limiter's clock (polled each second), the count reports."""
        last = self.limiter.now()
        while True:
            await asyncio.sleep(1.0)
            if self.limiter.now() - last >= interval_s:
                last = self.limiter.now()
                self.report_suppressed(sink)

    async def run(self, sink: UtteranceSink) -> None:
        counts = asyncio.ensure_future(self._report_suppressed_every(sink))
        try:
            await self._run(sink)
        finally:
            counts.cancel()
            self.report_suppressed(sink)

    async def _run(self, sink: UtteranceSink) -> None:
        async def serve(client: aiomqtt.Client) -> None:
            await client.subscribe(topics.input_filter(root=self.root), qos=1)
            self.subscribed.set()
            async for message in client.messages:
                self.received += 1
                topic = str(message.topic)
                try:
                    utt = self.to_utterance(topic, payload_bytes(message))
                except InboundError as e:
                    self._reject(sink, topic, e)
                    continue
                await sink.submit(utt)

        await run_reconnecting(lambda: aiomqtt.Client(**self.settings.client_kwargs()), serve,
                               backoff=Backoff(max_s=self.max_backoff_s),
                               label=f"MQTT input: broker {self.settings.redacted_url()}",
                               on_lost=lambda _e: self.subscribed.clear())
