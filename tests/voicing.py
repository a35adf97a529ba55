"""Voice MELD dialogues with espeak-ng: test and benchmark audio with known words, speakers and emotions.

Each speaker of a dialogue gets one espeak-ng voice, in order of first appearance (:data:`VOICES`), so a
dialogue always sounds the same. Turns are laid out on one 16 kHz mono timeline with ``pause_s`` of silence
between them (longer than the VADs' end-of-utterance silence, so a VAD can split every turn), and the true
segments (speaker, text, gold emotion, times of the trimmed speech) come back with the audio.

Only MELD train and dev are voiced: test dialogues are for final figures, never for tuning.

    python -m tests.voicing --split dev --dialogues 20 --min-speakers 2 --out runs/voiced/dev

writes one replayable session folder (record format v1, ``live.py --replay DIR``) per dialogue: ``audio.wav``,
``utterances.jsonl`` (gold text, speaker, emotion, times), ``meta.json`` (with the MELD dialogue id and the
voice of each speaker) and, in ``--out``, ``index.json`` listing the folders. Needs espeak-ng
(scripts/install.sh installs it); deterministic for a given espeak-ng version.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extractors.audio import resample
from pcgnet.config import MELD_LABELS
from prepare.meld import MeldDialogue, read_split
from stream.frames import Utterance
from stream.record import SessionRecorder, read_wav

RATE = 16000
PAUSE_S = 0.8  # > the energy VAD's 600 ms and silero's 500 ms end-of-utterance silence
LEAD_S = 0.3
TRIM_LEVEL = 300 / 32768  # espeak's leading/trailing silence is cut at this level, keeping MARGIN_S
MARGIN_S = 0.05
SPEED_WPM = 160
# One voice per speaker in order of first appearance: male and female voices alternate (a 3-speaker dialogue
# has two male voices), and so do US and British English ("en"; espeak-ng 1.51 ignores a variant on "en-gb").
# Voices of one gender differ as two people do, by >= 3% in formant scaling or in pitch range (espeak-ng's
# variant files): near-copies such as m1 and m3 (1% formant shift, one pitch range) are left out.
VOICES = ("en-us+m3", "en-us+f3", "en+m4", "en+f2", "en-us+m5", "en-us+f1", "en+m2", "en+f5", "en-us+m8")
REPO = Path(__file__).resolve().parents[1]
VOICED_SPLITS = ("train", "dev")


class VoicingError(RuntimeError):
    """espeak-ng is missing or failed, or the requested dialogues do not exist."""


@dataclass(frozen=True)
class Line:
    """One turn to voice."""

    speaker: str
    text: str
    emotion: str | None = None


@dataclass(frozen=True)
class Segment:
    """Where one voiced turn lies on the dialogue's timeline (seconds), with its gold labels."""

    utterance_id: str
    speaker: str
    voice: str
    text: str
    emotion: str | None
    t_start: float
    t_end: float


@dataclass
class VoicedDialogue:
    """A dialogue's audio (float32 mono at ``sample_rate``) and its true segments, in order."""

    name: str
    audio: np.ndarray
    sample_rate: int
    segments: list[Segment]
    dialogue: int | None = None  # MELD global dialogue id
    split: str | None = None

    def clip(self, seg: Segment) -> np.ndarray:
        """The samples of one segment."""
        return self.audio[int(round(seg.t_start * self.sample_rate)):int(round(seg.t_end * self.sample_rate))]

    @property
    def speakers(self) -> list[str]:
        return list(dict.fromkeys(s.speaker for s in self.segments))


@dataclass
class SpeakerScores:
    """Speaker labels against the truth, summed over dialogues (see benchmarks/diarization.py)."""

    pairs_ok: int = 0
    pairs: int = 0
    recall_ok: int = 0
    recall_n: int = 0
    pure: int = 0
    covered: int = 0
    n: int = 0
    extra: float = 0.0
    exact: int = 0
    dialogues: int = 0

    def add(self, true: Sequence[str], pred: Sequence[str]) -> None:
        """One dialogue's true and predicted speaker per utterance, in order."""
        last_pred: dict[str, int] = {}
        last_true: dict[str, int] = {}
        for i, (t, p) in enumerate(zip(true, pred, strict=True)):
            if p in last_pred:
                self.pairs += 1
                self.pairs_ok += true[last_pred[p]] == t
            if t in last_true:
                self.recall_n += 1
                self.recall_ok += last_pred.get(p) == last_true[t]
            last_pred[p], last_true[t] = i, i
        joint = Counter(zip(true, pred, strict=True))
        self.pure += sum(max(joint[t, p] for t in set(true)) for p in set(pred))
        self.covered += sum(max(joint[t, p] for p in set(pred)) for t in set(true))
        self.n += len(true)
        self.extra += len(set(pred)) - len(set(true))
        self.exact += len(set(pred)) == len(set(true))
        self.dialogues += 1

    @property
    def pair_accuracy(self) -> float:
        """Share of the pairs a shift event compares (an utterance and the previous one with its label)
        that really are one person."""
        return self.pairs_ok / max(self.pairs, 1)

    @property
    def pair_recall(self) -> float:
        """Share of the true pairs (an utterance and its speaker's previous one) the labels keep."""
        return self.recall_ok / max(self.recall_n, 1)

    def row(self, name: str) -> str:
        return (f"{name:<34} {100 * self.pair_accuracy:6.1f}% ({self.pairs_ok}/{self.pairs})"
                f" {100 * self.pair_recall:6.1f}% {100 * self.pure / self.n:6.1f}%"
                f" {100 * self.covered / self.n:6.1f}% {self.extra / self.dialogues:+6.2f}"
                f" {100 * self.exact / self.dialogues:5.0f}%")


