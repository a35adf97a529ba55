"""Evaluation metrics for emotion recognition (ERC) and emotion-shift detection, as plain JSON-able dicts.

All values are fractions in [0, 1] (the tables print them as percentages).

* ERC: accuracy, weighted F1 (sklearn's, as the paper), per-class F1, confusion matrix.
* The paper's shift metrics: accuracy and weighted F1 over the C*C transition labels
  ``C*prev + cur`` of every consecutive same-speaker pair (spec 2.2, 4.3).
* Binary shift detection (not in the paper): a pair is a shift when the speaker's previous and current
  GOLD emotions differ; the predicted shift probability is 1 - sum of the diagonal (prev == cur) of the
  transition distribution; a pair is predicted a shift when that probability is >= the operating threshold
  (0.5, or the one chosen on validation data and stored in the checkpoint: :func:`choose_shift_threshold`).
  Reported next to the trivial always-shift predictor, which every real detector must beat (shifts are
  about half the pairs).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def erc_metrics(y_true: Any, y_pred: Any, label_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, weighted F1, per-class F1 and the confusion matrix (rows = gold) over labelled utterances."""
    y_true, y_pred = _np(y_true).astype(int), _np(y_pred).astype(int)
    keep = y_true >= 0
    y_true, y_pred = y_true[keep], y_pred[keep]
    c = len(label_names)
    if y_true.size == 0:
        return {"n_utterances": 0, "accuracy": float("nan"), "weighted_f1": float("nan"),
                "per_class_f1": {n: float("nan") for n in label_names}, "confusion": [[0] * c for _ in range(c)]}
    per = f1_score(y_true, y_pred, labels=list(range(c)), average=None, zero_division=0)
    return {
        "n_utterances": int(y_true.size),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "per_class_f1": {n: float(f) for n, f in zip(label_names, per, strict=True)},
        "confusion": confusion_matrix(y_true, y_pred, labels=list(range(c))).tolist(),
    }


def binary_shift_metrics(is_shift: Any, p_shift: Any, threshold: float = 0.5) -> dict[str, Any]:
    """Precision/recall/F1 (positive = shift), balanced accuracy and AUROC of a shift probability."""
    y = _np(is_shift).astype(int)
    p = _np(p_shift).astype(float)
    n = int(y.size)
    if n == 0:
        nan = float("nan")
        return {"n_pairs": 0, "threshold": float(threshold), "shift_rate": nan, "precision": nan, "recall": nan, "f1": nan,
                "balanced_accuracy": nan, "auroc": nan}
    pred = (p >= threshold).astype(int)
    prec, rec, f1, _ = precision_recall_fscore_support(y, pred, labels=[1], average=None, zero_division=0)
    both = 0 < y.sum() < n
    return {
        "n_pairs": n,
        "threshold": float(threshold),
        "shift_rate": float(y.mean()),
        "precision": float(prec[0]),
        "recall": float(rec[0]),
        "f1": float(f1[0]),
        # Undefined with a single gold class; NaN rather than a misleading number.
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if both else float("nan"),
        "auroc": float(roc_auc_score(y, p)) if both else float("nan"),
    }


def always_shift_baseline(is_shift: Any) -> dict[str, Any]:
    """The trivial detector that calls every pair a shift (constant score, so AUROC 0.5)."""
    y = _np(is_shift).astype(int)
    out = binary_shift_metrics(y, np.ones(y.size))
    if y.size and 0 < y.sum() < y.size:
        out["auroc"] = 0.5
    return out


def shift_probability(shift_prob: Any, n_classes: int) -> np.ndarray:
    """Binary shift probability of each pair: 1 - the (prev == cur) diagonal of its transition distribution."""
    prob = _np(shift_prob).astype(np.float64).reshape(-1, n_classes * n_classes)
    diag = [k * n_classes + k for k in range(n_classes)]
    return np.clip(1.0 - prob[:, diag].sum(1), 0.0, 1.0)


