"""`hwnas demo --quick` end to end: the report exists and every stage's numbers are real and consistent."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hwnas.cli import _mount_subapps, app
from latency_tables import LatencyPredictor, LatencyTable
from supernet.space import ArchConfig, get_space

_mount_subapps()


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def test_report_files_exist(report_dir: Path) -> None:
    for name in ("report.md", "report.json", "demo_config.json", "variants.json", "pareto.png",
                 "latency_predicted_vs_measured.png", "search_convergence.png"):
        p = report_dir / name
        assert p.is_file() and p.stat().st_size > 0, name
    for png in report_dir.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((report_dir / "models").glob("*.onnx"))
    assert (report_dir / "lut" / "onnxruntime-fp32-t1.csv").is_file()
    assert (report_dir / "lut" / "onnxruntime-fp32-t1.csv.meta.json").is_file()


def test_report_numbers_are_real_and_consistent(report_dir: Path) -> None:
    r = json.loads((report_dir / "report.json").read_text())
    space = get_space(r["config"]["train"]["space"])
    # training learned: well above chance (0.1) on 10 classes
    assert r["accuracy"]["largest"]["val_top1"] > 0.3
    assert r["accuracy"]["smallest"]["arch"] == str(space.smallest())
    # the LUT has the layers of the space, measured with the stated backend
    assert r["lut"]["rows"] > 50
    assert r["lut"]["meta"]["backend"] == "onnxruntime" and r["lut"]["meta"]["threads"] == 1
    # predicted vs measured, in separate columns; each prediction is what the written table and predictor give
    table = LatencyTable.load(r["lut"]["path"])
    predictor = LatencyPredictor.load(r["latency"]["predictor_path"])
    rows = r["latency"]["rows"]
    assert len(rows) == r["latency"]["n_test"] > 0 and all(row["measured_ms"] > 0 for row in rows)
    archs = [space.parse(row["arch"]) for row in rows]
    np.testing.assert_allclose([row["predicted_sum_ms"] for row in rows], [table.sum_ms(a) for a in archs],
                               rtol=1e-9)
    np.testing.assert_allclose([row["predicted_corrected_ms"] for row in rows], predictor.predict(archs), rtol=1e-9)
    # search: one winner per target, hard constraint met by the prediction; the winner is the best re-scored
    # candidate (on all of val) of those meeting the target, else the first strategy's best
    targets = r["search"]["targets_ms"]
    assert [w["target_ms"] for w in r["search"]["winners"]] == targets
    best = {c["target_ms"]: c["best_reward"] for c in r["search"]["comparison"]
            if c["strategy"] == r["search"]["winner_strategy"]}
    for w in r["search"]["winners"]:
        arch = space.parse(w["arch"])
        assert str(arch) == w["arch"] and ArchConfig.from_json(w["arch_json"]) == arch
        assert 0 < w["evaluations"] <= r["search"]["budget"]
        assert w["meets_target_predicted"] and w["predicted_latency_ms"] <= w["target_ms"]
        assert w["predicted_latency_ms"] == pytest.approx(float(predictor.predict([arch])[0]), rel=1e-9)
        sel = w["selection"]
        if sel["rescored"]:
            cands = sel["candidates"]
            assert w["arch"] in {c["arch"] for c in cands}
            assert all(c["predicted_latency_ms"] <= w["target_ms"] for c in cands)
            assert w["val_top1"] == max(c["val_top1"] for c in cands)
            ranks = [c["search_val_top1"] for c in cands]
            assert ranks == sorted(ranks, reverse=True)  # the top-k of the search's own accuracy
        else:
            assert w["reward"] == best[w["target_ms"]]
    # export: ONNX matches torch and was measured end to end
    for w in r["export"]["winners"]:
        assert w["onnx_ok"] and w["onnx_max_abs_diff"] < 1e-3
        assert w["measured_latency_ms"] > 0 and w["predicted_latency_ms"] > 0
    # winners: selected on val (re-scored top-k), reported on the held-out test split
    hc = r["export"]["heldout_check"]
    assert hc["val_images"] > hc["search_val_images"] and hc["binomial_se"]["val"] < hc["binomial_se"]["search_val"]
    assert len(hc["per_target"]) == len(targets)
    for t in hc["per_target"]:
        assert t["best_test_top1"] >= t["winner_test_top1"] and t["n_meeting"] >= 1
    # bundle: a measured ladder with held-out accuracy; dominated variants dropped (with the reason)
    b = r["bundle"]
    kept = [v for v in b["variants"] if v["kept"]]
    assert kept and all(v["median_ms"] > 0 and v["p99_ms"] >= v["median_ms"] for v in b["variants"])
    assert all(v["dropped_because"] for v in b["variants"] if not v["kept"])
    assert (report_dir / "bundle" / "manifest.json").is_file()
    # agent: every scenario compares the agent with every kept variant as a static policy and the oracle (knows
    # each request's real latency: an upper bound on effective accuracy without the server)
    assert r["agent"]["setting"]["deadline_ms"] > 0
    for scen, d in r["agent"]["scenarios"].items():
        pols = d["policies"]
        assert {"agent", "oracle"} <= set(pols), scen
        assert sum(1 for k in pols if k.startswith("static:")) == len(kept), scen
        best = max(p["effective_accuracy"] for k, p in pols.items() if "+server" not in k)
        assert pols["oracle"]["effective_accuracy"] >= best - 1e-9, scen


def test_markdown_report_reads_well(report_dir: Path) -> None:
    md = (report_dir / "report.md").read_text()
    for heading in ("## 1. Supernet training", "## 2. Latency table", "## 3. Search per latency target",
                    "## 4. Measured variant ladder", "## 5. Device agent on the ladder"):
        assert heading in md
    assert "Predicted:" in md and "Measured:" in md


def test_rerun_resumes_finished_stages(report_dir: Path) -> None:
    before = json.loads((report_dir / "report.json").read_text())
    res = CliRunner().invoke(app, ["demo", "--quick", "--out", str(report_dir)])
    assert res.exit_code == 0, res.output
    assert "done in an earlier run" in res.output
    after = json.loads((report_dir / "report.json").read_text())
    assert after["search"]["winners"] == before["search"]["winners"]
