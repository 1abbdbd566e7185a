"""`hwnas search` / `hwnas pareto` on a tiny untrained supernet and a fake-backend table (fast, offline)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hwnas.cli import _mount_subapps, app
from latency_tables.protocol import MeasurementProtocol
from latency_tables.table import build_table
from supernet.layers import Backbone
from supernet.model import OFASupernet
from supernet.space import ArchConfig, SearchSpace
from supernet.train import save_supernet

_mount_subapps()
runner = CliRunner()
SPACE = SearchSpace(name="cli-test", resolutions=(24, 28), depth_choices=(1, 2), kernel_choices=(3, 5),
                    expand_choices=(3, 6))
BACKBONE = Backbone(in_channels=1, num_classes=10, width_mult=0.25)


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text).replace("\n", "")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("search-cli")
    torch.manual_seed(0)
    net = OFASupernet(space=SPACE, backbone=BACKBONE)
    sn = save_supernet(net, root / "supernet.pt", extra={"train_config": {"dataset": "digits", "seed": 0}})
    table = build_table(
        SPACE,
        BACKBONE,
        out=root / "lut.csv",
        backend="fake",
        progress=False,
        device="fake-phone",
        protocol=MeasurementProtocol(
            rounds=2, runs_per_round=3, warmups=1, load_warmups=1, processes=1, chunk_size=32, spawn=False
        ),
    )
    assert table.path is not None
    return {"root": root, "supernet": sn, "table": table.path}


def test_search_family_writes_winners_and_plots(setup: dict[str, Path]) -> None:
    out = setup["root"] / "out"
    res = runner.invoke(app, ["search", "--table", str(setup["table"]), "--supernet", str(setup["supernet"]),
                              "--targets", "1000,2000", "--strategy", "random", "--compare", "evolution",
                              "--budget", "4", "--bn-images", "64", "--out", str(out)])
    assert res.exit_code == 0, res.output
    summary = json.loads((out / "search_results.json").read_text())
    assert summary["targets_ms"] == [1000.0, 2000.0]
    assert {c["strategy"] for c in summary["comparison"]} == {"random", "evolution"}
    assert len(summary["winners"]) == 2
    for w in summary["winners"]:
        arch = json.loads((out / w["arch_file"]).read_text())
        assert SPACE.canonical(ArchConfig.from_json(arch["arch"])) == ArchConfig.from_json(arch["arch"])
        assert 0.0 <= w["val_top1"] <= 1.0 and w["evaluations"] == 4
    # a table from another device is not measured here, and the report says why
    assert summary["winner_measurement"]["performed"] is False
    assert "fake-phone" in summary["winner_measurement"]["reason"]
    for png in ("pareto.png", "search_convergence.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # re-running the same study resumes it: nothing new is measured
    again = runner.invoke(app, ["search", "--table", str(setup["table"]), "--supernet", str(setup["supernet"]),
                                "--targets", "1000,2000", "--strategy", "random", "--budget", "4",
                                "--bn-images", "64", "--out", str(out)])
    assert again.exit_code == 0, again.output
    strip = lambda ws: [{k: v for k, v in w.items() if k != "wall_time_s"} for w in ws]
    assert strip(json.loads((out / "search_results.json").read_text())["winners"]) == strip(summary["winners"])
    pareto = runner.invoke(app, ["pareto", "--results", str(out), "--out", str(out / "front.png")])
    assert pareto.exit_code == 0, pareto.output
    assert (out / "front.png").is_file()


def test_search_bad_input_is_explained(setup: dict[str, Path], tmp_path: Path) -> None:
    base = ["search", "--table", str(setup["table"]), "--supernet", str(setup["supernet"]), "--out", str(tmp_path)]
    res = runner.invoke(app, base)
    assert res.exit_code == 2 and "exactly one of --latency-ms" in _plain(res.output)
    res = runner.invoke(app, [*base, "--targets", "10,abc"])
    assert res.exit_code == 2 and "comma-separated numbers" in _plain(res.output)
    res = runner.invoke(app, [*base, "--latency-ms", "5", "--strategy", "simulated-annealing", "--budget", "2"])
    assert res.exit_code == 2 and "simulated-annealing" in _plain(res.output)
    missing = tmp_path / "missing.csv"
    res = runner.invoke(app, ["search", "--table", str(missing), "--supernet", str(setup["supernet"]),
                              "--latency-ms", "5", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "missing.csv" in _plain(res.output)
    res = runner.invoke(app, ["pareto", "--results", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and "evaluations.json" in _plain(res.output)


def test_search_with_an_adapted_predictor_of_another_device(setup: dict[str, Path], tmp_path: Path) -> None:
    """A phone known from 8 measurements: the search uses its predictor (median or the interval's upper end), and
    does not time the winners on this machine."""
    import numpy as np

    from latency_tables.fewshot import AdaptedLatencyPredictor, adapt, load_source

    src = load_source(setup["table"])
    rng = np.random.default_rng(0)
    archs = list({str(a): a for a in (SPACE.canonical(SPACE.sample(rng)) for _ in range(40))}.values())[:8]
    noisy = 2.0 * src.predict(archs) * np.exp(rng.normal(0, 0.05, len(archs)))
    p = adapt(archs, noisy, space=SPACE, backbone=BACKBONE, sources=[src], device="phone")
    phone = p.save(tmp_path / "phone.json")
    probe = [SPACE.canonical(SPACE.sample(rng)) for _ in range(200)]
    med, upper = p.predict(probe), p.predict_upper(probe)
    target = float(np.quantile(med, 0.5))
    summaries = {}
    for bound in ("median", "upper"):
        out = tmp_path / bound
        res = runner.invoke(app, ["search", "--table", str(setup["table"]), "--supernet", str(setup["supernet"]),
                                  "--predictor", str(phone), "--latency-bound", bound, "--latency-ms", f"{target:.4f}",
                                  "--strategy", "random", "--budget", "6", "--bn-images", "32", "--out", str(out)])
        assert res.exit_code == 0, res.output
        summaries[bound] = json.loads((out / "search_results.json").read_text())
    for bound, s in summaries.items():
        w = s["winners"][0]
        loaded = AdaptedLatencyPredictor.load(phone)
        a = ArchConfig.from_json(w["arch_json"])
        want = loaded.predict_upper([a])[0] if bound == "upper" else loaded.predict([a])[0]
        assert w["predicted_latency_ms"] == pytest.approx(want, rel=1e-9)  # latency came from the phone's predictor
        assert s["latency_bound"] == bound and s["winner_measurement"]["performed"] is False
        assert "another device" in s["winner_measurement"]["reason"]
    assert np.all(upper > med)
    res = runner.invoke(app, ["search", "--table", str(setup["table"]), "--supernet", str(setup["supernet"]),
                              "--latency-bound", "upper", "--latency-ms", "1", "--budget", "2",
                              "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "needs an adapted --predictor" in _plain(res.output)
