"""Precision as a table dimension: backends per precision, int8 tables measured on int8 layers, mismatches refused."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from lut_helpers import FAKE_PROTOCOL  # type: ignore[import-not-found]
from typer.testing import CliRunner

from hwnas.commands.lut import app
from latency_tables.backends import (
    Backend,
    UnsupportedPrecisionError,
    create_backend,
    list_backends,
    supported_precisions,
)
from latency_tables.predictor import LatencyPredictor, predict_latency, read_measured_archs, validate
from latency_tables.protocol import MeasurementProtocol
from latency_tables.table import (
    LatencyTable,
    PrecisionMismatchError,
    build_table,
    enumerate_layers,
    meta_path_for,
    table_backend_kwargs,
)
from supernet.layers import Backbone, LayerSpec, build_layer
from supernet.space import SearchSpace

SPEC = LayerSpec("mbconv", 8, 16, 16, kernel=3, stride=1, expand=3, mid_ch=48, se=True, act="hswish")
SHAPE = (1, 16, 8, 8)
E2E = MeasurementProtocol(
    rounds=2, runs_per_round=3, warmups=0, load_warmups=0, processes=2, spawn=False, chunk_size=64
)


def _backend_precisions() -> list[object]:
    out = []
    for name in list_backends():
        for precision in supported_precisions(name):
            marks = [pytest.mark.slow, pytest.mark.tflite] if name == "tflite" else []
            out.append(pytest.param(name, precision, marks=marks, id=f"{name}-{precision}"))
    return out


@pytest.fixture(scope="module")
def fake_int8_table(tmp_path_factory: pytest.TempPathFactory, small_space: SearchSpace,
                    mnist_backbone: Backbone) -> LatencyTable:
    out = tmp_path_factory.mktemp("fake-int8") / "lut-int8.csv"
    return build_table(small_space, mnist_backbone, out=out, backend="fake", precision="int8", protocol=FAKE_PROTOCOL,
                       progress=False, device="test-device")


# --------------------------------------------------------------------------- backends
TFLITE_LOWERING = all(importlib.util.find_spec(m) is not None for m in ("litert_torch", "ai_edge_quantizer"))


def test_every_backend_declares_its_precisions() -> None:
    assert set(supported_precisions("fake")) == {"fp32", "fp16", "int8"}
    assert set(supported_precisions("onnxruntime")) == {"fp32", "fp16", "int8"}
    assert supported_precisions("pytorch") == ("fp32",)
    assert set(supported_precisions("tflite")) == ({"fp32", "fp16", "int8"} if TFLITE_LOWERING else {"fp32"})


@pytest.mark.parametrize(("name", "precision"), _backend_precisions())
def test_backend_contract_per_precision(name: str, precision: str, tmp_path: Path) -> None:
    if name == "tflite" and importlib.util.find_spec("litert_torch") is None:
        pytest.skip("TFLite conversion needs the [tflite] extra (litert-torch)")
    be = create_backend(name, threads=1, precision=precision)
    assert isinstance(be, Backend) and be.precision == precision and precision in be.precisions
    assert be.environment()["precision"] == precision
    prepared = be.prepare(build_layer(SPEC), SHAPE, tmp_path)
    times = be.time_runs(prepared, 3)
    assert times.shape == (3,) and np.all(np.isfinite(times)) and np.all(times > 0)


@pytest.mark.parametrize("name", ["tflite", "pytorch"])
def test_fp32_only_backends_explain_why(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if name == "tflite":  # as on an install without the 'tflite' extra, whatever this one has
        import importlib.util

        from latency_tables.backends import tflite

        real_find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda m, *a: None if m == "ai_edge_quantizer" else real_find_spec(m, *a))
        assert not tflite._lowering_available()
        monkeypatch.setattr(tflite.TFLiteBackend, "precisions", ("fp32",))
    with pytest.raises(UnsupportedPrecisionError, match=rf"{name} backend: precision 'int8' is not supported \(.*"
                                                        r"onnxruntime.*\); supported: \['fp32'\]"):
        create_backend(name, precision="int8")


def test_fake_int8_artifacts_record_their_precision(tmp_path: Path) -> None:
    fp32 = create_backend("fake", precision="fp32")
    int8 = create_backend("fake", precision="int8")
    path = fp32.export(build_layer(SPEC), SHAPE, tmp_path / "l.fake.json")
    with pytest.raises(ValueError, match="exported at fp32"):
        int8.load(path, SHAPE)
    assert json.loads(int8.export(build_layer(SPEC), SHAPE, tmp_path / "q.fake.json").read_text())["precision"] == "int8"
    with pytest.raises(UnsupportedPrecisionError, match="'int4' is not supported"):
        create_backend("fake", precision="int4")


def test_ort_int8_export_holds_int8_weights(tmp_path: Path) -> None:
    from supernet.quantize import int8_weight_fraction

    be = create_backend("onnxruntime", precision="int8")
    path = be.export(build_layer(SPEC), SHAPE, tmp_path / "l.onnx")
    assert int8_weight_fraction(path) == pytest.approx(1.0)
    q = be.environment()["quantization"]
    assert q["format"].startswith("QOperator") and "per-channel" in q["weights"]
    fp32 = create_backend("onnxruntime").export(build_layer(SPEC), SHAPE, tmp_path / "f.onnx")
    assert int8_weight_fraction(fp32) == 0.0 and "quantization" not in create_backend("onnxruntime").environment()


@pytest.mark.slow
@pytest.mark.tflite
def test_tflite_int8_export_is_full_integer(tmp_path: Path) -> None:
    """litert-torch conversion plus ai-edge-quantizer (~10-25 s here): int8 weights and int8 input tensor."""
    if not TFLITE_LOWERING or importlib.util.find_spec("litert_torch") is None:
        pytest.skip("needs supernet.quantize_tflite and the [tflite] extra")
    from supernet.quantize_tflite import tflite_weight_dtypes

    be = create_backend("tflite", precision="int8")
    path = be.export(build_layer(SPEC), SHAPE, tmp_path / "l.tflite")
    assert set(tflite_weight_dtypes(path)) == {"int8"}
    prepared = be.load(path, SHAPE)
    assert prepared.handle.input.dtype == "int8" and be.time_runs(prepared, 2).shape == (2,)
    assert be.environment()["quantization"]["weights"].endswith("per-channel")


# --------------------------------------------------------------------------- tables
def test_int8_table_is_measured_on_int8_layers(fake_int8_table: LatencyTable, fake_table: LatencyTable) -> None:
    """Rows follow the fake's int8 cost model (not fp32 scaled): the per-row int8/fp32 ratio varies with the layer."""
    from latency_tables.backends.fake import FakeBackend, count_macs_of_module

    assert fake_int8_table.precision == "int8" and fake_table.precision == "fp32"
    assert LatencyTable.load(fake_int8_table.path).meta.precision == "int8"  # type: ignore[arg-type]
    assert table_backend_kwargs(fake_int8_table.meta) == {}
    fb8, fb32 = FakeBackend(precision="int8"), FakeBackend(precision="fp32")
    true_ratio, table_ratio = [], []
    for key in list(fake_int8_table.rows)[:15]:
        s = fake_int8_table.rows[key].spec
        macs, kernels = count_macs_of_module(build_layer(s), (1, s.in_ch, s.in_hw, s.in_hw))
        true_ratio.append(fb8.true_latency_s(macs, kernels) / fb32.true_latency_s(macs, kernels))
        table_ratio.append(fake_int8_table.rows[key].latency_ms / fake_table.rows[key].latency_ms)
    assert np.ptp(true_ratio) > 0.2  # int8 is not a constant factor of fp32 ...
    assert np.corrcoef(true_ratio, table_ratio)[0, 1] > 0.9  # ... and the table follows the int8 cost model


