"""``live.py`` flags and clear errors; the record format's crash safety."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from stream.app import build_parser, main
from stream.frames import Utterance
from stream.record import SessionFormatError, SessionRecorder, read_session

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"


def test_help_explains_every_flag_with_examples() -> None:
    text = build_parser().format_help()
    for flag in ("--mic", "--camera", "--transcript", "--replay", "--speed", "--record", "--mqtt", "--events",
                 "--checkpoint", "--device", "--no-tui", "--session"):
        assert flag in text
    assert "python live.py --replay examples/demo" in text and "mosquitto_sub" in text


@pytest.mark.parametrize(("argv", "needle"), [
    (["--replay", str(DEMO), "--checkpoint", "no/such/ckpt"], "checkpoint no/such/ckpt not found"),
    ([], "nothing to analyse"),
    (["--replay", "no/such/session"], "no/such/session: not a recorded session folder"),
    (["--transcript", "mqtt"], "--transcript mqtt needs --mqtt URL"),
    (["--replay", str(DEMO), "--mqtt", "http://x"], "--mqtt: bad MQTT URL"),
    (["--replay", str(DEMO), "--speed", "-1"], "--speed must be >= 0"),
    (["--replay", str(DEMO), "--record", str(DEMO)], "folder exists and is not empty"),
    (["--replay", str(DEMO), "--events", "/proc/no/such.jsonl"], "--events /proc/no/such.jsonl: cannot write"),
    (["--replay", str(DEMO), "--camera"], "--camera adds frames to the utterances of the local session"),
])
def test_bad_command_lines_give_one_clear_line(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("live.py: error: ") and needle in err[0], err


def test_default_checkpoint_missing_says_where_it_comes_from(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no checkpoints/default here
    assert main(["--replay", str(DEMO)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint checkpoints/default not found" in err and "--checkpoint PATH" in err


def test_recording_is_readable_after_every_utterance_and_tolerates_a_torn_line(tmp_path: Path) -> None:
    rec = SessionRecorder(tmp_path / "r", "s1")
    sr = 16000
    for i in range(3):
        rec.add_utterance(Utterance(session_id="s1", utterance_id=f"u{i}", speaker="A", t_start=i * 1.0,
                                    t_end=i * 1.0 + 0.5, text=f"hello {i}",
                                    audio=np.full(sr // 2, 0.1, np.float32), sample_rate=sr))
        # without closing (as after a kill): the folder reads back up to this utterance
        got = read_session(tmp_path / "r")
        assert [u.utterance_id for u in got.utterances] == [f"u{k}" for k in range(i + 1)]
        with wave.open(str(tmp_path / "r" / "audio.wav")) as w:
            assert w.getnframes() == int((i + 0.5) * sr)
    # a crash in the middle of a line: the reader drops it and says which line
    with open(tmp_path / "r" / "utterances.jsonl", "a") as f:
        f.write('{"utterance_id": "u3", "speak')
    got = read_session(tmp_path / "r")
    assert len(got.utterances) == 3 and "utterances.jsonl:4: dropped a truncated last line" in got.dropped_lines[0]
    rec.close()
    with pytest.raises(SessionFormatError, match="exists and is not empty"):
        SessionRecorder(tmp_path / "r", "s1")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "meta.json").write_text(json.dumps({"format": "pcgnet-session", "version": 1}))
    (tmp_path / "bad" / "utterances.jsonl").write_text('{"utterance_id": "u1", "speaker": "A", "t_start": 2, '
                                                       '"t_end": 1}\n')
    with pytest.raises(SessionFormatError, match=r"utterances.jsonl: utterance 1 \(u1\): bad times"):
        read_session(tmp_path / "bad")
