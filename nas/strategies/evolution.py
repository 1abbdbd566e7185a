"""Evolutionary search as in once-for-all (Cai et al., 2020, `EvolutionFinder`).

Each generation keeps the best ``parent_ratio`` of the population as parents; ``mutation_ratio`` of the new
population are mutations of random parents (each decision resampled with ``mutate_prob``), the rest uniform
crossovers of two random parents. Under a hard latency reward (`HardConstraint`, or `Reward` with
``alpha == 0 and beta <= -1``) candidates predicted above the target are rejected before evaluation, as OFA does
with its efficiency constraint (latency comes from the cheap table, so rejection costs no budget).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from nas.objective import Objective
from nas.reward import HardConstraint, Reward
from nas.strategies.base import Callback, EvalLoop, SearchResult, SearchStrategy
from supernet.space import ArchConfig

__all__ = ["EvolutionSearch", "is_hard_reward"]

log = logging.getLogger(__name__)


def is_hard_reward(objective: Objective) -> bool:
    r = objective.reward
    return isinstance(r, HardConstraint) or (isinstance(r, Reward) and r.alpha == 0 and r.beta <= -1)


class EvolutionSearch(SearchStrategy):
    """OFA's evolution: population 100, parents ratio 0.25, mutation ratio 0.5, mutation probability 0.1.

    Args:
        population_size: individuals per generation (OFA: 100).
        parent_ratio: fraction of the population kept as parents (OFA: 0.25).
        mutation_ratio: fraction of children made by mutation; the rest by crossover (OFA: 0.5).
        mutate_prob: per-decision resampling probability (OFA: 0.1).
        adaptive_population: cap the population at ``max(8, budget // 4)`` so a small budget still sees several
            generations (with 100 individuals, a budget of 50 would be pure random search).
        constrain_latency: reject candidates over the target under a hard reward (see module docstring).
    """

    name = "evolution"

    def __init__(
        self,
        *,
        population_size: int = 100,
        parent_ratio: float = 0.25,
        mutation_ratio: float = 0.5,
        mutate_prob: float = 0.1,
        adaptive_population: bool = True,
        constrain_latency: bool = True,
        max_tries: int = 200,
    ) -> None:
        if population_size < 2:
            raise ValueError(f"population_size must be >= 2, got {population_size}")
        if not (0 < parent_ratio <= 1 and 0 <= mutation_ratio <= 1 and 0 < mutate_prob <= 1):
            raise ValueError("parent_ratio and mutate_prob must be in (0, 1], mutation_ratio in [0, 1]")
        self.population_size = population_size
        self.parent_ratio = parent_ratio
        self.mutation_ratio = mutation_ratio
        self.mutate_prob = mutate_prob
        self.adaptive_population = adaptive_population
        self.constrain_latency = constrain_latency
        self.max_tries = max_tries

    def search(
        self, objective: Objective, *, budget: int, seed: int, callback: Callback | None = None
    ) -> SearchResult:
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        space = objective.space
        loop = EvalLoop(objective, budget=budget, callback=callback)
        pop_size = self.population_size
        if self.adaptive_population:
            pop_size = min(pop_size, max(8, budget // 4))
        n_parents = max(1, int(round(self.parent_ratio * pop_size)))
        n_mutate = int(round(self.mutation_ratio * pop_size))
        constrain = self.constrain_latency and is_hard_reward(objective)
        target = float(getattr(objective.reward, "target_ms", np.inf))

        def feasible(c: ArchConfig) -> bool:
            return not constrain or float(objective.predict_latency([c])[0]) <= target

        def draw(make: Callable[[], ArchConfig], pending: set[ArchConfig]) -> ArchConfig | None:
            """A new (unseen, not pending) candidate, preferring feasible ones; None if none found."""
            fallback = None
            for _ in range(self.max_tries):
                c = make()
                if not loop.is_new(c) or c in pending:
                    continue
                if feasible(c):
                    return c
                fallback = fallback or c
            return fallback

        pending: set[ArchConfig] = set()
        init: list[ArchConfig] = []
        for _ in range(min(pop_size, loop.remaining)):
            c = draw(lambda: space.sample(rng), pending)
            if c is not None:
                init.append(c)
                pending.add(c)
        population = loop.evaluate(init)
        generation = 0
        while not loop.done:
            generation += 1
            parents = sorted(population, key=lambda e: e.reward, reverse=True)[:n_parents]
            pending = set()
            children: list[ArchConfig] = []
            n_children = min(pop_size - len(parents), loop.remaining)
            for i in range(n_children):
                if i < n_mutate:
                    p = parents[int(rng.integers(len(parents)))].arch
                    c = draw(lambda p=p: space.mutate(p, rng, prob=self.mutate_prob), pending)
                else:
                    a = parents[int(rng.integers(len(parents)))].arch
                    b = parents[int(rng.integers(len(parents)))].arch
                    c = draw(lambda a=a, b=b: space.crossover(a, b, rng), pending)
                if c is None:
                    c = draw(lambda: space.sample(rng), pending)
                if c is not None:
                    children.append(c)
                    pending.add(c)
            if not children:
                log.warning("evolution: no unseen children in generation %d; stopping early", generation)
                break
            population = parents + loop.evaluate(children)
        return self._result(loop, seed=seed, t0=t0, info={"population_size": pop_size, "generations": generation})
