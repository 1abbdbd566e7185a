from __future__ import annotations

from pathlib import Path

import pytest

from nas.objective import Evaluation
from nas.pareto import hypervolume_2d, pareto_front
from nas.strategies import create_strategy, plot_convergence, plot_pareto
from supernet.space import get_space


def _ev(acc: float, lat: float) -> Evaluation:
    return Evaluation(get_space("mnist").smallest(), acc, lat, acc)


def test_pareto_front_by_hand() -> None:
    pts = [_ev(0.70, 5.0), _ev(0.75, 7.0), _ev(0.72, 8.0), _ev(0.80, 12.0), _ev(0.69, 4.0), _ev(0.80, 13.0)]
    front = pareto_front(pts)
    assert [(e.accuracy, e.latency_ms) for e in front] == [(0.69, 4.0), (0.70, 5.0), (0.75, 7.0), (0.80, 12.0)]
    # area: (5-4)*.69 + (7-5)*.70 + (12-7)*.75 + (20-12)*.80
    assert hypervolume_2d(pts, ref_latency_ms=20.0) == pytest.approx(0.69 + 1.40 + 3.75 + 6.40)


def test_plots_write_files(tmp_path: Path, mnist_objective) -> None:
    results = {n: [create_strategy(n).search(mnist_objective, budget=10, seed=s) for s in (0, 1)]
               for n in ("random", "evolution")}
    plot_convergence(results, tmp_path / "conv.png")
    plot_convergence({"r": results["random"][0]}, tmp_path / "gap.png", relative_to=0.8)
    evs = results["random"][0].history
    plot_pareto(evs, tmp_path / "pareto.png", target_ms=mnist_objective.reward.target_ms)
    for f in ("conv.png", "gap.png", "pareto.png"):
        assert (tmp_path / f).stat().st_size > 1000
