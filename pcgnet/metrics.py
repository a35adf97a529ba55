"""Evaluation metrics for emotion recognition (ERC) and emotion-shift detection, as plain JSON-able dicts.

All values are fractions in [0, 1] (the tables print them as percentages).

* ERC: accuracy, weighted F1 (sklearn's, as the paper), per-class F1, confusion matrix.
* The paper's shift metrics: accuracy and weighted F1 over the C*C transition labels
  ``C*prev + cur`` of every consecutive same-speaker pair (spec 2.2, 4.3).
* Binary shift detection (not in the paper) under the one shift rule (:mod:`pcgnet.shift`, what the live
  events do): a pair is a gold shift when the speaker's previous and current GOLD emotions differ, and a
  predicted shift when the rule's reported expression changed; AUROC is of the rule's probability. Reported
  per operating profile, next to the trivial always-shift predictor, which every real detector must beat
  (shifts are about half the pairs), with the W-F1 of the reported expressions.
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

from pcgnet.shift import UNTUNED, ShiftRule, decide_dialogues


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


def binary_shift_metrics(is_shift: Any, predicted: Any, p_shift: Any) -> dict[str, Any]:
    """Precision/recall/F1 (positive = shift) of ``predicted``, balanced accuracy, and AUROC of ``p_shift``."""
    y = _np(is_shift).astype(int)
    pred = _np(predicted).astype(int)
    p = _np(p_shift).astype(float)
    n = int(y.size)
    if n == 0:
        nan = float("nan")
        return {"n_pairs": 0, "shift_rate": nan, "predicted_rate": nan, "precision": nan, "recall": nan, "f1": nan,
                "balanced_accuracy": nan, "auroc": nan}
    prec, rec, f1, _ = precision_recall_fscore_support(y, pred, labels=[1], average=None, zero_division=0)
    both = 0 < y.sum() < n
    return {
        "n_pairs": n,
        "shift_rate": float(y.mean()),
        "predicted_rate": float(pred.mean()),
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
    out = binary_shift_metrics(y, np.ones(y.size), np.ones(y.size))
    if y.size and 0 < y.sum() < y.size:
        out["auroc"] = 0.5
    return out


def shift_metrics(shift_true: Any, shift_prob: Any, n_classes: int) -> dict[str, Any]:
    """The paper's transition metrics: accuracy and weighted F1 of the argmax over the C*C transitions.

    ``shift_true``: (P,) gold transition labels C*prev + cur (-1: unlabelled, skipped). ``shift_prob``:
    (P, C*C) probabilities (or log-probabilities: detected by negative values and exponentiated).
    """
    y = _np(shift_true).astype(int)
    prob = _np(shift_prob).astype(np.float64)
    c = n_classes
    if prob.ndim != 2 or prob.shape[1] != c * c or prob.shape[0] != y.size:
        raise ValueError(f"shift_prob must be ({y.size}, {c * c}), got {prob.shape}")
    keep = y >= 0
    if not keep.any():
        nan = float("nan")
        return {"n_pairs": 0, "shift_accuracy": nan, "shift_f1": nan}
    pred = prob[keep].argmax(1)
    return {
        "n_pairs": int(keep.sum()),
        "shift_accuracy": float(accuracy_score(y[keep], pred)),
        "shift_f1": float(f1_score(y[keep], pred, average="weighted", zero_division=0)),
    }


def rule_metrics(labels: Any, emotion_prob: Any, pair_prev: Any, pair_cur: Any, shift_prob: Any,
                 rule: ShiftRule, profile: str | None = None) -> dict[str, Any]:
    """What the events say under the shift rule (pcgnet.shift) at one profile: binary shift P/R/F1 on the
    labelled pairs (gold: the speaker's previous and current gold emotions differ; predicted: the reported
    expression changed), AUROC of the rule's probability, and the W-F1 / accuracy of the reported expressions."""
    y = _np(labels).astype(int)
    prev, cur = _np(pair_prev).astype(int), _np(pair_cur).astype(int)
    name = profile or rule.default_profile
    threshold = rule.threshold(name)
    d = decide_dialogues(_np(emotion_prob), prev, cur, _np(shift_prob), rule.weight, threshold, rule.mix)
    keep = (y[prev] >= 0) & (y[cur] >= 0) if prev.size else np.zeros(0, dtype=bool)
    gold = (y[prev] != y[cur])[keep] if prev.size else np.zeros(0, dtype=bool)
    out = {"rule": rule.name, "weight": rule.weight, "mix": rule.mix, "profile": name, "threshold": threshold}
    out.update(binary_shift_metrics(gold, d.shift[keep], d.probability[keep]))
    lab = y >= 0
    out["reported_accuracy"] = float(accuracy_score(y[lab], d.reported[lab])) if lab.any() else float("nan")
    out["reported_weighted_f1"] = (float(f1_score(y[lab], d.reported[lab], average="weighted", zero_division=0))
                                   if lab.any() else float("nan"))
    out["baseline_always_shift"] = always_shift_baseline(gold)
    return out


def evaluate_predictions(
    labels: Any, emotion_prob: Any, pair_prev: Any, pair_cur: Any, shift_prob: Any, label_names: Sequence[str],
    rule: ShiftRule | None = None, profile: str | None = None,
) -> dict[str, Any]:
    """Everything ``pcgnet evaluate --json`` prints, from gold labels and model distributions.

    ``pair_prev`` / ``pair_cur``: (P,) flat indices of every same-speaker pair (previous < current, in
    conversation order); ``shift_prob``: (P, C*C) the shift head's transitions of those pairs. Top-level
    ERC metrics are the emotion head's (argmax; the model's quality, what epochs are selected on);
    ``binary_shift`` is the shift rule's at ``profile`` and ``profiles`` every profile's summary.
    Without a rule: :data:`pcgnet.shift.UNTUNED`.
    """
    rule = rule or UNTUNED
    ep = _np(emotion_prob)
    y = _np(labels).astype(int)
    prev, cur = _np(pair_prev).astype(int), _np(pair_cur).astype(int)
    c = len(label_names)
    out = erc_metrics(y, ep.argmax(1) if ep.size else np.zeros(0, dtype=int), label_names)
    shift_true = np.where((y[prev] >= 0) & (y[cur] >= 0), c * y[prev] + y[cur], -1) if prev.size else np.zeros(0)
    out.update(shift_metrics(shift_true, _np(shift_prob).reshape(-1, c * c), c))
    out["binary_shift"] = rule_metrics(y, ep, prev, cur, shift_prob, rule, profile)
    out["profiles"] = {}
    for name in rule.thresholds:
        m = out["binary_shift"] if name == out["binary_shift"]["profile"] else rule_metrics(
            y, ep, prev, cur, shift_prob, rule, name)
        out["profiles"][name] = {k: m[k] for k in ("threshold", "precision", "recall", "f1", "auroc",
                                                    "reported_weighted_f1")}
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