def default_meld_dir() -> Path:
    """``$MELD_DIR``, else ``../shared/data/meld`` beside the checkout (as in CI)."""
    return Path(os.environ.get("MELD_DIR") or REPO.parent / "shared" / "data" / "meld")


def speak(text: str, voice: str, *, speed_wpm: int = SPEED_WPM) -> np.ndarray:
    """espeak-ng speech of ``text`` as 16 kHz float32, trimmed to the speech (plus a short margin).

    A voice named ``flite:NAME`` (slt, rms, awb, kal16) is Debian flite's instead (more natural voices)."""
    tool = "flite" if voice.startswith("flite:") else "espeak-ng"
    if shutil.which(tool) is None:
        raise VoicingError(f"{tool} not found (apt-get install {tool}; scripts/install.sh installs it)")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "s.wav"
        if tool == "flite":  # the text goes in a file: a line starting with "-" is never read as an option
            (Path(d) / "t.txt").write_text(text, encoding="utf-8")
            cmd, stdin = ["flite", "-voice", voice[6:], "-f", str(Path(d) / "t.txt"), "-o", str(path)], b""
        else:  # through stdin, for the same reason
            cmd, stdin = ["espeak-ng", "-v", voice, "-s", str(speed_wpm), "-w", str(path)], text.encode("utf-8")
        r = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
        if r.returncode != 0 or not path.is_file():
            raise VoicingError(f"{tool} -v {voice} failed: {r.stderr.decode(errors='replace').strip()}")
        audio, rate = read_wav(path)
    audio = resample(audio, rate, RATE)
    loud = np.flatnonzero(np.abs(audio) > TRIM_LEVEL)
    if not loud.size:
        return audio
    margin = int(MARGIN_S * RATE)
    return audio[max(0, loud[0] - margin): loud[-1] + margin]


def voice_lines(lines: Sequence[Line], *, name: str = "dialogue", pause_s: float = PAUSE_S,
                voices: Sequence[str] = VOICES, gaps: Sequence[float] | None = None) -> VoicedDialogue:
    """Voice turns in order, one voice per speaker (by first appearance), ``pause_s`` of silence between.

    ``gaps``: the silence before each turn after the first instead (seconds; negative = that much overlap
    with the previous turn, the two voices mixed), for turns taken as people take them."""
    if gaps is not None:
        return _voice_with_gaps(lines, name, voices, gaps)
    voice_of = _voices_by_speaker(lines, name, voices)
    pieces = [np.zeros(int(LEAD_S * RATE), np.float32)]
    n, segments = pieces[0].size, []
    gap = np.zeros(int(pause_s * RATE), np.float32)
    for i, line in enumerate(lines):
        speech = speak(line.text, voice_of[line.speaker])
        segments.append(Segment(f"u{i + 1:04d}", line.speaker, voice_of[line.speaker], line.text, line.emotion,
                                round(n / RATE, 4), round((n + speech.size) / RATE, 4)))
        pieces += [speech, gap]
        n += speech.size + gap.size
    return VoicedDialogue(name, np.concatenate(pieces), RATE, segments)


def _voices_by_speaker(lines: Sequence[Line], name: str, voices: Sequence[str]) -> dict[str, str]:
    voice_of: dict[str, str] = {}
    for line in lines:
        if line.speaker not in voice_of:
            if len(voice_of) == len(voices):
                raise VoicingError(f"{name}: more than {len(voices)} speakers")
            voice_of[line.speaker] = voices[len(voice_of)]
    return voice_of


