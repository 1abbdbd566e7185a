"""Hardware-aware architecture search over a `supernet.space.SearchSpace`.

Main entry points (imported lazily, so ``import nas`` stays cheap):

* `nas.reward.Reward` — MnasNet reward; `nas.objective.Objective` — what strategies maximise (counts evaluations);
* `nas.strategies.create_strategy` / `list_strategies` — the strategy registry; `nas.search.search` — one call;
* `nas.predictor.AccuracyPredictor` and `nas.cache.AccuracyCache` — accuracy estimates and their sqlite cache;
* `nas.pareto.pareto_front`, `nas.plots.plot_convergence` / `plot_pareto`.
* `nas.synthetic` — SYNTHETIC objectives for tests and benchmarks only.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "Reward": "nas.reward", "HardConstraint": "nas.reward", "Objective": "nas.objective",
    "Evaluation": "nas.objective", "SearchResult": "nas.strategies.base", "SearchStrategy": "nas.strategies.base",
    "create_strategy": "nas.strategies", "list_strategies": "nas.strategies", "search": "nas.search",
    "pareto_front": "nas.pareto", "plot_convergence": "nas.plots", "plot_pareto": "nas.plots",
    "AccuracyPredictor": "nas.predictor", "AccuracyCache": "nas.cache",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nas' has no attribute {name!r}")
