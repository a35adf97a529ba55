"""The runtime: sources -> per-session queues -> :class:`~stream.analyzer.Analyzer` -> sinks.

Each session has a bounded utterance channel (full policy: block the source, so a replay or file
never loses utterances; live sources see back-pressure) and one worker task
``stream[<session>].worker`` that processes its utterances in order, records them when asked, and
fans the events out to every sink. Sessions are created on the first utterance, so one process serves
replays, local capture and any number of MQTT-fed sessions at once.

Shutdown follows pipecat's two ways out: the end of every finite source is a drain (queued utterances
are processed, sinks deliver what they hold, then the process exits); SIGINT/SIGTERM is a cancel (sources
and workers stop now, sinks get a short grace period, e.g. to publish the MQTT "offline" status).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from .analyzer import Analyzer
from .capture.base import UtteranceSink
from .channel import Channel, FullPolicy
from .frames import ErrorCategory, ErrorFrame, EventFrame, EventKind, Utterance
from .mqtt.inbound import ErrorRateLimiter
from .params import LiveParams
from .record import SessionRecorder
from .sinks.base import Sink, SinkSet
from .sinks.jsonl import frame_json
from .tasks import OnError, Supervisor, failure_reason, task_name

log = logging.getLogger(__name__)


class Source(Protocol):
    """An utterance source: runs until its input ends (finite) or forever (live)."""

    name: str

    async def run(self, sink: UtteranceSink) -> None: ...


class Camera(Protocol):
    """A video source whose frames are attached to a session's utterances (``stream.capture.camera``)."""

    async def run(self, sink: UtteranceSink) -> None: ...

    def frames_between(self, t0: float, t1: float) -> tuple[np.ndarray, ...]: ...

    def stop(self) -> None: ...


@dataclasses.dataclass
class SessionTally:
    """What one session analysed, for the summary line at the end of a file run."""

    utterances: int = 0
    speakers: set[str] = dataclasses.field(default_factory=set)
    errors: int = 0
    no_event: int = 0
    """Utterances that gave no emotion event (no usable evidence for the checkpoint, or a repeated id)."""


MAX_TALLIES = 1000  # sessions whose tally is kept (MQTT input may open many; the oldest go first)


@dataclasses.dataclass
class _SessionWorker:
    session_id: str
    channel: Channel[Utterance]
    task: asyncio.Task[Any] | None = None
    recorder: SessionRecorder | None = None
    last_activity: float = dataclasses.field(default_factory=time.monotonic)


