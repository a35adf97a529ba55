"""The one emotion-shift rule: training picks its parameters, ``pcgnet evaluate`` scores it, the live analyzer
runs it. Pure functions over numpy arrays; nothing else in the code decides what a shift is.

Why one joint rule: a shift event names ``from`` and ``to``, and the emotion event of the same utterance
names an expression. If the two heads decided separately (the shift head "a shift", the emotion head "the
same expression as before"), the events would contradict each other. So a speaker's later turn is decided
once, from both heads (``rule "joint-v1"``):

* ``row`` = the transition head's distribution of this turn's emotion given the speaker's previous
  *reported* expression ``prev`` (row ``prev`` of the C x C transition matrix, renormalised);
* ``q`` proportional to ``e ** w * row ** (1 - w)``: a log-linear pool of the emotion head's distribution
  ``e`` and that row (``w`` = the emotion head's weight, chosen on dev);
* ``p = (1 - m) * (1 - q[prev]) + m * (1 - trace(T))``: the probability that the speaker left ``prev`` (the
  ``probability`` on the wire), a mix of the pooled distribution's and the shift head's own binary estimate
  (``1 - trace(T)``: all "same emotion" transitions; ``m`` chosen on dev);
* shift when ``p >= threshold``: the reported expression is then the most likely *other* expression under
  ``q``; otherwise the reported expression stays ``prev`` and there is no shift event.

A speaker's first turn reports the emotion head's top class and is never a shift. Hence by construction a
shift event exists exactly when this turn's reported expression differs from the previous one, with
``from`` = the previous reported expression and ``to`` = this turn's.

Operating points (profiles): one threshold per name (``sensitive`` / ``balanced`` / ``precise``), chosen on
the selection split by :func:`choose_profiles` and stored in the checkpoint (``pcgnet.checkpoint``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

RULE_NAME = "joint-v1"
PROFILES = ("sensitive", "balanced", "precise")
DEFAULT_PROFILE = "balanced"
SENSITIVE_RECALL = 0.90  # sensitive: the highest threshold that keeps >= 90% of the selection split's shifts
PRECISE_PRECISION = 0.75  # precise: the most recall among thresholds with >= 75% precision (if reachable)
THRESHOLD_GRID = np.round(np.arange(0.005, 1.0, 0.005), 3)
WEIGHT_GRID = (0.0, 0.5, 1.0)
MIX_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
_EPS = 1e-12


class ShiftRuleError(ValueError):
    """A shift rule description is malformed; the message names the field."""


@dataclass(frozen=True)
class ShiftRule:
    """The rule's parameters: the emotion head's weight in the pool and one threshold per profile.

    Parameters:
        weight: ``w`` in ``q ~ e**w * row**(1-w)`` (1: the emotion head alone, 0: the transition row alone).
        mix: ``m``, the shift head's binary estimate's share of ``p``.
        thresholds: profile name -> threshold on ``p`` (in [0, 1]).
        default_profile: the profile used when none is asked for.
        selected_on: the split the parameters were chosen on (provenance, e.g. ``"valid"``).
    """

    weight: float
    thresholds: Mapping[str, float]
    mix: float = 0.0
    default_profile: str = DEFAULT_PROFILE
    selected_on: str = "valid"
    name: str = field(default=RULE_NAME)

    def __post_init__(self) -> None:
        for k, v in (("weight", self.weight), ("mix", self.mix)):
            if not 0.0 <= v <= 1.0:
                raise ShiftRuleError(f"shift rule: {k} {v!r} is not in [0, 1]")
        if not self.thresholds:
            raise ShiftRuleError("shift rule: no thresholds")
        for k, t in self.thresholds.items():
            if not 0.0 <= t <= 1.0:
                raise ShiftRuleError(f"shift rule: threshold of profile {k!r} ({t!r}) is not in [0, 1]")
        if self.default_profile not in self.thresholds:
            raise ShiftRuleError(f"shift rule: default profile {self.default_profile!r} has no threshold")

    def threshold(self, profile: str | None = None) -> float:
        """The threshold of ``profile`` (the default profile when None); KeyError-free: a one-line error."""
        name = profile or self.default_profile
        if name not in self.thresholds:
            raise ShiftRuleError(f"unknown shift profile {name!r} (this checkpoint has: {', '.join(self.thresholds)})")
        return float(self.thresholds[name])

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.name, "weight": self.weight, "mix": self.mix, "default_profile": self.default_profile,
                "profiles": {k: {"threshold": float(t)} for k, t in self.thresholds.items()},
                "selected_on": self.selected_on}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ShiftRule:
        """Parse ``config.json``'s ``"shift"`` object (ShiftRuleError naming the field when malformed)."""
        if d.get("rule") != RULE_NAME:
            raise ShiftRuleError(f"shift rule {d.get('rule')!r} is not supported (this version runs {RULE_NAME!r})")
        profiles = d.get("profiles")
        if not isinstance(profiles, Mapping) or not profiles:
            raise ShiftRuleError("shift rule: 'profiles' must be a non-empty object")
        thresholds: dict[str, float] = {}
        for k, v in profiles.items():
            t = v.get("threshold") if isinstance(v, Mapping) else None
            if isinstance(t, bool) or not isinstance(t, (int, float)):
                raise ShiftRuleError(f"shift rule: profile {k!r} has no numeric 'threshold'")
            thresholds[str(k)] = float(t)
        w, m = d.get("weight"), d.get("mix", 0.0)
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in (w, m)):
            raise ShiftRuleError("shift rule: 'weight' and 'mix' must be numbers")
        return cls(weight=float(w), mix=float(m), thresholds=thresholds,
                   default_profile=str(d.get("default_profile", DEFAULT_PROFILE)),
                   selected_on=str(d.get("selected_on", "valid")))


