from __future__ import annotations

import json
from pathlib import Path

from agents_helpers import DATA
from typer.testing import CliRunner

from device_agents import Variant, save_variants
from hwnas.commands.agent import app

runner = CliRunner()


def test_simulate_writes_metrics_and_plot(tmp_path: Path, variants: tuple[Variant, ...]) -> None:
    save_variants(variants, tmp_path / "v.json")
    res = runner.invoke(app, ["simulate", "--variants", str(tmp_path / "v.json"), "--trace", "steady",
                              "--deadline-ms", "50", "--out", str(tmp_path / "out"), "--duration-s", "30",
                              "--policy", "compare", "--server-accuracy", "0.8"])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(metrics) >= {"kalman", "oracle", "static-largest"}
    assert metrics["kalman"]["metrics"]["n_requests"] == 60
    assert (tmp_path / "out" / "timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "out" / "config.json").read_text())["offload"]["accuracy"] == 0.8


def test_simulate_on_a_csv_trace(tmp_path: Path, variants: tuple[Variant, ...]) -> None:
    save_variants(variants, tmp_path / "v.json")
    res = runner.invoke(app, ["simulate", "--variants", str(tmp_path / "v.json"), "--trace",
                              str(DATA / "recorded_v1.csv"), "--deadline-ms", "40", "--out", str(tmp_path / "o"),
                              "--policy", "greedy"])
    assert res.exit_code == 0, res.output
    assert list(json.loads((tmp_path / "o" / "metrics.json").read_text())) == ["greedy"]


def test_clear_errors(tmp_path: Path, variants: tuple[Variant, ...]) -> None:
    (tmp_path / "bad.json").write_text(json.dumps([{"name": "x"}]))
    args = ["--trace", "steady", "--deadline-ms", "50", "--out", str(tmp_path / "o")]
    res = runner.invoke(app, ["simulate", "--variants", str(tmp_path / "bad.json"), *args])
    assert res.exit_code != 0 and "entry 0" in res.output and "missing field" in res.output
    save_variants(variants, tmp_path / "v.json")
    res = runner.invoke(app, ["simulate", "--variants", str(tmp_path / "v.json"), *args[2:], "--trace", "mars"])
    assert res.exit_code != 0 and "neither a built-in scenario" in res.output
    bad_csv = tmp_path / "t.csv"
    bad_csv.write_text((DATA / "recorded_v1.csv").read_text().replace("0.62", "lots"))
    res = runner.invoke(app, ["simulate", "--variants", str(tmp_path / "v.json"), *args[2:], "--trace", str(bad_csv)])
    assert res.exit_code != 0 and "row 4" in res.output
    res = runner.invoke(app, ["simulate", "--variants", str(tmp_path / "v.json"), *args, "--policy", "magic"])
    assert res.exit_code != 0 and "known policies" in res.output


def test_scenarios_lists_builtins() -> None:
    res = runner.invoke(app, ["scenarios"])
    assert res.exit_code == 0 and "thermal-throttling" in res.output and "network-outages" in res.output


def test_example_variants(tmp_path: Path) -> None:
    res = runner.invoke(app, ["example-variants", "--out", str(tmp_path / "v.json")])
    assert res.exit_code == 0 and len(json.loads((tmp_path / "v.json").read_text())) == 18
