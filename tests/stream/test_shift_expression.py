"""A shift whose top emotion did not change names expressions, also for labels renamed as expressions."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from stream.analyzer import Analyzer


def test_same_top_label_shift_uses_expression_names() -> None:
    labels = ("neutral", "joy", "anger")
    probs = np.zeros((3, 3))
    probs[1] = [0.1, 0.5, 0.4]  # after joy: most likely anger (joy itself excluded)
    fake = SimpleNamespace(shift_threshold=0.5, labels=labels)
    # "joy" is published as "happiness": looking the expression up among the labels failed (ValueError)
    assert Analyzer._shift(fake, "happiness", "happiness", 0.9, probs.reshape(-1)) == ("happiness", "anger")  # type: ignore[arg-type]
    assert Analyzer._shift(fake, "happiness", "happiness", 0.1, probs.reshape(-1)) is None  # type: ignore[arg-type]
    assert Analyzer._shift(fake, "neutral", "happiness", 0.9, probs.reshape(-1)) == ("neutral", "happiness")  # type: ignore[arg-type]
