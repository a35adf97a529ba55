"""The context-free baseline of docs/results.md: logistic regression on each utterance's features alone.

Why it exists: it is the yardstick for "context pays": the same features, no dialogue context, no
speakers, no persona. Its shift distribution for a same-speaker pair is the outer product of the two
utterances' independent emotion distributions, so its shift numbers use the same definitions as PCGNet's
(binary threshold chosen on the validation split, as ``pcgnet train`` does).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pcgnet.cli import UsageError
from pcgnet.data import Dialogue, DialogueDataset
from pcgnet.metrics import evaluate_predictions
from pcgnet.shift import ShiftRule, choose_rule

C_GRID = (0.1, 1.0, 10.0)


@dataclass
class BaselineResult:
    c: float  # the inverse regularisation strength chosen on the validation split
    test: dict[str, Any] | None
    valid: dict[str, Any]
    shift_rule: ShiftRule
    seconds: float


def _xy(dialogues: list[Dialogue], modalities: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Each utterance's features (modalities side by side) and labels."""
    return (np.concatenate([np.concatenate([d.features[m] for m in modalities], axis=1) for d in dialogues]),
            np.concatenate([d.labels for d in dialogues]))


def _pairs(dialogues: list[Dialogue]) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (previous, current) of every consecutive same-speaker pair."""
    prev, cur, off = [], [], 0
    for d in dialogues:
        last: dict[int, int] = {}
        for i, s in enumerate(d.speakers.tolist()):
            if s in last:
                prev.append(off + last[s])
                cur.append(off + i)
            last[s] = i
        off += len(d)
    return np.array(prev, dtype=int), np.array(cur, dtype=int)


def _predictions(clf, dialogues: list[Dialogue], modalities: tuple[str, ...], c: int):
    x, y = _xy(dialogues, modalities)
    p = np.zeros((len(x), c))
    p[:, clf.classes_] = clf.predict_proba(x)  # a class absent from train keeps probability 0
    prev, cur = _pairs(dialogues)
    shift_p = np.einsum("pi,pj->pij", p[prev], p[cur]).reshape(len(prev), -1)
    return y, p, prev, cur, shift_p


def context_free(ds: DialogueDataset, seed: int = 0) -> BaselineResult:
    """Fit on train (C chosen on the validation split), score validation and test."""
    from sklearn.linear_model import LogisticRegression

    if not ds.valid:
        raise UsageError("--context_free selects C on a validation split; the data has none (--valid_rate > 0)")
    modalities = ds.modalities
    t0 = time.perf_counter()
    x, y = _xy(ds.train, modalities)
    keep = y >= 0
    c = ds.n_classes
    best = None
    for cc in C_GRID:
        clf = LogisticRegression(C=cc, max_iter=3000, random_state=seed).fit(x[keep], y[keep])
        pred = _predictions(clf, ds.valid, modalities, c)
        m = evaluate_predictions(*pred, ds.labels)
        if best is None or m["weighted_f1"] > best[0]["weighted_f1"]:
            best = (m, clf, cc, pred)
    _, clf, cc, pred = best
    rule = choose_rule(*pred, selected_on="valid")
    valid = evaluate_predictions(*pred, ds.labels, rule)  # the chosen C's validation predictions, re-used
    test = evaluate_predictions(*_predictions(clf, ds.test, modalities, c), ds.labels, rule) if ds.test else None
    return BaselineResult(cc, test, valid, rule, round(time.perf_counter() - t0, 1))
