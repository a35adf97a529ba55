"""Turn boundaries inside one voiced stretch: who speaks when, when people answer each other without a pause.

A VAD ends an utterance after ~0.5 s of silence, but people take turns ~0.2 s apart (the human norm), and
sometimes talk over each other: one VAD segment then holds several speakers. :func:`find_turns` cuts it in
two stages, both pure numpy over what the caller measures:

1. **Short pauses** (``pause_ms``: frames ``dip_db`` below the segment's loud level) are candidate
   boundaries; cuts that would leave a piece shorter than ``min_piece_s`` are dropped (shortest pause
   first). Each piece gets a voice print, and consecutive pieces are grouped while a piece is like its
   group (``same(group, piece)`` from the diarizer, the same similarity that names speakers).
2. **No pause** (overlap, latched turns): a piece at least ``2 * context_s`` long is scanned with sliding
   window embeddings; where the cosine between the mean embedding of ``context_s`` before and after a point
   falls below ``change_cosine`` (the deepest such point) and the voice prints of the two sides differ, it
   is cut there and both sides are flagged ``overlap`` (nothing in the audio separates them: one utterance
   per dominant speaker, overlap flagged).

The caller supplies the measurements (:class:`TurnProbe`), so this module knows nothing of encoders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

P = TypeVar("P")


@dataclass(frozen=True)
class TurnParams:
    """Where a voiced stretch may be cut (measured on espeak-ng, flite and Fish Fillets turns; docs/live.md)."""

    frame_ms: int = 10
    pause_ms: int = 70
    """A dip at least this long is a candidate boundary (turn gaps are ~100-300 ms; stops inside a word are
    shorter)."""
    dip_db: float = 25.0
    """A frame is a pause when it is this far below the segment's loud level (90th percentile frame)."""
    min_piece_s: float = 0.7
    """A shorter piece's voice print is too noisy to compare: its cut is dropped, it stays with a neighbour."""
    context_s: float = 1.2
    """Sliding-window stage: audio compared before and after a candidate point (pieces under twice this
    are never cut without a pause)."""
    window_s: float = 0.8
    hop_s: float = 0.2
    change_cosine: float = 0.8
    """Sliding-window stage: a candidate where the before/after cosine of the mean window embeddings is below
    this (measured: 0.67-0.78 at a change of voice, 0.83-0.87 at its lowest inside one voice); it is cut only
    when the voice prints of both sides also differ (``same``)."""

    def __post_init__(self) -> None:
        if self.frame_ms <= 0 or self.pause_ms < self.frame_ms or self.min_piece_s <= 0 or self.hop_s <= 0:
            raise ValueError("TurnParams: frame_ms, pause_ms >= frame_ms, min_piece_s and hop_s must be positive")


@dataclass(frozen=True)
class Turn:
    """One speaker's part of a voiced stretch, in samples of the stretch; ``overlap`` when it meets a
    neighbouring turn without a pause (talking over each other, or latched)."""

    start: int
    end: int
    overlap: bool = False


@dataclass(frozen=True)
class TurnProbe(Generic[P]):
    """What :func:`find_turns` needs measured: a voice print of a span, whether a piece sounds like its group,
    and unit embeddings of sliding windows (None: skip the pause-less stage)."""

    voice: Callable[[np.ndarray], P]
    same: Callable[[Sequence[P], P], bool]
    windows: Callable[[np.ndarray, int, int], np.ndarray] | None = None
    """(audio, window samples, hop samples) -> (W, D) unit embeddings of windows starting every hop."""