def _voice_with_gaps(lines: Sequence[Line], name: str, voices: Sequence[str], gaps: Sequence[float]) -> VoicedDialogue:
    if len(gaps) != max(0, len(lines) - 1):
        raise VoicingError(f"{name}: {len(gaps)} gaps for {len(lines)} turns (expected one fewer)")
    voice_of = _voices_by_speaker(lines, name, voices)
    speech = [speak(line.text, voice_of[line.speaker]) for line in lines]
    lead = int(LEAD_S * RATE)
    starts = [lead]
    for prev, gap in zip(speech[:-1], gaps, strict=True):
        starts.append(max(0, starts[-1] + prev.size + int(round(gap * RATE))))
    audio = np.zeros(max(s + x.size for s, x in zip(starts, speech, strict=True)) + lead, np.float32)
    segments = []
    for i, (line, s, x) in enumerate(zip(lines, starts, speech, strict=True)):
        audio[s:s + x.size] += x
        segments.append(Segment(f"u{i + 1:04d}", line.speaker, voice_of[line.speaker], line.text, line.emotion,
                                round(s / RATE, 4), round((s + x.size) / RATE, 4)))
    return VoicedDialogue(name, np.clip(audio, -1.0, 1.0), RATE, segments)


def voice_dialogue(d: MeldDialogue, *, pause_s: float = PAUSE_S) -> VoicedDialogue:
    """One MELD dialogue voiced (MELD speaker names, gold emotions)."""
    if d.split not in VOICED_SPLITS:
        raise VoicingError(f"dialogue {d.dialogue} is from {d.split}: only {VOICED_SPLITS} are voiced")
    lines = [Line(u.speaker, u.text, MELD_LABELS[u.label]) for u in d.utterances]
    v = voice_lines(lines, name=f"meld-{d.split}-{d.dialogue}", pause_s=pause_s)
    v.dialogue, v.split = d.dialogue, d.split
    return v


def meld_dialogues(split: str, *, min_speakers: int = 1, csv_dir: Path | None = None) -> list[MeldDialogue]:
    """The split's dialogues with at least ``min_speakers`` speakers, in CSV order (train/dev only)."""
    if split not in VOICED_SPLITS:
        raise VoicingError(f"split {split!r}: only {VOICED_SPLITS} are voiced (test is for final figures)")
    csv_dir = csv_dir or default_meld_dir()
    by_id: dict[int, MeldDialogue] = {}
    for u in read_split(csv_dir / f"{split}_sent_emo.csv", split):
        by_id.setdefault(u.dialogue, MeldDialogue(u.dialogue, split)).utterances.append(u)
    return [d for d in by_id.values() if len(set(d.speaker_slots)) >= min_speakers]


def write_session(v: VoicedDialogue, out: Path) -> Path:
    """A replayable session folder (record format v1) with the gold segments, via stream.record."""
    rec = SessionRecorder(out, v.name)
    try:
        for s in v.segments:
            rec.add_utterance(Utterance(session_id=v.name, utterance_id=s.utterance_id, speaker=s.speaker,
                                        t_start=s.t_start, t_end=s.t_end, text=s.text, audio=v.clip(s),
                                        sample_rate=v.sample_rate, gold=s.emotion))
        rec.meta.update(generator="tests/voicing.py (espeak-ng)", dialogue=v.dialogue, split=v.split,
                        voices={s.speaker: s.voice for s in v.segments})
        rec.set_labels(MELD_LABELS)
    finally:
        rec.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.voicing", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=VOICED_SPLITS, default="dev")
    ap.add_argument("--dialogues", type=int, default=20, help="how many dialogues (the first in CSV order)")
    ap.add_argument("--min-speakers", type=int, default=2, help="skip dialogues with fewer speakers")
    ap.add_argument("--out", type=Path, required=True, help="folder for the session folders (e.g. runs/voiced/dev)")
    ap.add_argument("--csv-dir", type=Path, default=None, help="MELD CSVs (default: $MELD_DIR or ../shared/data/meld)")
    ap.add_argument("--pause", type=float, default=PAUSE_S, help="silence between turns, seconds")
    args = ap.parse_args(argv)
    try:
        chosen = meld_dialogues(args.split, min_speakers=args.min_speakers, csv_dir=args.csv_dir)[: args.dialogues]
        if len(chosen) < args.dialogues:
            print(f"voicing: only {len(chosen)} {args.split} dialogues have >= {args.min_speakers} speakers",
                  file=sys.stderr)
        from tqdm import tqdm

        index = []
        for d in tqdm(chosen, desc=f"voicing {args.split}", unit="dialogue"):
            v = voice_dialogue(d, pause_s=args.pause)
            folder = write_session(v, args.out / v.name)
            index.append({"folder": folder.name, "dialogue": v.dialogue, "split": v.split,
                          "speakers": len(v.speakers), "utterances": len(v.segments),
                          "seconds": round(v.audio.size / v.sample_rate, 2)})
    except (VoicingError, ValueError, OSError) as e:
        print(f"voicing: {e}", file=sys.stderr)
        return 2
    (args.out / "index.json").write_text(json.dumps(index, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    total = sum(x["seconds"] for x in index)
    print(f"{args.out}: {len(index)} dialogues, {sum(x['utterances'] for x in index)} utterances, {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
