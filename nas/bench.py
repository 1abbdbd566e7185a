"""Strategy benchmarks: the SYNTHETIC-objective benchmark, and the helpers `benchmarks/search.py` uses on the real one.

    python -m nas.bench --out /tmp/nas_bench --budgets 50 100 300 --seeds 0 1 2 --strategies gp evolution random

Synthetic: each (strategy, budget, seed) run is a fresh objective with accuracy weights from ``seed``; the reference
optimum per seed is the best reward any run found (reported gaps are relative to it, in %).

Real-objective helpers (pure functions, unit-tested in ``tests/nas/test_search_benchmark.py``):

* `compile_additive` turns a batched architecture function that is a sum of per-block terms (LUT latency and its
  linear correction, MACs) into an exact lookup table evaluated in numpy, checked against the original on fresh
  architectures; acquisition optimisers query it on thousands of candidates per step.
* `hill_climb` — steepest ascent over one-decision moves (`SearchSpace.neighbors`), for reference optima.
* `BestSoFar` and the statistics of runs: evaluations to come within a gap of the reference (right-censored at the
  budget), gap after n evaluations, the median with censoring and its bootstrap interval.

Notation (censoring): a run that never comes within the gap has evaluations-to-threshold ``+inf`` (it would need
more than its budget ``B``). Every run of a strategy has the same ``B``, so each censored run is larger than every
observed one and the sample median is exact: finite when more than half the runs got there, else ``> B``
(reported as ``inf``). The bootstrap resamples runs with replacement and takes the same median.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas._codec import SpaceCodec
from nas.objective import Evaluation, Objective
from nas.search import search
from nas.synthetic import make_synthetic_objective
from supernet.io import atomic_write_json
from supernet.space import ArchConfig, SearchSpace

__all__ = ["AdditiveArchFn", "BestSoFar", "NotAdditiveError", "bootstrap_median_ci", "censored_median",
           "compile_additive", "hill_climb", "main", "run"]

log = logging.getLogger(__name__)


def run(*, out: Path, strategies: list[str], budgets: list[int], seeds: list[int], space: str = "ofa-mbv3",
        reward: str = "soft") -> list[dict[str, Any]]:
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "runs.jsonl"
    rows: list[dict[str, Any]] = []
    if rows_path.exists():
        rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    done = {(r["strategy"], r["budget"], r["seed"]) for r in rows}
    for budget in budgets:
        for name in strategies:
            for seed in seeds:
                if (name, budget, seed) in done:
                    continue
                obj = make_synthetic_objective(space, seed=seed, reward=reward)
                res = search(obj.space, obj, strategy=name, budget=budget, seed=seed)
                row = {"strategy": name, "budget": budget, "seed": seed, "best_reward": res.best.reward,
                       "best_arch": str(res.best.arch),
                       "best_accuracy": res.best.accuracy, "best_latency_ms": res.best.latency_ms,
                       "wall_time_s": res.wall_time_s, "best_so_far": res.best_so_far().tolist(),
                       "target_ms": getattr(obj.reward, "target_ms", None)}
                rows.append(row)
                with rows_path.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                log.info("%s budget %d seed %d: best %.4f (%.1f s)", name, budget, seed, res.best.reward,
                         res.wall_time_s)
    reference = {}
    for seed in sorted({r["seed"] for r in rows}):
        starts = [r["best_arch"] for r in rows if r["seed"] == seed and "best_arch" in r]
        reference[seed] = reference_optimum(seed=seed, space=space, reward=reward, starts=starts)
    atomic_write_json(out / "summary.json", summarise(rows, reference))
    _plot(out, rows, reference)
    return rows


def _plot(out: Path, rows: list[dict[str, Any]], reference: dict[int, float]) -> None:
    """Median gap-to-reference curves of the largest budget per strategy."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from nas.plots import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for name in sorted({r["strategy"] for r in rows}):
        b = max(r["budget"] for r in rows if r["strategy"] == name)
        runs = [r for r in rows if r["strategy"] == name and r["budget"] == b]
        gaps = np.stack([100 * (reference[r["seed"]] - np.asarray(r["best_so_far"])) / reference[r["seed"]]
                         for r in runs])
        ax.plot(np.arange(1, b + 1), np.maximum(np.median(gaps, axis=0), 1e-3), label=f"{name} ({len(runs)} seeds)")
    ax.set_yscale("log")
    ax.set_xlabel("evaluations")
    ax.set_ylabel("median gap to reference optimum (%)")
    ax.set_title("SYNTHETIC objective: convergence")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, out / "convergence.png")
    plt.close(fig)


