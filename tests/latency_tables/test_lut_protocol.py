"""The measurement protocol: presets, estimators, agreement, worker failures."""

from __future__ import annotations

import numpy as np
import pytest

from latency_tables.protocol import (
    ChunkResult,
    MeasureItem,
    MeasurementProtocol,
    WorkerPool,
    agreement,
    fit_chunk,
    median_polish,
    process_agreement,
    round_effects,
)


def test_presets_and_validation() -> None:
    assert (
        MeasurementProtocol.quick().rounds
        < MeasurementProtocol().rounds
        < MeasurementProtocol.thorough().rounds
    )
    assert MeasurementProtocol.preset("quick", processes=1).processes == 1
    assert (
        MeasurementProtocol.from_json(MeasurementProtocol.thorough().to_json())
        == MeasurementProtocol.thorough()
    )
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        MeasurementProtocol(rounds=0)
    with pytest.raises(ValueError, match="preset 'fast'"):
        MeasurementProtocol.preset("fast")
    with pytest.raises(ValueError, match="unknown field"):
        MeasurementProtocol.from_json({"roundz": 3})


def test_median_polish_recovers_additive_effects() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=6), rng.normal(size=9)
    a_hat, b_hat = median_polish(b[:, None] + a[None, :])
    np.testing.assert_allclose((a_hat[:, None] + b_hat[None, :]).T, b[:, None] + a[None, :], atol=1e-9)


def _synthetic(true_ms: np.ndarray, probe_ms: float, *, P: int = 3, R: int = 6, m: int = 8, seed: int = 0) -> ChunkResult:
    """Runs = true latency x per-round slowness (up to 2x) x occasional bursts (only ever slower)."""
    rng = np.random.default_rng(seed)
    slow = rng.uniform(1.0, 2.0, size=(P, R))
    def runs(base: np.ndarray, k: int) -> np.ndarray:
        shape = (P, R, k, m)
        burst = np.where(rng.random(shape) < 0.3, rng.uniform(1.0, 3.0, shape), 1.0)
        return base.reshape(1, 1, k, 1) * slow[:, :, None, None] * burst * (1 + 0.01 * rng.random(shape))
    return ChunkResult(keys=[f"m{i}" for i in range(len(true_ms))], runs_s=runs(true_ms / 1e3, len(true_ms)),
                       probe_runs_s=runs(np.full(3, probe_ms / 1e3), 3))


def test_estimator_removes_round_slowness_and_bursts() -> None:
    true_ms = np.array([0.02, 0.05, 0.1, 0.4, 1.0])
    fit = fit_chunk(_synthetic(true_ms, 0.1), pct=10)
    np.testing.assert_allclose(fit.ratio, true_ms / 0.1, rtol=0.05)
    np.testing.assert_allclose(fit.ratio_per_process, np.repeat((true_ms / 0.1)[:, None], 3, axis=1), rtol=0.08)
    eff = round_effects(_synthetic(true_ms, 0.1))
    assert eff.shape == (3, 6) and np.median(eff) == pytest.approx(1.0, rel=1e-3)


def test_a_whole_measurement_slower_by_one_factor_moves_own_ms_but_not_ratios() -> None:
    """Round effects have median 1 within a measurement, so a machine 30 % slower for all of a short measurement
    (issue 5: LiteRT retest, 0 % within ±10 %) shows in own-clock ms; the probe's ratio, the retest's quantity,
    cancels it."""
    true_ms = np.array([0.1, 0.15, 0.2, 0.3])
    a = _synthetic(true_ms, 0.05, seed=1)
    b = _synthetic(true_ms, 0.05, seed=2)
    b = ChunkResult(keys=b.keys, runs_s=b.runs_s * 1.3, probe_runs_s=b.probe_runs_s * 1.3)
    fa, fb = fit_chunk(a, pct=10), fit_chunk(b, pct=10)
    assert agreement(fa.estimate_ms, fb.estimate_ms).within_10pct == 0.0
    assert agreement(fa.ratio, fb.ratio).within_5pct == 1.0


def test_agreement_shares() -> None:
    a = agreement([1.0, 1.0, 1.0, 1.0], [1.0, 1.04, 1.08, 1.5])
    assert a.within_5pct == 0.5 and a.within_10pct == 0.75 and a.n_models == 4
    pa = process_agreement(np.array([[1.0, 1.0, 1.2], [2.0, 2.02, 2.0]]))
    assert pa is not None and pa.pairs == 3
    assert process_agreement(np.ones((4, 1))) is None
    with pytest.raises(ValueError):
        agreement([1.0], [1.0, 2.0])


def test_fake_pool_in_process_is_deterministic() -> None:
    import functools

    from supernet.layers import LayerSpec, build_layer

    spec = LayerSpec("mbconv", 8, 16, 16, kernel=3, stride=1, expand=3, mid_ch=48)
    items = [MeasureItem("a", (1, 16, 8, 8), factory=functools.partial(build_layer, spec))]
    pr = MeasurementProtocol(rounds=2, runs_per_round=3, processes=2, spawn=False)
    out = []
    for _ in range(2):
        with WorkerPool("fake", {"seed": 3}, pr) as pool:
            out.append(pool.measure_chunk(items, items[0]).runs_s)
    np.testing.assert_array_equal(out[0], out[1])


def test_worker_error_is_reported_with_its_traceback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pr = MeasurementProtocol(rounds=1, runs_per_round=1, processes=1, spawn=True)
    missing = MeasureItem("gone", (1, 3, 8, 8), artifact=str(tmp_path / "missing.fake.json"))
    with (
        WorkerPool("fake", {}, pr) as pool,
        pytest.raises(RuntimeError, match=r"(?s)failed during 'load'.*missing\.fake\.json"),
    ):
        pool.measure_chunk([missing], missing)
