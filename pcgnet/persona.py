"""Online persona: a small estimator from utterance features to the paper's 5-d persona vector.

The paper's per-utterance persona comes from an apparent-personality model (DeepPersonality, audio-visual)
that does not exist at run time here. The vectors are nearly one-dimensional and mostly per-utterance noise
(spec 1.4), so a ridge regression from the utterance's text features recovers what is predictable of them.
Live, the raw estimate is smoothed per speaker with an exponential moving average so a speaker's persona
is a slowly varying trait estimate rather than one utterance's guess:

    p_1 = x_1,    p_k = (1 - alpha) * p_{k-1} + alpha * x_k      (k-th utterance of that speaker)

Training data made with ``estimate_dialogue`` applies exactly the same recursion, so a model trained on
estimated persona sees the same inputs live. The estimator is stored as JSON (inside a checkpoint's
``config.json`` under ``"persona": {"source": "estimated", "estimator": {...}}``), never pickled.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PERSONA_DIM = 5
FORMAT = "pcgnet-persona-ridge"


class PersonaError(ValueError):
    """An estimator description or input that cannot be used."""


@dataclass
class PersonaEstimator:
    """Ridge regression ``persona = x @ weight + bias`` plus the per-speaker EMA factor used online.

    Parameters:
        weight: (D, 5) float32.
        bias: (5,) float32.
        alpha: EMA factor in (0, 1]; 1 = no smoothing.
        extractor: name of the feature extractor the estimator was fit on (features of another are meaningless).
        ridge: the L2 penalty it was fit with; ``fit_stats``: R^2 etc. recorded at fit time.
    """

    weight: np.ndarray
    bias: np.ndarray
    alpha: float = 0.5
    extractor: str = ""
    ridge: float = 1.0
    fit_stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.weight = np.asarray(self.weight, dtype=np.float32)
        self.bias = np.asarray(self.bias, dtype=np.float32).reshape(-1)
        if self.weight.ndim != 2 or self.weight.shape[1] != PERSONA_DIM or self.bias.shape != (PERSONA_DIM,):
            raise PersonaError(f"persona estimator: weight {self.weight.shape} / bias {self.bias.shape}, "
                               f"expected (D, {PERSONA_DIM}) / ({PERSONA_DIM},)")
        if not (0.0 < self.alpha <= 1.0):
            raise PersonaError(f"persona estimator: alpha {self.alpha} outside (0, 1]")
        if not (np.isfinite(self.weight).all() and np.isfinite(self.bias).all()):
            raise PersonaError("persona estimator: non-finite weights")

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Raw (unsmoothed) per-utterance estimates: (D,) -> (5,), (n, D) -> (n, 5)."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape[-1] != self.dim:
            raise PersonaError(f"persona estimator expects {self.dim}-d features, got {x.shape[-1]}-d")
        return (x @ self.weight + self.bias).astype(np.float32)

    def estimate_dialogue(self, x: np.ndarray, speakers: Sequence[Hashable]) -> np.ndarray:
        """Smoothed persona for each utterance of one dialogue, causally (what live produces)."""
        tracker = PersonaTracker(self)
        return np.stack([tracker.update(s, row) for s, row in zip(speakers, x, strict=True)])

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": 1, "extractor": self.extractor, "dim": self.dim,
                "alpha": self.alpha, "ridge": self.ridge, "bias": self.bias.tolist(),
                "weight": self.weight.tolist(), "fit_stats": self.fit_stats}

    @classmethod
    def from_json(cls, d: Any) -> PersonaEstimator:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise PersonaError(f"persona estimator: expected a JSON object with format {FORMAT!r}")
        try:
            return cls(np.asarray(d["weight"], dtype=np.float32), np.asarray(d["bias"], dtype=np.float32),
                       float(d.get("alpha", 1.0)), str(d.get("extractor", "")), float(d.get("ridge", 0.0)),
                       dict(d.get("fit_stats") or {}))
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, PersonaError):
                raise
            raise PersonaError(f"persona estimator: malformed ({type(e).__name__}: {e})") from None


class PersonaTracker:
    """Per-conversation, per-speaker EMA of the estimator's outputs (bounded: one vector per speaker)."""

    def __init__(self, estimator: PersonaEstimator):
        self.estimator = estimator
        self._ema: dict[Hashable, np.ndarray] = {}

    def update(self, speaker: Hashable, features: np.ndarray) -> np.ndarray:
        """Fold this utterance into ``speaker``'s estimate and return the smoothed 5-d persona."""
        raw = self.estimator.predict(np.asarray(features, dtype=np.float32).reshape(-1))
        prev = self._ema.get(speaker)
        a = self.estimator.alpha
        cur = raw if prev is None else ((1.0 - a) * prev + a * raw).astype(np.float32)
        self._ema[speaker] = cur
        return cur.copy()

    def forget(self, speaker: Hashable) -> None:
        self._ema.pop(speaker, None)


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    """Coefficient of determination pooled over the 5 dims (1 - SSE / SST around the per-dim mean of y)."""
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    sst = float(((y - y.mean(0)) ** 2).sum())
    return 1.0 - float(((y - pred) ** 2).sum()) / sst if sst > 0 else math.nan