def reference_optimum(*, seed: int, space: str = "ofa-mbv3", reward: str = "soft", starts: Sequence[str] = (),
                      n_starts: int = 10, n_random: int = 6) -> float:
    """A near-optimal reward for the synthetic objective of ``seed`` (free to evaluate, so spend a lot):
    steepest ascent over `SearchSpace.neighbors` from the ``n_starts`` best of ``starts`` (architecture strings,
    e.g. every run's best), plus ``n_random`` uniform random starts, until no neighbour improves."""
    obj = make_synthetic_objective(space, seed=seed, reward=reward)
    evs = obj.evaluate([obj.space.parse(a) for a in dict.fromkeys(starts)])
    rng = np.random.default_rng(seed)
    rand = obj.evaluate([obj.space.sample(rng) for _ in range(n_random)])
    top = -np.inf
    for cur in sorted(evs, key=lambda e: -e.reward)[:n_starts] + rand:
        top = max(top, hill_climb(obj, cur.arch).reward)
    return float(top)


def summarise(rows: list[dict[str, Any]], reference: dict[int, float] | None = None) -> dict[str, Any]:
    ref: dict[int, float] = dict(reference or {})
    for r in rows:
        ref[r["seed"]] = max(ref.get(r["seed"], -np.inf), r["best_reward"])
    table: dict[str, dict[str, Any]] = {}
    for r in rows:
        gap = 100 * (ref[r["seed"]] - r["best_reward"]) / ref[r["seed"]]
        cell = table.setdefault(f"{r['strategy']}@{r['budget']}", {"gaps_pct": [], "rewards": [], "time_s": []})
        cell["gaps_pct"].append(gap)
        cell["rewards"].append(r["best_reward"])
        cell["time_s"].append(r["wall_time_s"])
    for cell in table.values():
        cell["mean_gap_pct"] = float(np.mean(cell["gaps_pct"]))
        cell["mean_reward"] = float(np.mean(cell["rewards"]))
        cell["mean_time_s"] = float(np.mean(cell["time_s"]))
    return {"reference_reward_per_seed": ref, "cells": table}


# --------------------------------------------------------------------------- real-objective helpers
def hill_climb(objective: Objective, start: ArchConfig, *, max_steps: int = 1000) -> Evaluation:
    """Steepest ascent from ``start`` over one-decision moves (`SearchSpace.neighbors`) until no neighbour has a
    larger reward (a local optimum), or ``max_steps`` moves. Evaluations go through ``objective`` (and count)."""
    cur = objective.evaluate([start])[0]
    for _ in range(max_steps):
        nxt = max(objective.evaluate(objective.space.neighbors(cur.arch)), key=lambda e: e.reward)
        if nxt.reward <= cur.reward:
            return cur
        cur = nxt
    log.warning("hill_climb: stopped after %d moves without reaching a local optimum", max_steps)
    return cur


class NotAdditiveError(ValueError):
    """The function is not a sum of per-block terms (its lookup-table compilation does not reproduce it)."""