@dataclass(frozen=True)
class Decision:
    """One turn's outcome: the reported expression (class index), whether it is a shift, and ``p``."""

    expression: int
    shift: bool
    probability: float | None  # None on a speaker's first turn


def pooled(emotion: np.ndarray, row: np.ndarray | None, weight: float) -> np.ndarray:
    """``q ~ emotion**weight * row**(1-weight)``, normalised; the emotion distribution alone without a row."""
    e = np.asarray(emotion, dtype=np.float64)
    if row is None:
        return e / max(float(e.sum()), _EPS)
    r = np.asarray(row, dtype=np.float64)
    r = r / max(float(r.sum()), _EPS)
    logq = weight * np.log(np.maximum(e, _EPS)) + (1.0 - weight) * np.log(np.maximum(r, _EPS))
    q = np.exp(logq - logq.max(axis=-1, keepdims=True))
    return q / q.sum(axis=-1, keepdims=True)


def decide(emotion: np.ndarray, transitions: np.ndarray | None, prev: int | None, weight: float,
           threshold: float, mix: float = 0.0) -> Decision:
    """The rule for one turn: ``prev`` = the speaker's previous reported expression (None: first turn);
    ``transitions`` = the shift head's (C*C,) distribution over (previous, current), or None when the model
    has no pair for this turn (then the emotion distribution alone is compared with ``prev``, and ``p`` is
    ``1 - e[prev]``)."""
    e = np.asarray(emotion, dtype=np.float64)
    if prev is None:
        return Decision(int(e.argmax()), False, None)
    c = e.size
    t = None if transitions is None else np.asarray(transitions, dtype=np.float64).reshape(c, c)
    q = pooled(e, None if t is None else t[prev], weight)
    p = 1.0 - q[prev] if t is None else (1.0 - mix) * (1.0 - q[prev]) + mix * (1.0 - float(np.trace(t)))
    p = float(np.clip(p, 0.0, 1.0))
    if p < threshold:
        return Decision(prev, False, p)
    other = q.copy()
    other[prev] = -1.0
    return Decision(int(other.argmax()), True, p)


