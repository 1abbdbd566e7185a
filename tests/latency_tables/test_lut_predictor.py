"""LatencyPredictor: plain sum, fitted correction (on the fake device, whose sum error is known), JSON round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from latency_tables.predictor import (
    LatencyPredictor,
    PredictorError,
    ValidationReport,
    metrics,
    plot_predicted_vs_measured,
    predict_latency,
    validate,
)
from latency_tables.protocol import MeasurementProtocol
from latency_tables.table import ArchOutsideTableError, LatencyTable
from supernet.space import SearchSpace

E2E = MeasurementProtocol(
    rounds=2, runs_per_round=3, warmups=0, load_warmups=0, processes=2, spawn=False, chunk_size=64
)


def _fake_truth(table: LatencyTable, archs: list) -> np.ndarray:  # type: ignore[type-arg]
    """Fake-device latency of whole subnets on the table's scale, measured by the same protocol."""
    from latency_tables.table import measure_models

    ms = measure_models(archs, table.backbone, backend="fake", protocol=E2E,
                        reference_ms=table.meta.reference["latency_ms"])
    return np.asarray([m.latency_ms for m in ms])


def test_unfitted_predictor_is_the_plain_sum(fake_table: LatencyTable, small_space: SearchSpace, rng: np.random.Generator) -> None:
    archs = [small_space.sample(rng) for _ in range(5)]
    p = LatencyPredictor.from_table(fake_table)
    assert not p.fitted
    np.testing.assert_allclose(p.predict(archs), [fake_table.sum_ms(a) for a in archs])


def test_correction_learns_what_the_sum_misses(fake_table: LatencyTable, small_space: SearchSpace) -> None:
    """The fake charges a per-inference overhead that a sum of one-layer models counts once per layer."""
    rng = np.random.default_rng(7)
    archs = list({small_space.sample(rng) for _ in range(60)})
    y = _fake_truth(fake_table, archs)
    fit, test = slice(0, 30), slice(30, None)
    base = LatencyPredictor.from_table(fake_table)
    pred = base.fit(archs[fit], y[fit])
    plain = metrics(base.predict(archs[test]), y[test])
    corrected = metrics(pred.predict(archs[test]), y[test])
    assert plain.bias_pct > 5  # the sum over-counts the overhead
    assert corrected.mape_pct < plain.mape_pct / 2
    assert corrected.within_10pct >= 0.9
    assert pred.info["n_fit"] == 30


