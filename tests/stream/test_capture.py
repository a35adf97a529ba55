"""Capture workers fed with recorded audio blocks and frames of a generated mp4; missing devices."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream.capture.camera import CameraSource
from stream.capture.mic import MicrophoneSource, MicUnavailable, VadSegmenter
from stream.capture.replay import ReplaySource
from stream.capture.transcript import TranscriptSource
from stream.frames import ErrorCategory, Utterance
from stream.params import CameraParams, MicParams, VadParams
from stream.record import SessionRecorder, read_session, read_wav
from stream.sinks.jsonl import JsonlSink
from tests.contract import check_events

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"


def demo_blocks(block: int = 480) -> tuple[list[np.ndarray], int]:
    audio, sr = read_wav(DEMO / "audio.wav")
    return [audio[i:i + block].reshape(-1, 1) for i in range(0, audio.size, block)], sr


def test_vad_segments_the_demo_speech_into_its_utterances() -> None:
    blocks, sr = demo_blocks()
    seg = VadSegmenter(sr, VadParams())
    out = [s for b in blocks for s in seg.feed(b)] + seg.flush()
    utts = [json.loads(x) for x in (DEMO / "utterances.jsonl").read_text().splitlines()]
    assert len(out) == len(utts)
    for s, u in zip(out, utts, strict=True):
        assert abs(s.t_start - u["t_start"]) < 0.25 and abs(s.t_end - u["t_end"]) < 0.25
        assert s.audio.size == pytest.approx((s.t_end - s.t_start) * sr, abs=2)
    # silence alone gives nothing
    quiet = VadSegmenter(sr, VadParams())
    assert quiet.feed(np.zeros(sr * 2, np.float32)) == [] and quiet.flush() == []


class RecordedStream:
    """Stands in for ``sounddevice.InputStream``: plays recorded blocks through the callback from a device
    thread, then closes the source's block queue (end of the recording)."""

    def __init__(self, blocks: list[np.ndarray], source: MicrophoneSource, **kw: Any) -> None:
        self.blocks, self.source, self.kw = blocks, source, kw
        self.loop = source._loop  # the source's event loop (streams are opened on a worker thread)

    def start(self) -> None:
        def play() -> None:
            cb = self.kw["callback"]
            for b in self.blocks:
                cb(b, len(b), None, None)
            self.loop.call_soon_threadsafe(self.source.blocks.close)
        self.thread = threading.Thread(target=play, name="fake-portaudio", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.thread.join(5)

    def close(self) -> None:
        pass


def recorded_mic(session: str, params: MicParams, blocks: list[np.ndarray]) -> MicrophoneSource:
    """A microphone source whose device plays ``blocks`` (:class:`RecordedStream`)."""
    src: MicrophoneSource = MicrophoneSource(session, params, VadParams(),
                                             stream_factory=lambda **kw: RecordedStream(blocks, src, **kw),
                                             max_blocks=len(blocks) + 1)
    return src


def test_mic_worker_turns_recorded_blocks_into_analyzed_utterances(make_runtime, tmp_path: Path) -> None:
    blocks, sr = demo_blocks()
    src = recorded_mic("room", MicParams(speaker="Mic", vad="energy", asr="none"), blocks)
    log = tmp_path / "ev.jsonl"
    rt = make_runtime([JsonlSink(log)], recorder_factory=lambda sid: SessionRecorder(tmp_path / "rec", sid))
    rt.add_source(src, finite=True)
    assert asyncio.run(rt.run()) == 0
    emo = [json.loads(x) for x in log.read_text().splitlines() if '"emotion"' in x]
    # text model, no ASR: 11 utterances analysed, none with evidence for the model, so no event (stream/evidence.py)
    assert src.sent == 11 and rt.tallies["room"].utterances == 11 and rt.tallies["room"].speakers == {"Mic"}
    assert emo == []
    rec = read_session(tmp_path / "rec")  # the mic recording replays: audio + timing
    assert rec.sample_rate == sr and len(rec.utterances) == 11 and rec.audio is not None
    assert abs(rec.audio.size - sum(b.size for b in blocks)) < sr  # audio aligned on the session clock


def test_mic_with_silero_vad_and_pocketsphinx_gives_text_utterances(make_runtime, tmp_path: Path) -> None:
    pytest.importorskip("silero_vad")
    pytest.importorskip("pocketsphinx")
    blocks, sr = demo_blocks(512)
    utts = [json.loads(x) for x in (DEMO / "utterances.jsonl").read_text().splitlines()][:3]
    blocks = blocks[: int((utts[2]["t_end"] + 0.3) * sr / 512)]  # the first three utterances
    src = recorded_mic("asr", MicParams(speaker="Mic", vad="silero", asr="pocketsphinx"), blocks)
    log = tmp_path / "ev.jsonl"
    rt = make_runtime([JsonlSink(log)])
    rt.add_source(src, finite=True)
    assert asyncio.run(rt.run()) == 0
    emo = [json.loads(x) for x in log.read_text().splitlines() if '"emotion"' in x]
    assert len(emo) == 3
    for e, u in zip(emo, utts, strict=True):
        assert abs(e["t_start"] - u["t_start"]) < 0.3 and abs(e["t_end"] - u["t_end"]) < 0.3
        assert e["text"] and e["modalities"] == ["text"]  # ASR text feeds the text model


def write_mp4(path: Path, seconds: float = 3.0, fps: float = 15.0) -> None:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    for i in range(int(seconds * fps)):
        frame = np.zeros((48, 64, 3), np.uint8)
        frame[:, :, 1] = int(255 * i / (seconds * fps))  # green ramps with time
        w.write(frame)
    w.release()


def test_camera_worker_reads_frames_attaches_records_and_replays(make_runtime, tmp_path: Path) -> None:
    video = tmp_path / "in.mp4"
    write_mp4(video)
    cam = CameraSource("cam", CameraParams(device=str(video), fps_hz=15.0, max_frames_per_utterance=4),
                       realtime_file=False)

    async def go() -> tuple[int, Any]:
        rt = make_runtime([], recorder_factory=lambda sid: SessionRecorder(tmp_path / "rec", sid))
        rt.attach_camera("cam", cam)  # the runtime runs the camera worker

        class Two:
            name = "two"

            async def run(self, sink: Any) -> None:
                assert await asyncio.to_thread(cam.finished.wait, 10)  # the whole file was read
                await sink.submit(Utterance(session_id="cam", utterance_id="u1", speaker="A", t_start=0.0,
                                            t_end=1.0, text="hello there"))
                await sink.submit(Utterance(session_id="cam", utterance_id="u2", speaker="B", t_start=1.5,
                                            t_end=2.9, text="hi!"))
                sink.end_session("cam")
        rt.add_source(Two(), finite=True)
        return await rt.run(), rt
    rc, _ = asyncio.run(go())
    assert rc == 0
    assert cam.frames_read == 45
    got = cam.frames_between(1.5, 2.9)
    assert len(got) == 4 and got[0][0, 0, 1] < got[-1][0, 0, 1]  # evenly spaced, in time order
    rec = read_session(tmp_path / "rec")
    assert rec.video_path is not None and rec.meta["video"]["file"] == "video.mp4"
    replay = ReplaySource(tmp_path / "rec", speed=0, max_frames_per_utterance=4)
    seen: list[Utterance] = []

    class Collect:
        async def submit(self, u: Utterance) -> None:
            seen.append(u)

        def end_session(self, sid: str) -> None:
            pass

        def report(self, e: Any) -> None:
            raise AssertionError(e)
    asyncio.run(replay.run(Collect()))
    assert [len(u.frames) for u in seen] == [4, 4]
    # replayed frames come from the right time: later utterance is greener
    assert seen[1].frames[0][0, 0, 1] > seen[0].frames[-1][0, 0, 1] - 10


def test_missing_mic_and_camera_are_reported_and_the_session_goes_on(make_runtime, tmp_path: Path) -> None:
    script = tmp_path / "t.txt"
    script.write_text("Alice: good morning\nthis line is malformed\nBob: hello Alice\n")
    log = tmp_path / "ev.jsonl"

    def no_portaudio(**kw: Any) -> Any:
        raise MicUnavailable("PortAudio is not installed (PortAudio library not found); install libportaudio2")

    async def go() -> Any:
        rt = make_runtime([JsonlSink(log)])
        rt.add_source(TranscriptSource("s", path=script, speed=0), finite=True)
        rt.add_source(MicrophoneSource("s", MicParams(asr="none"), VadParams(), stream_factory=no_portaudio),
                      finite=True)
        # the real PortAudio path on a machine without a sound card, with an impossible device
        rt.add_source(MicrophoneSource("s2", MicParams(device="no-such-device"), VadParams()), finite=True)
        rt.attach_camera("s", CameraSource("s", CameraParams(device=str(tmp_path / "no-camera.mp4"))))
        assert await rt.run() == 0
        return rt
    rt = asyncio.run(go())
    msgs = [e.message for e in rt.errors]
    assert any(m.startswith("no microphone: PortAudio is not installed") for m in msgs), msgs
    assert any(m.startswith("no microphone: cannot open input device 'no-such-device'") for m in msgs), msgs
    assert any(m.startswith("no camera: cannot open camera") for m in msgs), msgs
    assert any("expected 'Speaker: text'" in m for m in msgs), msgs
    assert {e.category for e in rt.errors} == {ErrorCategory.DEVICE, ErrorCategory.INPUT}
    events = check_events([json.loads(x) for x in log.read_text().splitlines()])
    assert [e["speaker"] for e in events if e["type"] == "emotion"] == ["Alice", "Bob"]
    assert sum(e["type"] == "error" for e in events) == 4