@dataclass(frozen=True)
class DialogueDecisions:
    """The rule over whole dialogues (what evaluation scores): per utterance and per same-speaker pair."""

    reported: np.ndarray  # (N,) reported expression of every utterance
    probability: np.ndarray  # (P,) p of every pair
    shift: np.ndarray  # (P,) bool: reported[cur] != reported[prev]


def _pooled_rows(emotion: np.ndarray, pair_cur: np.ndarray, transitions: np.ndarray, weight: float) -> np.ndarray:
    """(P, C, C): q for every pair and every possible previous expression (so the scan is only lookups)."""
    c = emotion.shape[1]
    t = np.asarray(transitions, dtype=np.float64).reshape(-1, c, c)
    rows = t / np.maximum(t.sum(-1, keepdims=True), _EPS)
    logq = (weight * np.log(np.maximum(emotion[pair_cur], _EPS))[:, None, :]
            + (1.0 - weight) * np.log(np.maximum(rows, _EPS)))
    q = np.exp(logq - logq.max(-1, keepdims=True))
    return q / q.sum(-1, keepdims=True)


def decide_dialogues(emotion: Any, pair_prev: Any, pair_cur: Any, transitions: Any, weight: float,
                     threshold: float, mix: float = 0.0, *, _q: np.ndarray | None = None) -> DialogueDecisions:
    """:func:`decide` over utterances in conversation order: ``emotion`` (N, C); pairs (P,) flat indices of
    each speaker's previous and current utterance (previous < current); ``transitions`` (P, C*C)."""
    e = np.asarray(emotion, dtype=np.float64)
    prev_i = np.asarray(pair_prev, dtype=np.int64)
    cur_i = np.asarray(pair_cur, dtype=np.int64)
    reported = e.argmax(1) if e.size else np.zeros(0, dtype=np.int64)
    n_pairs = cur_i.size
    p = np.zeros(n_pairs)
    shift = np.zeros(n_pairs, dtype=bool)
    if n_pairs == 0:
        return DialogueDecisions(reported, p, shift)
    q = _pooled_rows(e, cur_i, transitions, weight) if _q is None else _q
    masked = q.copy()
    idx = np.arange(e.shape[1])
    masked[:, idx, idx] = -1.0
    alt = masked.argmax(-1)  # (P, C): the most likely other expression after each possible previous one
    stay = np.diagonal(q, axis1=1, axis2=2)  # (P, C)
    c = e.shape[1]
    binary = 1.0 - np.asarray(transitions, dtype=np.float64).reshape(-1, c, c).diagonal(axis1=1, axis2=2).sum(1)
    for j in np.argsort(cur_i, kind="stable"):
        k = int(reported[prev_i[j]])
        p[j] = min(1.0, max(0.0, (1.0 - mix) * (1.0 - stay[j, k]) + mix * binary[j]))
        shift[j] = p[j] >= threshold
        reported[cur_i[j]] = alt[j, k] if shift[j] else k
    return DialogueDecisions(reported, np.clip(p, 0.0, 1.0), shift)


# ------------------------------------------------------------------------------------- choosing parameters
@dataclass(frozen=True)
class OperatingPoint:
    """The rule's binary shift precision / recall / F1 on gold pairs at one threshold (and its W-F1)."""

    threshold: float
    precision: float
    recall: float
    f1: float
    weighted_f1: float


