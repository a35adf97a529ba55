"""Real voices for diarization tests and benchmarks: Fish Fillets' professionally acted Czech dialogue.

Debian's ``fillets-ng-data-cs`` ships ~1,800 Ogg lines of ~17 characters; ``script/<level>/dialogs_cs.lua``
names each line's speaker in its ``font`` field (``font_small``: a woman, ``font_big``: a man, ...). A
level's lines in script order, laid on one timeline with gaps drawn from ``gaps`` (seconds; negative =
overlap), make a conversation of real voices with known turns: :func:`level_conversation` returns the same
:class:`tests.voicing.VoicedDialogue` as the synthetic voicings. The ASR is English-only: only who speaks
when is used. :data:`HELD_OUT` levels are for final figures, never for tuning.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tests.voicing import RATE, Segment, VoicedDialogue, VoicingError

ROOT = Path("/usr/share/games/fillets-ng")
HELD_OUT = ("corals", "floppy", "ending", "bathyscaph", "aztec", "briefcase", "wreck", "tank", "puzzle", "snowman")
_LINE = re.compile(r'dialogId\("([^"]+)",\s*"([^"]*)"')


def levels(root: Path = ROOT) -> list[str]:
    """Levels that have Czech dialogue with sound, in name order."""
    return sorted(p.parent.name for p in (root / "script").glob("*/dialogs_cs.lua") if (root / "sound" / p.parent.name / "cs").is_dir())


def tuning_levels(root: Path = ROOT) -> list[str]:
    return [lv for lv in levels(root) if lv not in HELD_OUT]


def level_lines(level: str, root: Path = ROOT) -> list[tuple[str, Path]]:
    """(speaker font, ogg path) of a level's lines in script order (lines without a font or a sound left out)."""
    script = root / "script" / level / "dialogs_cs.lua"
    if not script.is_file():
        raise VoicingError(f"{script} not found (apt-get install fillets-ng-data-cs)")
    out = []
    for line_id, font in _LINE.findall(script.read_text(encoding="utf-8", errors="replace")):
        ogg = root / "sound" / level / "cs" / f"{line_id}.ogg"
        if font and font != "font_both" and ogg.is_file():
            out.append((font, ogg))
    return out


def _trim(audio: np.ndarray, vad: object | None, margin: int = RATE // 50) -> np.ndarray:
    """The clip from silero's first speech start to its last speech end (plus 20 ms): the recordings have
    quiet lead-ins that would otherwise lengthen every gap."""
    from extractors.vad import detect_speech

    segs = detect_speech(audio, RATE, vad=vad, min_silence_ms=100, speech_pad_ms=0)  # type: ignore[arg-type]
    if not segs:
        return audio
    a, b = int(segs[0].start_s * RATE), int(segs[-1].end_s * RATE)
    return audio[max(0, a - margin): b + margin]


def level_conversation(level: str, *, max_lines: int = 14, gaps: tuple[float, float] = (0.1, 0.3), seed: int = 0,
                       root: Path = ROOT, min_speakers: int = 2, vad: object | None = None) -> VoicedDialogue | None:
    """The level's first ``max_lines`` lines as one conversation, gaps uniform in ``gaps`` (seeded); None
    when it has fewer than ``min_speakers`` speakers."""
    from stream.capture.audiofile import decode_audio

    lines = level_lines(level, root)[:max_lines]
    if len({f for f, _ in lines}) < min_speakers:
        return None
    rng = np.random.default_rng(seed)
    clips = [_trim(np.clip(decode_audio(p), -1.0, 1.0), vad) for _, p in lines]
    starts, pos = [], int(0.3 * RATE)
    for i, c in enumerate(clips):
        if i:
            pos = max(0, pos + int(round(rng.uniform(*gaps) * RATE)))
        starts.append(pos)
        pos += c.size
    audio = np.zeros(pos + int(0.3 * RATE), np.float32)
    segments = []
    for i, ((font, path), s, c) in enumerate(zip(lines, starts, clips, strict=True)):
        audio[s:s + c.size] += c
        segments.append(Segment(f"u{i + 1:04d}", font, path.stem, "", None, round(s / RATE, 4), round((s + c.size) / RATE, 4)))
    return VoicedDialogue(f"fillets-{level}", np.clip(audio, -1.0, 1.0), RATE, segments)
