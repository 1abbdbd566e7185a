from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from nas.objective import Evaluation, Objective
from nas.reward import Reward
from supernet.space import get_space


def _counting_objective() -> tuple[Objective, list[int]]:
    space = get_space("mnist")
    calls: list[int] = []

    def acc(cfgs):
        calls.append(len(cfgs))
        return np.asarray([0.5 + 0.01 * sum(c.depths) for c in cfgs])

    def lat(cfgs):
        return np.asarray([float(sum(c.depths)) for c in cfgs])

    return Objective(space=space, accuracy_fn=acc, latency_fn=lat, reward=Reward.soft(12.0)), calls


def test_evaluate_caches_by_canonical_arch() -> None:
    obj, calls = _counting_objective()
    space = obj.space
    rng = np.random.default_rng(0)
    a, b = space.sample(rng), space.sample(rng)
    # a non-canonical twin of a: fill an inactive slot with a valid value
    slot = next(s * space.max_depth + d for s, d in enumerate(a.depths) if d < space.max_depth)
    ks = list(a.kernel_sizes)
    ks[slot] = space.kernel_choices[0]
    twin = replace(a, kernel_sizes=tuple(ks))
    assert twin != a and space.canonical(twin) == a
    evs = obj.evaluate([a, b, twin, a])
    assert calls == [2] and obj.n_measured == 2
    assert evs[0] is evs[2] is evs[3]
    assert evs[0].reward == pytest.approx(Reward.soft(12.0)(evs[0].accuracy, evs[0].latency_ms))
    obj.evaluate([b])
    assert calls == [2] and obj.n_measured == 2


def test_remember_rescoring_and_bad_outputs() -> None:
    obj, calls = _counting_objective()
    cfg = obj.space.smallest()
    obj.remember([Evaluation(cfg, 0.9, 12.0, reward=123.0)])
    (ev,) = obj.evaluate([cfg])
    assert calls == [] and obj.n_measured == 0 and ev.reward == pytest.approx(0.9)
    bad = Objective(space=obj.space, accuracy_fn=lambda c: np.full(len(c), 1.5), latency_fn=obj.latency_fn,
                    reward=obj.reward)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bad.evaluate([obj.space.largest()])
    short = Objective(space=obj.space, accuracy_fn=lambda c: np.zeros(1), latency_fn=obj.latency_fn,
                      reward=obj.reward)
    with pytest.raises(ValueError, match="one per architecture"):
        short.evaluate([obj.space.largest(), obj.space.smallest()])


def test_evaluation_json_roundtrip(mnist_objective: Objective) -> None:
    (ev,) = mnist_objective.evaluate([mnist_objective.space.largest()])
    assert Evaluation.from_json(ev.to_json()) == ev


def test_objective_states_its_precision() -> None:
    obj, _ = _counting_objective()
    assert obj.precision == "fp32" and "at fp32" in obj.describe()
    int8 = replace(obj, precision="int8")
    assert "mnist at int8" in int8.describe()