def _prf(gold: np.ndarray, pred: np.ndarray) -> tuple[float, float, float]:
    tp = float(np.sum(gold & pred))
    prec = tp / max(float(pred.sum()), 1.0)
    rec = tp / max(float(gold.sum()), 1.0)
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def operating_points(labels: Any, emotion: Any, pair_prev: Any, pair_cur: Any, transitions: Any, weight: float,
                     mix: float = 0.0, grid: Sequence[float] = tuple(THRESHOLD_GRID)) -> list[OperatingPoint]:
    """Every grid threshold's operating point on labelled data (the scan is re-run per threshold: the
    previous reported expression, hence ``p``, depends on earlier decisions)."""
    from sklearn.metrics import f1_score

    y = np.asarray(labels, dtype=np.int64)
    prev_i, cur_i = np.asarray(pair_prev, dtype=np.int64), np.asarray(pair_cur, dtype=np.int64)
    e = np.asarray(emotion, dtype=np.float64)
    keep = (y[prev_i] >= 0) & (y[cur_i] >= 0)
    gold = (y[prev_i] != y[cur_i])[keep]
    q = _pooled_rows(e, cur_i, transitions, weight) if cur_i.size else None
    lab = y >= 0
    out = []
    for t in grid:
        d = decide_dialogues(e, prev_i, cur_i, transitions, weight, float(t), mix, _q=q)
        prec, rec, f1 = _prf(gold, d.shift[keep])
        wf1 = float(f1_score(y[lab], d.reported[lab], average="weighted", zero_division=0)) if lab.any() else 0.0
        out.append(OperatingPoint(float(t), prec, rec, f1, wf1))
    return out


def choose_profiles(points: Sequence[OperatingPoint]) -> dict[str, float]:
    """Thresholds per profile from one weight's operating points (selection split):

    * balanced: the best binary shift F1;
    * sensitive: the highest threshold whose recall is still >= ``SENSITIVE_RECALL`` (at most balanced's);
    * precise: the most recall among thresholds with precision >= ``PRECISE_PRECISION``; when none reaches
      it, the most precise threshold that still finds >= 10% of the shifts.
    """
    if not points:
        return {p: 0.5 for p in PROFILES}
    balanced = max(points, key=lambda o: (o.f1, -o.threshold))
    sens = [o for o in points if o.recall >= SENSITIVE_RECALL and o.threshold <= balanced.threshold]
    sensitive = max(sens, key=lambda o: o.threshold) if sens else min(points, key=lambda o: o.threshold)
    prec = [o for o in points if o.precision >= PRECISE_PRECISION and o.recall > 0]
    if prec:
        precise = max(prec, key=lambda o: (o.recall, o.threshold))
    else:
        some = [o for o in points if o.recall >= 0.10] or list(points)
        precise = max(some, key=lambda o: (o.precision, o.threshold))
    precise = precise if precise.threshold >= balanced.threshold else balanced
    return {"sensitive": sensitive.threshold, "balanced": balanced.threshold, "precise": precise.threshold}


def choose_rule(labels: Any, emotion: Any, pair_prev: Any, pair_cur: Any, transitions: Any, *,
                selected_on: str = "valid", weights: Sequence[float] = WEIGHT_GRID,
                mixes: Sequence[float] = MIX_GRID) -> ShiftRule:
    """The rule's parameters on the selection split: the (weight, mix) whose balanced operating point has the
    best mean of the reported expressions' W-F1 and binary shift F1 (the two things events report), then
    each profile's threshold."""
    best: tuple[float, float, float, list[OperatingPoint]] | None = None
    for w in weights:
        for m in mixes:
            pts = operating_points(labels, emotion, pair_prev, pair_cur, transitions, w, m)
            bal = max(pts, key=lambda o: (o.f1, -o.threshold))
            score = (bal.f1 + bal.weighted_f1) / 2
            if best is None or score > best[0] + 1e-12:
                best = (score, w, m, pts)
    assert best is not None
    return ShiftRule(weight=best[1], mix=best[2], thresholds=choose_profiles(best[3]), selected_on=selected_on)


UNTUNED = ShiftRule(weight=1.0, thresholds={DEFAULT_PROFILE: 0.5}, selected_on="none")
"""The rule of a checkpoint that stores none (older checkpoints, epochs during training): the emotion head
alone, a shift when the previous expression's probability fell below one half. Evaluation and the live
analyzer both use it, so they agree for such checkpoints too."""
