"""`hwnas search --precision`: the int8 LUT and int8 accuracy (measured or predicted) on a tiny untrained supernet."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hwnas.cli import _mount_subapps, app
from latency_tables.protocol import MeasurementProtocol
from latency_tables.table import PrecisionMismatchError, build_table
from supernet.layers import Backbone
from supernet.model import OFASupernet
from supernet.space import SearchSpace
from supernet.train import save_supernet

_mount_subapps()
runner = CliRunner()
SPACE = SearchSpace(name="precision-test", resolutions=(24,), depth_choices=(1, 2), kernel_choices=(3, 5),
                    expand_choices=(3, 6))
BACKBONE = Backbone(in_channels=1, num_classes=10, width_mult=0.25)
FAKE = MeasurementProtocol(
    rounds=2, runs_per_round=3, warmups=1, load_warmups=1, processes=1, chunk_size=32, spawn=False
)


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text).replace("\n", "")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("search-precision")
    torch.manual_seed(0)
    net = OFASupernet(space=SPACE, backbone=BACKBONE)
    sn = save_supernet(net, root / "supernet.pt", extra={"train_config": {"dataset": "digits", "seed": 0}})
    paths = {"root": root, "supernet": sn}
    for p in ("fp32", "int8"):
        t = build_table(SPACE, BACKBONE, out=root / f"lut-{p}.csv", backend="fake", precision=p, progress=False,
                        device="fake-phone", protocol=FAKE)
        assert t.path is not None
        paths[p] = t.path
    return paths


@pytest.fixture(scope="module")
def net_data(setup: dict[str, Path]) -> tuple[object, object]:
    from supernet.train import load_supernet_and_data

    return load_supernet_and_data(setup["supernet"])  # type: ignore[no-any-return]


def _job(setup: dict[str, Path], **kw: object) -> object:
    from hwnas.pipeline import SearchJob

    base = {"supernet_path": str(setup["supernet"]), "table_path": str(setup["int8"]), "targets_ms": (1000.0,),
                "strategy": "random", "budget": 1, "bn_images": 32, "calib_images": 8, "measure_winners": False}
    return SearchJob(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.slow
def test_search_at_int8_uses_the_int8_table_and_int8_accuracy(setup: dict[str, Path], net_data: tuple) -> None:  # type: ignore[type-arg]
    from hwnas.pipeline import search_device

    out = setup["root"] / "int8"
    net, data = net_data
    search_device(_job(setup, precision="int8"), out_dir=out, net=net, data=data)  # type: ignore[arg-type]
    summary = json.loads((out / "search_results.json").read_text())
    assert summary["precision"] == "int8" and summary["accuracy"] == "measured"
    (w,) = summary["winners"]
    assert w["precision"] == "int8" and 0.0 <= w["val_top1"] <= 1.0
    assert json.loads((out / w["arch_file"]).read_text())["precision"] == "int8"
    with sqlite3.connect(out / "accuracy.sqlite") as con:  # accuracies were measured (and cached) at int8
        assert {p for (p,) in con.execute("SELECT precision FROM accuracy")} == {"int8"}
        (ctx,) = {c for (c,) in con.execute("SELECT context FROM accuracy")}
    assert ctx.endswith(":onnxruntime:pc-minmax:rr" + str(int(__import__("supernet.quantize").quantize
                                                             .default_reduce_range())))  # the recipe is in the key
    assert json.loads((out / "search_config.json").read_text())["precision"] == "int8"


def test_search_refuses_a_table_of_another_precision(setup: dict[str, Path], tmp_path: Path) -> None:
    res = runner.invoke(app, ["search", "--table", str(setup["fp32"]), "--supernet", str(setup["supernet"]),
                              "--latency-ms", "1000", "--budget", "1", "--precision", "int8", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "measured at 'fp32'" in _plain(res.output)


def test_search_with_a_predicted_int8_accuracy(setup: dict[str, Path], net_data: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    from hwnas.pipeline import search_device
    from nas.predictor import fit_predictor

    rng = np.random.default_rng(0)
    archs = list({SPACE.sample(rng) for _ in range(30)})
    acc = np.asarray([0.5 + 0.02 * sum(a.depths) for a in archs])
    pred = fit_predictor(SPACE, archs * 2, np.concatenate([acc, acc - 0.05]), precisions=["fp32"] * len(archs)
                         + ["int8"] * len(archs), hidden=(16,), epochs=20)
    pred.save(tmp_path / "apq.npz")
    fp32_only = fit_predictor(SPACE, archs, acc, hidden=(16,), epochs=5)
    fp32_only.save(tmp_path / "fp32.npz")
    net, data = net_data
    search_device(_job(setup, budget=3, accuracy="predicted", accuracy_predictor_path=str(tmp_path / "apq.npz")),  # type: ignore[arg-type]
                  out_dir=tmp_path / "out", net=net, data=data)
    summary = json.loads((tmp_path / "out" / "search_results.json").read_text())
    (w,) = summary["winners"]
    assert summary["accuracy"] == "predicted" and w["precision"] == "int8"
    assert w["predicted_val_top1"] == pytest.approx(float(pred.predict([SPACE.parse(w["arch"])], precision="int8")[0]))
    # only the candidates re-scored before choosing (top-k by predicted accuracy) were measured, at int8
    n = len(w["selection"]["candidates"])
    assert w["selection"]["rescored"] and 1 <= n <= 3
    with sqlite3.connect(tmp_path / "out" / "accuracy.sqlite") as con:
        assert con.execute("SELECT COUNT(*), MIN(precision) FROM accuracy").fetchone() == (n, "int8")
    assert 0.0 <= w["val_top1"] <= 1.0 and json.loads((tmp_path / "out" / "search_config.json").read_text())[
        "precision"] is None  # the job as given; the summary holds the resolved precision
    with pytest.raises(ValueError, match="trained on fp32 accuracies only"):
        search_device(_job(setup, accuracy_predictor_path=str(tmp_path / "fp32.npz")),  # type: ignore[arg-type]
                      out_dir=tmp_path / "out2", net=net, data=data)


@pytest.mark.slow
def test_cli_search_at_int8(setup: dict[str, Path], tmp_path: Path) -> None:
    res = runner.invoke(app, ["search", "--table", str(setup["int8"]), "--supernet", str(setup["supernet"]),
                              "--latency-ms", "1000", "--strategy", "random", "--budget", "2", "--bn-images", "32",
                              "--precision", "int8", "--calib-images", "8", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "search_results.json").read_text())["precision"] == "int8"


def test_cli_search_refuses_an_unknown_precision(setup: dict[str, Path], tmp_path: Path) -> None:
    res = runner.invoke(app, ["search", "--table", str(setup["int8"]), "--supernet", str(setup["supernet"]),
                              "--latency-ms", "1000", "--budget", "1", "--precision", "int4", "--out", str(tmp_path)])
    assert res.exit_code != 0 and "Traceback" not in res.output, res.output
    assert "precision 'int4': unknown precision; expected one of fp32, fp16, int8" in _plain(res.output), res.output
    assert not (tmp_path / "search_results.json").exists()


def test_latency_evaluator_checks_the_precision(setup: dict[str, Path]) -> None:
    from hwnas.pipeline import latency_evaluator

    fn = latency_evaluator(setup["int8"], None, precision="int8")
    assert fn([SPACE.smallest()]).shape == (1,)
    with pytest.raises(PrecisionMismatchError):
        latency_evaluator(setup["int8"], None, precision="fp32")


def test_measure_accuracy_pairs_measures_each_pair_once(net_data: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    from hwnas.pipeline import measure_accuracy_pairs
    from nas.cache import AccuracyCache

    net, data = net_data
    archs = [SPACE.smallest()]
    kw = {"precisions": ["fp32", "int8"], "bn_images": 32, "seed": 0, "cache_path": tmp_path / "acc.sqlite", "context": "c",
              "calib_images": 8}
    first = measure_accuracy_pairs(net, data, archs, **kw)  # type: ignore[arg-type]
    assert [(str(a), p) for a, p, _ in first] == [(str(a), p) for a in archs for p in ("fp32", "int8")]
    assert all(0.0 <= acc <= 1.0 for _, _, acc in first)
    with AccuracyCache(tmp_path / "acc.sqlite", space=SPACE, context="c") as cache:
        assert len(cache.records()) == 2
        cache.put_many([(archs[0], 0.123)], precision="int8")  # first measurement wins: ignored
    assert measure_accuracy_pairs(net, data, archs, **kw) == first  # type: ignore[arg-type]


def test_quantized_accuracy_is_the_top1_of_an_int8_file(net_data: tuple, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[type-arg]
    """The int8 number comes from running an int8 file (spied on the export), and equals that file's top-1."""
    import supernet.quantize as q
    from hwnas.pipeline import quantized_accuracy

    net, data = net_data
    cfg = SPACE.smallest()
    xs, ys = q.split_arrays(data, split="val", resolution=cfg.resolution, max_images=None)  # type: ignore[arg-type]
    seen: list[tuple[str, object, float, float]] = []
    real = q.export_variant

    def spy(model, out_path, **kw):
        p = real(model, out_path, **kw)
        top1 = q.runner_top1(q.get_target(kw["backend"]).runner(p), xs, ys)
        seen.append((kw["backend"], kw["config"], q.int8_weight_fraction(p), top1))
        return p

    monkeypatch.setattr(q, "export_variant", spy)
    acc = quantized_accuracy(net, cfg, data, precision="int8", bn_images=32, seed=0, calib_images=8)
    [(backend, config, frac, top1)] = seen
    assert backend == "onnxruntime" and config.precision == "int8" and config.calib_images == 8  # type: ignore[attr-defined]
    assert config.reduce_range == q.default_reduce_range()  # type: ignore[attr-defined]
    assert frac > 0.9 and acc == top1
    seen.clear()
    per_tensor = q.QuantConfig(per_channel=False, calib_images=8)
    quantized_accuracy(net, cfg, data, precision="int8", bn_images=32, seed=0, quant=per_tensor)
    assert seen[0][1] == per_tensor and seen[0][2] > 0.9


