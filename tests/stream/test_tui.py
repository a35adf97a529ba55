"""The terminal UI rendered on a capture console with a fixed clock."""

from __future__ import annotations

import asyncio
import io

from rich.console import Console

from stream import events as ev
from stream.frames import ErrorCategory, ErrorFrame, EventFrame, EventKind
from stream.params import UiParams
from stream.sinks.tui import TuiModel, TuiSink, render

LABELS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")


def frames_for(uid: str, speaker: str, t: float, best: int, text: str, lat: float) -> list[EventFrame]:
    probs = [0.04] * 7
    probs[best] = 0.76
    e = ev.emotion_event(session="demo", utterance_id=uid, speaker=speaker, t_start=t - 1, t_end=t, text=text,
                         labels=LABELS, probs=probs, modalities=("t",), index=0, latency_ms=lat)
    s = ev.speaker_state(session="demo", speaker=speaker, emotion=e, trend="rising", utterances=2)
    return [EventFrame(session_id="demo", kind=EventKind.EMOTION, payload=e),
            EventFrame(session_id="demo", kind=EventKind.SPEAKER, payload=s, speaker=speaker)]


def capture_console() -> Console:
    return Console(file=io.StringIO(), width=110, height=60, color_system=None, force_terminal=False,
                   legacy_windows=False, _environ={})


def test_render_shows_transcript_shift_speakers_and_footer() -> None:
    now = [100.0]
    model = TuiModel(UiParams(), clock=lambda: now[0])
    for f in frames_for("u1", "Alice", 2.0, 0, "Morning everyone.", 20.0):
        model.add(f)
    now[0] = 101.0
    for f in frames_for("u2", "Alice", 4.0, 6, "Nobody told me!", 40.0):
        model.add(f)
    model.add(EventFrame(session_id="demo", kind=EventKind.SHIFT, payload=ev.shift_event(
        session="demo", utterance_id="u2", speaker="Alice", t_start=3.0, t_end=4.0, from_expression="neutral",
        to_expression="anger", previous_utterance_id="u1", probability=0.81, latency_ms=40.0)))
    model.add(ErrorFrame(session_id="demo", stage="stream[demo].camera", message="no camera: cannot open camera 0",
                         category=ErrorCategory.DEVICE))
    console = capture_console()
    console.print(render(model.snapshot({"session[demo]": 0, "inference": 2})))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "Morning everyone." in out and "Nobody told me!" in out
    assert "neutral" in out and "anger" in out
    assert "Alice: neutral → anger (p=0.81)" in out
    assert "↑ rising" in out  # speaker trend
    assert "no camera: cannot open camera 0" in out
    assert "latency p50 30 ms" in out and "p95 39 ms" in out
    assert "2.00 utt/s" in out  # 2 utterances within 1 s, over the observed span
    assert "inference=2" in out and "session[demo]=0" in out


def test_tui_sink_runs_live_display_to_the_end() -> None:
    console = capture_console()
    sink = TuiSink(UiParams(ui_refresh_hz=50), console=console, queue_depths=lambda: {"q": 1})

    async def go() -> None:
        task = asyncio.create_task(sink.run())
        for f in frames_for("u1", "Bob", 1.0, 4, "We doubled our sign ups!", 10.0):
            sink.offer(f)
        await asyncio.sleep(0.1)
        sink.close()
        await asyncio.wait_for(task, 5)

    asyncio.run(go())
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "We doubled our sign ups!" in out and "happiness" in out
    assert sink.delivered == 2
