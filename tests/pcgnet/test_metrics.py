"""pcgnet.metrics against sklearn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from pcgnet.metrics import aggregate, always_shift_baseline, binary_shift_metrics, erc_metrics, shift_metrics

LABELS = ("a", "b", "c")


def test_erc_metrics_match_sklearn_and_ignore_unlabelled():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 3, 200))
    y_with_pad = np.concatenate([y, [-1, -1]])
    p_with_pad = np.concatenate([p, [0, 1]])
    m = erc_metrics(y_with_pad, p_with_pad, LABELS)
    assert m["n_utterances"] == 200
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert m["weighted_f1"] == pytest.approx(f1_score(y, p, average="weighted"))
    per = f1_score(y, p, average=None)
    assert [m["per_class_f1"][n] for n in LABELS] == pytest.approx(list(per))
    assert np.asarray(m["confusion"]).sum() == 200 and np.trace(m["confusion"]) == int((y == p).sum())


def test_shift_metrics_hand_case():
    c = 2
    # gold transitions: 0->0, 0->1, 1->0, 1->1  (labels c*prev+cur = 0, 1, 2, 3)
    y = np.array([0, 1, 2, 3])
    prob = np.array([
        [0.7, 0.1, 0.1, 0.1],   # predicts 0 (0->0), p_shift = 1 - (0.7+0.1) = 0.2
        [0.1, 0.6, 0.2, 0.1],   # predicts 1 (0->1), p_shift = 0.8
        [0.4, 0.1, 0.3, 0.2],   # predicts 0 (wrong), p_shift = 0.4 -> predicted no shift (gold shift)
        [0.1, 0.1, 0.1, 0.7],   # predicts 3, p_shift = 0.2
    ])
    m = shift_metrics(y, prob, c)
    assert m["shift_accuracy"] == pytest.approx(0.75)
    assert m["shift_f1"] == pytest.approx(f1_score(y, [0, 1, 0, 3], average="weighted"))
    b = m["binary_shift"]
    # gold shifts: pairs 1, 2; predicted shifts: pair 1 only
    assert b["shift_rate"] == 0.5
    assert b["precision"] == 1.0 and b["recall"] == 0.5 and b["f1"] == pytest.approx(2 / 3)
    assert b["balanced_accuracy"] == pytest.approx(0.75)
    assert b["auroc"] == pytest.approx(roc_auc_score([0, 1, 1, 0], [0.2, 0.8, 0.4, 0.2]))
    base = b["baseline_always_shift"]
    assert base["precision"] == 0.5 and base["recall"] == 1.0 and base["f1"] == pytest.approx(2 / 3)
    assert base["balanced_accuracy"] == 0.5 and base["auroc"] == 0.5
    # log-probabilities give the same answer
    assert shift_metrics(y, np.log(prob), c)["binary_shift"]["auroc"] == pytest.approx(b["auroc"])


def test_binary_metrics_single_class_is_nan_not_a_number():
    m = binary_shift_metrics([1, 1, 1], [0.9, 0.2, 0.7])
    assert m["recall"] == pytest.approx(2 / 3)
    assert math.isnan(m["auroc"]) and math.isnan(m["balanced_accuracy"])
    assert always_shift_baseline([0, 1, 1, 1])["f1"] == pytest.approx(2 * 0.75 / 1.75)


def test_shift_metrics_shape_check():
    with pytest.raises(ValueError, match="shift_prob must be"):
        shift_metrics([0, 1], np.zeros((2, 5)), 2)


def test_aggregate_mean_and_sample_std():
    runs = [{"weighted_f1": 0.5, "binary_shift": {"f1": 0.2}}, {"weighted_f1": 0.7, "binary_shift": {"f1": 0.4}},
            {"weighted_f1": 0.6, "binary_shift": {"f1": 0.3}}]
    agg = aggregate(runs)
    assert agg["n_runs"] == 3
    assert agg["mean"]["weighted_f1"] == pytest.approx(0.6)
    assert agg["std"]["weighted_f1"] == pytest.approx(0.1)
    assert agg["std"]["binary_shift"]["f1"] == pytest.approx(0.1)
    assert aggregate(runs[:1])["std"]["weighted_f1"] == 0.0
