"""The terminal UI (rich): rolling transcript coloured by emotion, shift alerts, each speaker's current
emotion and trend, and a footer with latency percentiles, utterances/s and queue depths.

Threading rule (from rich's ``Live``): the event loop folds events into :class:`TuiModel` and builds an
immutable :class:`TuiSnapshot`; rendering reads only the snapshot, and ``Live`` runs with
``auto_refresh=False`` so rich's refresh thread never touches live session state.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..frames import ErrorFrame, EventKind
from ..params import UiParams
from .base import Sink, SinkFrame

EMOTION_STYLES: dict[str, str] = {
    "neutral": "white",
    "happiness": "bold green",
    "excitement": "bold bright_green",
    "surprise": "bold yellow",
    "fear": "bold magenta",
    "anger": "bold red",
    "frustration": "dark_orange",
    "disgust": "bold dark_olive_green3",
    "sadness": "bold blue",
}
TREND_ARROWS = {"rising": "↑", "falling": "↓", "steady": "→"}


def style_of(expression: str) -> str:
    return EMOTION_STYLES.get(expression, "white")


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    session: str
    t_end: float
    utterance_id: str
    speaker: str
    expression: str
    confidence: float
    text: str


@dataclass(frozen=True, slots=True)
class SpeakerRow:
    session: str
    speaker: str
    expression: str
    confidence: float
    valence: float
    arousal: float
    trend: str
    utterances: int


@dataclass(frozen=True, slots=True)
class TuiSnapshot:
    """Everything one frame of the UI shows; immutable, so rendering needs no lock."""

    transcript: tuple[TranscriptLine, ...]
    alerts: tuple[str, ...]
    speakers: tuple[SpeakerRow, ...]
    errors: tuple[str, ...]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    utterances_per_s: float
    events: int
    queue_depths: tuple[tuple[str, int], ...]
    title: str = "PCGNet live"


class TuiModel:
    """Folds events into what the UI shows (event loop only)."""

    def __init__(self, params: UiParams, clock: Callable[[], float] = time.monotonic) -> None:
        self.params = params
        self.clock = clock
        self.transcript: collections.deque[TranscriptLine] = collections.deque(maxlen=params.transcript_lines)
        self.alerts: collections.deque[str] = collections.deque(maxlen=params.alert_lines)
        self.errors: collections.deque[str] = collections.deque(maxlen=3)
        self.speakers: dict[tuple[str, str], SpeakerRow] = {}
        self.latencies: collections.deque[float] = collections.deque(maxlen=params.latency_window)
        self.times: collections.deque[float] = collections.deque(maxlen=10_000)
        self.events = 0

    def add(self, frame: SinkFrame) -> None:
        if isinstance(frame, ErrorFrame):
            self.errors.append(f"{frame.stage}: {frame.message}")
            return
        p = frame.payload
        if frame.kind is EventKind.EMOTION:
            self.events += 1
            self.transcript.append(TranscriptLine(p["session"], float(p["t_end"]), p["utterance_id"], p["speaker"],
                                                  p["expression"], float(p["confidence"]), p.get("text") or ""))
            self.latencies.append(float(p["latency_ms"]))
            self.times.append(self.clock())
        elif frame.kind is EventKind.SHIFT:
            prob = "" if p.get("probability") is None else f" (p={p['probability']:.2f})"
            self.alerts.append(f"{p['t_end']:7.1f}s  {p['speaker']}: {p['from']} → {p['to']}{prob}  [{p['session']}]")
        elif frame.kind is EventKind.SPEAKER:
            self.speakers[(p["session"], p["speaker"])] = SpeakerRow(
                p["session"], p["speaker"], p["expression"], float(p["confidence"]), float(p["valence"]),
                float(p["arousal"]), p["trend"], int(p["utterances"]))

    def snapshot(self, queue_depths: Mapping[str, int] | None = None, title: str = "PCGNet live") -> TuiSnapshot:
        lat = np.asarray(self.latencies, dtype=np.float64)
        now = self.clock()
        window = self.params.rate_window_s
        recent = [t for t in self.times if now - t <= window]
        span = min(window, max(1e-9, now - recent[0])) if len(recent) > 1 else window
        rate = len(recent) / span if recent else 0.0
        return TuiSnapshot(
            transcript=tuple(self.transcript), alerts=tuple(self.alerts),
            speakers=tuple(sorted(self.speakers.values(), key=lambda r: (r.session, r.speaker))),
            errors=tuple(self.errors),
            latency_p50_ms=float(np.percentile(lat, 50)) if lat.size else None,
            latency_p95_ms=float(np.percentile(lat, 95)) if lat.size else None,
            utterances_per_s=rate, events=self.events,
            queue_depths=tuple(sorted((queue_depths or {}).items())), title=title)


def render(s: TuiSnapshot) -> RenderableType:
    """The whole screen for one snapshot."""
    multi = len({t.session for t in s.transcript} | {r.session for r in s.speakers}) > 1
    tr = Table.grid(padding=(0, 1), expand=True)
    tr.add_column(justify="right", style="dim", no_wrap=True)
    tr.add_column(no_wrap=True)
    tr.add_column(no_wrap=True)
    tr.add_column(ratio=1, overflow="ellipsis", no_wrap=True)
    for t in s.transcript:
        who = f"{t.session}/{t.speaker}" if multi else t.speaker
        tr.add_row(f"{t.t_end:6.1f}s", Text(who, style="bold"),
                   Text(f"{t.expression:<10} {t.confidence:.2f}", style=style_of(t.expression)),
                   Text(t.text, style=style_of(t.expression)))
    if not s.transcript:
        tr.add_row("", Text("waiting for utterances…", style="dim"), "", "")

    sp = Table(expand=True, box=None, padding=(0, 1), show_edge=False)
    for col in ("speaker", "emotion", "conf", "valence", "arousal", "trend", "utt."):
        sp.add_column(col, no_wrap=True, justify="left" if col in ("speaker", "emotion") else "right")
    for r in s.speakers:
        who = f"{r.session}/{r.speaker}" if multi else r.speaker
        sp.add_row(who, Text(r.expression, style=style_of(r.expression)), f"{r.confidence:.2f}",
                   f"{r.valence:+.2f}", f"{r.arousal:+.2f}", f"{TREND_ARROWS.get(r.trend, '?')} {r.trend}",
                   str(r.utterances))

    alerts = Text("\n".join(s.alerts) if s.alerts else "no shifts yet", style="bold yellow" if s.alerts else "dim")
    parts: list[RenderableType] = [
        Panel(tr, title="transcript", border_style="cyan"),
        Panel(alerts, title="emotion shifts", border_style="yellow"),
        Panel(sp, title="speakers", border_style="green"),
    ]
    if s.errors:
        parts.append(Panel(Text("\n".join(s.errors), style="red"), title="problems", border_style="red"))
    p50 = "-" if s.latency_p50_ms is None else f"{s.latency_p50_ms:.0f} ms"
    p95 = "-" if s.latency_p95_ms is None else f"{s.latency_p95_ms:.0f} ms"
    queues = " ".join(f"{k}={v}" for k, v in s.queue_depths) or "-"
    footer = Text.assemble(
        (f"{s.title}  ", "bold"), "latency p50 ", (p50, "bold"), "  p95 ", (p95, "bold"),
        f"  {s.utterances_per_s:.2f} utt/s  events {s.events}  queues: {queues}")
    parts.append(footer)
    return Group(*parts)


class TuiSink(Sink):
    """Drives a rich ``Live`` display from events.

    Args:
        params: refresh rate and sizes.
        console: the console to draw on (tests pass a capture console).
        queue_depths: called on each refresh for the footer.
        title: footer title.
    """

    name = "tui"

    def __init__(self, params: UiParams | None = None, *, console: Console | None = None,
                 queue_depths: Callable[[], Mapping[str, int]] | None = None, title: str = "PCGNet live",
                 clock: Callable[[], float] = time.monotonic, maxsize: int = 4096) -> None:
        super().__init__(maxsize=maxsize)
        self.params = params or UiParams()
        self.model = TuiModel(self.params, clock=clock)
        self.console = console
        self.queue_depths = queue_depths or (lambda: {})
        self.title = title
        self._live: Live | None = None
        self._refresher: asyncio.Task[None] | None = None

    def snapshot(self) -> TuiSnapshot:
        return self.model.snapshot(self.queue_depths(), self.title)

    async def start(self) -> None:
        self._live = Live(render(self.snapshot()), console=self.console, auto_refresh=False,
                          redirect_stdout=False, redirect_stderr=False, transient=False)
        self._live.start(refresh=True)
        self._refresher = asyncio.create_task(self._refresh_loop(), name="stream[-].tui.refresh")

    async def handle(self, frame: SinkFrame) -> None:
        self.model.add(frame)

    async def _refresh_loop(self) -> None:
        period = 1.0 / max(0.1, self.params.ui_refresh_hz)
        while True:
            await asyncio.sleep(period)
            if self._live is not None:
                self._live.update(render(self.snapshot()), refresh=True)

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None
        if self._live is not None:
            self._live.update(render(self.snapshot()), refresh=True)
            self._live.stop()
            self._live = None
