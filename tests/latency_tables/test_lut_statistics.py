"""Named statistics: the median is the default estimate, best case and tail travel beside it, and statistics never
mix (tables, predictors, validations, queries)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from lut_helpers import FAKE_PROTOCOL  # type: ignore[import-not-found]

from latency_tables.predictor import LatencyPredictor, fit_correction, predict_latency, validate
from latency_tables.protocol import ChunkResult, MeasurementProtocol, StatisticError, fit_chunk
from latency_tables.table import LatencyTable, StatisticMismatchError, TableSchemaError, measure_models

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tables"


def _chunk(runs_ms: np.ndarray) -> ChunkResult:
    """One model, P=1, R=1: runs (m,) in ms; a constant probe."""
    r = np.asarray(runs_ms, dtype=float)[None, None, None, :] / 1e3
    probe = np.full((1, 1, 2, r.shape[-1]), 1e-3)
    return ChunkResult(keys=["m"], runs_s=r, probe_runs_s=probe)


def test_fit_chunk_statistics_are_the_named_percentiles_of_the_runs() -> None:
    runs = np.arange(1, 101, dtype=float)  # 1..100 ms
    fit = fit_chunk(_chunk(runs), MeasurementProtocol())
    assert fit.estimate_ms[0] == pytest.approx(np.percentile(runs, 50))  # the default estimate is the median
    assert fit.stats_ms["best"][0] == pytest.approx(np.percentile(runs, 10))
    assert fit.stats_ms["p90"][0] == pytest.approx(np.percentile(runs, 90))
    assert fit.stats_ms["p99"][0] == pytest.approx(np.percentile(runs, 99))
    best = fit_chunk(_chunk(runs), MeasurementProtocol(statistic="best"))
    assert best.estimate_ms[0] == pytest.approx(np.percentile(runs, 10))


def test_protocol_refuses_an_unknown_statistic() -> None:
    with pytest.raises(StatisticError, match="Protocol.statistic 'p95'"):
        MeasurementProtocol(statistic="p95")


def test_built_table_has_every_statistic_ordered(fake_table: LatencyTable) -> None:
    assert fake_table.meta.statistic == "median" and fake_table.statistic == "median"
    assert set(fake_table.meta.statistics) == {"median", "best", "p90", "p99"}
    for row in fake_table.rows.values():
        s = row.stats
        assert s["best"] <= s["median"] <= s["p90"] <= s["p99"]
        assert row.latency_ms == s["median"]


def test_with_statistic_answers_in_that_statistic(fake_table: LatencyTable) -> None:
    cfg = fake_table.space.smallest()
    p99 = fake_table.with_statistic("p99")
    by_hand = sum(fake_table.rows[s.key].stats["p99"] for s in fake_table.specs(cfg))
    assert p99.sum_ms(cfg) == pytest.approx(by_hand)
    assert p99.sum_ms(cfg) > fake_table.sum_ms(cfg) > fake_table.with_statistic("best").sum_ms(cfg)
    with pytest.raises(StatisticMismatchError, match="'median'"):
        p99.check_statistic("median")


def test_saved_table_reloads_every_statistic(fake_table: LatencyTable, tmp_path: Path) -> None:
    t = LatencyTable.load(fake_table.path, statistic="p90")  # type: ignore[arg-type]
    assert t.statistic == "p90"
    again = t.save(tmp_path / "t.csv")
    assert again.statistic == "p90"
    for k, row in LatencyTable.load(tmp_path / "t.csv").rows.items():
        assert row.stats == pytest.approx(fake_table.rows[k].stats, rel=1e-5)


def test_schema_v1_table_is_the_best_case_only() -> None:
    t = LatencyTable.load(FIXTURES / "schema-v1-fake.csv")
    assert t.statistic == "best" and t.meta.statistics == ["best"] and t.meta.schema_version == 2
    with pytest.raises(StatisticMismatchError, match=r"no 'median' latencies.*schema 1 tables hold only the best case"):
        LatencyTable.load(FIXTURES / "schema-v1-fake.csv", statistic="median")


def test_manifest_with_unknown_statistic_is_refused(fake_table_copy: Path) -> None:
    mpath = Path(str(fake_table_copy) + ".meta.json")
    d = json.loads(mpath.read_text())
    d["statistic"] = "p95"
    mpath.write_text(json.dumps(d))
    with pytest.raises(TableSchemaError, match=r"meta\.json: .*'p95'"):
        LatencyTable.load(fake_table_copy)


def _fit(table: LatencyTable, n: int = 16) -> tuple[list, np.ndarray]:
    rng = np.random.default_rng(0)
    archs = [table.space.sample(rng) for _ in range(n)]
    y = np.asarray([table.sum_ms(a) * 0.8 + 0.01 for a in archs])
    return archs, y


def test_predictor_records_and_enforces_its_statistic(fake_table: LatencyTable, tmp_path: Path) -> None:
    p99 = fake_table.with_statistic("p99")
    archs, y = _fit(p99)
    pred = fit_correction(p99, archs, y, features="compact")
    assert pred.statistic == "p99" and pred.to_json()["statistic"] == "p99"
    path = pred.save(tmp_path / "p.json")
    # loading onto the table object answering in the median is refused: statistics never mix
    with pytest.raises(StatisticMismatchError, match=r"fitted on 'p99' latencies.*answers in 'median'"):
        LatencyPredictor.load(path, table=fake_table)
    # by path, or through predict_latency, the table is opened in the predictor's statistic
    assert LatencyPredictor.load(path, table=fake_table.path).statistic == "p99"
    got = predict_latency(archs[:3], table=fake_table, predictor=path)
    np.testing.assert_allclose(got, pred.predict(archs[:3]))
    with pytest.raises(StatisticMismatchError, match="'median'"):
        predict_latency(archs[:3], table=fake_table, predictor=path, statistic="median")
    with pytest.raises(StatisticMismatchError, match="'median'"):
        pred.predict(archs[:3], statistic="median")


def test_old_predictor_without_statistic_is_the_best_case(fake_table: LatencyTable, tmp_path: Path) -> None:
    best = fake_table.with_statistic("best")
    archs, y = _fit(best)
    d = fit_correction(best, archs, y, features="compact").to_json()
    del d["statistic"], d["table"]["statistic"]
    (tmp_path / "old.json").write_text(json.dumps(d))
    assert LatencyPredictor.load(tmp_path / "old.json", table=fake_table.path).statistic == "best"


def test_measurements_carry_every_statistic(fake_table: LatencyTable) -> None:
    archs = [fake_table.space.smallest(), fake_table.space.largest()]
    ms = measure_models(archs, fake_table.backbone, backend="fake", protocol=FAKE_PROTOCOL)
    for m in ms:
        assert m.statistic == "median" and m.stat("median") == m.latency_ms
        assert m.stat("best") <= m.latency_ms <= m.stat("p90") <= m.stat("p99")
    with pytest.raises(ValueError, match="'mean' was not measured"):
        ms[0].stat("mean")


def test_validation_records_its_statistic_and_scores_the_tail(fake_table: LatencyTable) -> None:
    rep = validate(fake_table, n_fit=12, n_test=6, protocol=FAKE_PROTOCOL, features="compact",
                   also_statistics=("p99",))
    assert rep.statistic == "median" and rep.to_json()["statistic"] == "median"
    assert rep.predictor["statistic"] == "median"
    tail = rep.other_statistics["p99"]
    assert tail["predictor"]["statistic"] == "p99" and tail["corrected"]["n"] == 6
    rep99 = validate(fake_table, n_fit=12, n_test=6, protocol=FAKE_PROTOCOL, features="compact", statistic="p99")
    assert rep99.statistic == "p99"
    assert [r["measured_ms"] for r in rep99.rows] == [r["measured_stats_ms"]["p99"] for r in rep99.rows]


def test_validation_refuses_a_statistic_the_table_lacks_before_measuring() -> None:
    t = LatencyTable.load(FIXTURES / "schema-v1-fake.csv")
    with pytest.raises(StatisticMismatchError, match="no 'p99'"):
        validate(t, n_fit=0, n_test=2, protocol=FAKE_PROTOCOL, also_statistics=("p99",))
