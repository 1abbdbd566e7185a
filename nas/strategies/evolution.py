"""Evolutionary search as in once-for-all (Cai et al., 2020, `EvolutionFinder`).

Each generation keeps the best ``parent_ratio`` of the population as parents; ``mutation_ratio`` of the new
population are mutations of random parents (each decision resampled with ``mutate_prob``), the rest uniform
crossovers of two random parents. Under a hard latency reward (`HardConstraint`, or `Reward` with
``alpha == 0 and beta <= -1``) candidates predicted above the target are rejected before evaluation, as OFA does
with its efficiency constraint (latency comes from the cheap table, so rejection costs no budget).

Candidates are drawn on `nas._codec.SpaceCodec` choice matrices, all children of a generation at once (a long run
draws hundreds of thousands of candidates, most of them rejected as already seen or too slow).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from nas._codec import SpaceCodec
from nas.objective import Evaluation, Objective
from nas.reward import HardConstraint, Reward
from nas.strategies.base import Callback, EvalLoop, SearchResult, SearchStrategy

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
        codec = SpaceCodec(space)
        loop = EvalLoop(objective, budget=budget, callback=callback)
        pop_size = self.population_size
        if self.adaptive_population:
            pop_size = min(pop_size, max(8, budget // 4))
        n_parents = max(1, round(self.parent_ratio * pop_size))
        n_mutate = round(self.mutation_ratio * pop_size)
        constrain = self.constrain_latency and is_hard_reward(objective)
        target = float(getattr(objective.reward, "target_ms", np.inf))
        seen: set[bytes] = set()  # rows of evaluated architectures (`SpaceCodec.keys`)

        def feasible(canon: np.ndarray) -> np.ndarray:
            if not constrain:
                return np.ones(len(canon), dtype=bool)
            return objective.predict_latency(codec.to_archs(canon)) <= target

        def draw(make: Callable[[np.ndarray], np.ndarray], n: int) -> np.ndarray:
            """Up to ``n`` distinct unseen canonical candidates: for each, the first of up to ``max_tries`` draws of
            ``make`` that is unseen and feasible, else the first unseen infeasible one (OFA's rejection sampling,
            vectorised over the ``n`` children; ``make(rows)`` draws one full candidate per row)."""
            chosen = np.full((n, codec.n_choices.size), -2, dtype=np.int64)
            fallback: dict[int, tuple[bytes, np.ndarray]] = {}
            taken: set[bytes] = set()
            todo = np.arange(n)
            for _ in range(self.max_tries):
                if todo.size == 0:
                    break
                cand = codec.canonicalise(make(todo))
                ok = feasible(cand)
                still = []
                for j, (i, key) in enumerate(zip(todo.tolist(), codec.keys(cand), strict=True)):
                    if key in seen or key in taken:
                        still.append(i)
                    elif ok[j]:
                        chosen[i] = cand[j]
                        taken.add(key)
                    else:
                        fallback.setdefault(i, (key, cand[j]))
                        still.append(i)
                todo = np.asarray(still, dtype=np.int64)
            for i in todo.tolist():
                if i in fallback and fallback[i][0] not in taken:
                    chosen[i] = fallback[i][1]
                    taken.add(fallback[i][0])
            return chosen[chosen[:, 0] != -2]

        def evaluate(canon: np.ndarray) -> list[Evaluation]:
            evals = loop.evaluate(codec.to_archs(canon))
            seen.update(codec.keys(codec.from_archs([e.arch for e in evals])))
            return evals

        population = evaluate(draw(lambda rows: codec.random_full(rng, len(rows)), min(pop_size, loop.remaining)))
        generation = 0
        while not loop.done:
            generation += 1
            parents = sorted(population, key=lambda e: e.reward, reverse=True)[:n_parents]
            pc = codec.from_archs([e.arch for e in parents])
            n_children = min(pop_size - len(parents), loop.remaining)
            n_mut = min(n_mutate, n_children)

            # `pc` bound as a default: each generation's draws use that generation's parents.
            def mutants(rows: np.ndarray, pc: np.ndarray = pc) -> np.ndarray:
                base = codec.fill_inactive(pc[rng.integers(len(pc), size=len(rows))], rng)
                return codec.mutate_full(base, rng, self.mutate_prob)

            def crosses(rows: np.ndarray, pc: np.ndarray = pc) -> np.ndarray:
                a = codec.fill_inactive(pc[rng.integers(len(pc), size=len(rows))], rng)
                b = codec.fill_inactive(pc[rng.integers(len(pc), size=len(rows))], rng)
                return codec.crossover_full(a, b, rng)

            kids = [draw(mutants, n_mut), draw(crosses, n_children - n_mut)]
            children = np.concatenate(kids)
            if len(children) < n_children:  # rows nothing new was found for: uniform samples instead
                extra = draw(lambda rows: codec.random_full(rng, len(rows)), n_children - len(children))
                keys = set(codec.keys(children))
                extra = extra[[k not in keys for k in codec.keys(extra)]] if len(extra) else extra
                children = np.concatenate([children, extra])
            if len(children) == 0:
                log.warning("evolution: no unseen children in generation %d; stopping early", generation)
                break
            population = parents + evaluate(children)
        return self._result(loop, seed=seed, t0=t0, info={"population_size": pop_size, "generations": generation})
