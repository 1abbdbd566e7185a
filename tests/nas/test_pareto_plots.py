from __future__ import annotations

from pathlib import Path

import numpy as np
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


def test_plots_draw_the_data(tmp_path: Path, mnist_objective, monkeypatch: pytest.MonkeyPatch) -> None:
    """What is drawn is the data: median best-so-far per label, the gap in %, the front as a step, the target."""
    import nas.plots

    results = {n: [create_strategy(n).search(mnist_objective, budget=10, seed=s) for s in (0, 1)]
               for n in ("random", "evolution")}
    evs = results["random"][0].history
    target = mnist_objective.reward.target_ms
    plot_pareto(evs, tmp_path / "pareto.png", target_ms=target)  # the real writer, once
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    figs: list = []
    monkeypatch.setattr(nas.plots, "save_figure", lambda fig, path: figs.append(fig))
    plot_convergence(results, tmp_path / "conv.png")
    plot_convergence({"r": results["random"][0]}, tmp_path / "gap.png", relative_to=0.8)
    plot_pareto(evs, tmp_path / "pareto.png", target_ms=target)
    conv, gap, par = (f.axes[0] for f in figs)

    lines = {ln.get_label(): ln for ln in conv.get_lines()}
    assert set(lines) == {"random (n=2)", "evolution (n=2)"}
    for name, runs in results.items():
        med = np.median(np.stack([r.best_so_far() for r in runs]), axis=0)
        np.testing.assert_allclose(lines[f"{name} (n=2)"].get_ydata(), med)
        np.testing.assert_array_equal(lines[f"{name} (n=2)"].get_xdata(), np.arange(1, 11))

    best = results["random"][0].best_so_far()
    np.testing.assert_allclose(gap.get_lines()[0].get_ydata(), np.maximum(100 * (0.8 - best) / 0.8, 1e-4))

    front = pareto_front(evs)
    by_label = {ln.get_label(): ln for ln in par.get_lines()}
    np.testing.assert_allclose(by_label["Pareto front"].get_xdata(), [e.latency_ms for e in front])
    np.testing.assert_allclose(by_label["Pareto front"].get_ydata(), [100 * e.accuracy for e in front])
    assert by_label[f"target {target:g} ms"].get_xdata()[0] == target
    assert len(par.collections[0].get_offsets()) == len(evs)  # every evaluation is a point