def choose_shift_threshold(shift_true: Any, shift_prob: Any, n_classes: int) -> float:
    """The operating threshold with the best binary shift F1 on these (validation) pairs; 0.5 without pairs.

    Candidates are the pairs' own probabilities (every distinct decision), so the choice is exact.
    """
    y = _np(shift_true).astype(int)
    if y.size == 0:
        return 0.5
    is_shift = ((y // n_classes) != (y % n_classes)).astype(int)
    p = shift_probability(shift_prob, n_classes)
    order = np.argsort(-p, kind="stable")
    tp = np.cumsum(is_shift[order])  # predicted positives = the top k pairs
    k = np.arange(1, y.size + 1)
    f1 = 2 * tp / (k + is_shift.sum())
    last = np.r_[p[order][1:] != p[order][:-1], True]  # thresholds fall between distinct probabilities
    best = int(np.argmax(np.where(last, f1, -1.0)))
    return float(p[order][best])


def shift_metrics(shift_true: Any, shift_prob: Any, n_classes: int, threshold: float = 0.5) -> dict[str, Any]:
    """The paper's transition metrics plus binary shift detection.

    ``shift_true``: (P,) gold transition labels C*prev + cur. ``shift_prob``: (P, C*C) probabilities (or
    log-probabilities: detected by negative values and exponentiated).
    """
    y = _np(shift_true).astype(int)
    prob = _np(shift_prob).astype(np.float64)
    c = n_classes
    if prob.ndim != 2 or prob.shape[1] != c * c or prob.shape[0] != y.size:
        raise ValueError(f"shift_prob must be ({y.size}, {c * c}), got {prob.shape}")
    if prob.size and prob.min() < 0:  # log-probabilities
        prob = np.exp(prob)
    if y.size == 0:
        nan = float("nan")
        out: dict[str, Any] = {"n_pairs": 0, "shift_accuracy": nan, "shift_f1": nan}
    else:
        pred = prob.argmax(1)
        out = {
            "n_pairs": int(y.size),
            "shift_accuracy": float(accuracy_score(y, pred)),
            "shift_f1": float(f1_score(y, pred, average="weighted", zero_division=0)),
        }
    p_shift = shift_probability(prob, c) if y.size else np.zeros(0)
    is_shift = (y // c) != (y % c)
    binary = binary_shift_metrics(is_shift, p_shift, threshold)
    binary["baseline_always_shift"] = always_shift_baseline(is_shift)
    out["binary_shift"] = binary
    return out


def evaluate_predictions(
    labels: Any, emotion_prob: Any, shift_labels: Any, shift_prob: Any, label_names: Sequence[str],
    shift_threshold: float = 0.5,
) -> dict[str, Any]:
    """Everything ``pcgnet evaluate --json`` prints, from gold labels and model distributions."""
    ep = _np(emotion_prob)
    out = erc_metrics(labels, ep.argmax(1) if ep.size else np.zeros(0, dtype=int), label_names)
    out.update(shift_metrics(shift_labels, shift_prob, len(label_names), shift_threshold))
    return out


# ------------------------------------------------------------------------------------------- aggregation
def _leaves(d: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], float]:
    out: dict[tuple[str, ...], float] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_leaves(v, prefix + (k,)))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[prefix + (k,)] = float(v)
    return out


def _nest(flat: Mapping[tuple[str, ...], float]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path, v in flat.items():
        node = root
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = v
    return root


def aggregate(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; 0 for one run) of every numeric metric across seeds."""
    if not results:
        raise ValueError("aggregate needs at least one result")
    flats = [_leaves(r) for r in results]
    keys = [k for k in flats[0] if all(k in f for f in flats)]
    mean, std = {}, {}
    for k in keys:
        vals = np.asarray([f[k] for f in flats], dtype=np.float64)
        mean[k] = float(vals.mean())
        std[k] = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
        if math.isnan(mean[k]):
            std[k] = float("nan")
    return {"n_runs": len(results), "mean": _nest(mean), "std": _nest(std)}