def test_save_load_round_trip_is_json(fake_table: LatencyTable, small_space: SearchSpace, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    archs = [small_space.sample(rng) for _ in range(12)]
    y = np.asarray([fake_table.sum_ms(a) for a in archs]) * 0.8 - 0.01
    pred = LatencyPredictor.from_table(fake_table).fit(archs, y)
    path = pred.save(tmp_path / "pred.json")
    d = json.loads(path.read_text())
    assert d["schema_version"] == 1 and d["features"] == list(pred.features)
    loaded = LatencyPredictor.load(path)  # table found through the recorded path
    np.testing.assert_allclose(loaded.predict(archs), pred.predict(archs))
    np.testing.assert_allclose(pred.predict(archs), y, rtol=0.02)


def test_predictor_refuses_another_table(fake_table: LatencyTable, fake_table_copy: Path, tmp_path: Path, small_space: SearchSpace) -> None:
    rng = np.random.default_rng(3)
    archs = [small_space.sample(rng) for _ in range(8)]
    path = LatencyPredictor.from_table(fake_table).fit(archs, [fake_table.sum_ms(a) for a in archs]).save(tmp_path / "p.json")
    other = LatencyTable.load(fake_table_copy)
    rows = dict(other.rows)
    rows.pop(next(iter(rows)))
    changed = LatencyTable(rows=rows, meta=other.meta).save(tmp_path / "other.csv")
    with pytest.raises(PredictorError, match="fitted on a table with sha256"):
        LatencyPredictor.load(path, table=changed)
    bad = json.loads(path.read_text())
    bad["schema_version"] = 7
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(PredictorError, match="schema_version 7"):
        LatencyPredictor.load(tmp_path / "bad.json", table=fake_table)


def test_predict_latency_accepts_objects_strings_json_and_paths(fake_table: LatencyTable, small_space: SearchSpace, rng: np.random.Generator) -> None:
    archs = [small_space.sample(rng) for _ in range(4)]
    want = np.asarray([fake_table.sum_ms(a) for a in archs])
    np.testing.assert_allclose(predict_latency(archs, table=fake_table), want)
    np.testing.assert_allclose(predict_latency([str(a) for a in archs], table=str(fake_table.path)), want)
    np.testing.assert_allclose(predict_latency([a.to_json() for a in archs], table=fake_table.path), want)  # type: ignore[arg-type]
    single = predict_latency(archs[0], table=fake_table)
    assert single.shape == (1,) and single[0] == pytest.approx(want[0])


def test_predict_latency_explains_bad_architectures(fake_table: LatencyTable) -> None:
    with pytest.raises(ArchOutsideTableError, match="outside the space"):
        predict_latency("r32-d1.1.1.1.1-k3e3_k3e3_k3e3_k3e3_k3e3", table=fake_table)
    with pytest.raises(ValueError, match="expected the form"):
        predict_latency("not-an-arch", table=fake_table)


def test_validate_reports_plain_and_corrected_side_by_side(fake_table: LatencyTable, tmp_path: Path) -> None:
    report = validate(fake_table, n_fit=12, n_test=20, protocol=E2E, retest=True, seed=1,
                      report_out=tmp_path / "r.json", plot_out=tmp_path / "p.png", predictor_out=tmp_path / "pred.json")
    assert isinstance(report, ValidationReport) and report.n_test == 20 and report.n_fit == 12
    assert report.corrected.mape_pct < report.plain_sum.mape_pct
    row = report.rows[0]
    assert set(row) == {"arch", "measured_ms", "measured_p50_ms", "measured_iqr_ms", "predicted_sum_ms",
                        "predicted_corrected_ms", "measured_stats_ms"}
    assert row["measured_p50_ms"] > 0 and row["measured_iqr_ms"] >= 0
    assert "two full protocol runs" in report.test_retest and "single processes" in report.test_retest
    assert json.loads((tmp_path / "r.json").read_text())["n_test"] == 20
    assert (tmp_path / "p.png").stat().st_size > 1000 and (tmp_path / "pred.json").exists()
    assert "plain sum" in report.summary() and "corrected" in report.summary()
    plot_predicted_vs_measured(report, tmp_path / "again.svg")


def test_auto_features_see_a_cache_effect_the_compact_set_cannot(fake_table: LatencyTable, small_space: SearchSpace) -> None:
    """A device where whole subnets also pay for the depthwise weights they stream (what LiteRT/XNNPACK showed):
    with 50 fitting subnets "auto" fits the per-kernel set, which has those weights, and predicts held-out subnets
    far better than the compact set."""
    from latency_tables.predictor import FEATURE_SETS, FEATURES, fit_correction

    rng = np.random.default_rng(11)
    archs = list({small_space.sample(rng) for _ in range(120)})
    rows = [fake_table.layer_ms(a) for a in archs]
    dw = np.asarray([FEATURES["dw_weights_k"](r) for r in rows])
    plain = np.asarray([FEATURES["lut_sum_ms"](r) for r in rows])
    y = 0.8 * plain + 0.3 * plain.mean() * dw / dw.mean()  # sum misses a cost that grows with depthwise weights
    fit, test = slice(0, 50), slice(50, None)
    auto = fit_correction(fake_table, archs[fit], y[fit])
    compact = fit_correction(fake_table, archs[fit], y[fit], features="compact")
    assert auto.features == FEATURE_SETS["per-kernel"] and auto.info["selection"]["feature_set"] == "per-kernel"
    assert compact.features == FEATURE_SETS["compact"] and compact.info["selection"]["feature_set"] == "compact"
    err_auto = metrics(auto.predict(archs[test]), y[test]).mape_pct
    err_compact = metrics(compact.predict(archs[test]), y[test]).mape_pct
    assert err_auto < err_compact / 2
    # 16 subnets support "memory" (6 features: needs 14) but not "per-kernel" (9 features: needs 20)
    assert fit_correction(fake_table, archs[:16], y[:16]).info["selection"]["feature_set"] == "memory"


def test_auto_feature_selection_with_few_subnets_fits_the_smallest_set(fake_table: LatencyTable,
                                                                       small_space: SearchSpace) -> None:
    from latency_tables.predictor import FEATURE_SETS, fit_correction, min_fit_subnets

    rng = np.random.default_rng(12)
    archs = list({small_space.sample(rng) for _ in range(8)})
    y = np.asarray([fake_table.sum_ms(a) for a in archs]) * 0.7
    pred = fit_correction(fake_table, archs, y)
    assert pred.features == FEATURE_SETS["compact"] and pred.info["selection"]["feature_set"] == "compact"
    assert min_fit_subnets("auto") == len(FEATURE_SETS["compact"]) + 1
    with pytest.raises(ValueError, match="per-kernel"):
        fit_correction(fake_table, archs, y, features="no-such-set")


def test_predictor_with_the_new_features_round_trips(fake_table: LatencyTable, small_space: SearchSpace,
                                                     tmp_path: Path) -> None:
    from latency_tables.predictor import FEATURE_SETS, fit_correction

    rng = np.random.default_rng(13)
    archs = list({small_space.sample(rng) for _ in range(30)})
    y = np.asarray([fake_table.sum_ms(a) for a in archs]) * rng.uniform(0.6, 0.8, size=len(archs))
    pred = fit_correction(fake_table, archs, y, features="per-kernel")
    assert pred.features == FEATURE_SETS["per-kernel"]
    pred.save(tmp_path / "p.json")
    back = LatencyPredictor.load(tmp_path / "p.json", table=fake_table)
    np.testing.assert_allclose(back.predict(archs), pred.predict(archs))
    assert json.loads((tmp_path / "p.json").read_text())["features"] == list(FEATURE_SETS["per-kernel"])
