"""GP-surrogate Bayesian optimisation over the discrete architecture space.

Why it beats a generic BO sampler on this problem (each point was kept because a benchmark showed it helps;
see `nas.bench` and `benchmarks/search.py`):

1. **Model accuracy, not reward.** Latency comes from a cheap LUT, and both reward forms are affine in accuracy
   at a fixed latency (``reward = scale(LAT) * ACC + offset(LAT)``, `Objective.reward_affine`). So the GP models
   accuracy only, and a candidate's reward posterior is exactly ``N(scale*mu + offset, (scale*sd)^2)`` — the
   latency half of the objective is never learned, it is known.
2. **Encodings of the canonical architecture** (inactive slots canonicalised, so equal networks encode equally).
   Default ``"onehot"``: resolution, kernel and expand one-hot per slot (inactive slots all zero), depths as
   ordinal numbers. ``"ordinal"``: every decision its choice index scaled to [0, 1] (kernel 5 between 3 and 7),
   an inactive slot one step below the smallest choice. On the real objective of ``benchmarks/search.py`` (an
   accuracy predictor fitted to supernet subnets) a choice's effect is not monotone per slot: one-hot ranked
   held-out near-optimal subnets with Kendall tau 0.89 vs 0.68 for ordinal after 100 points, and its median gap
   to the best reward after 300 evaluations was 0.006-0.018 % vs 0.05-0.39 % (ordinal ablation, 5 seeds; within
   0.1 % of it in a median 78.5-118.5 evaluations vs 283 and >300). Derived features — log predicted latency, the
   objective's cheap ``features`` (e.g. MACs) and optionally an accuracy predictor — join as extra columns.
   One Matern length scale per column *group* (resolution, depths, kernels / expands
   per stage, each derived feature) plus a linear term (`nas.surrogate_gp.GroupGP`).
3. **Acquisition maximised in the discrete space**: log-EI (or UCB / PI, Brochu et al. 2010) over a candidate
   pool made of mutations of the best evaluated architectures at several mutation rates (a trust region around
   the incumbents), crossovers and uniform samples, refined for a few evolutionary rounds and then by a
   steepest-ascent local search over one-decision neighbours (`SpaceCodec.neighbors`). No continuous relaxation,
   no rounding. Latency and features that offer ``from_choices`` (e.g. `nas.bench.AdditiveArchFn`) are queried
   on choice matrices directly, without building `ArchConfig`s for thousands of candidates per step.
4. **Initial design**: ``max(5, budget // 5)`` (capped by ``max_initial``) space-filling points, each column using
   every choice equally often.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from nas._codec import SpaceCodec
from nas.objective import Evaluation, Objective
from nas.strategies.base import Callback, EvalLoop, SearchResult, SearchStrategy, n_initial
from nas.surrogate_gp import (
    GroupGP,
    log_expected_improvement,
    probability_of_improvement,
    upper_confidence_bound,
)
from supernet.space import ArchConfig

__all__ = ["GPBayesOpt"]

log = logging.getLogger(__name__)

Acquisition = Literal["ei", "ucb", "pi"]


def _choice_fn(fn: object, space: object) -> Callable[[np.ndarray], np.ndarray] | None:
    """The optional fast path of a batched architecture function: ``fn.from_choices(canon)`` on a canonical
    `SpaceCodec` choice matrix of ``fn.space`` (e.g. `nas.bench.AdditiveArchFn`). Scoring thousands of candidates
    per step then needs no `ArchConfig`s."""
    f = getattr(fn, "from_choices", None)
    return f if callable(f) and getattr(fn, "space", None) == space else None


class _Featurizer:
    """Canonical choice matrix -> GP inputs (decision encoding + scaled derived features) and their groups.

    Encodings of the decisions (one length-scale group per kind and stage, see ``grouping``):

    * ``"ordinal"`` — each decision's choice index scaled to [0, 1] (kernel 5 between 3 and 7); an inactive slot
      one step below the smallest choice;
    * ``"onehot"`` — resolution, kernel and expand one-hot (inactive slots all zero, so equal networks encode
      equally), depths ordinal. A choice's effect need not be monotone (a middle kernel may be best in a slot);
    * ``"both"`` — the two side by side.
    """

    def __init__(self, objective: Objective, codec: SpaceCodec, rng: np.random.Generator, *,
                 grouping: Literal["type", "stage"], encoding: Literal["onehot", "ordinal", "both"],
                 use_latency: bool, use_features: bool, use_prior: bool) -> None:
        if grouping not in ("type", "stage"):
            raise ValueError(f"grouping {grouping!r}: expected 'type' or 'stage'")
        if encoding not in ("onehot", "ordinal", "both"):
            raise ValueError(f"encoding {encoding!r}: expected 'onehot', 'ordinal' or 'both'")
        self.objective, self.codec = objective, codec
        self.encoding = encoding
        self.use_latency, self.use_features = use_latency, use_features
        self.use_prior = use_prior and objective.accuracy_prior is not None
        space = objective.space
        S, D = space.n_stages, space.max_depth
        slot_stage = [s for s in range(S) for _ in range(D)]
        # column kind per decision (resolution 0, depth 1, kernel 2, expand 3) and its stage
        kind = [0] + [1] * S + [2] * space.n_slots + [3] * space.n_slots
        stage = [0] + list(range(S)) + slot_stage + slot_stage
        width = codec.n_choices
        group_of: dict[tuple[str, int, int], int] = {}

        def gid(enc: str, k: int, st: int) -> int:
            key = (enc, k, st if (grouping == "stage" and k in (2, 3)) else 0)
            return group_of.setdefault(key, len(group_of))

        groups: list[int] = []
        self._onehot_cols: list[int] = []  # decision columns one-hot encoded (the others: ordinal)
        if encoding in ("ordinal", "both"):
            groups += [gid("ord", k, st) for k, st in zip(kind, stage, strict=True)]
        if encoding in ("onehot", "both"):
            for p, (k, st) in enumerate(zip(kind, stage, strict=True)):
                if k == 1:
                    if encoding == "onehot":  # depths stay ordinal
                        groups.append(gid("ord", k, st))
                    continue
                self._onehot_cols.append(p)
                groups += [gid("hot", k, st)] * int(width[p])
        n_derived = int(use_latency) + (len(objective.features) if use_features else 0) + int(self.use_prior)
        self._lat_fast = _choice_fn(objective.latency_fn, space)
        fast_feats = [_choice_fn(f, space) for f in objective.features.values()] if use_features else []
        fast = [f for f in fast_feats if f is not None]
        self._feat_fast = fast if len(fast) == len(fast_feats) else None
        nxt = len(group_of)
        self.groups = groups + list(range(nxt, nxt + n_derived))
        # fixed affine scaling of derived columns, from a seeded reference sample of the space
        ref = codec.to_archs(codec.canonicalise(codec.random_full(rng, 256)))
        raw = self._derived_raw(ref, objective.predict_latency(ref))
        self.lo = raw.min(axis=0) if raw.size else raw
        self.span = np.maximum(raw.max(axis=0) - self.lo, 1e-12) if raw.size else raw

    @property
    def needs_archs(self) -> bool:
        """Whether scoring candidates needs `ArchConfig`s (no choice-matrix fast path for some input)."""
        return self._lat_fast is None or self.use_prior or (self.use_features and self._feat_fast is None
                                                             and bool(self.objective.features))

    def latency(self, canon: np.ndarray, archs: Sequence[ArchConfig] | None) -> np.ndarray:
        if self._lat_fast is not None:
            return np.asarray(self._lat_fast(canon), dtype=np.float64).reshape(-1)
        assert archs is not None
        return self.objective.predict_latency(archs)

    def _derived_raw(self, archs: Sequence[ArchConfig] | None, latency_ms: np.ndarray,
                     canon: np.ndarray | None = None) -> np.ndarray:
        cols = []
        if self.use_latency:
            cols.append(np.log(latency_ms)[:, None])
        if self.use_features and self.objective.features:
            if self._feat_fast is not None and canon is not None:
                f = np.stack([np.asarray(fn(canon), dtype=np.float64).reshape(-1) for fn in self._feat_fast], axis=1)
            else:
                assert archs is not None
                f = self.objective.features_of(archs)
            cols.append(np.log1p(np.maximum(f, 0.0)) if np.all(f >= 0) else f)
        if self.use_prior:
            prior = self.objective.accuracy_prior
            assert prior is not None and archs is not None
            cols.append(np.asarray(prior(list(archs)), dtype=np.float64)[:, None])
        return np.concatenate(cols, axis=1) if cols else np.zeros((len(latency_ms), 0))

    def decisions(self, canon: np.ndarray) -> np.ndarray:
        parts = []
        unit = self.codec.unit_features(canon)
        if self.encoding in ("ordinal", "both"):
            parts.append(unit)
        if self.encoding in ("onehot", "both"):
            width = self.codec.n_choices
            hot = set(self._onehot_cols)
            for p in range(canon.shape[1]):
                if p in hot:
                    k = int(width[p])
                    eye = np.eye(k + 1)[:, :k]  # row k (index -1: inactive) is all zeros
                    parts.append(eye[np.where(canon[:, p] < 0, k, canon[:, p])])
                elif self.encoding == "onehot":
                    parts.append(unit[:, p : p + 1])
        return np.concatenate(parts, axis=1)

    def __call__(self, canon: np.ndarray, archs: Sequence[ArchConfig] | None, latency_ms: np.ndarray) -> np.ndarray:
        base = self.decisions(canon)
        derived = (self._derived_raw(archs, latency_ms, canon) - self.lo) / self.span if len(self.lo) else np.zeros(
            (len(canon), 0))
        return np.concatenate([base, derived], axis=1)


class GPBayesOpt(SearchStrategy):
    """GP-surrogate Bayesian optimisation with discrete acquisition maximisation (see module docstring).

    Args:
        acquisition: "ei" (log expected improvement, default), "ucb" or "pi".
        kappa: UCB exploration weight; xi: EI/PI improvement margin in reward units.
        initial_fraction, min_initial, max_initial: initial design size ``clip(fraction * budget, min, max)``.
        grouping: length-scale groups for the decisions: "type" (resolution, depth, kernel, expand) or "stage"
            (kernel and expand per stage).
        encoding: "onehot" (default), "ordinal" or "both" (see module docstring, point 2).
        use_latency, use_features: add log latency / the objective's derived features as GP inputs.
        prior: how to use ``objective.accuracy_prior`` if present: "mean" (GP models the residual), "feature"
            (an input column) or "none".
        model: "accuracy" (decomposed, needs an affine reward) or "reward" (model the reward directly).
        n_pool: candidates per acquisition round; n_rounds: evolutionary refinement rounds;
        local_steps: local-search steps over `SearchSpace.neighbors` from the best candidates.
        refit_every: re-optimise GP hyperparameters every ``max(refit_every, n // 10)`` evaluations (always while
            n < 30), warm-started, at most ``fit_maxiter`` L-BFGS-B iterations.
        blas_threads: BLAS threads while searching (restored afterwards; None = leave as is). The matrices are
            small (n <= a few hundred), so threads only add contention (docs/measurements.md).
    """

    name = "gp"

    def __init__(
        self,
        *,
        acquisition: Acquisition = "ei",
        kappa: float = 2.0,
        xi: float = 0.0,
        initial_fraction: float = 0.2,
        min_initial: int = 5,
        max_initial: int = 20,
        grouping: Literal["type", "stage"] = "stage",
        encoding: Literal["onehot", "ordinal", "both"] = "onehot",
        use_latency: bool = True,
        use_features: bool = True,
        prior: Literal["mean", "feature", "none"] = "mean",
        model: Literal["accuracy", "reward"] = "accuracy",
        n_pool: int = 1500,
        n_rounds: int = 3,
        n_parents: int = 8,
        local_steps: int = 4,
        refit_every: int = 5,
        fit_maxiter: int = 50,
        blas_threads: int | None = 1,
    ) -> None:
        if acquisition not in ("ei", "ucb", "pi"):
            raise ValueError(f"acquisition {acquisition!r}: expected 'ei', 'ucb' or 'pi'")
        if model not in ("accuracy", "reward"):
            raise ValueError(f"model {model!r}: expected 'accuracy' or 'reward'")
        if prior not in ("mean", "feature", "none"):
            raise ValueError(f"prior {prior!r}: expected 'mean', 'feature' or 'none'")
        self.acquisition = acquisition
        self.kappa = kappa
        self.xi = xi
        self.initial_fraction = initial_fraction
        self.min_initial = min_initial
        self.max_initial = max_initial
        self.grouping = grouping
        self.encoding = encoding
        self.use_latency = use_latency
        self.use_features = use_features
        self.prior = prior
        self.model = model
        self.n_pool = n_pool
        self.n_rounds = n_rounds
        self.n_parents = n_parents
        self.local_steps = local_steps
        self.refit_every = refit_every
        self.fit_maxiter = fit_maxiter
        self.blas_threads = blas_threads

    # ----------------------------------------------------------------- search
    def search(
        self, objective: Objective, *, budget: int, seed: int, callback: Callback | None = None
    ) -> SearchResult:
        if self.blas_threads is None:
            return self._search(objective, budget=budget, seed=seed, callback=callback)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.blas_threads):
            return self._search(objective, budget=budget, seed=seed, callback=callback)

    def _search(
        self, objective: Objective, *, budget: int, seed: int, callback: Callback | None
    ) -> SearchResult:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        space = objective.space
        codec = SpaceCodec(space)
        loop = EvalLoop(objective, budget=budget, callback=callback)
        decomposed = self.model == "accuracy" and objective.reward_affine(np.ones(1)) is not None
        use_prior_mean = self.prior == "mean" and objective.accuracy_prior is not None
        feat = _Featurizer(objective, codec, rng, grouping=self.grouping, encoding=self.encoding,
                           use_latency=self.use_latency,
                           use_features=self.use_features, use_prior=self.prior == "feature")
        gp = GroupGP(feat.groups)

        # initial design
        n0 = n_initial(budget, fraction=self.initial_fraction, minimum=self.min_initial, maximum=self.max_initial)
        init = codec.to_archs(codec.canonicalise(codec.balanced_full(rng, n0)))
        loop.evaluate(init)

        last_fit = -math.inf
        stalls = 0
        while not loop.done:
            hist = loop.history
            archs = [e.arch for e in hist]
            canon = codec.from_archs(archs)
            lat = np.asarray([e.latency_ms for e in hist])
            X = feat(canon, archs, lat)
            y = np.asarray([e.accuracy if decomposed else e.reward for e in hist])
            pm = self._prior(objective, archs) if use_prior_mean and decomposed else None
            # hyperparameters move less as data accumulate: re-optimise every max(refit_every, n / 10) evaluations
            refit = len(hist) < 30 or len(hist) - last_fit >= max(self.refit_every, len(hist) // 10)
            gp.fit(X, y, prior_mean=pm, optimize=refit, maxiter=self.fit_maxiter)
            if refit:
                last_fit = len(hist)
            best_reward = max(e.reward for e in hist)
            cand = self._maximise(objective, loop, codec, feat, gp, canon, hist, best_reward, decomposed,
                                  use_prior_mean, rng)
            got = loop.evaluate([cand]) if cand is not None else []
            if not got:
                stalls += 1
                loop.evaluate([space.sample(rng)])
                if stalls > 100:
                    break
        info = {"n_initial": n0, "final_theta": gp.theta.tolist() if gp._fit is not None else None}
        return self._result(loop, seed=seed, t0=t0, info=info)

    @staticmethod
    def _prior(objective: Objective, archs: Sequence[ArchConfig]) -> np.ndarray:
        assert objective.accuracy_prior is not None
        return np.asarray(objective.accuracy_prior(list(archs)), dtype=np.float64).reshape(-1)

    # ----------------------------------------------------------------- acquisition
    def _score(self, objective: Objective, feat: _Featurizer, gp: GroupGP, canon: np.ndarray,
               best_reward: float, decomposed: bool, use_prior_mean: bool) -> np.ndarray:
        """Acquisition value of every candidate row of ``canon`` (a canonical choice matrix)."""
        prior = use_prior_mean and decomposed
        archs = feat.codec.to_archs(canon) if (feat.needs_archs or prior) else None
        lat = feat.latency(canon, archs)
        X = feat(canon, archs, lat)
        pm = self._prior(objective, archs) if prior and archs is not None else None
        mu, sd = gp.predict(X, prior_mean=pm)
        if decomposed:
            aff = objective.reward_affine(lat)
            assert aff is not None
            scale, offset = aff
            mu, sd = scale * mu + offset, np.abs(scale) * sd
        if self.acquisition == "ei":
            acq = log_expected_improvement(mu, sd, best_reward, xi=self.xi)
        elif self.acquisition == "pi":
            acq = probability_of_improvement(mu, sd, best_reward, xi=self.xi)
        else:
            acq = upper_confidence_bound(mu, sd, kappa=self.kappa)
        # -inf log-EI everywhere (all candidates hopeless) still needs a ranking: fall back to the mean
        return np.where(np.isfinite(acq), acq, -1e300 + mu)

    def _maximise(self, objective: Objective, loop: EvalLoop, codec: SpaceCodec, feat: _Featurizer, gp: GroupGP,
                  canon_hist: np.ndarray, hist: list[Evaluation], best_reward: float, decomposed: bool,
                  use_prior_mean: bool, rng: np.random.Generator) -> ArchConfig | None:
        P = canon_hist.shape[1]
        order = np.argsort([-e.reward for e in hist])
        parents = codec.fill_inactive(canon_hist[order[: self.n_parents]], rng)
        seen = set(codec.keys(canon_hist))

        def unseen_unique(c: np.ndarray) -> np.ndarray:
            keys = codec.keys(c)
            keep, local = [], set()
            for i, k in enumerate(keys):
                if k not in seen and k not in local:
                    keep.append(i)
                    local.add(k)
            return c[keep]

        # round 0: trust region around the incumbents (1..~4 decisions changed), crossovers, uniform samples
        n_mut, n_x = int(0.6 * self.n_pool), int(0.15 * self.n_pool)
        n_rand = self.n_pool - n_mut - n_x
        idx = rng.integers(len(parents), size=n_mut)
        rates = rng.choice(np.asarray([1.0, 2.0, 4.0, 8.0]) / P, size=n_mut)
        mut = codec.mutate_full(parents[idx], rng, rates)
        xa, xb = parents[rng.integers(len(parents), size=n_x)], parents[rng.integers(len(parents), size=n_x)]
        cross = codec.mutate_full(codec.crossover_full(xa, xb, rng), rng, 1.0 / P)
        pool = unseen_unique(codec.canonicalise(np.concatenate([mut, cross, codec.random_full(rng, n_rand)])))
        if len(pool) == 0:
            return None
        acq = self._score(objective, feat, gp, pool, best_reward, decomposed, use_prior_mean)
        best_pool, best_acq = pool, acq
        for _ in range(self.n_rounds - 1):
            top = best_pool[np.argsort(-best_acq)[: self.n_parents * 2]]
            topf = codec.fill_inactive(top, rng)
            n = self.n_pool // 3
            r = rng.choice(np.asarray([1.0, 2.0, 3.0]) / P, size=n)
            child = codec.canonicalise(codec.mutate_full(topf[rng.integers(len(topf), size=n)], rng, r))
            child = unseen_unique(child)
            if len(child) == 0:
                break
            c_acq = self._score(objective, feat, gp, child, best_reward, decomposed, use_prior_mean)
            best_pool = np.concatenate([best_pool, child])
            best_acq = np.concatenate([best_acq, c_acq])
        i = int(np.argmax(best_acq))
        cur, cur_acq = best_pool[i : i + 1], float(best_acq[i])
        # steepest-ascent local search over one-decision neighbours (`SpaceCodec.neighbors`)
        for _ in range(self.local_steps):
            nb = unseen_unique(codec.neighbors(cur[0]))
            if len(nb) == 0:
                break
            nb_acq = self._score(objective, feat, gp, nb, best_reward, decomposed, use_prior_mean)
            j = int(np.argmax(nb_acq))
            if nb_acq[j] <= cur_acq:
                break
            cur, cur_acq = nb[j : j + 1], float(nb_acq[j])
        return codec.to_archs(cur)[0]