@dataclass(frozen=True)
class AdditiveArchFn:
    """An exact lookup-table form of a per-block additive architecture function (see `compile_additive`).

    Notation: for resolution index ``r`` and, for every active slot ``i``, kernel / expand indices ``k_i, e_i``:

        f(a) = base[r] + sum_{i active} table[r, i, k_i, e_i]            (scalar output; a vector per arch when
                                                                           ``table`` has a trailing axis)
    Attributes:
        space: the space whose choice layout the indices refer to.
        base: shape ``(R,)`` or ``(R, F)``; table: ``(R, n_slots, K, E)`` or ``(R, n_slots, K, E, F)``.
        max_abs_error: largest difference to the original function on the check architectures.
        n_probe, n_check: architectures used to fit / to check the table.
    """

    space: SearchSpace
    base: np.ndarray
    table: np.ndarray
    max_abs_error: float
    n_probe: int
    n_check: int

    def from_choices(self, canon: np.ndarray) -> np.ndarray:
        """Values for a canonical choice matrix (`nas._codec.SpaceCodec`; inactive slots ``-1``)."""
        s = self.space
        o = 1 + s.n_stages
        r = canon[:, 0]
        k, e = canon[:, o : o + s.n_slots], canon[:, o + s.n_slots :]
        active = k >= 0
        slots = np.arange(s.n_slots)[None, :]
        terms = self.table[r[:, None], slots, np.maximum(k, 0), np.maximum(e, 0)]
        mask = active if terms.ndim == 2 else active[:, :, None]
        return self.base[r] + np.where(mask, terms, 0.0).sum(axis=1)

    def __call__(self, cfgs: Sequence[ArchConfig]) -> np.ndarray:
        if not cfgs:
            return np.zeros((0, *self.base.shape[1:]))
        return self.from_choices(SpaceCodec(self.space).from_archs(cfgs))

    def summary(self) -> dict[str, Any]:
        return {"max_abs_error": self.max_abs_error, "n_probe": self.n_probe, "n_check": self.n_check,
                "outputs": 1 if self.base.ndim == 1 else int(self.base.shape[1])}


def compile_additive(fn: Callable[[Sequence[ArchConfig]], Any], space: SearchSpace, *, n_probe: int | None = None,
                     n_check: int = 256, seed: int = 0, atol: float = 1e-9, rtol: float = 1e-9) -> AdditiveArchFn:
    """Fit the lookup table of `AdditiveArchFn` to ``fn`` by least squares on random architectures and check it
    reproduces ``fn`` within ``atol + rtol * |f|`` on ``n_check`` fresh ones plus the smallest and largest network.

    Exact for functions that are sums over the network's layers where a block's layers depend only on its slot, the
    resolution and its own kernel / expand choice (LUT sums, MACs, layer counts and linear corrections of those).
    Raises `NotAdditiveError` otherwise, so callers fall back to the original function.
    """
    codec = SpaceCodec(space)
    R, S = len(space.resolutions), space.n_slots
    K, E = len(space.kernel_choices), len(space.expand_choices)
    n_cols = R + R * S * K * E
    rng = np.random.default_rng(seed)
    n_probe = n_probe or 2 * n_cols
    canon = codec.canonicalise(codec.random_full(rng, n_probe))
    y = np.asarray(fn(codec.to_archs(canon)), dtype=np.float64)
    y2 = y.reshape(len(canon), -1)
    X = np.zeros((len(canon), n_cols))
    rows = np.arange(len(canon))
    X[rows, canon[:, 0]] = 1.0
    o = 1 + space.n_stages
    for i in range(S):
        k, e = canon[:, o + i], canon[:, o + S + i]
        act = k >= 0
        col = R + ((canon[:, 0] * S + i) * K + np.maximum(k, 0)) * E + np.maximum(e, 0)
        X[rows[act], col[act]] = 1.0
    coef, *_ = np.linalg.lstsq(X, y2, rcond=None)
    base, table = coef[:R], coef[R:].reshape(R, S, K, E, -1)
    if y.ndim == 1:
        base, table = base[:, 0], table[..., 0]
    compiled = AdditiveArchFn(space=space, base=base, table=table, max_abs_error=math.nan, n_probe=n_probe,
                              n_check=n_check)
    check = codec.canonicalise(codec.random_full(rng, n_check))
    check_archs = [space.smallest(), space.largest(), *codec.to_archs(check)]
    want = np.asarray(fn(check_archs), dtype=np.float64)
    got = compiled(check_archs)
    err = np.abs(got - want)
    if not np.all(err <= atol + rtol * np.abs(want)):
        worst = int(np.argmax(err.reshape(len(check_archs), -1).max(axis=1)))
        raise NotAdditiveError(f"function is not additive per block: the lookup table is off by "
                               f"{float(err.max()):.3g} on {check_archs[worst]}")
    return AdditiveArchFn(space=space, base=base, table=table, max_abs_error=float(err.max()), n_probe=n_probe,
                          n_check=len(check_archs))


