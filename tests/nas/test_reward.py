from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from nas.reward import HardConstraint, Reward, reward_from_json


def test_soft_known_values() -> None:
    r = Reward.soft(10.0)
    assert (r.alpha, r.beta) == (-0.07, -0.07)
    assert r(0.8, 10.0) == pytest.approx(0.8)
    assert r(0.8, 20.0) == pytest.approx(0.8 * 2 ** -0.07)  # 0.76210...
    assert r(0.8, 20.0) == pytest.approx(0.762110, abs=1e-6)
    assert r(0.8, 5.0) == pytest.approx(0.8 * 0.5 ** -0.07)  # 0.83977...
    assert r(0.8, 5.0) == pytest.approx(0.839773, abs=1e-6)


def test_hard_known_values() -> None:
    r = Reward.hard(10.0)
    assert (r.alpha, r.beta) == (0.0, -1.0)
    assert r(0.8, 10.0) == pytest.approx(0.8)
    assert r(0.8, 5.0) == pytest.approx(0.8)  # no bonus below the target
    assert r(0.8, 20.0) == pytest.approx(0.4)  # (20/10)^-1
    assert r(0.8, 12.5) == pytest.approx(0.64)


@pytest.mark.parametrize("reward", [Reward.soft(10.0), Reward.hard(10.0), Reward(10.0, -0.1, -0.5),
                                    HardConstraint(target_ms=10.0)])
def test_monotone(reward: Reward | HardConstraint) -> None:
    lats = np.linspace(1.0, 30.0, 59)
    vals = [reward(0.7, t) for t in lats]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(vals)), "non-increasing in latency"
    accs = np.linspace(0.0, 1.0, 21)
    for t in (5.0, 10.0, 15.0):
        v = [reward(a, t) for a in accs]
        assert all(a <= b + 1e-12 for a, b in itertools.pairwise(v)), "non-decreasing in accuracy"


def test_equals_accuracy_at_target_and_affine_matches() -> None:
    for r in (Reward.soft(7.0), Reward.hard(7.0), HardConstraint(target_ms=7.0)):
        assert r(0.63, 7.0) == pytest.approx(0.63)
        for t in (3.0, 7.0, 9.0):
            s, o = r.affine(t)
            assert r(0.63, t) == pytest.approx(s * 0.63 + o)


def test_hard_constraint_orders_feasible_above_infeasible() -> None:
    r = HardConstraint(target_ms=10.0)
    assert r(0.5, 10.0) == 0.5
    assert r(0.99, 10.01) < r(0.01, 10.0)
    assert r(0.9, 20.0) < r(0.9, 15.0) < 0


def test_validation_and_json() -> None:
    with pytest.raises(ValueError, match="target_ms"):
        Reward.soft(0.0)
    with pytest.raises(ValueError, match="exponents"):
        Reward(10.0, 0.1, -0.07)
    with pytest.raises(ValueError, match="exponents"):  # beta > 0 would reward being slower than the target
        Reward(10.0, -0.07, 0.1)
    with pytest.raises(ValueError, match="latency_ms"):
        Reward.soft(10.0)(0.5, -1.0)
    with pytest.raises(ValueError, match="accuracy"):
        Reward.soft(10.0)(math.nan, 1.0)
    for r in (Reward(12.0, -0.1, -0.3), HardConstraint(target_ms=3.0)):
        assert reward_from_json(r.to_json()) == r
