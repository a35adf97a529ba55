"""pcgnet.metrics against sklearn and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from pcgnet.metrics import (
    aggregate,
    always_shift_baseline,
    binary_shift_metrics,
    erc_metrics,
    evaluate_predictions,
    shift_metrics,
)
from pcgnet.shift import ShiftRule

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
    # gold transitions: 0->0, 0->1, 1->0, 1->1  (labels c*prev+cur = 0, 1, 2, 3); one unlabelled pair (-1)
    y = np.array([0, 1, 2, 3, -1])
    prob = np.array([
        [0.7, 0.1, 0.1, 0.1],   # predicts 0 (0->0)
        [0.1, 0.6, 0.2, 0.1],   # predicts 1 (0->1)
        [0.4, 0.1, 0.3, 0.2],   # predicts 0 (wrong)
        [0.1, 0.1, 0.1, 0.7],   # predicts 3
        [0.1, 0.1, 0.1, 0.7],   # unlabelled: skipped
    ])
    m = shift_metrics(y, prob, c)
    assert m["n_pairs"] == 4 and m["shift_accuracy"] == pytest.approx(0.75)
    assert m["shift_f1"] == pytest.approx(f1_score(y[:4], [0, 1, 0, 3], average="weighted"))
    assert shift_metrics(y, np.log(prob), c)["shift_f1"] == pytest.approx(m["shift_f1"])  # log-probabilities


def test_binary_shift_metrics_hand_case():
    gold, pred, p = [0, 1, 1, 0], [0, 1, 0, 0], [0.2, 0.8, 0.4, 0.2]
    b = binary_shift_metrics(gold, pred, p)
    assert b["shift_rate"] == 0.5 and b["predicted_rate"] == 0.25
    assert b["precision"] == 1.0 and b["recall"] == 0.5 and b["f1"] == pytest.approx(2 / 3)
    assert b["balanced_accuracy"] == pytest.approx(0.75)
    assert b["auroc"] == pytest.approx(roc_auc_score(gold, p))
    base = always_shift_baseline(gold)
    assert base["precision"] == 0.5 and base["recall"] == 1.0 and base["f1"] == pytest.approx(2 / 3)
    assert base["balanced_accuracy"] == 0.5 and base["auroc"] == 0.5


def test_evaluate_predictions_scores_the_shift_rule():
    """binary_shift is what the rule's reported expressions do; the top-level ERC scores are the emotion head's."""
    labels = np.array([0, 1, 1, 0])  # one speaker: gold shifts at pairs 1 and 3 (0->1, 1->0), not at 2
    e = np.array([[0.9, 0.1], [0.3, 0.7], [0.45, 0.55], [0.6, 0.4]])
    prev, cur = [0, 1, 2], [1, 2, 3]
    trans = np.full((3, 4), 0.25)
    rule = ShiftRule(weight=1.0, thresholds={"balanced": 0.5, "precise": 0.65})
    m = evaluate_predictions(labels, e, prev, cur, trans, LABELS[:2], rule)
    assert m["accuracy"] == 1.0  # the emotion head's argmax
    b = m["binary_shift"]
    # balanced: 0 -> 1 (p 0.7) -> stays 1 (p 0.45) -> 0 (p 0.55): both gold shifts, no false alarm
    assert b["profile"] == "balanced" and b["precision"] == 1.0 and b["recall"] == 1.0
    assert b["reported_accuracy"] == 1.0
    # precise (0.65): the last turn stays at 1 (p 0.55): one shift missed, and its expression is wrong
    pr = m["profiles"]["precise"]
    assert pr["recall"] == 0.5 and pr["precision"] == 1.0 and pr["reported_weighted_f1"] < 1.0
    got = evaluate_predictions(labels, e, prev, cur, trans, LABELS[:2], rule, "precise")["binary_shift"]
    assert got["recall"] == 0.5


def test_binary_metrics_single_class_is_nan_not_a_number():
    m = binary_shift_metrics([1, 1, 1], [1, 0, 1], [0.9, 0.2, 0.7])
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
