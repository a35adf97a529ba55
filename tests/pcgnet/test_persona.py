"""The online persona estimator: fitting, JSON round trip, per-speaker smoothing, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pcgnet.persona import (
    DialogueData,
    PersonaError,
    PersonaEstimator,
    PersonaTracker,
    evaluate,
    fit,
    r2_score,
)


def make_dialogues(n: int, seed: int, noise: float = 0.02) -> tuple[list[DialogueData], np.ndarray]:
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(99).normal(0, 0.1, (12, 5))
    out = []
    for _ in range(n):
        length = int(rng.integers(3, 9))
        x = rng.normal(0, 1, (length, 12)).astype(np.float32)
        y = (x @ w + 0.3 + rng.normal(0, noise, (length, 5))).astype(np.float32)
        out.append(DialogueData(x, rng.integers(0, 3, length).tolist(), y))
    return out, w


def test_fit_recovers_a_linear_persona() -> None:
    train, w = make_dialogues(60, 0)
    valid, _ = make_dialogues(20, 1)
    est = fit(train, valid, extractor="toy", alpha=1.0)
    assert np.abs(est.weight - w).max() < 0.02 and np.allclose(est.bias, 0.3, atol=0.01)
    assert est.fit_stats["valid"]["r2_raw"] > 0.9
    assert evaluate(est, valid)["r2_smoothed"] == pytest.approx(est.fit_stats["valid"]["r2_raw"])
    # Smoothing mixes in a speaker's earlier utterances, so it fits per-utterance targets less well.
    est.alpha = 0.3
    assert evaluate(est, valid)["r2_smoothed"] < est.fit_stats["valid"]["r2_raw"] - 0.1


def test_json_round_trip_is_plain_json() -> None:
    train, _ = make_dialogues(30, 2)
    est = fit(train, train[:5], extractor="minilm-l6", alpha=0.4)
    text = json.dumps(est.to_json())  # no numpy objects leak into the config
    back = PersonaEstimator.from_json(json.loads(text))
    x = train[0].features
    assert back.alpha == 0.4 and back.extractor == "minilm-l6" and back.ridge == est.ridge
    assert np.allclose(back.predict(x), est.predict(x), atol=1e-6)


def test_tracker_is_a_per_speaker_ema() -> None:
    rng = np.random.default_rng(3)
    est = PersonaEstimator(rng.normal(0, 1, (4, 5)), rng.normal(0, 1, 5), alpha=0.25)
    xs = rng.normal(0, 1, (5, 4)).astype(np.float32)
    tr = PersonaTracker(est)
    a0 = tr.update("A", xs[0])
    assert np.allclose(a0, est.predict(xs[0]))
    b0 = tr.update("B", xs[1])
    assert np.allclose(b0, est.predict(xs[1]))  # another speaker starts fresh
    a1 = tr.update("A", xs[2])
    assert np.allclose(a1, 0.75 * a0 + 0.25 * est.predict(xs[2]), atol=1e-6)
    speakers = ["A", "B", "A", "A", "B"]
    seq = est.estimate_dialogue(xs, speakers)
    assert np.allclose(seq[2], a1, atol=1e-6)
    tr.forget("A")
    assert np.allclose(tr.update("A", xs[3]), est.predict(xs[3]))


def test_r2() -> None:
    y = np.random.default_rng(4).normal(0, 1, (50, 5))
    assert r2_score(y, y) == 1.0
    assert r2_score(y, np.broadcast_to(y.mean(0), y.shape)) == pytest.approx(0.0)


@pytest.mark.parametrize("bad, match", [
    ({"format": "other"}, "expected a JSON object"),
    ({"format": "pcgnet-persona-ridge", "weight": [[1.0, 2.0]], "bias": [0] * 5}, r"weight \(1, 2\)"),
    ({"format": "pcgnet-persona-ridge", "bias": [0] * 5}, "malformed"),
    ({"format": "pcgnet-persona-ridge", "weight": [[0.0] * 5], "bias": [0] * 5, "alpha": 0}, "alpha 0.0"),
])
def test_bad_estimator_json(bad: dict, match: str) -> None:
    with pytest.raises(PersonaError, match=match):
        PersonaEstimator.from_json(bad)


def test_wrong_feature_dim() -> None:
    est = PersonaEstimator(np.zeros((4, 5)), np.zeros(5))
    with pytest.raises(PersonaError, match="expects 4-d features, got 3-d"):
        est.predict(np.zeros(3))