def pause_runs(audio: np.ndarray, sample_rate: int, p: TurnParams) -> list[tuple[int, int]]:
    """(start, end) samples of the pauses strictly inside ``audio`` (not touching either edge)."""
    frame = max(1, sample_rate * p.frame_ms // 1000)
    n = audio.size // frame
    if n < 3:
        return []
    rms = np.sqrt(np.mean(audio[: n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1))
    db = 20 * np.log10(np.maximum(rms, 1e-7))
    quiet = db < np.percentile(db, 90) - p.dip_db
    need = p.pause_ms // p.frame_ms
    runs: list[tuple[int, int]] = []
    i = 0
    while i < n:
        if not quiet[i]:
            i += 1
            continue
        j = i
        while j < n and quiet[j]:
            j += 1
        if i > 0 and j < n and j - i >= need:
            runs.append((i * frame, j * frame))
        i = j
    return runs


def choose_cuts(pauses: Sequence[tuple[int, int]], n_samples: int, min_piece: int) -> list[int]:
    """Cut points (pause centres), dropping the shortest pause's cut while a piece is under ``min_piece``."""
    cuts = [((a + b) // 2, b - a) for a, b in pauses]
    while cuts:
        bounds = [0, *(c for c, _ in cuts), n_samples]
        short = [k for k in range(len(bounds) - 1) if bounds[k + 1] - bounds[k] < min_piece]
        if not short:
            break
        k = short[0]  # the piece's cuts are k-1 (left) and k (right) in ``cuts``
        sides = [i for i in (k - 1, k) if 0 <= i < len(cuts)]
        del cuts[min(sides, key=lambda i: cuts[i][1])]
    return [c for c, _ in cuts]


def sliding_change(emb: np.ndarray, context: int, change_cosine: float) -> int | None:
    """Index of the window boundary with the lowest before/after cosine (below ``change_cosine``), or None.

    ``emb``: (W, D) unit embeddings of consecutive windows; ``context``: windows compared on each side."""
    best, best_i = change_cosine, None
    for i in range(context, emb.shape[0] - context + 1):
        a, b = emb[i - context:i].mean(0), emb[i:i + context].mean(0)
        cos = float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
        if cos < best:
            best, best_i = cos, i
    return best_i


def find_turns(audio: np.ndarray, sample_rate: int, probe: TurnProbe[P],
               params: TurnParams | None = None) -> list[Turn]:
    """The turns of one voiced stretch, in order, covering it (one turn when nothing changes)."""
    p = params or TurnParams()
    n = int(audio.size)
    cuts = choose_cuts(pause_runs(audio, sample_rate, p), n, int(p.min_piece_s * sample_rate))
    bounds = [0, *cuts, n]
    turns: list[Turn] = []
    if len(bounds) > 2:
        group: list[P] = []
        start = 0
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            v = probe.voice(audio[a:b])
            if group and not probe.same(group, v):
                turns.append(Turn(start, a))
                group, start = [], a
            group.append(v)
        turns.append(Turn(start, n))
    else:
        turns = [Turn(0, n)]
    if probe.windows is None:
        return turns
    turns = [t for turn in turns for t in _split_without_pause(audio, sample_rate, turn, probe, p)]
    return _join_same(audio, turns, probe) if len(turns) > 1 else turns


def _join_same(audio: np.ndarray, turns: list[Turn], probe: TurnProbe[P]) -> list[Turn]:
    """Join neighbours that the two stages cut apart but that are one voice (a pause cut inside a turn that
    began over someone else's, whose first group mixed two voices)."""
    out = [turns[0]]
    prev_voice = probe.voice(audio[turns[0].start:turns[0].end])  # each span's print measured once
    for t in turns[1:]:
        prev, voice = out[-1], probe.voice(audio[t.start:t.end])
        if probe.same([prev_voice], voice):
            out[-1] = Turn(prev.start, t.end, prev.overlap or t.overlap)
            prev_voice = probe.voice(audio[prev.start:t.end])
        else:
            out.append(t)
            prev_voice = voice
    return out


def _split_without_pause(audio: np.ndarray, sr: int, turn: Turn, probe: TurnProbe[P], p: TurnParams) -> list[Turn]:
    """Cut ``turn`` where the voice changes without a pause (recursively, so three voices give three)."""
    context = max(1, int(round(p.context_s / p.hop_s)))
    win, hop = int(p.window_s * sr), int(p.hop_s * sr)
    if turn.end - turn.start < 2 * p.context_s * sr or probe.windows is None:
        return [turn]
    emb = probe.windows(audio[turn.start:turn.end], win, hop)
    i = sliding_change(emb, context, p.change_cosine) if emb.shape[0] >= 2 * context else None
    if i is None:
        return [turn]
    # window i starts at i * hop; windows before it end by i * hop + win: the change lies between
    cut = turn.start + i * hop + (win - hop) // 2
    if probe.same([probe.voice(audio[turn.start:cut])], probe.voice(audio[cut:turn.end])):
        return [turn]
    left, right = Turn(turn.start, cut, True), Turn(cut, turn.end, True)
    return [*_split_without_pause(audio, sr, left, probe, p), *_split_without_pause(audio, sr, right, probe, p)]
