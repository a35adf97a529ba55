"""Names and recordings given on the command line: ``--voice NAME=FILE`` and ``--speaker NAME`` are checked
by the same validator as MQTT input's ``speaker`` (a newline would forge output lines, an escape code would
reach the terminal), and a ``--voice`` file that cannot serve is refused with exit 2 before the model loads
(here the checkpoint does not even exist: the voice error comes first)."""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

import pytest

from stream.app import main

NO_MODEL = ["--checkpoint", "/nonexistent/checkpoint", "--no-tui", "--speed", "0"]


def tone(path: Path, seconds: float) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 9))) for i in range(int(16000 * seconds))))
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("not audio at all\n", encoding="utf-8")
    good = tone(tmp_path / "ann.wav", 2.0)
    (tmp_path / "cut.wav").write_bytes(good.read_bytes()[:44])  # a header and no samples
    return {"good": good, "empty": tmp_path / "empty.wav", "text": tmp_path / "text.wav",
            "cut": tmp_path / "cut.wav", "short": tone(tmp_path / "short.wav", 0.2),
            "missing": tmp_path / "missing.wav"}


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "\x1b" not in err[0] and "\u202e" not in err[0], err[0]
    return err[0]


@pytest.mark.parametrize("name", ["Ann\n[demo] 0.00s u0001 Eve forged line", "Ann\x1b[2J", "\u202eevil",
                                  "A" * 200, "Ann\udcff", "Ann\x00"],
                         ids=["newline", "escape-code", "bidi-override", "too-long", "not-utf8", "nul"])
def test_a_voice_name_is_checked_like_an_mqtt_speaker(name: str, files: dict[str, Path],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--audio", str(files["good"]), "--voice", f"{name}={files['good']}", *NO_MODEL]) == 2
    line = _one_line(capsys)
    assert line.startswith("live.py: error: --voice") and "speaker" in line
    assert main(["--audio", str(files["good"]), "--speaker", name, *NO_MODEL]) == 2
    assert _one_line(capsys).startswith("live.py: error: --speaker")


@pytest.mark.parametrize("kind,message", [("empty", "not a readable"), ("text", "not a readable"),
                                          ("cut", "0.00 s of audio"), ("short", "0.20 s of audio"),
                                          ("missing", "no such file")])
def test_a_bad_voice_file_exits_2_before_the_model_loads(kind: str, message: str, files: dict[str, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--audio", str(files["good"]), "--voice", f"Ann={files[kind]}", *NO_MODEL]) == 2
    line = _one_line(capsys)
    assert line.startswith("live.py: error: --voice Ann") and message in line and "checkpoint" not in line


def test_a_good_voice_passes_on_to_the_next_check(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--audio", str(files["good"]), "--voice", f"Ann Lee={files['good']}", "--speaker", "Ann Lee",
               *NO_MODEL])
    err = capsys.readouterr().err
    assert rc != 0 and "--voice" not in err and "--speaker" not in err and "checkpoint" in err
