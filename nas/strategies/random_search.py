"""Uniform random search: the baseline every other strategy has to beat."""

from __future__ import annotations

import time

import numpy as np

from nas.objective import Objective
from nas.strategies.base import Callback, EvalLoop, SearchResult, SearchStrategy

__all__ = ["RandomSearch"]


class RandomSearch(SearchStrategy):
    """Evaluate ``budget`` distinct architectures drawn with `SearchSpace.sample` (uniform per decision)."""

    name = "random"

    def __init__(self, *, batch_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size

    def search(
        self, objective: Objective, *, budget: int, seed: int, callback: Callback | None = None,
        plan_budget: int | None = None,
    ) -> SearchResult:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        loop = EvalLoop(objective, budget=budget, callback=callback)
        stalls = 0
        while not loop.done and stalls < 1000:
            n = min(self.batch_size, loop.remaining)
            got = loop.evaluate([objective.space.sample(rng) for _ in range(n)])
            stalls = 0 if got else stalls + 1
        return self._result(loop, seed=seed, t0=t0)