def test_builds_at_two_precisions_never_share_exported_models(tmp_path: Path, small_space: SearchSpace,
                                                              mnist_backbone: Backbone) -> None:
    out = tmp_path / "lut.csv"
    build_table(small_space, mnist_backbone, out=out, backend="fake", protocol=FAKE_PROTOCOL, progress=False,
                keep_artifacts=True)
    n_fp32 = len(list((tmp_path / ".lut.csv.work").iterdir()))
    # the fake refuses to load an fp32 artifact at int8: reusing the kept fp32 models would fail here
    t8 = build_table(small_space, mnist_backbone, out=out, backend="fake", precision="int8", protocol=FAKE_PROTOCOL,
                     progress=False, keep_artifacts=True)
    assert t8.precision == "int8" and len(list((tmp_path / ".lut.csv.work").iterdir())) == 2 * n_fp32


def test_old_fp32_tables_and_predictors_still_load(fake_table: LatencyTable, small_space: SearchSpace,
                                                   tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    archs = [small_space.sample(rng) for _ in range(8)]
    path = LatencyPredictor.from_table(fake_table).fit(archs, [fake_table.sum_ms(a) for a in archs]).save(tmp_path / "p.json")
    d = json.loads(path.read_text())
    assert d["table"]["precision"] == "fp32"
    del d["table"]["precision"]  # as written before precision was recorded
    (tmp_path / "old.json").write_text(json.dumps(d))
    old = LatencyPredictor.load(tmp_path / "old.json", table=fake_table)
    assert old.precision == "fp32" and old.predict(archs).shape == (8,)


# --------------------------------------------------------------------------- mismatches
def test_predicting_another_precision_is_refused(fake_table: LatencyTable, fake_int8_table: LatencyTable,
                                                 small_space: SearchSpace, tmp_path: Path) -> None:
    a = small_space.smallest()
    assert predict_latency(a, table=fake_int8_table, precision="int8")[0] == pytest.approx(fake_int8_table.sum_ms(a))
    assert predict_latency(a, table=fake_table)[0] == pytest.approx(fake_table.sum_ms(a))
    with pytest.raises(PrecisionMismatchError, match=r"precision 'int8' was asked of latency table .*lut\.csv, which "
                                                     r"was measured at 'fp32'.*--precision int8"):
        predict_latency(a, table=fake_table, precision="int8")
    with pytest.raises(PrecisionMismatchError):
        LatencyPredictor.from_table(fake_int8_table).predict([a], precision="fp32")
    with pytest.raises(PrecisionMismatchError, match=r"precision 'INT8': unknown precision; expected one of fp32, "):
        predict_latency(a, table=fake_int8_table, precision="INT8")
    # mixing: an int8 correction with an fp32 table, as object or as file
    rng = np.random.default_rng(1)
    archs = [small_space.sample(rng) for _ in range(8)]
    p8 = LatencyPredictor.from_table(fake_int8_table).fit(archs, [fake_int8_table.sum_ms(x) for x in archs])
    with pytest.raises(PrecisionMismatchError):
        predict_latency(a, table=fake_table, predictor=p8)
    p8.save(tmp_path / "p8.json")
    with pytest.raises(PrecisionMismatchError, match="fitted on a table measured at int8.*measured at fp32"):
        LatencyPredictor.load(tmp_path / "p8.json", table=fake_table)
    (tmp_path / "m.csv").write_text(f"arch,latency_ms,precision\n{a},0.5,int8\n")
    from latency_tables.predictor import MeasuredArchsError

    with pytest.raises(MeasuredArchsError, match=r"line 2: measured at precision 'int8' but the table is 'fp32'"):
        read_measured_archs(tmp_path / "m.csv", table=fake_table)
    assert read_measured_archs(tmp_path / "m.csv", table=fake_int8_table)[1][0] == 0.5


def test_validate_fits_the_correction_at_the_tables_precision(fake_int8_table: LatencyTable, tmp_path: Path) -> None:
    report = validate(fake_int8_table, n_fit=12, n_test=12, protocol=E2E, seed=2, predictor_out=tmp_path / "p.json")
    assert report.precision == "int8" and "precision int8" in report.summary()
    assert report.measurement["environment"]["precision"] == "int8"  # subnets exported and run at int8
    assert report.plain_sum.bias_pct > 5 and report.corrected.mape_pct < report.plain_sum.mape_pct
    assert LatencyPredictor.load(tmp_path / "p.json").precision == "int8"


def test_cli_precision_options(fake_table: LatencyTable, fake_int8_table: LatencyTable, small_space: SearchSpace,
                               tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["build", "--out", str(tmp_path / "t.csv"), "--backend", "pytorch", "--precision", "int8"],
                        env={"COLUMNS": "300"})
    assert res.exit_code != 0 and "precision 'int8' is not supported" in res.output
    arch = str(small_space.smallest())
    res = runner.invoke(app, ["predict", "--table", str(fake_table.path), "--arch", arch, "--precision", "int8"])
    assert res.exit_code == 2 and "measured at 'fp32'" in res.output
    res = runner.invoke(app, ["predict", "--table", str(fake_int8_table.path), "--arch", arch, "--precision", "int8",
                              "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["precision"] == "int8"
    res = runner.invoke(app, ["info", str(fake_int8_table.path)])
    assert res.exit_code == 0 and "int8" in res.output


def test_service_reports_and_checks_precision(fake_int8_table: LatencyTable, small_space: SearchSpace) -> None:
    from fastapi.testclient import TestClient

    from latency_tables.service import create_app

    client = TestClient(create_app(fake_int8_table))
    assert client.get("/health").json()["precision"] == "int8"
    a = str(small_space.smallest())
    r = client.post("/predict", json={"arch": a, "precision": "int8"})
    assert r.status_code == 200 and r.json()["precision"] == "int8"
    r = client.post("/predict", json={"arch": a, "precision": "fp32"})
    assert r.status_code == 422 and "measured at 'int8'" in r.json()["detail"]
    r = client.post("/predict/batch", json={"archs": [a, a], "precision": "fp32"})
    assert r.status_code == 422
    assert client.post("/predict/batch", json={"archs": [a]}).json()["precision"] == "int8"


# --------------------------------------------------------------------------- real onnxruntime int8
def test_real_onnxruntime_int8_build_of_a_tiny_space(tmp_path: Path) -> None:
    """A real int8 table: every one-layer model the build measured is a QOperator model with int8 weights."""
    from supernet.quantize import int8_weight_fraction

    space = SearchSpace(
        name="tiny", resolutions=(24,), depth_choices=(1,), kernel_choices=(3,), expand_choices=(3,)
    )
    bb = Backbone(in_channels=1, num_classes=10, width_mult=0.5)
    pr = MeasurementProtocol(
        rounds=2, runs_per_round=3, warmups=1, load_warmups=1, processes=1, chunk_size=16
    )
    out = tmp_path / "ort-int8.csv"
    table = build_table(space, bb, out=out, backend="onnxruntime", precision="int8", protocol=pr, progress=False,
                        keep_artifacts=True, backend_kwargs={"calib_samples": 2}, model_cache=tmp_path / "cache")
    loaded = LatencyTable.load(out)
    assert set(loaded.rows) == {s.key for s in enumerate_layers(space, bb)} and loaded.precision == "int8"
    assert all(r.latency_ms > 0 for r in loaded.rows.values())
    env = json.loads(meta_path_for(out).read_text())["environment"]
    assert env["quantization"]["format"].startswith("QOperator") and env["backend_kwargs"]["calib_samples"] == 2
    assert table_backend_kwargs(loaded.meta) == {"calib_samples": 2}
    models = sorted((tmp_path / "cache").rglob("*.onnx"))  # the shared model cache holds what was measured
    assert len(models) == len(loaded) + 1  # every layer and the reference probe
    assert all(int8_weight_fraction(m) == pytest.approx(1.0) for m in models)
    assert table.sum_ms(space.smallest()) > 0
