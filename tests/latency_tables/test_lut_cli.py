"""The thin CLI: each command calls the library and prints what it did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from latency_tables.cli import app
from latency_tables.table import LatencyTable
from supernet.space import SearchSpace

runner = CliRunner()


def test_info_shows_the_manifest(fake_table: LatencyTable) -> None:
    res = runner.invoke(app, ["info", str(fake_table.path)])
    assert res.exit_code == 0, res.output
    assert "fake" in res.output and "test-device" in res.output and "schema_version" in res.output


def test_info_on_a_corrupt_table_fails_with_the_reason(fake_table_copy: Path) -> None:
    fake_table_copy.write_text(fake_table_copy.read_text() + "\n")
    res = runner.invoke(app, ["info", str(fake_table_copy)])
    assert res.exit_code != 0 and "sha256" in str(res.exception)


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
    assert res.exit_code != 0


def test_build_rejects_unknown_backend_and_space(tmp_path: Path) -> None:
    res = runner.invoke(app, ["build", "--out", str(tmp_path / "t.csv"), "--backend", "tpu", "--preset", "quick"])
    assert res.exit_code != 0 and "unknown backend 'tpu'" in res.output
    res = runner.invoke(app, ["build", "--out", str(tmp_path / "t.csv"), "--space", "imagenet-xl"])
    assert res.exit_code != 0 and "unknown search space" in res.output
