"""The thin CLI: each command calls the library and prints what it did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hwnas.commands.lut import app
from latency_tables.table import LatencyTable
from supernet.space import SearchSpace

runner = CliRunner()


def test_info_shows_the_manifest(fake_table: LatencyTable) -> None:
    res = runner.invoke(app, ["info", str(fake_table.path)])
    assert res.exit_code == 0, res.output
    assert "fake" in res.output and "test-device" in res.output and "schema_version" in res.output


def _hwnas(args: list[str]):  # the console entry's group: its one error path turns InputError into exit 2
    from hwnas.cli import _mount_subapps
    from hwnas.cli import app as hwnas_app

    _mount_subapps()
    return runner.invoke(hwnas_app, args)


def _refused(res, *needles: str, usage: bool = False) -> None:
    """Refused as bad input: exit 2 (not a crash), the message naming each needle on stderr, no traceback, nothing
    on stdout; ``error: ...`` for a library's InputError, typer's usage box for a bad option (``usage``)."""
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    err = " ".join(res.stderr.replace("│", " ").split())
    assert err.startswith("Usage: " if usage else "error: ") and all(n in err for n in needles), err
    assert "Traceback" not in res.output and res.stdout == ""


def test_info_on_a_corrupt_table_fails_with_the_reason(fake_table_copy: Path) -> None:
    fake_table_copy.write_text(fake_table_copy.read_text() + "\n")
    _refused(_hwnas(["lut", "info", str(fake_table_copy)]), "sha256", fake_table_copy.name)


def test_info_flags_a_table_missing_a_layer_of_its_space(fake_table: LatencyTable, tmp_path: Path) -> None:
    from dataclasses import replace

    dropped = sorted(fake_table.rows)[3]
    partial = replace(fake_table, rows={k: v for k, v in fake_table.rows.items() if k != dropped}).save(
        tmp_path / "partial.csv")
    res = _hwnas(["lut", "info", str(partial.path)])
    assert res.exit_code == 1, res.output
    assert "missing 1 of the layers" in res.stderr and dropped in res.stderr
    assert "missing layers" in res.stdout and "1 layers of space" in res.stdout
    full = _hwnas(["lut", "info", str(fake_table.path)])
    assert full.exit_code == 0 and "missing" not in full.stderr


def test_predict_prints_json_lines(fake_table: LatencyTable, small_space: SearchSpace, tmp_path: Path) -> None:
    arch = str(small_space.smallest())
    f = tmp_path / "archs.txt"
    f.write_text(json.dumps(small_space.largest().to_json()) + "\n")
    res = runner.invoke(app, ["predict", "--table", str(fake_table.path), "--arch", arch, "--arch-file", str(f), "--json"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.output.strip().splitlines()]
    assert lines[0]["arch"] == arch and lines[0]["predicted_ms"] == pytest.approx(fake_table.sum_ms(small_space.smallest()), rel=1e-6)
    assert lines[1]["predicted_ms"] > lines[0]["predicted_ms"] and lines[0]["predictor"] == "plain_sum"


def test_predict_needs_an_architecture(fake_table: LatencyTable) -> None:
    res = runner.invoke(app, ["predict", "--table", str(fake_table.path)])
    assert res.exit_code == 2, res.output  # a usage error; a crash would exit 1 with a traceback
    assert isinstance(res.exception, SystemExit)
    assert "give at least one --arch or an --arch-file" in " ".join(res.output.replace("│", " ").split())


def test_build_rejects_unknown_backend_and_space(tmp_path: Path) -> None:
    _refused(_hwnas(["lut", "build", "--out", str(tmp_path / "t.csv"), "--backend", "tpu", "--preset", "quick"]),
             "--backend", "unknown backend 'tpu'", "onnxruntime", usage=True)
    _refused(_hwnas(["lut", "build", "--out", str(tmp_path / "t.csv"), "--space", "imagenet-xl"]),
             "unknown search space", "mnist", usage=True)
    assert not (tmp_path / "t.csv").exists()


def test_validate_measures_keeps_models_and_a_rerun_reuses_them(tmp_path: Path) -> None:
    """`hwnas lut validate` on a real onnxruntime table: report, predictor and plot written; the subnets exported
    by two parallel converters stay in --models-dir, and a second run exports none of them again."""
    from latency_tables.protocol import MeasurementProtocol
    from latency_tables.table import build_table
    from supernet.layers import Backbone

    space = SearchSpace(name="tiny", resolutions=(24,), depth_choices=(1,), kernel_choices=(3, 5), expand_choices=(3, 6))
    bb = Backbone(in_channels=1, num_classes=10, width_mult=0.5)
    table = tmp_path / "ort.csv"
    build_table(
        space,
        bb,
        out=table,
        backend="onnxruntime",
        protocol=MeasurementProtocol(rounds=2, runs_per_round=3, processes=2),
        progress=False,
    )
    models, out = tmp_path / "models", tmp_path / "val"
    too_few = runner.invoke(app, ["validate", str(table), "--n-fit", "3", "--out-dir", str(tmp_path / "x")])
    assert too_few.exit_code == 2 and "n_fit must be 0" in too_few.output and "measure" not in too_few.output
    bad = runner.invoke(app, ["validate", str(table), "--features", "everything", "--out-dir", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--features" in bad.output and "compact" in bad.output
    (tmp_path / "a-file").write_text("x")
    not_dir = runner.invoke(app, ["validate", str(table), "--models-dir", str(tmp_path / "a-file"),
                                  "--out-dir", str(tmp_path / "x")])
    flat = " ".join(not_dir.output.replace("│", " ").split())  # rich wraps the message in a box
    assert not_dir.exit_code == 2 and "--models-dir" in flat and "is a file; expected a folder" in flat
    zero_jobs = runner.invoke(app, ["validate", str(table), "--export-jobs", "0", "--out-dir", str(tmp_path / "x")])
    assert zero_jobs.exit_code == 2 and "--export-jobs" in zero_jobs.output
    args = ["validate", str(table), "--n-fit", "6", "--n-test", "4", "--processes", "2", "--rounds", "2", "--runs", "3",
            "--models-dir", str(models), "--export-jobs", "2", "--out-dir", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "within" in res.output
    report = json.loads((out / "report.json").read_text())
    assert report["n_fit"] == 6 and report["n_test"] == 4
    assert (out / "predictor.json").exists() and (out / "plot.png").stat().st_size > 0
    files = sorted(models.glob("*.onnx"))
    assert len(files) == 6 + 4 + 1  # subnets + the reference probe
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert runner.invoke(app, args).exit_code == 0
    assert [f.stat().st_mtime_ns for f in sorted(models.glob("*.onnx"))] == mtimes


def test_predict_in_a_named_statistic_and_refusing_to_mix(fake_table: LatencyTable, small_space: SearchSpace,
                                                          tmp_path: Path) -> None:
    arch = str(small_space.smallest())
    res = runner.invoke(app, ["predict", "--table", str(fake_table.path), "--arch", arch, "--json", "--statistic", "p99"])
    assert res.exit_code == 0, res.output
    line = json.loads(res.output)
    assert line["statistic"] == "p99"
    assert line["predicted_ms"] == pytest.approx(fake_table.with_statistic("p99").sum_ms(small_space.smallest()), rel=1e-6)
    res = runner.invoke(app, ["predict", "--table", str(fake_table.path), "--arch", arch, "--statistic", "p95"])
    assert res.exit_code != 0 and "unknown statistic" in (res.output + str(res.exception))


def test_ofa_yaml_export_then_import_on_the_command_line(fake_table: LatencyTable, tmp_path: Path) -> None:
    res = runner.invoke(app, ["export", str(fake_table.path), "--out", str(tmp_path / "y"), "--statistic", "best"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "y" / "24_lookup_table.yaml").is_file() and (tmp_path / "y" / "hwnas-table.json").is_file()
    # the fake table's space is not ofa-mbv3: importing it as ofa-mbv3 must name the unmapped keys, not skip them
    res = runner.invoke(app, ["import", str(tmp_path / "y"), "--format", "ofa-yaml", "--out", str(tmp_path / "t.csv")])
    assert res.exit_code != 0
    assert "outside the space 'ofa-mbv3'" in res.output or "map to no layer" in res.output


def test_build_refuses_a_resolution_outside_the_space(tmp_path: Path) -> None:
    res = runner.invoke(app, ["build", "--space", "mnist", "--backend", "fake", "--resolutions", "24,30",
                              "--out", str(tmp_path / "t.csv")])
    assert res.exit_code != 0
    assert "--resolutions 24,30: [30] not in space 'mnist'" in (res.output + str(res.exception))