class Runtime:
    """Wires sources, the analyzer and sinks; owns every task.

    Args:
        analyzer: the per-session processing core.
        sinks: where events go.
        params: queue sizes and timeouts.
        recorder_factory: session id -> a SessionRecorder, for ``--record`` (None: no recording).
    """

    def __init__(self, analyzer: Analyzer, sinks: SinkSet, params: LiveParams, *,
                 recorder_factory: Callable[[str], SessionRecorder | None] | None = None) -> None:
        self.analyzer = analyzer
        self.sinks = sinks
        self.params = params
        self.recorder_factory = recorder_factory
        self.supervisor = Supervisor(on_fatal=self._fatal)
        self.workers: dict[str, _SessionWorker] = {}
        self.cameras: dict[str, Camera] = {}
        self._sources: list[tuple[Source, bool]] = []
        self._source_tasks: list[asyncio.Task[Any]] = []
        self._stop = asyncio.Event()
        self._cancelled = False
        self.fatal: str | None = None
        self.errors: list[ErrorFrame] = []
        self.events_emitted = 0
        self.sessions_refused = 0
        self.source_failures: list[str] = []
        """``"<source name>: <reason>"`` of each source whose task raised: the run analysed less than asked."""
        self.tallies: dict[str, SessionTally] = {}
        self._refusals = ErrorRateLimiter(rate_per_s=0.2, burst=3)

    # -- wiring -----------------------------------------------------------------------------------

    def add_source(self, source: Source, *, finite: bool) -> None:
        """Add an utterance source; the runtime ends by itself once every finite source is done and no
        live (infinite) source was added."""
        self._sources.append((source, finite))

    def attach_camera(self, session_id: str, camera: Camera) -> None:
        """Frames from this camera are attached to the session's utterances (which then carry video)."""
        self.cameras[session_id] = camera

    # -- UtteranceSink ----------------------------------------------------------------------------

    def _worker(self, session_id: str) -> _SessionWorker:
        w = self.workers.get(session_id)
        if w is None:
            ch: Channel[Utterance] = Channel(f"session[{session_id}]", self.params.queues.utterances_per_session,
                                             FullPolicy.BLOCK)
            w = _SessionWorker(session_id, ch)
            if self.recorder_factory is not None:
                w.recorder = self.recorder_factory(session_id)
                if w.recorder is not None:
                    w.recorder.set_labels(self.analyzer.labels)
            self.workers[session_id] = w
            w.task = self.supervisor.spawn(task_name(session_id, "worker"), self._session_loop(w))
        return w

    async def submit(self, utt: Utterance) -> None:
        if utt.session_id not in self.workers and len(self.workers) >= self.params.max_sessions:
            self.sessions_refused += 1
            adm = self._refusals.admit("max_sessions")
            if adm is not None:
                extra = f" ({adm.suppressed} similar suppressed)" if adm.suppressed else ""
                self.report(ErrorFrame(session_id=utt.session_id, stage=task_name(utt.session_id, "submit"),
                                       message=f"new session refused: {len(self.workers)} sessions are open "
                                               f"(max_sessions){extra}", category=ErrorCategory.INPUT))
            return
        old = self.workers.get(utt.session_id)
        if old is not None and old.channel.closed and old.task is not None:
            # the session is closing (ended or idle): let its worker finish, then start it afresh
            await asyncio.wait({old.task})
        cam = self.cameras.get(utt.session_id)
        if cam is not None and not utt.frames:
            utt = dataclasses.replace(utt, frames=cam.frames_between(utt.t_start, utt.t_end))
        w = self._worker(utt.session_id)
        w.last_activity = time.monotonic()
        await w.channel.put(utt)

    def end_session(self, session_id: str) -> None:
        w = self.workers.get(session_id)
        if w is not None:
            w.channel.close()

    def tally(self, session_id: str) -> SessionTally:
        """The session's running tally (kept after it ends; at most MAX_TALLIES sessions)."""
        t = self.tallies.get(session_id)
        if t is None:
            t = self.tallies[session_id] = SessionTally()
            while len(self.tallies) > MAX_TALLIES:
                del self.tallies[next(iter(self.tallies))]
        return t

    def report(self, error: ErrorFrame) -> None:
        self.tally(error.session_id).errors += 1
        self.errors.append(error)
        del self.errors[:-100]
        log.info("%s: %s", error.stage, error.message)  # the sinks show it (UI panel, line, event)
        self.sinks.emit([error])

    # -- work -------------------------------------------------------------------------------------

    async def _session_loop(self, w: _SessionWorker) -> None:
        try:
            async for utt in w.channel:
                if w.recorder is not None:
                    w.recorder.add_utterance(utt)
                try:
                    frames = await self.analyzer.process(utt)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # noqa: BLE001 - one bad utterance must not end the session
                    self.report(ErrorFrame(session_id=w.session_id, stage=task_name(w.session_id, "worker"),
                                           message=f"utterance {utt.utterance_id} not processed: "
                                                   f"{type(e).__name__}: {e}", category=ErrorCategory.INPUT,
                                           utterance_id=utt.utterance_id))
                    continue
                tally = self.tally(w.session_id)
                tally.utterances += 1
                tally.speakers.add(utt.speaker)
                tally.no_event += not any(f.kind is EventKind.EMOTION for f in frames)
                self.emit(frames)
                if w.recorder is not None:
                    w.recorder.add_events([frame_json(f) for f in frames])
        finally:
            if w.recorder is not None:
                w.recorder.close()
            if self.workers.get(w.session_id) is w:  # the session is over: free its state
                del self.workers[w.session_id]
                self.emit(self.analyzer.end_session(w.session_id))

    async def _run_source(self, src: Source) -> None:
        """Run one source; if it raises, the run has failed: remember it (``source_failures``, the exit status
        of ``live.py``) and say so in one error frame instead of a traceback."""
        try:
            await src.run(self)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any source failure is reported, and the others go on
            reason = failure_reason(e)
            self.source_failures.append(f"{src.name}: {reason}")
            log.debug("source %s failed", src.name, exc_info=True)
            self.report(ErrorFrame(session_id=str(getattr(src, "session_id", None) or self.params.session_id),
                                   stage=task_name("-", f"source.{src.name}"),
                                   message=f"{src.name} failed: {reason}", category=ErrorCategory.INPUT))

    async def _janitor(self) -> None:
        """Close sessions idle for ``session_idle_s`` (bounded memory with many short-lived sessions)."""
        idle_s = self.params.session_idle_s
        while True:
            await asyncio.sleep(max(0.05, min(60.0, idle_s / 4)))
            now = time.monotonic()
            for w in list(self.workers.values()):
                if now - w.last_activity > idle_s and not len(w.channel) and not w.channel.closed:
                    log.info("session %s idle for %.0f s: closed", w.session_id, now - w.last_activity)
                    w.channel.close()

    def emit(self, frames: list[EventFrame]) -> None:
        self.events_emitted += len(frames)
        self.sinks.emit(frames)

    def queue_depths(self) -> dict[str, int]:
        d = {w.channel.name: len(w.channel) for w in self.workers.values()}
        d.update(self.analyzer.queue_depths())
        d.update(self.sinks.depths())
        return d

    def _fatal(self, name: str, exc: BaseException) -> None:
        self.fatal = f"{name}: {type(exc).__name__}: {exc}"
        self.request_stop()

    def request_stop(self) -> None:
        """Cancel (SIGINT/SIGTERM): stop sources and workers now."""
        self._cancelled = True
        self._stop.set()

    @property
    def cancelled(self) -> bool:
        """A stop was requested (signal or fatal error), as opposed to every finite source ending."""
        return self._cancelled

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):  # not the main thread / not Unix
                pass

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop.is_set():
            log.warning("second %s: exiting now", sig.name)
            raise SystemExit(130)
        log.info("%s: stopping", sig.name)
        self.request_stop()

    async def run(self) -> int:
        """Run until every finite source is drained (when all are finite) or a stop is requested.

        Returns 0, or 1 when a critical task failed.
        """
        sup = self.supervisor
        analyzer_tasks = [sup.spawn(task_name("-", n), c, OnError.CANCEL) for n, c in self.analyzer.tasks().items()]
        sink_tasks = [sup.spawn(task_name("-", f"sink.{s.name}"), s.run()) for s in self.sinks.sinks]
        cam_tasks = [sup.spawn(task_name(sid, "camera"), cam.run(self)) for sid, cam in self.cameras.items()]
        if self.params.session_idle_s > 0:
            sup.spawn(task_name("-", "janitor"), self._janitor())
        self._source_tasks = [sup.spawn(task_name("-", f"source.{src.name}"), self._run_source(src))
                              for src, _ in self._sources]
        all_finite = bool(self._sources) and all(f for _, f in self._sources)

        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            if all_finite:
                sources_done = asyncio.ensure_future(asyncio.gather(*self._source_tasks, return_exceptions=True))
                await asyncio.wait({sources_done, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not self._stop.is_set():
                    for w in list(self.workers.values()):
                        w.channel.close()
                    workers = [w.task for w in self.workers.values() if w.task is not None]
                    if workers:
                        done_w = asyncio.ensure_future(asyncio.gather(*workers, return_exceptions=True))
                        await asyncio.wait({done_w, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not sources_done.done():
                    sources_done.cancel()
                    # A cancelled gather ends later with CancelledError set as its exception; observe it, or
                    # asyncio prints "exception was never retrieved" with a traceback on SIGTERM.
                    sources_done.add_done_callback(lambda f: f.cancelled() or f.exception())
            else:
                await stop_wait
        finally:
            if not stop_wait.done():
                stop_wait.cancel()
            await self._shutdown(analyzer_tasks, sink_tasks, cam_tasks)
        return 1 if self.fatal else 0

    async def _shutdown(self, analyzer_tasks: list[asyncio.Task[Any]], sink_tasks: list[asyncio.Task[Any]], cam_tasks: list[asyncio.Task[Any]]) -> None:
        for cam in self.cameras.values():
            cam.stop()
        for t in self._source_tasks:
            t.cancel()
        for w in list(self.workers.values()):
            w.channel.close()
            if self._cancelled and w.task is not None:
                w.task.cancel()
        workers = [w.task for w in self.workers.values() if w.task is not None]
        if workers:
            await asyncio.wait(workers, timeout=self.params.cancel_timeout_s)
        self.analyzer.close()
        self.sinks.close()
        grace = 2.0 if self._cancelled else self.params.drain_timeout_s
        if sink_tasks:
            _, pending = await asyncio.wait(sink_tasks, timeout=grace)
            if pending:
                undelivered = sum(len(s.inbox) for s in self.sinks.sinks)
                log.warning("sinks did not finish within %.0f s (%d event(s) undelivered)", grace, undelivered)
        await asyncio.wait(analyzer_tasks, timeout=self.params.cancel_timeout_s)
        await self.supervisor.cancel_all(self.params.cancel_timeout_s)
        self.analyzer.shutdown()

    @property
    def sinks_list(self) -> list[Sink]:
        return self.sinks.sinks
