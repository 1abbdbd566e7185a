"""`benchmarks/search.py` and the helpers it uses from `nas.bench`.

The end-to-end runs check the JSON's structure and that its numbers are consistent (not their values, which are
the benchmark's business): a fast one on a tiny untrained supernet with the fake latency backend, and the real
``--quick`` mode (onnxruntime, a trained supernet) marked slow.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from bench_scripts import load_benchmark

from nas.bench import (
    BestSoFar,
    NotAdditiveError,
    bootstrap_median_ci,
    censored_median,
    compile_additive,
    hill_climb,
)
from nas.synthetic import SyntheticAccuracy, SyntheticLatency, make_synthetic_objective, synthetic_macs
from supernet.space import get_space


# --------------------------------------------------------------------------- helpers
def test_trace_thresholds_and_gaps() -> None:
    tr = BestSoFar.from_rewards([0.5, 0.4, 0.9, 0.9, 0.95, 0.99])
    assert tr.improvements == ((1, 0.5), (3, 0.9), (5, 0.95), (6, 0.99)) and tr.budget == 6
    assert tr.best_after(4) == 0.9 and tr.best_after(7) is None
    assert tr.evals_to_gap(1.0, 5.5) == 5 and tr.evals_to_gap(1.0, 1.5) == 6
    assert math.isinf(tr.evals_to_gap(1.0, 0.5))  # never within 0.5 %: censored
    assert tr.gap_pct_after(2, 1.0) == pytest.approx(50.0) and tr.gap_pct_after(10, 1.0) is None
    assert BestSoFar.from_json(json.loads(json.dumps(tr.to_json()))) == tr


def test_censored_median_and_bootstrap() -> None:
    inf = math.inf
    assert censored_median([3, 1, 2]) == 2 and censored_median([4, 1, 2, 3]) == 2.5
    assert censored_median([1, 2, inf]) == 2
    assert math.isinf(censored_median([1, inf, inf])) and math.isinf(censored_median([1, 2, 3, inf, inf, inf]))
    lo, hi = bootstrap_median_ci([10, 12, 14, 16, 18, 20, 22, 24, 26, 28], n_boot=500, seed=0)
    assert 10 <= lo <= 19 <= hi <= 28
    lo, hi = bootstrap_median_ci([10, 20, inf, inf, inf], n_boot=500, seed=0)
    assert lo >= 10 and math.isinf(hi)


def test_compile_additive_is_exact_for_block_sums_and_refuses_the_rest() -> None:
    space = get_space("mnist")
    lat = SyntheticLatency(space)
    fast = compile_additive(lat, space, seed=0)
    rng = np.random.default_rng(5)
    archs = [space.sample(rng) for _ in range(50)]
    np.testing.assert_allclose(fast(archs), lat(archs), rtol=1e-9)
    both = compile_additive(lambda cs: np.stack([lat(cs), synthetic_macs(space)(cs)], axis=1), space, seed=1)
    assert both(archs).shape == (50, 2)
    with pytest.raises(NotAdditiveError):
        compile_additive(SyntheticAccuracy(space, seed=0), space, seed=0)


def test_hill_climb_ends_in_a_local_optimum() -> None:
    obj = make_synthetic_objective("mnist", seed=0, reward="hard")
    start = obj.space.sample(np.random.default_rng(0))
    top = hill_climb(obj, start)
    assert top.reward >= obj.evaluate([start])[0].reward
    assert max(e.reward for e in obj.evaluate(obj.space.neighbors(top.arch))) <= top.reward


# --------------------------------------------------------------------------- end to end
def _check_result(res: dict[str, Any], out: Path, stem: str, st: Any) -> None:
    assert (out / f"{stem}.json").is_file() and (out / f"{stem}.md").is_file()
    assert (out / f"{stem}-convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / f"{stem}.json").read_text())
    assert on_disk["schema_version"] == 1 and on_disk["settings"]["n_seeds"] == st.n_seeds
    for key in ("environment", "conditions", "supernet", "accuracy_predictor", "latency", "objective", "reference",
                "runs", "summary", "verdict", "winners"):
        assert key in on_disk, key
    env = on_disk["environment"]
    assert env["cpu_model"] and env["python"] and env["optuna"]
    lat = on_disk["latency"]
    for key in ("cpu_model", "backend", "backend_version", "precision", "threads", "warmups", "runs"):
        assert lat[key] is not None, key
    acc = on_disk["accuracy_predictor"]
    assert acc["n_measured"] == st.n_subnets and acc["rmse"] >= 0 and -1 <= acc["kendall_tau"] <= 1
    n_targets = len(st.target_fractions)
    targets = on_disk["objective"]["targets"]
    assert len(targets) == n_targets
    assert all(0 < t["search_target_ms"] <= t["target_ms"] for t in targets)
    refs = [t["reward"] for t in on_disk["reference"]["per_target"]]
    # every run: thresholds ordered, gaps non-negative (the reference is the best reward anyone found)
    n_runs = (len(st.strategies) * st.n_seeds + sum(v["n_seeds"] for v in st.variants.values())) * n_targets
    assert len(on_disk["runs"]) == n_runs
    for r in on_disk["runs"]:
        assert r["n_evaluations"] == r["budget"] == st.budgets[r["strategy"]]
        assert r["best_reward"] <= refs[r["target_index"]] + 1e-12
        assert r["final_gap_pct"] >= -1e-9
        e_loose, e_tight = (r["evals_to_gap"][f"{p:g}"] for p in sorted(st.thresholds_pct, reverse=True))
        if e_tight is not None:
            assert e_loose is not None and 1 <= e_loose <= e_tight <= r["budget"]
        gaps = [r["gap_pct_after"][str(n)] for n in st.gap_at]
        assert all(g is None or g >= -1e-9 for g in gaps)
        present = [g for g in gaps if g is not None]
        assert present == sorted(present, reverse=True), "gap can only shrink with more evaluations"
        assert r["wall_time_s"] >= 0
    assert len(on_disk["summary"]) == (len(st.strategies) + len(st.variants)) * n_targets
    for c in on_disk["summary"]:
        tight, loose = (c[f"evals_to_{p:g}pct"] for p in sorted(st.thresholds_pct))
        for cell in (tight, loose):
            assert 0.0 <= cell["share_reached"] <= 1.0
            assert cell["censored_at_budget"] == round((1 - cell["share_reached"]) * c["n_runs"])
            med, (lo, hi) = cell["median"], cell["ci95"]
            if med is not None:
                assert lo is not None and lo <= med <= c["budget"]
                assert hi is None or med <= hi
        assert loose["share_reached"] >= tight["share_reached"]
        if tight["median"] is not None:
            assert loose["median"] is not None and loose["median"] <= tight["median"]
    w = on_disk["winners"]
    assert 0.0 <= w["share_runs_meeting_target"] <= 1.0 and len(w["per_target"]) == n_targets
    for t in w["per_target"]:
        assert 0.0 <= t["share_runs_meeting_target"] <= 1.0 and t["n_runs"] == st.n_seeds
        for row in t["winners"]:
            assert row["measured_latency_ms"] > 0 and 0 <= row["measured_accuracy"] <= 1
            assert 0 <= row["predicted_accuracy"] <= 1
    md = (out / f"{stem}.md").read_text()
    assert "evals to" in md and "measured" in md and "predicted" in md


@pytest.fixture
def tiny_run(tmp_path: Path) -> Path:
    """A 'hwnas demo'-shaped folder with an untrained supernet of a small space on the 8x8 digits set."""
    from supernet.layers import Backbone
    from supernet.model import OFASupernet
    from supernet.space import SearchSpace
    from supernet.train import save_supernet

    space = SearchSpace(name="bench-test", resolutions=(24, 28), depth_choices=(1, 2), kernel_choices=(3, 5),
                        expand_choices=(3, 6))
    torch.manual_seed(0)
    net = OFASupernet(space=space, backbone=Backbone(in_channels=1, num_classes=10, width_mult=0.25))
    run = tmp_path / "run"
    (run / "supernet").mkdir(parents=True)
    save_supernet(net, run / "supernet" / "supernet.pt", extra={"train_config": {"dataset": "digits", "seed": 0}})
    return run


def test_tiny_benchmark_end_to_end_and_resume(tmp_path: Path, tiny_run: Path) -> None:
    bench = load_benchmark("search")
    st = replace(bench.Settings.preset(quick=True), backend="fake", n_subnets=12, bn_images=32,
                 predictor_hidden=(32, 32), predictor_epochs=20, latency_fit=6, latency_check=4,
                 budgets={"gp": 8, "optuna-tpe": 8, "evolution": 16, "random": 16, "rl": 16},
                 strategy_kwargs={"gp": {"n_pool": 100, "n_rounds": 1, "local_steps": 1}},
                 reference_budget=40, gap_at=(4, 8), n_boot=100, optuna_gp_probe_trials=0)
    out, work = tmp_path / "out", tmp_path / "work"
    res = bench.run(st, work=work, out=out, stem="search.test", run_dir=tiny_run, workers=1)
    _check_result(res, out, "search.test", st)
    # resumed: every stage and run is reused, nothing is measured again
    state_before = (work / "state.json").read_text()
    lines_before = (work / "runs.jsonl").read_text()
    res2 = bench.run(st, work=work, out=out, stem="search.test", run_dir=tiny_run, workers=1)
    assert (work / "runs.jsonl").read_text() == lines_before
    assert json.loads((work / "state.json").read_text()).keys() == json.loads(state_before).keys()
    assert [r["best_reward"] for r in res2["runs"]] == [r["best_reward"] for r in res["runs"]]


@pytest.mark.slow
def test_quick_mode_end_to_end(tmp_path: Path) -> None:
    """``benchmarks/search.py --quick`` as a user runs it (trains a tiny supernet, onnxruntime LUT)."""
    bench = load_benchmark("search")
    out = tmp_path / "out"
    assert bench.main(["--quick", "--out", str(out), "--workers", "1"]) == 0
    res = json.loads((out / "search.quick.json").read_text())
    _check_result(res, out, "search.quick", bench.Settings.preset(quick=True))
    assert res["latency"]["backend"] == "onnxruntime" and res["winners"]["measurement"]["environment"]
