from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from scipy.stats import norm

from nas.strategies import create_strategy
from nas.surrogate_gp import GroupGP, expected_improvement, log_expected_improvement
from nas.synthetic import make_synthetic_objective


def test_nll_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(0)
    X = rng.random((30, 5))
    y = np.sin(3 * X[:, 0]) + X[:, 1] ** 2
    gp = GroupGP([0, 0, 1, 2, 2])
    D = gp._sqdist_groups(X, X)
    Xc = X - X.mean(0)
    lin = Xc @ Xc.T / 5
    ys = (y - y.mean()) / y.std()
    theta = gp._default_theta() + 0.2 * rng.standard_normal(6)
    _, grad = gp._nll(theta, D, lin, ys)
    num = approx_fprime(theta, lambda t: gp._nll(t, D, lin, ys)[0], 1e-6)
    np.testing.assert_allclose(grad, num, rtol=1e-3, atol=1e-3)


def test_gp_interpolates_a_smooth_function() -> None:
    rng = np.random.default_rng(1)
    X = rng.random((60, 4))
    f = lambda x: np.sin(3 * x[:, 0]) + 0.5 * x[:, 1]
    gp = GroupGP([0, 1, 2, 3]).fit(X, f(X))
    Xt = rng.random((200, 4))
    mu, sd = gp.predict(Xt)
    assert np.sqrt(np.mean((mu - f(Xt)) ** 2)) < 0.05
    assert np.all(sd > 0)


def test_log_ei_matches_closed_form_and_is_finite_far_away() -> None:
    mu, sd, best = np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.3, 0.1]), 0.6
    z = (mu - best) / sd
    ei = (mu - best) * norm.cdf(z) + sd * norm.pdf(z)
    np.testing.assert_allclose(expected_improvement(mu, sd, best), ei, rtol=1e-9)
    far = log_expected_improvement(np.array([0.0]), np.array([1e-3]), 1.0)
    assert np.isfinite(far).all() and far[0] < -1e5


def test_gp_beats_random_at_a_small_budget() -> None:
    """The GP search must find clearly better rewards than random search with the same budget (3 seeds).

    Measured when written: GP ~0.780 vs random ~0.766 mean best reward at budget 30 (gap ~10x the margin).
    """
    budget, gp_best, rand_best = 30, [], []
    for seed in (0, 1, 2):
        gp = create_strategy("gp", n_pool=600, n_rounds=2, local_steps=2)
        gp_best.append(gp.search(make_synthetic_objective("ofa-mbv3", seed=seed), budget=budget, seed=seed).best.reward)
        rnd = create_strategy("random")
        rand_best.append(rnd.search(make_synthetic_objective("ofa-mbv3", seed=seed), budget=budget,
                                    seed=seed).best.reward)
    assert np.mean(gp_best) > np.mean(rand_best) + 0.004, (gp_best, rand_best)
    assert sum(g > r for g, r in zip(gp_best, rand_best, strict=True)) >= 2


@pytest.mark.parametrize("kwargs", [{"model": "reward"}, {"grouping": "type", "use_features": False}])
def test_gp_variants_run(kwargs: dict) -> None:
    obj = make_synthetic_objective("mnist", seed=0, reward="constraint")
    res = create_strategy("gp", n_pool=200, n_rounds=1, local_steps=1, **kwargs).search(obj, budget=9, seed=0)
    assert len(res.history) == 9 and len({e.arch for e in res.history}) == 9


def test_gp_acquisitions_choose_differently() -> None:
    """Same seed and initial design: "ucb" and "pi" must pick other architectures than "ei" (each is used)."""
    picked = {}
    for acq in ("ei", "ucb", "pi"):
        obj = make_synthetic_objective("mnist", seed=0, reward="constraint")
        res = create_strategy("gp", n_pool=200, n_rounds=1, local_steps=1, acquisition=acq).search(obj, budget=9,
                                                                                                   seed=0)
        picked[acq] = [e.arch for e in res.history]
    assert picked["ei"][:5] == picked["ucb"][:5] == picked["pi"][:5]  # the initial design does not depend on it
    assert picked["ucb"] != picked["ei"] and picked["pi"] != picked["ei"] and picked["pi"] != picked["ucb"]


def test_gp_uses_accuracy_prior_as_mean() -> None:
    """A perfect prior (the true accuracy) as the GP mean must beat the same GP without it (prior="none").

    Measured when written (budget 12): 0.773 / 0.766 / 0.770 with the prior vs 0.767 / 0.760 / 0.759 without.
    """
    with_prior, without = [], []
    for seed in (0, 1, 2):
        for prior, out in (("mean", with_prior), ("none", without)):
            obj = make_synthetic_objective("mnist", seed=seed)
            obj.accuracy_prior = obj.accuracy_fn  # the GP only has to model a zero residual
            gp = create_strategy("gp", n_pool=300, n_rounds=2, local_steps=2, prior=prior)
            out.append(gp.search(obj, budget=12, seed=seed).best.reward)
    assert all(w > n for w, n in zip(with_prior, without, strict=True)), (with_prior, without)
    assert np.mean(with_prior) > np.mean(without) + 0.003, (with_prior, without)


@pytest.mark.parametrize("encoding", ["ordinal", "both"])
def test_gp_encodings_run(encoding: str) -> None:
    obj = make_synthetic_objective("mnist", seed=0, reward="hard")
    res = create_strategy("gp", encoding=encoding, n_pool=200, n_rounds=1, local_steps=1).search(obj, budget=9, seed=0)
    assert len(res.history) == 9 and len({e.arch for e in res.history}) == 9


def test_gp_choice_matrix_fast_path_gives_the_same_search() -> None:
    """Latency / features offering ``from_choices`` are used on choice matrices; the search must not change."""
    from nas._codec import SpaceCodec

    class WithChoices:
        def __init__(self, fn, space) -> None:
            self.fn, self.space, self.calls = fn, space, 0

        def __call__(self, cfgs):
            return self.fn(cfgs)

        def from_choices(self, canon):
            self.calls += 1
            return self.fn(SpaceCodec(self.space).to_archs(canon))

    plain = make_synthetic_objective("mnist", seed=0, reward="hard")
    fast = make_synthetic_objective("mnist", seed=0, reward="hard")
    fast.latency_fn = WithChoices(fast.latency_fn, fast.space)
    fast.features = {k: WithChoices(f, fast.space) for k, f in fast.features.items()}
    kw = {"n_pool": 200, "n_rounds": 2, "local_steps": 2}
    a = create_strategy("gp", **kw).search(plain, budget=12, seed=0)
    b = create_strategy("gp", **kw).search(fast, budget=12, seed=0)
    assert [e.arch for e in a.history] == [e.arch for e in b.history]
    assert fast.latency_fn.calls > 0 and all(f.calls > 0 for f in fast.features.values())
