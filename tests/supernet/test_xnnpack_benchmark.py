"""benchmarks/xnnpack.py end to end on the checked-in tiny model files (no conversion): rows, resume, report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from bench_scripts import load_benchmark  # type: ignore[import-not-found]
from runtime_fixture import DATA

bench = load_benchmark("xnnpack")


def test_probe_rows_report_delegation_and_ratios_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    # two "probes" whose converted files already sit in the work dir (as a previous run would leave them)
    monkeypatch.setattr(bench, "PROBES", ((3, 3, 16), (5, 3, 16)))
    for k in (3, 5):
        shutil.copy(DATA / "runtime_tiny.tflite", work / f"depthwise_k{k}_c3_16x16.tflite")
    bench.main(["--n-subnets", "0", "--rounds", "2", "--runs", "2", "--out", str(out), "--work", str(work)])
    res = json.loads((out / "xnnpack.json").read_text())
    assert [r["model"] for r in res["rows"]] == ["depthwise k3 c3 16x16", "depthwise k5 c3 16x16"]
    for r in res["rows"]:
        assert r["delegation"]["tflite"]["delegated_nodes"] == r["delegation"]["tflite"]["total_nodes"] > 0
        assert r["delegation"]["tflite-builtin"]["delegated_nodes"] == 0
        assert len(r["round_medians_ms"]["tflite"]) == 2 and r["builtin_over_xnnpack"]["median"] > 0
    assert res["versions"]["ai-edge-litert"] and res["threads"] == 1 and "cpu_model" in res["environment"]
    md = (out / "xnnpack.md").read_text()
    assert "| depthwise k3 c3 16x16 | 15 / 15 (1) |" in md

    # a rerun reuses the finished rows from the state file instead of timing again
    monkeypatch.setattr(bench, "measure", lambda *a, **k: pytest.fail("re-measured a finished row"))
    bench.main(["--n-subnets", "0", "--rounds", "2", "--runs", "2", "--out", str(out), "--work", str(work)])
    assert json.loads((out / "xnnpack.json").read_text())["rows"] == res["rows"]
