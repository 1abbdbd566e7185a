"""Phone kit: the benchmark_model log parser on captured text, kit writing (resumable), the generated POSIX script
against a fake adb, and importing logs / CSVs back as tables and predictors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from lut_helpers import StubExporters, run_kit_script  # type: ignore[import-not-found]
from typer.testing import CliRunner

from hwnas.commands.lut import app
from latency_tables.benchmark_log import BenchmarkLogError, parse_log, parse_log_file
from latency_tables.kit import KitError, file_name_of, import_kit_csv, import_kit_logs, load_kit, write_kit
from latency_tables.predictor import (
    LatencyPredictor,
    MeasuredArchsError,
    read_measured_archs,
    validate_measured,
)
from latency_tables.protocol import REFERENCE_KEY
from latency_tables.table import LatencyTable
from supernet.layers import Backbone, LayerSpec
from supernet.space import SearchSpace

LOGS = Path(__file__).parent / "fixtures" / "benchmark_logs"
KIT_SPACE = SearchSpace(name="kit-test", resolutions=(24,), depth_choices=(2,), kernel_choices=(3,), expand_choices=(3,))
KIT_BACKBONE = Backbone(in_channels=1, num_classes=10, width_mult=0.35)


# --------------------------------------------------------------------------- parser, on captured text
def test_parses_a_recent_benchmark_model_log() -> None:
    (run,) = parse_log_file(LOGS / "new_format_ok.log")
    assert run.ok and run.error is None and run.kit_sha256 is None
    assert (run.num_threads, run.num_runs, run.warmup_runs) == (1, 50, 10)
    assert run.graph and run.graph.endswith("mbconv_hw12_c8-16_k3_s2_e3_m24_se0_relu.tflite")
    assert (run.init_us, run.first_inference_us, run.warmup_avg_us, run.inference_avg_us) == (3412, 241, 93.6, 92.4)
    assert (run.count, run.min_us, run.max_us, run.std_us) == (10570, 84, 611, 12)  # the timed block, not the warm-up
    assert run.extra["warmup_count"] == 5311


def test_parses_an_old_log_without_info_prefix() -> None:
    (run,) = parse_log_file(LOGS / "old_format_ok.log")
    assert run.ok and run.num_threads == 4 and run.num_runs == 50 and run.warmup_runs == 1
    assert run.inference_avg_us == pytest.approx(24980.3) and run.count == 50 and run.min_us == 24688


def test_kit_log_with_rounds_keeps_the_failed_round_apart() -> None:
    runs = parse_log_file(LOGS / "kit_rounds_one_failed.log")
    assert [(r.round, r.ok) for r in runs] == [(1, True), (2, False), (3, True)]
    assert all(r.key == "stem:hw24:c1-8:k3:s2:e0:m0:se0:hswish" and r.kit_sha256 for r in runs)
    bad = runs[1]
    assert bad.exit_status == 1 and "no devices/emulators found" in (bad.error or "") and bad.error_line == 24
    assert [r.inference_avg_us for r in runs if r.ok] == [31.2, 30.6]


@pytest.mark.parametrize(("name", "needle", "line"), [
    ("failed_missing_op.log", "Didn't find op for builtin opcode 'HARD_SWISH'", 7),
    ("truncated.log", "did not finish", 1),
])
def test_failed_runs_say_why_and_where(name: str, needle: str, line: int) -> None:
    (run,) = parse_log_file(LOGS / name)
    assert not run.ok and needle in (run.error or "") and run.error_line == line
    assert run.where.endswith(f"{name}:1")


def test_malformed_numbers_raise_naming_file_and_line() -> None:
    with pytest.raises(BenchmarkLogError, match=r"malformed_stats\.log, line 5: min: expected a number, got '2\.8\.1'"):
        parse_log_file(LOGS / "malformed_stats.log")
    with pytest.raises(BenchmarkLogError, match=r"x\.log, line 2: .*without 'Inference \(avg\)'"):
        parse_log("STARTING!\nInference timings in us: Init: 12, First inference: 40\n", source="x.log")


def test_hand_captured_logs_split_at_starting() -> None:
    text = (LOGS / "old_format_ok.log").read_text() + (LOGS / "new_format_ok.log").read_text()
    runs = parse_log(text)
    assert [r.ok for r in runs] == [True, True] and runs[1].line > runs[0].line


# --------------------------------------------------------------------------- kit writing
@pytest.fixture(scope="module")
def tflite_kit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kit") / "kit"
    write_kit(KIT_SPACE, KIT_BACKBONE, out, formats=["tflite"], rounds=2, num_runs=20, warmup_runs=5,
              progress=False, exporters=StubExporters().mapping())
    return out


def test_kit_manifest_records_what_import_needs(tflite_kit: Path) -> None:
    m = load_kit(tflite_kit)
    assert m.space["name"] == "kit-test" and m.backbone["width_mult"] == 0.35 and m.precision == "fp32"
    assert (m.threads, m.num_runs, m.warmup_runs, m.rounds, m.formats) == (1, 20, 5, 2, ("tflite",))
    assert m.layers[0].key == REFERENCE_KEY and len(m.layers) == 15
    for layer in m.layers:
        assert layer.name == file_name_of(layer.key) and layer.files["tflite"] == f"models/{layer.name}.tflite"
        assert (tflite_kit / layer.files["tflite"]).is_file() and len(layer.sha256["tflite"]) == 64
    assert m.kit_sha256 in (tflite_kit / "run_benchmark.sh").read_text()


def test_kit_resumes_without_reexporting(tmp_path: Path) -> None:
    stub = StubExporters()
    first = write_kit(KIT_SPACE, KIT_BACKBONE, tmp_path, formats=["tflite"], progress=False, exporters=stub.mapping())
    (tmp_path / "models" / f"{first.layers[3].name}.tflite").unlink()  # as if killed before this one
    stub.calls.clear()
    again = write_kit(KIT_SPACE, KIT_BACKBONE, tmp_path, formats=["tflite"], progress=False, exporters=stub.mapping())
    assert stub.calls == [f"{first.layers[3].name}.tflite"]
    assert again.layers == first.layers


def test_real_onnx_kit_of_a_tiny_space(tmp_path: Path) -> None:
    m = write_kit(KIT_SPACE, KIT_BACKBONE, tmp_path, formats=["onnx"], progress=False)
    import onnx

    model = onnx.load(str(tmp_path / m.layers[1].files["onnx"]))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == list(m.layers[1].input_shape)
    res = subprocess.run(["sh", str(tmp_path / "run_benchmark.sh")], capture_output=True, text=True, timeout=30,
                         check=False)
    assert res.returncode == 2 and "no .tflite models" in res.stderr


def test_edited_manifest_is_refused(tmp_path: Path, tflite_kit: Path) -> None:
    kit = tmp_path / "kit"
    shutil.copytree(tflite_kit, kit)
    d = json.loads((kit / "kit.json").read_text())
    d["threads"] = 4
    (kit / "kit.json").write_text(json.dumps(d))
    with pytest.raises(KitError, match="does not match its kit_sha256"):
        load_kit(kit)


# --------------------------------------------------------------------------- the script, against a fake adb
def _expected_ms(kit: Path, name: str) -> float:
    text = (kit / "models" / f"{name}.tflite").read_text()
    return round(10 + int(text.split("macs=")[1]) / 1000, 3) / 1000


def test_script_runs_benchmark_model_per_layer_resumes_and_imports(tmp_path: Path, tflite_kit: Path) -> None:
    kit = tmp_path / "kit"
    shutil.copytree(tflite_kit, kit)
    device = tmp_path / "device"
    device.mkdir()
    m = load_kit(kit)
    victim = m.layers[5]
    (device / f"fail-{victim.name}").touch()

    first = run_kit_script(kit, device)
    assert first.returncode == 1, first.stdout + first.stderr
    assert f"warning: {victim.name} round 1 failed" in first.stderr and f"{victim.name} round 2 failed" in first.stderr
    with pytest.raises(KitError, match=rf"1 of 15 layers.*\n  {victim.key}: 2 failed run\(s\), first at "
                                       rf".*{victim.name}\.log, line 6: ERROR: Didn't find op"):
        import_kit_logs(kit, out=tmp_path / "t.csv")
    partial = import_kit_logs(kit, out=tmp_path / "partial.csv", allow_missing=True)
    assert victim.key not in partial.rows and partial.meta.environment["missing_keys"] == [victim.key]

    (device / f"fail-{victim.name}").unlink()
    second = run_kit_script(kit, device)  # resume: only the failed (model, round) pairs run again
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.count("round ") == 2 and victim.name in second.stdout

    table = import_kit_logs(kit, out=tmp_path / "phone.csv", device="fake-phone", cpu_model="fake-soc")
    loaded = LatencyTable.load(tmp_path / "phone.csv")
    assert loaded.meta.source == "imported:benchmark_model-logs" and loaded.meta.device == "fake-phone"
    assert loaded.meta.environment["kit_sha256"] == m.kit_sha256 and loaded.meta.environment["n_failed_runs"] == 2
    assert len(loaded) == len(m.layers) - 1  # every layer but the reference probe
    for layer in m.layers[1:]:
        row = loaded.rows[layer.key]
        assert row.latency_ms == pytest.approx(_expected_ms(kit, layer.name), rel=1e-6)
        assert row.runs == 2 * 20  # two rounds of --num_runs 20
    assert loaded.meta.reference["latency_ms"] == pytest.approx(_expected_ms(kit, file_name_of(REFERENCE_KEY)))
    cfg = KIT_SPACE.smallest()
    assert table.sum_ms(cfg) == pytest.approx(sum(loaded.rows[s.key].latency_ms for s in loaded.specs(cfg)))


def test_logs_from_another_kit_are_refused(tmp_path: Path, tflite_kit: Path) -> None:
    kit = tmp_path / "kit"
    shutil.copytree(tflite_kit, kit)
    name = load_kit(kit).layers[1].name
    (kit / "logs" / f"{name}.log").write_text((LOGS / "kit_rounds_one_failed.log").read_text())
    with pytest.raises(KitError, match=rf"{name}\.log:1: the log comes from another kit"):
        import_kit_logs(kit, out=tmp_path / "t.csv")
    (kit / "logs" / f"{name}.log").write_text((LOGS / "new_format_ok.log").read_text())
    with pytest.raises(KitError, match="without the '# hwnas-kit sha256=...' marker"):
        import_kit_logs(kit, out=tmp_path / "t.csv")


def test_missing_logs_are_listed_or_allowed(tmp_path: Path, tflite_kit: Path) -> None:
    with pytest.raises(KitError, match=r"15 of 15 layers have no usable measurement:\n  reference-probe: logs/.*is missing"):
        import_kit_logs(tflite_kit, out=tmp_path / "t.csv")


# --------------------------------------------------------------------------- CSV imports
def test_layer_csv_import_by_key_or_file(tmp_path: Path, tflite_kit: Path) -> None:
    m = load_kit(tflite_kit)
    lines = ["key,file,latency_ms"]
    for i, layer in enumerate(m.layers):
        lines.append(f"{layer.key},,{0.01 * (i + 1)}" if i % 2 else f",{layer.name}.tflite,{0.01 * (i + 1)}")
    (tmp_path / "layers.csv").write_text("\n".join(lines) + "\n")
    table = import_kit_csv(tflite_kit, tmp_path / "layers.csv", out=tmp_path / "t.csv", device="elsewhere")
    assert table.meta.source == "imported:csv" and table.meta.reference["latency_ms"] == pytest.approx(0.01)
    assert table.rows[m.layers[3].key].latency_ms == pytest.approx(0.04)
    assert table.rows[m.layers[3].key].ratio == pytest.approx(4.0)
    LatencyTable.load(tmp_path / "t.csv")

    (tmp_path / "bad.csv").write_text("key,latency_ms\nreference-probe,0.1\nconv:nope,0.2\n")
    with pytest.raises(KitError, match=r"bad\.csv, line 3: key 'conv:nope' is not a layer of kit"):
        import_kit_csv(tflite_kit, tmp_path / "bad.csv", out=tmp_path / "t2.csv")
    (tmp_path / "bad.csv").write_text(f"key,latency_ms\n{m.layers[1].key},-1\n")
    with pytest.raises(KitError, match=r"line 2: latency_ms must be a positive number"):
        import_kit_csv(tflite_kit, tmp_path / "bad.csv", out=tmp_path / "t2.csv")


def _phone_table(tmp_path: Path, tflite_kit: Path) -> LatencyTable:
    """An imported table whose layer latencies are known: 0.01 ms + MACs / 1e7."""
    m = load_kit(tflite_kit)
    rows = ["key,latency_ms"] + [f"{lay.key},{0.01 + LayerSpec(**lay.spec).macs() / 1e7:.6f}" for lay in m.layers]
    (tmp_path / "layers.csv").write_text("\n".join(rows) + "\n")
    return import_kit_csv(tflite_kit, tmp_path / "layers.csv", out=tmp_path / "phone.csv")


def test_measured_archs_csv_fits_and_checks_a_predictor(tmp_path: Path, tflite_kit: Path) -> None:
    table = _phone_table(tmp_path, tflite_kit)
    space = SearchSpace(name="kit-test", resolutions=(24,), depth_choices=(2,), kernel_choices=(3,), expand_choices=(3,))
    # This tiny space has one architecture; measured "elsewhere" = 0.8 x sum - 0.02 ms, with noise-free repeats.
    a = space.smallest()
    s = table.sum_ms(a)
    lines = ["arch,latency_ms"]
    for i in range(8):
        arch = str(a) if i % 2 else json.dumps(a.to_json()).replace('"', '""')
        lines.append(f"{arch if i % 2 else chr(34) + arch + chr(34)},{0.8 * s - 0.02:.6f}")
    (tmp_path / "archs.csv").write_text("\n".join(lines) + "\n")
    archs, ys = read_measured_archs(tmp_path / "archs.csv", table=table)
    assert archs == [a] * 8 and np.allclose(ys, 0.8 * s - 0.02, atol=1e-6)
    rep = validate_measured(table, archs, ys, n_fit=5, predictor_out=tmp_path / "pred.json", report_out=tmp_path / "r.json")
    assert rep.n_fit == 5 and rep.n_test == 3 and rep.corrected.within_5pct == 1.0 and rep.plain_sum.within_10pct == 0.0
    assert set(rep.rows[0]) >= {"measured_ms", "predicted_sum_ms", "predicted_corrected_ms"}
    check = validate_measured(table, archs, ys, predictor=tmp_path / "pred.json")
    assert check.n_test == 8 and check.corrected.within_5pct == 1.0
    assert LatencyPredictor.load(tmp_path / "pred.json", table=table).fitted

    (tmp_path / "bad.csv").write_text("arch,latency_ms\nr99-d2.2.2.2.2-k3e3.k3e3_k3e3.k3e3_k3e3.k3e3_k3e3.k3e3_k3e3.k3e3,1\n")
    with pytest.raises(MeasuredArchsError, match=r"bad\.csv, line 2: bad architecture"):
        read_measured_archs(tmp_path / "bad.csv", table=table)
    (tmp_path / "bad.csv").write_text("architecture,ms\n")
    with pytest.raises(MeasuredArchsError, match=r"line 1: expected columns 'arch' and 'latency_ms'"):
        read_measured_archs(tmp_path / "bad.csv", table=table)


def test_cli_kit_import_and_validate_measured(tmp_path: Path, tflite_kit: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["kit", "--out", str(tmp_path / "k"), "--formats", "tflite,pt"], env={"COLUMNS": "300"})
    assert res.exit_code != 0 and "expected some of ['tflite', 'onnx']" in res.output
    table = _phone_table(tmp_path, tflite_kit)
    m = load_kit(tflite_kit)
    res = runner.invoke(app, ["import", str(tflite_kit), "--csv", str(tmp_path / "layers.csv"), "--out",
                              str(tmp_path / "cli.csv"), "--device", "Pixel"])
    assert res.exit_code == 0, res.output
    assert f"{len(m.layers) - 1} layers" in res.output and LatencyTable.load(tmp_path / "cli.csv").meta.device == "Pixel"
    a = KIT_SPACE.smallest()
    (tmp_path / "archs.csv").write_text("arch,latency_ms\n" + "".join(f"{a},{0.5 * table.sum_ms(a):.6f}\n" for _ in range(7)))
    res = runner.invoke(app, ["validate", str(tmp_path / "cli.csv"), "--measured", str(tmp_path / "archs.csv"),
                              "--n-fit", "5", "--out-dir", str(tmp_path / "v")])
    assert res.exit_code == 0, res.output
    assert "held-out subnets: 2 (correction fitted on 5)" in res.output and (tmp_path / "v" / "predictor.json").exists()
    res = runner.invoke(app, ["import", str(tflite_kit), "--out", str(tmp_path / "none.csv")])
    assert res.exit_code == 2 and "15 of 15 layers have no usable measurement" in res.output


@pytest.mark.slow
@pytest.mark.tflite
def test_real_tflite_kit_models_load_in_the_interpreter(tmp_path: Path) -> None:
    """litert-torch conversion for real (~10 s a layer here, hence slow): every .tflite loads with its input shape."""
    pytest.importorskip("litert_torch")
    from ai_edge_litert.interpreter import Interpreter

    m = write_kit(KIT_SPACE, KIT_BACKBONE, tmp_path, formats=["tflite"], progress=False)
    for layer in m.layers:
        interp = Interpreter(model_path=str(tmp_path / layer.files["tflite"]))
        interp.allocate_tensors()
        assert tuple(interp.get_input_details()[0]["shape"]) == layer.input_shape
