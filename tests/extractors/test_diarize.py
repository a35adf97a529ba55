"""Online diarization (extractors.diarize + speaker.OnlineDiarizer) on a real 3-voice espeak-ng dialogue.

The dialogue's turns rotate so that no two consecutive turns share a speaker: giving every utterance one
label scores 0% of pairs right, and a new label per utterance gives no pairs at all (0% recall), so both
failure modes fail the bounds below.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from extractors.base import ExtractorError
from extractors.diarize import (
    N_TIMBRE,
    SYNTHETIC_VOICES,
    ClusterParams,
    Speaker,
    SpeakerClusterer,
    VoicePrint,
)
from extractors.registry import package_dir
from tests.voicing import VOICES, Line, SpeakerScores, speak, voice_lines

TURNS = [
    ("A", "So, did you finish the report for the meeting tomorrow?"),
    ("B", "Not yet. I was waiting for the numbers from accounting."),
    ("C", "I sent them this morning, check your inbox."),
    ("A", "Great, then we can go through it together after lunch."),
    ("B", "Oh, I see them now. Thanks a lot!"),
    ("C", "No problem. Tell me if anything looks wrong."),
    ("A", "Okay."),
    ("C", "And please remember the budget slides as well."),
    ("B", "Right, the budget. I completely forgot about that."),
    ("A", "We still have time. Let's meet at two."),
    ("C", "Two works for me."),
    ("B", "Fine, see you both then."),
]


def rand_print(rng: np.random.Generator, base: np.ndarray | None = None, noise: float = 0.0) -> VoicePrint:
    d = rng.standard_normal(32) if base is None else base + noise * rng.standard_normal(32)
    return VoicePrint(d / np.linalg.norm(d), rng.standard_normal(N_TIMBRE), 7.0, 1.0)


def test_clusterer_names_cap_and_errors():
    rng = np.random.default_rng(0)
    c = SpeakerClusterer(ClusterParams(threshold=0.9, merge_threshold=None), max_speakers=2)
    ps = [rand_print(rng) for _ in range(3)]
    assert [c.assign(p) for p in ps] == ["Speaker 1", "Speaker 2", c.labels[int(c.similarities(ps[2]).argmax())]]
    assert len(c.speakers) == 2  # full: the third voice joins the nearest
    with pytest.raises(ExtractorError, match="NaN"):
        c.assign(VoicePrint(np.full(32, np.nan), np.zeros(N_TIMBRE), 7.0, 1.0))
    with pytest.raises(ValueError, match="threshold"):
        ClusterParams(threshold=2.0)
    with pytest.raises(ValueError, match="max_speakers"):
        SpeakerClusterer(max_speakers=0)
    with pytest.raises(ValueError, match="already 2 speakers"):
        c.enroll("Dana", rand_print(rng))


def test_late_merge_keeps_the_older_name_and_never_reuses_it():
    """An odd first print opens Speaker 1, the voice proper Speaker 2; a print between them joins Speaker 1,
    whose mean then has converged with Speaker 2's: they merge under the older name."""
    o, u = np.zeros(8), np.zeros(8)
    o[0], u[0], u[1] = 1.0, 0.7, np.sqrt(1 - 0.7 ** 2)  # cosine 0.7 < threshold

    def vp(d: np.ndarray) -> VoicePrint:
        return VoicePrint(d / np.linalg.norm(d), np.zeros(N_TIMBRE), 7.0, 2.0)

    only_dvector = {"w_timbre": 0.0, "w_pitch": 0.0}
    c = SpeakerClusterer(ClusterParams(threshold=0.8, merge_threshold=0.8, **only_dvector))
    assert [c.assign(vp(o)), c.assign(vp(u))] == ["Speaker 1", "Speaker 2"]
    assert c.assign(vp(1.05 * o + u)) == "Speaker 1" and c.labels == ["Speaker 1"]  # merged
    assert c.assign(vp(u)) == "Speaker 1"
    other = np.zeros(8)
    other[5] = 1.0
    assert c.assign(vp(other)) == "Speaker 3"  # "Speaker 2" is retired, never handed out again
    c2 = SpeakerClusterer(ClusterParams(threshold=0.8, merge_threshold=None, **only_dvector))
    assert [c2.assign(vp(d)) for d in (o, u, 1.05 * o + u)] == ["Speaker 1", "Speaker 2", "Speaker 1"]
    assert c2.labels == ["Speaker 1", "Speaker 2"]  # without merging both stay