def fit_ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge with an unpenalised intercept (features centred)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.shape != (x.shape[0], PERSONA_DIM) or x.shape[0] < 2:
        raise PersonaError(f"fit: features {x.shape} and targets {y.shape} do not match (n, D) / (n, 5)")
    mx, my = x.mean(0), y.mean(0)
    xc = x - mx
    w = np.linalg.solve(xc.T @ xc + ridge * np.eye(x.shape[1]), xc.T @ (y - my))
    return w.astype(np.float32), (my - mx @ w).astype(np.float32)


@dataclass
class DialogueData:
    """What the estimator needs of one dialogue: features (n, D), speakers (n,), given persona (n, 5)."""

    features: np.ndarray
    speakers: Sequence[Hashable]
    persona: np.ndarray


def _stack(dialogues: Sequence[DialogueData]) -> tuple[np.ndarray, np.ndarray]:
    return (np.concatenate([d.features for d in dialogues]), np.concatenate([d.persona for d in dialogues]))


def evaluate(est: PersonaEstimator, dialogues: Sequence[DialogueData]) -> dict[str, float]:
    """R^2 of the raw and of the smoothed (live) estimates against the given persona."""
    x, y = _stack(dialogues)
    smooth = np.concatenate([est.estimate_dialogue(d.features, d.speakers) for d in dialogues])
    return {"r2_raw": r2_score(y, est.predict(x)), "r2_smoothed": r2_score(y, smooth), "n": int(len(y))}


def fit(
    train: Sequence[DialogueData], valid: Sequence[DialogueData], extractor: str = "",
    ridges: Sequence[float] = (0.1, 1.0, 10.0, 100.0), alpha: float = 0.5,
) -> PersonaEstimator:
    """Fit on ``train``, picking the ridge penalty by R^2 on ``valid``.

    ``alpha`` (the live EMA factor) is not chosen by R^2: the given persona is per utterance and mostly
    content-driven, so any smoothing lowers R^2 against it, yet the raw estimate is only a linear function of
    the text features the model already sees. The smoothed estimate adds what the text of one utterance
    cannot: a running summary of how this speaker has come across so far.
    """
    if not train or not valid:
        raise PersonaError("fit needs training and validation dialogues")
    x, y = _stack(train)
    xv, yv = _stack(valid)
    fits = {r: fit_ridge(x, y, r) for r in ridges}
    best = max(ridges, key=lambda r: r2_score(yv, xv @ fits[r][0] + fits[r][1]))
    est = PersonaEstimator(*fits[best], alpha=alpha, extractor=extractor, ridge=best)
    est.fit_stats = {"train": evaluate(est, train), "valid": evaluate(est, valid)}
    return est
