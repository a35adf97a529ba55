"""pcgnet.shift: the one shift rule, its coherence by construction, and how its parameters are chosen."""

from __future__ import annotations

import numpy as np
import pytest

from pcgnet.shift import (
    UNTUNED,
    ShiftRule,
    ShiftRuleError,
    choose_profiles,
    choose_rule,
    decide,
    decide_dialogues,
    operating_points,
    pooled,
)


def _transitions(c: int, rng: np.random.Generator) -> np.ndarray:
    t = rng.random((c, c)) ** 3
    return (t / t.sum()).reshape(-1)


def test_decide_hand_case() -> None:
    e = np.array([0.1, 0.5, 0.4])  # the emotion head: class 1
    t = np.zeros((3, 3))
    t[1] = [0.1, 0.2, 0.7]  # after class 1: most likely class 2
    t = t.reshape(-1)
    # weight 1: the emotion head alone; p = 1 - e[prev]
    d = decide(e, t, 1, 1.0, 0.4)
    assert d == decide(e, None, 1, 0.0, 0.4)  # no pair: the emotion head alone, whatever the weight
    assert d.shift is True and d.expression == 2 and d.probability == pytest.approx(0.5)
    assert decide(e, t, 1, 1.0, 0.6) == type(d)(1, False, pytest.approx(0.5))  # below threshold: stays
    # weight 0: the transition row alone
    d0 = decide(e, t, 1, 0.0, 0.5)
    assert d0.shift and d0.expression == 2 and d0.probability == pytest.approx(0.8)
    # mix: the shift head's own binary estimate 1 - trace(T) (= 1 - 0.2 here) takes that share of p
    dm = decide(e, t, 1, 1.0, 0.6, mix=0.5)
    assert dm.probability == pytest.approx(0.5 * 0.5 + 0.5 * 0.8) and dm.shift and dm.expression == 2
    # a pool of both
    q = pooled(e, t.reshape(3, 3)[1], 0.5)
    want = np.sqrt(e * np.array([0.1, 0.2, 0.7]))
    assert q == pytest.approx(want / want.sum())
    # a first turn: the top class, never a shift
    assert decide(e, None, None, 0.5, 0.0) == type(d)(1, False, None)


def test_a_shift_is_exactly_a_change_of_the_reported_expression() -> None:
    """Coherence by construction, on random dialogues, every weight and threshold: shift <=> changed, to != from."""
    rng = np.random.default_rng(3)
    c, n = 4, 60
    e = rng.dirichlet(np.ones(c) * 0.5, n)
    speakers = rng.integers(0, 3, n)
    prev, cur, last = [], [], {}
    for i, s in enumerate(speakers):
        if s in last:
            prev.append(last[s])
            cur.append(i)
        last[s] = i
    trans = np.stack([_transitions(c, rng) for _ in cur])
    for w, m in ((0.0, 0.0), (0.5, 0.5), (1.0, 0.0), (1.0, 1.0)):
        for th in (0.0, 0.3, 0.7, 1.0):
            d = decide_dialogues(e, prev, cur, trans, w, th, m)
            changed = d.reported[np.array(cur)] != d.reported[np.array(prev)]
            assert (d.shift == changed).all()
            assert (d.shift == (d.probability >= th)).all()
            # the scan is the per-turn rule, turn by turn
            for j, (a, b) in enumerate(zip(prev, cur, strict=True)):
                one = decide(e[b], trans[j], int(d.reported[a]), w, th, m)
                assert one.expression == d.reported[b] and one.shift == d.shift[j]
                assert one.probability == pytest.approx(d.probability[j])
    assert decide_dialogues(e, prev, cur, trans, 0.5, 0.0).shift.all()  # threshold 0: every later turn
    assert not decide_dialogues(e, prev, cur, trans, 0.5, 1.01).shift.any()


def test_rule_json_round_trip_and_errors() -> None:
    r = ShiftRule(weight=0.25, mix=0.5, thresholds={"sensitive": 0.2, "balanced": 0.4, "precise": 0.7})
    assert ShiftRule.from_json(r.to_json()) == r
    assert r.threshold() == 0.4 and r.threshold("precise") == 0.7
    with pytest.raises(ShiftRuleError, match="unknown shift profile 'eager'.*sensitive, balanced, precise"):
        r.threshold("eager")
    with pytest.raises(ShiftRuleError, match="not supported"):
        ShiftRule.from_json({**r.to_json(), "rule": "P(shift) = 1 - diag"})
    with pytest.raises(ShiftRuleError, match="threshold of profile 'balanced'"):
        ShiftRule(weight=0.5, thresholds={"balanced": 1.5})
    with pytest.raises(ShiftRuleError, match="default profile"):
        ShiftRule(weight=0.5, thresholds={"precise": 0.5})
    assert UNTUNED.weight == 1.0 and UNTUNED.threshold() == 0.5


def test_profiles_are_ordered_and_meet_their_targets() -> None:
    rng = np.random.default_rng(0)
    c, n = 3, 400
    y = rng.integers(0, c, n)
    e = np.full((n, c), 0.1)
    e[np.arange(n), y] += rng.random(n) * 1.5  # an informative but noisy emotion head
    e /= e.sum(1, keepdims=True)
    prev, cur = np.arange(0, n - 1), np.arange(1, n)  # one speaker
    trans = np.stack([_transitions(c, rng) for _ in cur])
    pts = operating_points(y, e, prev, cur, trans, 1.0)
    prof = choose_profiles(pts)
    assert prof["sensitive"] <= prof["balanced"] <= prof["precise"]
    at = {o.threshold: o for o in pts}
    assert at[prof["balanced"]].f1 == max(o.f1 for o in pts)
    assert at[prof["sensitive"]].recall >= 0.9
    if any(o.precision >= 0.75 and o.recall > 0 for o in pts):
        assert at[prof["precise"]].precision >= 0.75
    rule = choose_rule(y, e, prev, cur, trans, weights=(0.0, 1.0), mixes=(0.0, 1.0))
    # the random transition rows carry no information; the emotion head does
    assert rule.weight == 1.0 and rule.mix == 0.0
