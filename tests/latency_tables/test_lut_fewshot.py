"""Few-shot adaptation to a new device: the affine floor, model choice by LOO, uncertainty, subnet choice, I/O."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from latency_tables.fewshot import (
    AdaptedLatencyPredictor,
    FewShotError,
    adapt,
    choose_subnets,
    load_latency_model,
    load_source,
    macs_m,
    read_measured,
)
from latency_tables.table import LatencyTable
from supernet.errors import InputError
from supernet.layers import Backbone, layer_specs
from supernet.space import ArchConfig, SearchSpace

Device = Callable[[Sequence[ArchConfig]], np.ndarray]


class FnSource:
    """An in-memory source device (what a table or predictor of another device provides)."""

    def __init__(self, space: SearchSpace, fn: Device, name: str = "fn") -> None:
        self.space, self.fn, self.name = space, fn, name

    def predict(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        return self.fn(archs)

    def describe(self) -> dict[str, Any]:
        return {"kind": "test", "path": None, "name": self.name}


def layer_device(backbone: Backbone, *, per_mmac: float, k7_extra: float = 0.0, per_layer: float = 0.01) -> Device:
    """A device whose latency is a per-layer cost model; ``k7_extra`` ms per 7x7-kernel block is invisible to MACs."""

    def f(archs: Sequence[ArchConfig]) -> np.ndarray:
        out = []
        for a in archs:
            t = 0.05
            for s in layer_specs(backbone, a):
                t += per_mmac * s.macs() / 1e6 + per_layer + (k7_extra if s.op == "mbconv" and s.kernel == 7 else 0.0)
            out.append(t)
        return np.asarray(out)

    return f


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    return SearchSpace(name="fewshot-test", resolutions=(24, 28, 32), depth_choices=(1, 2), kernel_choices=(3, 5, 7),
                       expand_choices=(3, 6))


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return Backbone(in_channels=1, num_classes=10, width_mult=0.5)


def sample(space: SearchSpace, n: int, seed: int) -> list[ArchConfig]:
    rng = np.random.default_rng(seed)
    out: dict[str, ArchConfig] = {}
    while len(out) < n:
        a = space.canonical(space.sample(rng))
        out[str(a)] = a
    return list(out.values())


def rel_err(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    return np.abs(pred / true - 1.0)


def test_affine_map_of_a_source_is_recovered_from_five_measurements(space: SearchSpace, backbone: Backbone) -> None:
    src_fn = layer_device(backbone, per_mmac=0.2, k7_extra=0.03)
    src = FnSource(space, src_fn)
    target: Device = lambda a: 1.7 * src_fn(a) ** 1.1
    train, test = sample(space, 5, 0), sample(space, 100, 1)
    p = adapt(train, target(train), space=space, backbone=backbone, sources=[src])
    assert p.info["chosen"].startswith("affine:0")
    assert rel_err(p.predict(test), target(test)).max() < 0.01


def test_informative_source_is_chosen_over_an_unrelated_one(space: SearchSpace, backbone: Backbone) -> None:
    good_fn = layer_device(backbone, per_mmac=0.2, k7_extra=0.05)
    rng = np.random.default_rng(7)
    bad = FnSource(space, lambda a: np.exp(rng.normal(0, 1, len(a))), "noise")
    target = layer_device(backbone, per_mmac=0.5, k7_extra=0.12)
    train, test = sample(space, 10, 2), sample(space, 100, 3)
    p = adapt(train, target(train), space=space, backbone=backbone, sources=[bad, FnSource(space, good_fn)])
    assert p.info["chosen"].split("+")[0] in ("affine:1", "sources")
    assert np.mean(rel_err(p.predict(test), target(test)) <= 0.10) >= 0.95


def test_without_sources_the_gp_learns_what_macs_miss(space: SearchSpace, backbone: Backbone) -> None:
    # 7x7 kernels cost more than their MACs say: the MACs line is biased per kernel, the GP on the encoding fixes it
    target = layer_device(backbone, per_mmac=0.2, k7_extra=0.05)
    train, test = sample(space, 40, 4), sample(space, 150, 5)
    y = target(train)
    adapted = adapt(train, y, space=space, backbone=backbone)
    macs_only = adapt(train, y, space=space, backbone=backbone, methods=["macs"])
    assert adapted.gp is not None
    assert adapted.info["candidates"]["macs+gp"]["loo_mse_log"] < adapted.info["candidates"]["macs"]["loo_mse_log"]
    err_gp, err_macs = rel_err(adapted.predict(test), target(test)), rel_err(macs_only.predict(test), target(test))
    assert err_gp.mean() < 0.6 * err_macs.mean()


def test_interval_covers_held_out_points_at_roughly_its_level(space: SearchSpace, backbone: Backbone) -> None:
    src_fn = layer_device(backbone, per_mmac=0.2)
    rng = np.random.default_rng(11)
    sigma = 0.05
    train, test = sample(space, 30, 6), sample(space, 400, 7)
    y_tr = 1.3 * src_fn(train) * np.exp(rng.normal(0, sigma, len(train)))
    y_te = 1.3 * src_fn(test) * np.exp(rng.normal(0, sigma, len(test)))
    p = adapt(train, y_tr, space=space, backbone=backbone, sources=[FnSource(space, src_fn)])
    lo, mid, hi = p.predict_interval(test, level=0.9)
    assert np.all(lo < mid) and np.all(mid < hi)
    coverage = np.mean((y_te >= lo) & (y_te <= hi))
    assert 0.8 <= coverage <= 0.99
    assert np.allclose(p.predict_upper(test, level=0.9), hi)


def test_more_measurements_do_not_make_it_worse(space: SearchSpace, backbone: Backbone) -> None:
    src_fn = layer_device(backbone, per_mmac=0.2, k7_extra=0.02)
    target = layer_device(backbone, per_mmac=0.3, k7_extra=0.15, per_layer=0.03)
    test = sample(space, 200, 8)
    pool = sample(space, 40, 9)
    errs = []
    for k in (5, 10, 20, 40):
        p = adapt(pool[:k], target(pool[:k]), space=space, backbone=backbone, sources=[FnSource(space, src_fn)])
        errs.append(float(np.mean(rel_err(p.predict(test), target(test)))))
    assert errs[-1] <= errs[0]
    assert all(b <= a * 1.25 for a, b in itertools.pairwise(errs))


# --------------------------------------------------------------------------- bad input
def test_bad_measurements_are_refused_naming_the_row(space: SearchSpace, backbone: Backbone) -> None:
    archs = sample(space, 6, 10)
    y = np.linspace(1, 2, 6)
    with pytest.raises(FewShotError, match="at least 3"):
        adapt(archs[:2], y[:2], space=space, backbone=backbone)
    with pytest.raises(FewShotError, match="row 3"):
        adapt(archs, np.array([1, 2, -1, 3, 4, 5.0]), space=space, backbone=backbone)
    with pytest.raises(FewShotError, match="row 4: latency_ms must be positive and finite"):
        adapt(archs, np.array([1, 2, 3, np.nan, 4, 5.0]), space=space, backbone=backbone)
    with pytest.raises(FewShotError, match="rows 1 and 6: the same architecture"):
        adapt([*archs[:5], archs[0]], y, space=space, backbone=backbone)
    other = SearchSpace(name="other", resolutions=(24, 28, 32), depth_choices=(1, 2), kernel_choices=(3, 5, 7),
                        expand_choices=(3, 6))
    with pytest.raises(FewShotError, match="source 0 .* is for space 'other'"):
        adapt(archs, y, space=space, backbone=backbone, sources=[FnSource(other, lambda a: np.ones(len(a)))])
    with pytest.raises(FewShotError, match="not in space"):
        adapt([replace_res(archs[0], 40), *archs[1:]], y, space=space, backbone=backbone)


def replace_res(a: ArchConfig, r: int) -> ArchConfig:
    from dataclasses import replace

    return replace(a, resolution=r)


def test_measured_csv_errors_name_the_line(tmp_path: Path, space: SearchSpace) -> None:
    archs = sample(space, 3, 12)
    good = tmp_path / "m.csv"
    good.write_text("arch,latency_ms\n" + "".join(f"{a},{1.5 + i}\n" for i, a in enumerate(archs)))
    got, y = read_measured(good, space)
    assert got == archs and y.tolist() == [1.5, 2.5, 3.5]
    as_json = tmp_path / "j.csv"
    as_json.write_text("arch,latency_ms\n" + "".join(f"\"{json.dumps(a.to_json()).replace(chr(34), chr(34) * 2)}\",2\n"
                                                       for a in archs))
    assert read_measured(as_json, space)[0] == archs
    bad = tmp_path / "bad.csv"
    bad.write_text(f"arch,latency_ms\n{archs[0]},1\n{archs[1]},zero\n")
    with pytest.raises(InputError, match="line 3: latency_ms 'zero' is not a number"):
        read_measured(bad, space)
    bad.write_text(f"arch,latency_ms\n{archs[0]},1\nr99-nonsense,2\n")
    with pytest.raises(InputError, match="line 3"):
        read_measured(bad, space)
    bad.write_text("architecture,ms\n")
    with pytest.raises(InputError, match="line 1: expected columns"):
        read_measured(bad, space)


# --------------------------------------------------------------------------- choosing subnets
def test_choose_subnets_spans_the_range_and_extends_without_repeats(space: SearchSpace, backbone: Backbone) -> None:
    src = FnSource(space, layer_device(backbone, per_mmac=0.2))
    first = choose_subnets(space, backbone, 6, sources=[src], rng=np.random.default_rng(0), pool=400)
    again = choose_subnets(space, backbone, 6, sources=[src], rng=np.random.default_rng(0), pool=400)
    assert first == again  # seeded
    pool = sample(space, 400, 13)
    pred_pool, pred_first = src.predict(pool), src.predict(first)
    # both ends of the predicted range are in the chosen set
    assert pred_first.min() <= np.quantile(pred_pool, 0.02) and pred_first.max() >= np.quantile(pred_pool, 0.98)
    more = choose_subnets(space, backbone, 6, sources=[src], measured=first, rng=np.random.default_rng(1), pool=400)
    assert len(more) == 6 and not ({str(a) for a in more} & {str(a) for a in first})
    # spread: the chosen set is far more spread in predicted latency than a random draw of the same size
    rand = sample(space, 6, 14)
    assert np.std(np.log(pred_first)) > np.std(np.log(src.predict(rand)))


def test_choose_subnets_without_sources_uses_macs(space: SearchSpace, backbone: Backbone) -> None:
    chosen = choose_subnets(space, backbone, 4, rng=np.random.default_rng(0), pool=300)
    m = macs_m(backbone, chosen)
    allm = macs_m(backbone, sample(space, 300, 15))
    assert m.min() <= np.quantile(allm, 0.02) and m.max() >= np.quantile(allm, 0.98)
    with pytest.raises(FewShotError, match="--subnets must be >= 1"):
        choose_subnets(space, backbone, 0, rng=np.random.default_rng(0))


# --------------------------------------------------------------------------- persistence with real files
def test_save_load_round_trip_with_a_table_source(tmp_path: Path, fake_table: LatencyTable,
                                                  small_space: SearchSpace, mnist_backbone: Backbone) -> None:
    assert fake_table.path is not None
    src = load_source(fake_table.path)
    archs = sample(small_space, 12, 16)
    target = 2.0 * src.predict(archs) ** 0.95
    p = adapt(archs, target, space=small_space, backbone=mnist_backbone, sources=[src], statistic="median",
              device="phone-x")
    path = p.save(tmp_path / "adapted.json")
    loaded = load_latency_model(path)
    assert isinstance(loaded, AdaptedLatencyPredictor)
    test = sample(small_space, 20, 17)
    np.testing.assert_allclose(loaded.predict(test), p.predict(test), rtol=1e-12)
    np.testing.assert_allclose(loaded.predict_interval(test)[2], p.predict_interval(test)[2], rtol=1e-12)
    d = json.loads(path.read_text())
    assert d["info"]["k"] == 12 and d["info"]["statistic"] == "median" and d["sources"][0]["kind"] == "table"
    assert d["sources"][0]["sha256"]
    # an adapted predictor is itself a source for the next device
    nxt = adapt(archs, 0.5 * target, space=small_space, backbone=mnist_backbone, sources=[load_source(path)])
    assert rel_err(nxt.predict(test), 0.5 * loaded.predict(test)).max() < 0.02


def test_load_refuses_a_changed_source_and_foreign_files(tmp_path: Path, fake_table_copy: Path,
                                                         small_space: SearchSpace, mnist_backbone: Backbone) -> None:
    src = load_source(fake_table_copy)
    archs = sample(small_space, 6, 18)
    p = adapt(archs, src.predict(archs), space=small_space, backbone=mnist_backbone, sources=[src])
    path = p.save(tmp_path / "a.json")
    with open(fake_table_copy, "a") as f:
        f.write("\n")
    with pytest.raises(FewShotError, match="has changed since the fit"):
        AdaptedLatencyPredictor.load(path)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"kind": "something-else"}))
    with pytest.raises(FewShotError, match="not an adapted latency predictor"):
        AdaptedLatencyPredictor.load(other)
    d = json.loads(path.read_text())
    d["schema_version"] = 99
    other.write_text(json.dumps(d))
    with pytest.raises(FewShotError, match="schema_version 99"):
        AdaptedLatencyPredictor.load(other)


# --------------------------------------------------------------------------- the subnet kit
def test_subnet_kit_runs_imports_and_grows(tmp_path: Path, space: SearchSpace, backbone: Backbone) -> None:
    from lut_helpers import StubExporters, run_kit_script  # type: ignore[import-not-found]

    from latency_tables.kit import KitError
    from latency_tables.subnet_kit import import_subnet_logs, load_subnet_kit, write_subnet_kit

    kit, device = tmp_path / "kit", tmp_path / "device"
    device.mkdir()
    first = choose_subnets(space, backbone, 4, rng=np.random.default_rng(0), pool=200)
    stub = StubExporters()
    m = write_subnet_kit(space, backbone, first, kit, formats=["tflite"], rounds=2, num_runs=10, warmup_runs=2,
                         exporters=stub.mapping())
    assert [s.key for s in m.subnets] == [str(a) for a in first] and len(stub.calls) == 4
    assert "every subnet of this kit" in (kit / "run_benchmark.sh").read_text()
    res = run_kit_script(kit, device)
    assert res.returncode == 0, res.stdout + res.stderr
    csv_path = import_subnet_logs(kit, out=tmp_path / "measured.csv")
    archs, ms = read_measured(csv_path, space)
    assert archs == first
    # the fake adb reports 10 us + MACs / 1000 us; the stub model records the subnet's MACs
    expected = [(10 + int((kit / s.files["tflite"]).read_text().split("macs=")[1]) / 1000) / 1000 for s in m.subnets]
    np.testing.assert_allclose(ms, expected, rtol=1e-3)

    # K -> 2K: the first four keep their files and logs; only the new ones are exported and run
    more = choose_subnets(space, backbone, 4, measured=first, rng=np.random.default_rng(1), pool=200)
    stub.calls.clear()
    m2 = write_subnet_kit(space, backbone, [*first, *more], kit, formats=["tflite"], rounds=2, num_runs=10,
                          warmup_runs=2, exporters=stub.mapping())
    assert [s.name for s in m2.subnets[:4]] == [s.name for s in m.subnets] and len(stub.calls) == 4
    res = run_kit_script(kit, device)
    assert res.returncode == 0 and res.stdout.count("round ") == 8  # 4 new subnets x 2 rounds
    # logs of the first four (written under the kit's earlier sha256) still count: nothing is measured twice
    archs2, ms2 = read_measured(import_subnet_logs(kit, out=tmp_path / "m2.csv"), space)
    assert archs2 == [*first, *more] and np.allclose(ms2[:4], ms)
    assert load_subnet_kit(kit).earlier_sha256 == (m.kit_sha256,)
    # a log of some other kit is still refused
    (kit / "logs" / f"{m2.subnets[0].name}.log").write_text(
        (kit / "logs" / f"{m2.subnets[0].name}.log").read_text().replace(m.kit_sha256, "f" * 64))
    with pytest.raises(KitError, match="comes from another kit"):
        import_subnet_logs(kit, out=tmp_path / "m3.csv")
    with pytest.raises(KitError, match="other settings"):
        write_subnet_kit(space, backbone, more, kit, formats=["tflite"], threads=4, exporters=stub.mapping())


def test_chosen_subnets_are_spread_over_predicted_range_and_structure(space: SearchSpace, backbone: Backbone) -> None:
    src = FnSource(space, layer_device(backbone, per_mmac=0.2))
    pool = sample(space, 300, 19)
    chosen = choose_subnets(space, backbone, 8, sources=[src], candidates=pool, rng=np.random.default_rng(0))
    logp = np.log(src.predict(pool))
    quartile = np.digitize(np.log(src.predict(chosen)), np.quantile(logp, [0.25, 0.5, 0.75]))
    assert set(quartile.tolist()) == {0, 1, 2, 3}  # every quarter of the predicted range is measured

    def min_pair(archs: Sequence[ArchConfig]) -> float:
        x = space.encode_many(list(archs), "onehot")
        d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        return float(d[np.triu_indices(len(x), 1)].min())

    rng = np.random.default_rng(3)
    random_sets = [min_pair([pool[i] for i in rng.choice(len(pool), 8, replace=False)]) for _ in range(30)]
    assert min_pair(chosen) > np.median(random_sets)  # no two chosen subnets are near-duplicates


# --------------------------------------------------------------------------- the command line
def test_cli_adapt_predict_and_refusals(tmp_path: Path, fake_table: LatencyTable, small_space: SearchSpace) -> None:
    from typer.testing import CliRunner

    from hwnas.cli import _mount_subapps, app

    _mount_subapps()
    runner = CliRunner()
    assert fake_table.path is not None
    archs = sample(small_space, 8, 20)
    measured = tmp_path / "phone.csv"
    truth = 3.0 * np.asarray([fake_table.sum_ms(a) for a in archs])
    measured.write_text("arch,latency_ms\n" + "".join(f"{a},{y}\n" for a, y in zip(archs, truth, strict=True)))
    out = tmp_path / "phone.json"
    res = runner.invoke(app, ["lut", "adapt", "--measured", str(measured), "--source", str(fake_table.path),
                              "--out", str(out), "--device", "phone-x"])
    assert res.exit_code == 0, res.output
    assert "K = 8 subnets" in res.output and "chosen model: affine:0" in res.output
    test = small_space.canonical(small_space.largest())
    res = runner.invoke(app, ["lut", "predict", "--predictor", str(out), "--arch", str(test), "--json"])
    assert res.exit_code == 0, res.output
    line = json.loads(res.output.strip().splitlines()[-1])
    assert line["predicted_ms"] == pytest.approx(3.0 * fake_table.sum_ms(test), rel=0.01)
    lo, hi = line["interval90_ms"]
    assert lo < line["predicted_ms"] < hi and line["k"] == 8
    # finished results are not overwritten; bad rows name the line, exit 2, no traceback
    res = runner.invoke(app, ["lut", "adapt", "--measured", str(measured), "--source", str(fake_table.path),
                              "--out", str(out)])
    assert res.exit_code == 2 and "exists; pass --overwrite" in res.output
    bad = tmp_path / "bad.csv"
    bad.write_text(f"arch,latency_ms\n{archs[0]},1\n{archs[1]},-2\n{archs[2]},3\n")
    res = runner.invoke(app, ["lut", "adapt", "--measured", str(bad), "--source", str(fake_table.path),
                              "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "line 3: latency_ms must be positive and finite" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "x.json").exists()
    res = runner.invoke(app, ["lut", "adapt", "--measured", str(measured), "--out", str(tmp_path / "y.json")])
    assert res.exit_code == 2 and "--space" in res.output


def test_cli_subnet_kit_and_import(tmp_path: Path, small_space: SearchSpace, fake_table: LatencyTable) -> None:
    """`lut kit --subnets` exports real ONNX subnets; `lut import` of its (fake-adb) logs gives the measured CSV."""
    from lut_helpers import run_kit_script  # type: ignore[import-not-found]
    from typer.testing import CliRunner

    from hwnas.cli import _mount_subapps, app

    _mount_subapps()
    runner = CliRunner()
    kit = tmp_path / "kit"
    assert fake_table.path is not None
    res = runner.invoke(app, ["lut", "kit", "--subnets", "3", "--space", small_space.name, "--formats", "onnx",
                              "--width-mult", "1.0", "--source", str(fake_table.path), "--out", str(kit)])
    assert res.exit_code != 0 and "space" in res.output  # the test space is not registered: named in the error
    res = runner.invoke(app, ["lut", "kit", "--subnets", "3", "--space", "mnist", "--formats", "onnx",
                              "--rounds", "1", "--num-runs", "5", "--out", str(kit)])
    assert res.exit_code == 0, res.output
    from latency_tables.subnet_kit import load_subnet_kit

    m = load_subnet_kit(kit)
    assert len(m.subnets) == 3 and all((kit / s.files["onnx"]).stat().st_size > 1000 for s in m.subnets)
    res = runner.invoke(app, ["lut", "kit", "--subnets", "2", "--space", "mnist", "--formats", "onnx",
                              "--rounds", "1", "--num-runs", "5", "--out", str(kit)])
    assert res.exit_code == 0 and "5 subnets (2 new)" in res.output
    # the generated script refuses to run without .tflite models; a CSV import is for layer kits
    assert run_kit_script(kit, tmp_path).returncode == 2
    res = runner.invoke(app, ["lut", "import", str(kit), "--out", str(tmp_path / "m.csv"), "--csv", str(tmp_path / "x")])
    assert res.exit_code == 2 and "subnet kit" in res.output


def op_device(backbone: Backbone, *, dense: float, dw: dict[int, float], fixed: float) -> Device:
    """A device priced per op type: ms per million dense and per million depthwise MACs of each kernel size."""

    def f(archs: Sequence[ArchConfig]) -> np.ndarray:
        out = []
        for a in archs:
            t = fixed
            for s in layer_specs(backbone, a):
                if s.op != "mbconv":
                    t += dense * s.macs() / 1e6
                    continue
                ho = s.out_hw
                pw = (s.in_ch * s.mid_ch * s.in_hw ** 2 if s.expand != 1 else 0) + s.mid_ch * s.out_ch * ho * ho
                t += dense * pw / 1e6 + dw[s.kernel] * s.mid_ch * s.kernel ** 2 * ho * ho / 1e6
            out.append(t)
        return np.asarray(out)

    return f


def test_per_op_costs_learn_a_device_that_runs_large_kernels_slowly(space: SearchSpace, backbone: Backbone) -> None:
    """int8 onnxruntime here prices a 7x7 depthwise MAC far above a pointwise one: MACs alone cannot see it, the
    per-op cost model (no source) recovers it from 15 measurements and LOO picks it."""
    target = op_device(backbone, dense=0.02, dw={3: 0.05, 5: 0.1, 7: 0.6}, fixed=0.3)
    train, test = sample(space, 15, 0), sample(space, 200, 1)
    ops = adapt(train, target(train), space=space, backbone=backbone, methods=["ops"])
    macs = adapt(train, target(train), space=space, backbone=backbone, methods=["macs"])
    assert np.median(rel_err(ops.predict(test), target(test))) < 0.01
    assert np.median(rel_err(macs.predict(test), target(test))) > 0.05
    chosen = adapt(train, target(train), space=space, backbone=backbone)
    assert chosen.info["chosen"].startswith("ops")
    with pytest.raises(FewShotError, match="none applies"):  # 8 parameters need K >= 10
        adapt(train[:9], target(train[:9]), space=space, backbone=backbone, methods=["ops"])


def test_an_ops_predictor_round_trips_through_json(space: SearchSpace, backbone: Backbone, tmp_path: Path) -> None:
    target = op_device(backbone, dense=0.02, dw={3: 0.05, 5: 0.1, 7: 0.6}, fixed=0.3)
    train, test = sample(space, 12, 3), sample(space, 20, 4)
    p = adapt(train, target(train), space=space, backbone=backbone, methods=["ops"])
    p.save(tmp_path / "p.json")
    back = load_latency_model(tmp_path / "p.json")
    assert np.allclose(back.predict(test), p.predict(test), rtol=1e-9)