def test_int8_accuracy_recipe_follows_the_table_and_names_the_cache_context(setup: dict[str, Path]) -> None:
    import dataclasses

    from hwnas.pipeline import accuracy_context, accuracy_quant_recipe, quant_recipe_tag
    from latency_tables.table import LatencyTable
    from supernet.quantize import default_reduce_range

    meta = LatencyTable.load(setup["int8"]).meta
    backend, config = accuracy_quant_recipe(meta, calib_images=8)
    assert backend == "onnxruntime" and config.precision == "int8" and config.per_channel  # fake table: defaults
    assert config.reduce_range == default_reduce_range()
    env = {**meta.environment, "backend_kwargs": {"per_channel": False, "threads": 1}}
    tfl = dataclasses.replace(meta, backend="tflite", environment=env)
    backend, config = accuracy_quant_recipe(tfl, calib_images=8)
    assert (backend, config.per_channel, config.calibration) == ("tflite", False, "minmax")
    assert quant_recipe_tag(backend, config) == "tflite:pt-minmax"
    ort_env = {**meta.environment, "quantization": {"reduce_range": True, "calibration": "entropy"}}
    backend, config = accuracy_quant_recipe(dataclasses.replace(meta, backend="onnxruntime", environment=ort_env))
    assert quant_recipe_tag(backend, config) == "onnxruntime:pc-entropy:rr1:qop"
    assert quant_recipe_tag(backend, config.replace(ort_format="qdq")) == "onnxruntime:pc-entropy:rr1"
    kw = {"supernet_path": setup["supernet"], "bn_images": 32, "seed": 0}
    contexts = {accuracy_context(**kw), accuracy_context(**kw, recipe="tflite:pt-minmax"),  # type: ignore[arg-type]
                accuracy_context(**kw, recipe="onnxruntime:pc-minmax:rr0")}  # type: ignore[arg-type]
    assert len(contexts) == 3


