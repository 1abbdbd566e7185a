"""The search-strategy contract, its result value and the budget loop every strategy runs inside."""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from nas.objective import Evaluation, Objective
from supernet.space import ArchConfig

__all__ = ["RESULT_SCHEMA_VERSION", "Callback", "EvalLoop", "SearchResult", "SearchStrategy"]

log = logging.getLogger(__name__)

RESULT_SCHEMA_VERSION = 1

Callback = Callable[[Evaluation, int], None]
"""Called after every new evaluation with ``(evaluation, n_evaluated_so_far)``; an exception it raises stops the
search and propagates (use that to stop early; with a storage the search can be resumed)."""


@dataclass
class SearchResult:
    """What a search found, and how.

    Attributes:
        best: the evaluation with the largest reward in ``history`` (first one on ties).
        history: every distinct architecture evaluated by this search, in evaluation order.
        strategy: registry name of the strategy.
        seed: the seed the search ran with.
        wall_time_s: wall-clock seconds spent in ``search`` (including evaluations).
        info: strategy-specific extras (JSON-serialisable), e.g. the study name.
    """

    best: Evaluation
    history: list[Evaluation]
    strategy: str
    seed: int
    wall_time_s: float
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_history(
        cls, history: Sequence[Evaluation], *, strategy: str, seed: int, wall_time_s: float,
        info: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        if not history:
            raise ValueError(f"strategy {strategy!r} evaluated nothing; a search needs a budget of at least 1")
        rewards = [e.reward for e in history]
        best = history[int(np.argmax(rewards))]
        return cls(best=best, history=list(history), strategy=strategy, seed=seed, wall_time_s=wall_time_s,
                   info=dict(info or {}))

    def best_so_far(self) -> np.ndarray:
        """Running maximum of the reward after each evaluation, shape ``(len(history),)``."""
        return np.maximum.accumulate(np.asarray([e.reward for e in self.history], dtype=np.float64))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": RESULT_SCHEMA_VERSION,
            "strategy": self.strategy,
            "seed": self.seed,
            "wall_time_s": self.wall_time_s,
            "n_evaluations": len(self.history),
            "best": self.best.to_json(),
            "history": [e.to_json() for e in self.history],
            "info": self.info,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SearchResult:
        if d.get("schema_version") != RESULT_SCHEMA_VERSION:
            raise ValueError(
                f"search result JSON: schema_version {d.get('schema_version')!r} is not supported "
                f"(expected {RESULT_SCHEMA_VERSION})"
            )
        history = [Evaluation.from_json(e) for e in d["history"]]
        return cls.from_history(history, strategy=d["strategy"], seed=int(d["seed"]),
                                wall_time_s=float(d["wall_time_s"]), info=d.get("info", {}))


class EvalLoop:
    """Budget bookkeeping shared by all strategies.

    A strategy proposes architectures; `evaluate` canonicalises them, drops the ones this search has already
    evaluated and any beyond the remaining budget, evaluates the rest through the objective (one batched call)
    and appends them to ``history``. So ``len(history) <= budget`` always, every architecture in it is distinct,
    and a strategy is done when ``remaining == 0``.
    """

    def __init__(self, objective: Objective, *, budget: int, callback: Callback | None = None) -> None:
        if budget < 1:
            raise ValueError(f"budget must be >= 1 evaluation, got {budget}")
        self.objective = objective
        self.space = objective.space
        self.budget = int(budget)
        self.callback = callback
        self.history: list[Evaluation] = []
        self._by_arch: dict[ArchConfig, Evaluation] = {}

    @property
    def remaining(self) -> int:
        return self.budget - len(self.history)

    @property
    def done(self) -> bool:
        return self.remaining <= 0

    def canonical(self, cfg: ArchConfig) -> ArchConfig:
        return self.space.canonical(cfg)

    def is_new(self, cfg: ArchConfig) -> bool:
        """True if this search has not evaluated ``cfg`` (which must be canonical)."""
        return cfg not in self._by_arch

    def get(self, cfg: ArchConfig) -> Evaluation | None:
        return self._by_arch.get(cfg)

    def best(self) -> Evaluation | None:
        return max(self.history, key=lambda e: e.reward) if self.history else None

    def evaluate(self, cfgs: Iterable[ArchConfig]) -> list[Evaluation]:
        """Evaluate the new distinct architectures among ``cfgs`` (in order, up to the budget); return them."""
        batch: list[ArchConfig] = []
        picked: set[ArchConfig] = set()
        for c in cfgs:
            if len(batch) >= self.remaining:
                break
            cc = self.space.canonical(c)
            if cc in self._by_arch or cc in picked:
                continue
            batch.append(cc)
            picked.add(cc)
        if not batch:
            return []
        evals = self.objective.evaluate(batch)
        for ev in evals:
            self.history.append(ev)
            self._by_arch[ev.arch] = ev
            if self.callback is not None:
                self.callback(ev, len(self.history))
        return evals

    def fill_random(self, rng: np.random.Generator, *, max_tries: int = 10_000) -> None:
        """Spend the remaining budget on uniform random architectures (a fallback for stuck strategies)."""
        tries = 0
        while not self.done and tries < max_tries:
            self.evaluate([self.space.sample(rng)])
            tries += 1
        if not self.done:
            log.warning("could not find %d more unseen architectures after %d tries", self.remaining, tries)


class SearchStrategy(ABC):
    """A search strategy: given an objective, a budget and a seed, find the architecture with the best reward.

    Contract (checked by ``tests/nas/test_strategies_contract.py`` for every registered strategy):

    * exactly ``budget`` distinct canonical architectures are evaluated when the space has that many (the
      objective's counter grows by at most ``budget``);
    * ``result.history`` lists them in evaluation order and ``result.best`` is its reward maximum;
    * the same ``seed`` gives the same history (all randomness comes from ``np.random.default_rng(seed)`` or
      seeded samplers; never the global RNG);
    * ``callback(evaluation, n)`` is called after each new evaluation.

    Constructor arguments are keyword-only hyperparameters; a strategy holds no state between ``search`` calls.
    """

    name: ClassVar[str] = "base"

    @abstractmethod
    def search(
        self, objective: Objective, *, budget: int, seed: int, callback: Callback | None = None
    ) -> SearchResult:
        """Run the search; see the class docstring for the contract."""

    def _result(self, loop: EvalLoop, *, seed: int, t0: float, info: Mapping[str, Any] | None = None) -> SearchResult:
        return SearchResult.from_history(loop.history, strategy=self.name, seed=seed,
                                         wall_time_s=time.perf_counter() - t0, info=info)

    def __repr__(self) -> str:
        params = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in params.items())})"


def n_initial(budget: int, *, fraction: float = 0.2, minimum: int = 5, maximum: int | None = None) -> int:
    """Initial design size for model-based strategies: ``max(minimum, fraction * budget)``, capped."""
    n = max(minimum, math.floor(fraction * budget))
    if maximum is not None:
        n = min(n, maximum)
    return min(n, budget)