@dataclass(frozen=True)
class BestSoFar:
    """The best-so-far reward of one search run, stored as its improvements.

    Attributes:
        improvements: ``(n, reward)`` pairs, ``n`` = 1-based evaluation count at which the best-so-far reward rose
            to ``reward`` (the first evaluation always counts); strictly increasing in both.
        budget: evaluations the run made.
    """

    improvements: tuple[tuple[int, float], ...]
    budget: int

    @classmethod
    def from_rewards(cls, rewards: Sequence[float]) -> BestSoFar:
        imp: list[tuple[int, float]] = []
        for n, r in enumerate(rewards, start=1):
            if not imp or r > imp[-1][1]:
                imp.append((n, float(r)))
        return cls(improvements=tuple(imp), budget=len(rewards))

    def best_after(self, n: int) -> float | None:
        """Best reward within the first ``n`` evaluations; None if the run made fewer than ``n``."""
        if n > self.budget or n < 1:
            return None
        best = None
        for k, r in self.improvements:
            if k > n:
                break
            best = r
        return best

    def gap_pct_after(self, n: int, reference: float) -> float | None:
        """Relative gap to ``reference`` in % after ``n`` evaluations (None if the run is shorter)."""
        b = self.best_after(n)
        return None if b is None else 100.0 * (reference - b) / abs(reference)

    def evals_to_gap(self, reference: float, gap_pct: float) -> float:
        """Evaluations until the best reward is within ``gap_pct`` % of ``reference``; ``inf`` if never (censored
        at the budget)."""
        for n, r in self.improvements:
            if 100.0 * (reference - r) / abs(reference) <= gap_pct:
                return float(n)
        return math.inf

    def to_json(self) -> dict[str, Any]:
        return {"improvements": [list(p) for p in self.improvements], "budget": self.budget}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BestSoFar:
        return cls(improvements=tuple((int(n), float(r)) for n, r in d["improvements"]), budget=int(d["budget"]))


def censored_median(values: Sequence[float]) -> float:
    """Median where censored runs are ``inf`` (see module notation); ``inf`` when half or more are censored
    (with an even count the two middle values are averaged, so one censored middle value gives ``inf``)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if v.size == 0:
        return math.nan
    n = v.size
    mid = v[(n - 1) // 2 : n // 2 + 1]
    return float(np.inf if np.isinf(mid).any() else mid.mean())


def bootstrap_median_ci(values: Sequence[float], *, n_boot: int = 2000, level: float = 0.95,
                        seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of `censored_median` (runs resampled with replacement); bounds may be inf."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(v.size, size=(n_boot, v.size))
    s = np.sort(v[idx], axis=1)
    n = v.size
    lo_mid, hi_mid = s[:, (n - 1) // 2], s[:, n // 2]
    med = np.where(np.isinf(lo_mid) | np.isinf(hi_mid), np.inf, 0.5 * (lo_mid + hi_mid))
    med.sort()
    a = (1.0 - level) / 2.0
    # order statistics rather than np.quantile: interpolating towards inf would give nan
    lo = med[math.floor(a * (n_boot - 1))]
    hi = med[math.ceil((1.0 - a) * (n_boot - 1))]
    return float(lo), float(hi)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--strategies", nargs="+", default=["gp", "evolution", "random"])
    p.add_argument("--budgets", nargs="+", type=int, default=[50, 100, 300])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--space", default="ofa-mbv3")
    p.add_argument("--reward", default="soft")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    run(out=a.out, strategies=a.strategies, budgets=a.budgets, seeds=a.seeds, space=a.space, reward=a.reward)


if __name__ == "__main__":
    main()
