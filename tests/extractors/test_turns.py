"""Speaker turns inside one voiced stretch (extractors.turns + OnlineDiarizer.turns) on real synthetic voices.

The dialogues answer each other 0.1-0.3 s apart, under silero's 500 ms end-of-utterance silence, so the VAD
hands over stretches that hold several turns (checked first): without turn finding, two people become one
utterance of one speaker, which is what these tests fail on.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from extractors.registry import package_dir
from extractors.turns import Turn, TurnParams, TurnProbe, choose_cuts, find_turns, pause_runs, sliding_change
from tests.voicing import Line, VoicedDialogue, voice_lines

RATE = 16000
TURNS = [("A", "So, did you finish the report for the meeting tomorrow?"),
         ("B", "Not yet. I was waiting for the numbers from accounting."),
         ("A", "Great, then we can go through it together after lunch."),
         ("B", "Oh, I see them now. Thanks a lot!"),
         ("A", "We still have time. Let's meet at two."),
         ("B", "Fine, see you then.")]
GAPS = [0.1, 0.3, 0.2, 0.15, 0.25]  # seconds between turns: how people answer, under the VAD's 0.5 s


def test_pauses_and_cuts_pure() -> None:
    sr = 1000
    tone = 0.3 * np.sin(np.arange(sr) * 0.9).astype(np.float32)
    quiet = np.zeros(sr // 10, np.float32)  # 100 ms
    blip = np.zeros(sr // 20, np.float32)  # 50 ms: a stop inside a word, not a pause
    a = np.concatenate([quiet, tone, quiet, tone, blip, tone, quiet])
    runs = pause_runs(a, sr, TurnParams())
    assert runs == [(1100, 1200)]  # the edges and the 50 ms dip are not candidates
    assert choose_cuts([(100, 120), (900, 1000)], 2000, 300) == [950]  # a 110-sample piece: its cut goes
    assert choose_cuts([(100, 120)], 2000, 50) == [110]
    emb = np.array([[1.0, 0.0]] * 6 + [[0.0, 1.0]] * 6)
    assert sliding_change(emb, 3, 0.8) == 6
    assert sliding_change(np.array([[1.0, 0.0]] * 12), 3, 0.8) is None


def test_find_turns_groups_pieces_by_voice() -> None:
    """Pieces between pauses join their group while ``same`` says so; a change of voice starts a turn."""
    sr = 1000
    tone, quiet = 0.3 * np.ones(800, np.float32), np.zeros(100, np.float32)
    a = np.concatenate([tone, quiet, tone, quiet, 0.6 * tone, quiet, tone])
    probe: TurnProbe[float] = TurnProbe(voice=lambda x: float(np.abs(x).max()),
                                        same=lambda group, v: abs(group[-1] - v) < 0.1)
    turns = find_turns(a, sr, probe)
    assert [(t.start, t.end) for t in turns] == [(0, 1750), (1750, 2650), (2650, a.size)]
    assert not any(t.overlap for t in turns)
    assert find_turns(a, sr, TurnProbe(voice=lambda x: 0.0, same=lambda g, v: True)) == [Turn(0, a.size)]


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{tool} is not installed (scripts/install.sh installs it)")
        pytest.skip(f"{tool} not installed")


@pytest.fixture(scope="module")
def diarizer_factory():
    if package_dir("resemblyzer") is None or package_dir("silero_vad") is None:
        pytest.skip("resemblyzer weights or silero-vad not installed (scripts/install.sh)")
    from extractors.speaker import OnlineDiarizer, VoiceEncoder
    from extractors.vad import SileroVad

    encoder, vad = VoiceEncoder(), SileroVad()
    return lambda: OnlineDiarizer(encoder=encoder), vad


def _diarize(v: VoicedDialogue, factory) -> list[tuple[float, float, str, bool]]:
    """The audio path's cut: silero segments -> turns -> a speaker per turn (times in seconds)."""
    from extractors.speaker import diarize_recording
    from extractors.vad import detect_speech

    make, vad = factory
    segments = detect_speech(v.audio, RATE, vad=vad)
    assert len(segments) < len(v.segments), "the VAD alone split every turn: the test needs turns it merges"
    return diarize_recording(v.audio, RATE, make(), vad=vad)


def _check_turns(v: VoicedDialogue, found: list[tuple[float, float, str, bool]], tolerance_s: float) -> None:
    """Every true turn change is cut (within ``tolerance_s``), and the two sides get different speakers."""
    cuts = [b[0] for b in found[1:]]
    for prev, seg in zip(v.segments[:-1], v.segments[1:], strict=True):
        if prev.speaker == seg.speaker:
            continue
        change = (prev.t_end + seg.t_start) / 2
        near = [c for c in cuts if abs(c - change) <= tolerance_s]
        assert near, f"turns merged across the change at {change:.2f} s: {[(round(a, 2), round(b, 2), n) for a, b, n, _ in found]}"
    labels = []
    for seg in v.segments:  # the label covering most of each true turn
        cover = {}
        for a, b, name, _ in found:
            cover[name] = cover.get(name, 0.0) + max(0.0, min(b, seg.t_end) - max(a, seg.t_start))
        labels.append(max(cover, key=cover.__getitem__))
    for prev, cur, lp, lc in zip(v.segments[:-1], v.segments[1:], labels[:-1], labels[1:], strict=True):
        assert (prev.speaker == cur.speaker) == (lp == lc), labels


@pytest.mark.parametrize("voices", [("en-us+m3", "en-us+f3"), ("en-us+f3", "en+m4")])
def test_espeak_turns_a_fraction_of_a_second_apart(diarizer_factory, voices) -> None:
    _require("espeak-ng")
    v = voice_lines([Line(s, t) for s, t in TURNS], voices=voices, gaps=GAPS)
    _check_turns(v, _diarize(v, diarizer_factory), 0.3)


def test_flite_turns_a_fraction_of_a_second_apart(diarizer_factory) -> None:
    _require("flite")
    v = voice_lines([Line(s, t) for s, t in TURNS], voices=("flite:rms", "flite:slt"), gaps=GAPS)
    _check_turns(v, _diarize(v, diarizer_factory), 0.3)


def test_talking_over_each_other_is_cut_and_flagged(diarizer_factory) -> None:
    """No pause at all between two voices (the second starts 0.15 s before the first ends): the sliding-window
    stage cuts near the change and flags both sides as overlapping."""
    _require("espeak-ng")
    v = voice_lines([Line("A", "I was thinking that we could maybe go to the cinema tonight"),
                     Line("B", "that sounds really lovely but I have to work late again today")],
                    voices=("en-us+m3", "en-us+f3"), gaps=[-0.15])
    make, _ = diarizer_factory
    d = make()
    turns = d.turns(v.audio, RATE)
    assert len(turns) == 2 and all(t.overlap for t in turns), turns
    change = (v.segments[0].t_end + v.segments[1].t_start) / 2
    assert abs(turns[1].start / RATE - change) <= 0.4, (turns, change)


def test_one_voice_answering_itself_stays_one_turn(diarizer_factory) -> None:
    """The same voice with the same short pauses is never cut (every cut would be a false speaker change)."""
    _require("espeak-ng")
    v = voice_lines([Line("A", t) for _, t in TURNS], voices=("en-us+m3",), gaps=GAPS)
    found = _diarize(v, diarizer_factory)
    assert len({name for *_, name, _ in found}) == 1, found
