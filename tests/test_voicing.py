"""The espeak-ng voicing fixture (tests/voicing.py): timelines, voices, session folders, MELD train/dev only."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from stream.record import read_session
from tests import voicing
from tests.voicing import Line, VoicingError, voice_lines, write_session

if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed (scripts/install.sh installs it)", allow_module_level=True)

LINES = [Line("Ann", "Hello there, how are you?", "joy"), Line("Ben", "Fine.", "neutral"),
         Line("Ann", "Good to hear it!", "joy")]


@pytest.fixture(scope="module")
def voiced() -> voicing.VoicedDialogue:
    return voice_lines(LINES, name="t")


def test_timeline_segments_and_voices(voiced):
    segs, rate = voiced.segments, voiced.sample_rate
    assert rate == 16000 and voiced.audio.dtype == np.float32
    assert [(s.speaker, s.text, s.emotion) for s in segs] == [(x.speaker, x.text, x.emotion) for x in LINES]
    assert [s.voice for s in segs] == [voicing.VOICES[0], voicing.VOICES[1], voicing.VOICES[0]]
    for a, b in zip(segs, segs[1:], strict=False):
        assert b.t_start - a.t_end == pytest.approx(voicing.PAUSE_S, abs=1e-3)
        gap = voiced.audio[int(a.t_end * rate) + 1:int(b.t_start * rate) - 1]
        assert gap.size and np.abs(gap).max() == 0  # true silence between turns
    for s in segs:
        clip = voiced.clip(s)
        assert clip.size > 0.3 * rate and np.abs(clip).max() > 0.05  # speech, trimmed to its extent
    assert voiced.audio.size == int(round(segs[-1].t_end * rate)) + int(voicing.PAUSE_S * rate)
    again = voice_lines(LINES[:1], name="t")  # deterministic
    np.testing.assert_array_equal(again.clip(again.segments[0]), voiced.clip(segs[0]))


def test_every_voice_differs():
    clips = [voicing.speak("Okay, fine.", v) for v in voicing.VOICES]
    assert len({c.tobytes() for c in clips}) == len(voicing.VOICES)


def test_session_folder_replays_with_gold(voiced, tmp_path):
    rec = read_session(write_session(voiced, tmp_path / "s"))
    assert [(u.speaker, u.text, u.emotion, u.t_start, u.t_end) for u in rec.utterances] == \
        [(s.speaker, s.text, s.emotion, s.t_start, s.t_end) for s in voiced.segments]
    assert rec.sample_rate == 16000 and rec.meta["voices"] == {"Ann": voicing.VOICES[0], "Ben": voicing.VOICES[1]}
    s = voiced.segments[1]
    a = rec.audio[int(round(s.t_start * 16000)):int(round(s.t_end * 16000))]
    np.testing.assert_allclose(a, voiced.clip(s), atol=1 / 16000)  # 16-bit PCM round trip


def test_only_train_and_dev(tmp_path):
    with pytest.raises(VoicingError, match="only"):
        voicing.meld_dialogues("test", csv_dir=tmp_path)
    with pytest.raises(SystemExit):
        voicing.main(["--split", "test", "--out", str(tmp_path)])
    with pytest.raises(VoicingError, match="more than 1 speakers"):
        voice_lines(LINES, voices=("en-us",))


def test_meld_dev_dialogue_when_present():
    csv_dir = voicing.default_meld_dir()
    if not (csv_dir / "dev_sent_emo.csv").is_file():
        pytest.skip(f"MELD CSVs not at {csv_dir} (set MELD_DIR)")
    d = voicing.meld_dialogues("dev", min_speakers=3, csv_dir=csv_dir)[0]
    v = voicing.voice_dialogue(d)
    assert v.split == "dev" and len(v.segments) == len(d.utterances) and len(v.speakers) >= 3
    assert all("\u0092" not in s.text for s in v.segments)  # MELD's cp1252 leftovers mapped by prepare.meld
