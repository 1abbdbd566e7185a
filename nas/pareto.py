"""Pareto fronts of accuracy (maximised) against latency (minimised)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from nas.objective import Evaluation

__all__ = ["hypervolume_2d", "pareto_front"]


def pareto_front(evals: Iterable[Evaluation]) -> list[Evaluation]:
    """The non-dominated evaluations, sorted by latency (ascending).

    ``a`` dominates ``b`` if ``a.accuracy >= b.accuracy`` and ``a.latency_ms <= b.latency_ms`` with at least one
    strict. Of exact ties in both, the first one given is kept.
    """
    items = list(evals)
    order = sorted(range(len(items)), key=lambda i: (items[i].latency_ms, -items[i].accuracy, i))
    front: list[Evaluation] = []
    best_acc = -np.inf
    for i in order:
        e = items[i]
        if e.accuracy > best_acc:
            front.append(e)
            best_acc = e.accuracy
    return front


def hypervolume_2d(evals: Iterable[Evaluation], *, ref_latency_ms: float, ref_accuracy: float = 0.0) -> float:
    """Area dominated by the front and bounded by the reference point (``ref_latency_ms``, ``ref_accuracy``);
    units: ms x accuracy. Points beyond the reference contribute nothing."""
    front = [e for e in pareto_front(evals) if e.latency_ms < ref_latency_ms and e.accuracy > ref_accuracy]
    area = 0.0
    for i, e in enumerate(front):
        nxt = front[i + 1].latency_ms if i + 1 < len(front) else ref_latency_ms
        area += (nxt - e.latency_ms) * (e.accuracy - ref_accuracy)
    return area
