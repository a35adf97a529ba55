"""A run that analysed nothing fails: a source whose task raises makes ``live.py`` exit non-zero with one line
naming the file and the reason (the VAD refusing a stereo file once logged an ExceptionGroup and exited 0),
and every file run ends with a summary line."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from extractors.base import ExtractorError

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"


class BrokenSource:
    """Fails the way the audio path failed: a TaskGroup's ExceptionGroup around an ExtractorError."""

    name = "audio:st.wav"
    session_id = "st"

    async def run(self, sink: Any) -> None:
        await asyncio.sleep(0)
        raise ExceptionGroup("unhandled errors in a TaskGroup",
                             [ExtractorError("vad block: samples outside [-1, 1] (peak 1.11)")])


def test_a_source_that_raises_fails_the_run_and_the_others_go_on(runtime_factory, tmp_path: Path) -> None:
    from stream.capture.replay import ReplaySource
    from stream.sinks.jsonl import JsonlSink

    events = tmp_path / "ev.jsonl"

    async def main() -> Any:
        rt = runtime_factory([JsonlSink(events)])
        rt.add_source(BrokenSource(), finite=True)
        rt.add_source(ReplaySource(DEMO, speed=0), finite=True)
        assert await rt.run() == 0  # the runtime itself is healthy; live.py turns the failure into its status
        return rt

    rt = asyncio.run(main())
    assert rt.source_failures == ["audio:st.wav: ExtractorError: vad block: samples outside [-1, 1] (peak 1.11)"]
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    errors = [e for e in lines if e["type"] == "error"]
    assert len(errors) == 1 and "st.wav failed: ExtractorError" in errors[0]["message"], errors
    assert errors[0]["session"] == "st"
    assert sum(e["type"] == "emotion" for e in lines) == 11  # the demo still ran to its end
    demo = rt.tallies["demo"]
    assert (demo.utterances, len(demo.speakers), demo.errors) == (11, 3, 0)
    assert rt.tallies["st"].errors == 1


def test_live_exits_non_zero_naming_the_file_when_its_analysis_fails(tiny_checkpoint: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """``live.py --audio`` whose VAD raises mid-file: exit 1, one ``live.py: error:`` line with the file and the
    reason, the summary line, no traceback."""
    from stream.app import main
    from stream.capture import mic
    from tests.extractors.extractor_media import write_wav

    class FailingSegmenter:
        def __init__(self) -> None:
            self.calls = 0

        def feed(self, block: np.ndarray) -> list[Any]:
            self.calls += 1
            if self.calls > 2:
                raise ExtractorError("vad block: samples outside [-1, 1] (peak 1.11)")
            return []

        def flush(self) -> list[Any]:
            return []

    monkeypatch.setattr(mic, "make_segmenter", lambda *a, **k: FailingSegmenter())
    wav = tmp_path / "st.wav"
    write_wav(wav, (0.1 * np.sin(np.arange(16000 * 4) / 10)).astype(np.float32))
    rc = main(["--audio", str(wav), "--speed", "0", "--no-tui", "--asr", "none", "--speaker", "Ann",
               "--checkpoint", str(tiny_checkpoint)])
    err = capsys.readouterr().err
    assert rc == 1, err
    errors = [line for line in err.splitlines() if line.startswith("live.py: error:")]
    assert len(errors) == 1, err
    assert str(wav) in errors[0] and "ExtractorError: vad block: samples outside" in errors[0], errors
    assert "ExceptionGroup" not in err and "Traceback" not in err, err
    done = [line for line in err.splitlines() if line.startswith("live.py: done:")]
    assert done and done[0].startswith("live.py: done: st.wav: 0 utterance(s), 0 speaker(s)"), err
    assert done[0].endswith("1 error(s)"), done


def test_summary_line_says_what_a_file_gave() -> None:
    from stream.app import file_summary
    from stream.runtime import SessionTally

    t = SessionTally(utterances=7, speakers={"Speaker 1", "Speaker 2"}, errors=0)
    assert file_summary("m.wav", t, 23.44) == "live.py: done: m.wav: 7 utterance(s), 2 speaker(s), 23.4 s of audio, " \
                                              "0 error(s)"
    assert file_summary("silent.wav", None, 3600.0).startswith("live.py: done: silent.wav: 0 utterance(s)")