def test_short_prints_never_open_a_speaker_and_merges_are_recorded():
    """A print under ``min_new_s`` joins the nearest speaker however unlike it is; a late merge is recorded as
    (retired, surviving) for the correction downstream, and never takes the count below ``min_speakers``."""
    o, u = np.zeros(8), np.zeros(8)
    o[0], u[0], u[1] = 1.0, 0.7, np.sqrt(1 - 0.7 ** 2)
    other = np.zeros(8)
    other[5] = 1.0

    def vp(d: np.ndarray, seconds: float = 2.0) -> VoicePrint:
        return VoicePrint(d / np.linalg.norm(d), np.zeros(N_TIMBRE), 7.0, seconds)

    only_dvector = {"w_timbre": 0.0, "w_pitch": 0.0, "short_slope": 0.0}
    c = SpeakerClusterer(ClusterParams(threshold=0.8, merge_threshold=None, min_new_s=1.0, **only_dvector))
    assert [c.assign(vp(o)), c.assign(vp(other, 0.6)), c.assign(vp(other, 1.2))] == ["Speaker 1"] * 2 + ["Speaker 2"]
    c = SpeakerClusterer(ClusterParams(threshold=0.8, merge_threshold=0.8, **only_dvector))
    assert [c.assign(vp(o)), c.assign(vp(u)), c.assign(vp(1.05 * o + u))] == ["Speaker 1", "Speaker 2", "Speaker 1"]
    assert c.take_merges() == [("Speaker 2", "Speaker 1")] and c.take_merges() == []
    exact = SpeakerClusterer(ClusterParams(threshold=0.8, merge_threshold=0.8, **only_dvector), max_speakers=2,
                             min_speakers=2)
    assert [exact.assign(vp(d)) for d in (o, u, 1.05 * o + u)] == ["Speaker 1", "Speaker 2", "Speaker 1"]
    assert exact.labels == ["Speaker 1", "Speaker 2"] and exact.merges == []
    with pytest.raises(ValueError, match="min_speakers"):
        SpeakerClusterer(max_speakers=2, min_speakers=3)


def test_the_prior_on_few_speakers_lowers_the_bar_as_speakers_open():
    c = SpeakerClusterer(ClusterParams(threshold=0.5, crowd_slope=0.1, short_slope=0.0, exact_threshold=0.6), max_speakers=9)
    assert c.threshold_for(2.0) == pytest.approx(0.5)
    for _ in range(3):
        c.speakers.append(Speaker(f"S{_}"))
    assert c.threshold_for(2.0) == pytest.approx(0.3)
    c.min_speakers = 3  # --speakers-exact 3: no prior until three are open
    assert c.threshold_for(2.0) == pytest.approx(0.5)
    c.min_speakers = 4  # fewer open than known to come: the higher bar to join
    assert c.threshold_for(2.0) == pytest.approx(0.6) and c.threshold_for(0.2) == pytest.approx(0.6)


def test_enrolled_speakers_keep_their_names():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(32), rng.standard_normal(32)
    c = SpeakerClusterer(ClusterParams(threshold=0.7, w_timbre=0.0))
    c.enroll("Ann", rand_print(rng, a, 0.05))
    c.enroll("Bo", rand_print(rng, b, 0.05))
    assert [c.assign(rand_print(rng, v, 0.05)) for v in (a, b, a, b)] == ["Ann", "Bo", "Ann", "Bo"]
    assert c.assign(rand_print(rng)) == "Speaker 1"
    with pytest.raises(ValueError, match="name"):
        c.enroll(" ", rand_print(rng))


if package_dir("resemblyzer") is None or shutil.which("espeak-ng") is None:
    pytest.skip("resemblyzer weights or espeak-ng not installed (scripts/install.sh)", allow_module_level=True)

from extractors.speaker import OnlineDiarizer, VoiceEncoder  # noqa: E402


@pytest.fixture(scope="module")
def encoder() -> VoiceEncoder:
    return VoiceEncoder()


@pytest.fixture(scope="module")
def dialogue():
    v = voice_lines([Line(s, t) for s, t in TURNS], name="three")
    return v, [v.clip(s) for s in v.segments]


