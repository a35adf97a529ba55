"""Scores of a diarization against the true turns: DER with its parts, speakers found, pair figures.

``found`` is what :func:`extractors.speaker.diarize_recording` returns: ``(start_s, end_s, name, overlap)``.
DER is frame-based (10 ms, no collar), with the one-to-one name mapping that maximises the agreed time
(Hungarian): missed speech + false alarm + wrong speaker, over the true speech time (overlap counts each voice).
Pair accuracy and recall are :class:`tests.voicing.SpeakerScores` over the found utterances, each given the
true speaker it overlaps most.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tests.voicing import Segment, SpeakerScores

STEP = 0.01


@dataclass
class DerParts:
    """Seconds of true speech, missed, falsely detected and given the wrong speaker."""

    speech: float = 0.0
    missed: float = 0.0
    false_alarm: float = 0.0
    confusion: float = 0.0

    def add(self, other: DerParts) -> None:
        self.speech += other.speech
        self.missed += other.missed
        self.false_alarm += other.false_alarm
        self.confusion += other.confusion

    @property
    def der(self) -> float:
        return (self.missed + self.false_alarm + self.confusion) / max(self.speech, 1e-9)


def der_parts(truth: Sequence[Segment], found: Sequence[tuple[float, float, str, bool]]) -> DerParts:
    from scipy.optimize import linear_sum_assignment

    end = max([s.t_end for s in truth] + [f[1] for f in found] + [0.0])
    n = int(np.ceil(end / STEP)) + 1
    true_names = sorted({s.speaker for s in truth})
    found_names = sorted({f[2] for f in found})
    ref = np.zeros((len(true_names), n), bool)
    hyp = np.zeros((len(found_names), n), bool)
    for s in truth:
        ref[true_names.index(s.speaker), int(round(s.t_start / STEP)):int(round(s.t_end / STEP))] = True
    for a, b, name, _ in found:
        hyp[found_names.index(name), int(round(a / STEP)):int(round(b / STEP))] = True
    n_ref, n_hyp = ref.sum(0), np.minimum(hyp.sum(0), 1)  # one voice at a time in the output
    agree = ref.astype(np.int64) @ hyp.T.astype(np.int64)  # (true, found) frames in common
    rows, cols = linear_sum_assignment(-agree) if agree.size else ([], [])
    correct = np.zeros(n, np.int64)
    for r, c in zip(rows, cols, strict=True):
        correct += ref[r] & hyp[c]
    return DerParts(speech=float(n_ref.sum() * STEP), missed=float(np.maximum(n_ref - n_hyp, 0).sum() * STEP),
                    false_alarm=float(np.maximum(n_hyp - n_ref, 0).sum() * STEP),
                    confusion=float((np.minimum(n_ref, n_hyp) - correct).clip(0).sum() * STEP))


def found_truth(truth: Sequence[Segment], found: Sequence[tuple[float, float, str, bool]]) -> list[str]:
    """The true speaker each found utterance overlaps most (the nearest one when it overlaps none)."""
    out = []
    for a, b, _, _ in found:
        cover = [max(0.0, min(b, s.t_end) - max(a, s.t_start)) for s in truth]
        best = int(np.argmax(cover)) if max(cover) > 0 else int(np.argmin([abs(s.t_start - a) for s in truth]))
        out.append(truth[best].speaker)
    return out


def add_pairs(scores: SpeakerScores, truth: Sequence[Segment], found: Sequence[tuple[float, float, str, bool]]) -> None:
    scores.add(found_truth(truth, found), [f[2] for f in found])
