"""Capture devices failing in the middle of a session (the capture workers fed with recorded blocks/frames):
the fault is reported, the session goes on with the remaining modalities, events say what was used."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from stream.capture.camera import CameraSource
from stream.capture.mic import MicrophoneSource
from stream.frames import ErrorCategory, Utterance
from stream.params import CameraParams, MicParams, VadParams
from stream.record import read_wav
from stream.sinks.jsonl import JsonlSink

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"


class UnpluggedMic:
    """Stands in for ``sounddevice.InputStream``: plays the first ``seconds`` of the demo audio through
    the callback, then goes silent without closing anything, as an unplugged USB microphone does."""

    def __init__(self, seconds: float, **kw: Any) -> None:
        self.kw = kw
        audio, sr = read_wav(DEMO / "audio.wav")
        n = int(sr * 0.03)
        self.blocks = [audio[i:i + n].reshape(-1, 1) for i in range(0, int(seconds * sr), n)]
        self.active = False

    def start(self) -> None:
        self.active = True

        def play() -> None:
            for b in self.blocks:
                self.kw["callback"](b, len(b), None, None)
            self.active = False  # the device is gone: no more callbacks, no error raised anywhere

        threading.Thread(target=play, name="fake-portaudio", daemon=True).start()

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


class FailingCapture:
    """Stands in for ``cv2.VideoCapture`` of a webcam: ``good`` frames, then read() fails for good."""

    def __init__(self, good: int) -> None:
        self.left = good

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left <= 0:
            return False, None
        self.left -= 1
        threading.Event().wait(1 / 30)
        return True, np.full((48, 64, 3), 128, np.uint8)

    def get(self, prop: int) -> float:
        return 0.0  # no CAP_PROP_FPS from a webcam

    def release(self) -> None:
        pass


class FlakyCamera(CameraSource):
    """A camera that works for a while, fails, and cannot be reopened."""

    opens = 0

    def _open(self) -> Any:
        FlakyCamera.opens += 1
        if FlakyCamera.opens > 1:
            raise RuntimeError("cannot open camera 0 (no such device or it is busy)")
        return FailingCapture(good=20)


def test_mic_and_camera_fail_mid_session(runtime_factory, tmp_path: Path) -> None:
    events = tmp_path / "ev.jsonl"
    mic = MicrophoneSource("room", MicParams(speaker="Mic", vad="energy", asr="none"), VadParams(),
                           stream_factory=lambda **kw: UnpluggedMic(11.5, **kw))
    mic.stall_timeout_s = 0.5
    cam = FlakyCamera("room", CameraParams(device=0, fps_hz=15.0, max_frames_per_utterance=4), clock=mic.clock)

    async def main() -> Any:
        rt = runtime_factory([JsonlSink(events)])
        rt.attach_camera("room", cam)

        class Typist:
            """Typed transcript lines of the same session, after both devices have failed."""

            name = "typist"

            async def run(self, sink: Any) -> None:
                for _ in range(400):
                    kinds = {e.message.split(" ")[0] + " " + e.message.split(" ")[1] for e in rt.errors}
                    if {"microphone stopped", "camera failed"} <= kinds:
                        break
                    await asyncio.sleep(0.05)
                t = mic.clock.now_s()
                for i, (spk, text) in enumerate([("Alice", "Can you still hear me?"), ("Bob", "Only in the chat now."),
                                                 ("Alice", "Fine, let's continue here.")]):
                    await sink.submit(Utterance(session_id="room", utterance_id=f"t{i}", speaker=spk,
                                                t_start=t + i, t_end=t + i + 0.8, text=text))
                sink.end_session("room")

        rt.add_source(mic, finite=True)
        rt.add_source(Typist(), finite=True)
        task = asyncio.create_task(rt.run())
        rc = await asyncio.wait_for(task, 120)
        return rc, rt

    rc, rt = asyncio.run(main())
    assert rc == 0
    device_errors = [e for e in rt.errors if e.category is ErrorCategory.DEVICE]
    msgs = [e.message for e in device_errors]
    assert any(m.startswith("microphone stopped delivering audio") for m in msgs), msgs
    assert any(m.startswith("camera failed") for m in msgs), msgs
    evs = [json.loads(x) for x in events.read_text().splitlines()]
    emo = [e for e in evs if e["type"] == "emotion"]
    mic_emo = [e for e in emo if e["speaker"] == "Mic"]
    typed = [e for e in emo if e["utterance_id"].startswith("t")]
    # before the fault the microphone produced utterances (no ASR: the text model had no evidence, so they gave
    # no event); after it, the session continued on typed text and says so in every event
    mic_utts = rt.tallies["room"].utterances - 3
    assert mic_utts >= 3 and mic_emo == []
    assert [e["utterance_id"] for e in typed] == ["t0", "t1", "t2"]
    assert all(e["modalities"] == ["text"] for e in typed)
    assert sum(e["type"] == "error" for e in evs) == len(device_errors)  # faults are events too
    print(f"\ncapture faults: {mic_utts} mic utterances before the unplug, {len(typed)} typed after; "
          f"device errors: {msgs}")