def diarize(d: OnlineDiarizer, clips: list[np.ndarray]) -> list[str]:
    return [d.assign(c, 16000) for c in clips]


def test_three_voices_diarized(encoder, dialogue):
    """Two male voices and a female one (espeak-ng: with the synthetic-voice bars, SYNTHETIC_VOICES); 9 true pairs, so one wrong label costs 11 points. Bounds: >= 80% of
    compared pairs one person and >= 75% of true pairs kept (at most 2 of 9 lost); measured 8/9 and 8/9 (the
    2-word "Two works for me." joins the other male voice). One label for all scores 0%, one per utterance
    forms no pairs (0% kept)."""
    v, clips = dialogue
    assert len(set(s.voice for s in v.segments)) == 3 and v.segments[0].voice == VOICES[0]
    labels = diarize(OnlineDiarizer(encoder=encoder, params=SYNTHETIC_VOICES), clips)
    s = SpeakerScores()
    s.add([seg.speaker for seg in v.segments], labels)
    assert s.pair_accuracy >= 0.8 and s.pair_recall >= 0.75, labels
    assert 2 <= len(set(labels)) <= 4, labels
    assert labels[0] == "Speaker 1"


def test_cap_is_respected(encoder, dialogue):
    _, clips = dialogue
    labels = diarize(OnlineDiarizer(max_speakers=2, encoder=encoder), clips)
    assert set(labels) <= {"Speaker 1", "Speaker 2"} and len(set(labels)) == 2
    with pytest.raises(ValueError, match="max_speakers"):
        OnlineDiarizer(max_speakers=0, encoder=encoder)


def test_enrollment_names_a_known_voice(encoder, dialogue):
    """The female voice (speaker B) is enrolled from a sentence she never says in the dialogue."""
    v, clips = dialogue
    sample = speak("Hello, this is my voice, please remember it well.", VOICES[1])
    d = OnlineDiarizer(encoder=encoder, voices={"Beatrice": (sample, 16000)})
    labels = diarize(d, clips)
    truth = [s.speaker for s in v.segments]
    named = [lab for lab, t in zip(labels, truth, strict=True) if t == "B"]
    assert named.count("Beatrice") >= len(named) - 1, labels
    assert all(lab != "Beatrice" for lab, t in zip(labels, truth, strict=True) if t != "B"), labels


def test_bad_audio_errors(encoder):
    d = OnlineDiarizer(encoder=encoder)
    with pytest.raises(ExtractorError, match="too short"):
        d.assign(np.zeros(0, np.float32), 16000)
    with pytest.raises(ExtractorError, match="too short"):
        d.assign(np.full(1600, 0.1, np.float32), 16000)
    with pytest.raises(ExtractorError, match="NaN"):
        d.assign(np.full(16000, np.nan, np.float32), 16000)
    with pytest.raises(ExtractorError, match="sample"):
        d.assign(np.zeros(16000, np.float32), 0)
    with pytest.raises(ExtractorError, match="too short"):
        d.enroll("Ann", np.zeros(10, np.float32), 16000)
    assert d.clusterer.speakers == []  # nothing half-added


def test_one_real_voice_speaking_several_times_stays_one_speaker(encoder):
    """Real acted lines (Fish Fillets, tuning levels), 5-8 per voice, each its own segment: one voice is one
    speaker. With the espeak-tuned bars (SYNTHETIC_VOICES) each of these voices is split into several. Not all
    real voices stay one yet: of 12 such voices measured, 4 are still split in two (docs/live.md)."""
    from tests.realvoices import ROOT, _trim, level_lines

    if not ROOT.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail("fillets-ng-data-cs is not installed (scripts/install.sh installs it)")
        pytest.skip("fillets-ng-data-cs is not installed")
    from extractors.vad import SileroVad
    from stream.capture.audiofile import decode_audio

    vad = SileroVad()
    for level, font in (("labyrinth", "font_big"), ("gems", "font_big"), ("duckie", "font_big"), ("atlantis", "font_small")):
        clips = [_trim(np.clip(decode_audio(p), -1.0, 1.0), vad) for f, p in level_lines(level) if f == font][:8]
        d = OnlineDiarizer(encoder=encoder)
        labels = [d.assign(c, 16000) for c in clips]
        assert len(clips) >= 5 and len(set(labels)) == 1, (level, font, labels)
