"""Strategy benchmark on the SYNTHETIC objective (`nas.synthetic`): best reward vs budget over seeds.

    python -m nas.bench --out /tmp/nas_bench --budgets 50 100 300 --seeds 0 1 2 --strategies gp evolution random

Each (strategy, budget, seed) run is a fresh objective with accuracy weights from ``seed``; the reference optimum
per seed is the best reward any run found (reported gaps are relative to it, in %).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.search import search
from nas.synthetic import make_synthetic_objective
from supernet.io import atomic_write_json

__all__ = ["main", "run"]

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

    from nas.plots import _save

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
    _save(fig, out / "convergence.png")
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
        for _ in range(500):
            nxt = max(obj.evaluate(obj.space.neighbors(cur.arch)), key=lambda e: e.reward)
            if nxt.reward <= cur.reward:
                break
            cur = nxt
        top = max(top, cur.reward)
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