@pytest.mark.slow  # two searches (fp32 and int8 accuracy) on the tiny supernet
def test_joint_search_picks_the_most_accurate_precision_winner_per_target(setup: dict[str, Path], net_data: tuple  # type: ignore[type-arg]
                                                                         ) -> None:
    from hwnas.pipeline import search_joint

    net, data = net_data
    out = setup["root"] / "joint"
    jobs = {"fp32": _job(setup, table_path=str(setup["fp32"]), precision="fp32", budget=2),
            "int8": _job(setup, precision="int8", budget=2)}
    joint = search_joint(jobs, out_dir=out, net=net, data=data)  # type: ignore[arg-type]
    (j,) = joint["joint"]
    assert set(j["by_precision"]) == {"fp32", "int8"}
    best = max(v["val_top1"] for v in j["by_precision"].values() if v["meets_target_predicted"])
    assert j["winner"]["val_top1"] == best and j["gain_vs_fp32_pts"] >= 0.0
    assert json.loads((out / "joint_results.json").read_text())["precisions"] == ["fp32", "int8"]
    with pytest.raises(ValueError, match="same targets"):
        search_joint({"fp32": jobs["fp32"], "int8": _job(setup, precision="int8", targets_ms=(5.0,))}, out_dir=out)


def test_cli_search_auto_needs_the_int8_table(setup: dict[str, Path], tmp_path: Path) -> None:
    res = runner.invoke(app, ["search", "--table", str(setup["fp32"]), "--latency-ms", "1000", "--supernet",
                              str(setup["supernet"]), "--precision", "auto", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--int8-table" in _plain(res.output)
