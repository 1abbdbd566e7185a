"""Convergence and Pareto plots (matplotlib, Agg backend; imported lazily)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from nas.objective import Evaluation
from nas.pareto import pareto_front
from nas.strategies.base import SearchResult
from supernet.io import atomic_open

__all__ = ["plot_convergence", "plot_pareto", "save_figure"]


def _figure():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: object, path: str | os.PathLike[str]) -> None:
    """Write a matplotlib figure atomically, in the format of the path's suffix (PNG by default)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format=fmt, dpi=120, bbox_inches="tight")  # type: ignore[attr-defined]


def plot_convergence(
    results: Mapping[str, SearchResult | Sequence[SearchResult]],
    path: str | os.PathLike[str],
    *,
    title: str = "best reward so far",
    relative_to: float | None = None,
) -> None:
    """Best-so-far reward against evaluations, one line per label (several seeds: median with min-max band).

    Args:
        results: label -> one result or results over seeds.
        relative_to: if given, plot the gap ``100 * (relative_to - best) / relative_to`` in % (log scale) instead.
    """
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, res in results.items():
        runs = [res] if isinstance(res, SearchResult) else list(res)
        n = min(len(r.history) for r in runs)
        curves = np.stack([r.best_so_far()[:n] for r in runs])
        if relative_to is not None:
            curves = np.maximum(100.0 * (relative_to - curves) / relative_to, 1e-4)
        x = np.arange(1, n + 1)
        med = np.median(curves, axis=0)
        ax.plot(x, med, label=f"{label} (n={len(runs)})")
        if len(runs) > 1:
            ax.fill_between(x, curves.min(axis=0), curves.max(axis=0), alpha=0.2)
    ax.set_xlabel("evaluations")
    if relative_to is not None:
        ax.set_yscale("log")
        ax.set_ylabel("gap to reference reward (%)")
    else:
        ax.set_ylabel("best reward so far")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    plt.close(fig)


def plot_pareto(
    evals: Iterable[Evaluation],
    path: str | os.PathLike[str],
    *,
    front: Sequence[Evaluation] | None = None,
    target_ms: float | None = None,
    title: str = "accuracy vs latency",
) -> None:
    """Scatter of every evaluation, the Pareto front (computed if not given) and the latency target."""
    plt = _figure()
    items = list(evals)
    fr = list(front) if front is not None else pareto_front(items)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.scatter([e.latency_ms for e in items], [100 * e.accuracy for e in items], s=10, alpha=0.5, label="evaluated")
    ax.step([e.latency_ms for e in fr], [100 * e.accuracy for e in fr], where="post", color="C3", label="Pareto front")
    ax.scatter([e.latency_ms for e in fr], [100 * e.accuracy for e in fr], s=18, color="C3")
    if target_ms is not None:
        ax.axvline(target_ms, color="k", ls="--", lw=1, label=f"target {target_ms:g} ms")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
    plt.close(fig)
