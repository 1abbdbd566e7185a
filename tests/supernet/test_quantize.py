"""Quantized export: int8 (QDQ, onnxruntime) and fp16 files stay close to fp32 and really hold reduced weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from supernet.evaluate import calibration_batches
from supernet.export import export_onnx
from supernet.layers import Backbone, StaticSubnet
from supernet.quantize import (
    BACKENDS,
    QuantConfig,
    export_precision,
    int8_weight_fraction,
    precision_report,
    quantize_onnx,
)
from supernet.space import get_space
from supernet.testing import QuantTargetContract

RES = 24


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_trained, tiny_val_inputs
          ) -> tuple[StaticSubnet, object, Path, np.ndarray]:
    """The shared trained tiny subnet (conftest), its fp32 ONNX file, held-out validation inputs."""
    model, data = tiny_trained
    fp32 = export_onnx(model, tmp_path_factory.mktemp("q") / "fp32.onnx", input_shape=model.input_shape)
    return model, data, fp32, tiny_val_inputs


def _run(path: Path, xs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": xs[i : i + 1]})[0] for i in range(xs.shape[0])])


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """Error relative to the input-dependent part of the fp32 logits (a constant output would score ~1)."""
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref - ref.mean(0)))


def test_int8_per_channel_is_close_to_fp32_and_stores_int8_weights(setup, tmp_path) -> None:
    model, data, fp32, xs = setup
    cfg = QuantConfig(precision="int8", per_channel=True, calibration="minmax", calib_images=64)
    q = export_precision(model, tmp_path / "int8.onnx", config=cfg, data=data)
    assert q.is_file() and not list(tmp_path.glob(".*.tmp"))
    ref, got = _run(fp32, xs), _run(q, xs)
    assert np.isfinite(got).all()
    assert _rel_err(got, ref) < 0.25
    assert float((got.argmax(1) == ref.argmax(1)).mean()) >= 0.8
    assert int8_weight_fraction(q) > 0.9
    assert int8_weight_fraction(fp32) == 0.0
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    # the fast lowering (QOperator): integer kernels everywhere, one Quantize / Dequantize at the edges
    assert {"QLinearConv", "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool"} <= ops
    assert not ops & {"HardSwish", "HardSigmoid", "ReduceMean", "Conv", "Mul"}


# output position of the (scale) input of QOperator nodes that quantize their output
_QOP_Y_SCALE = {"QLinearConv": 6, "QLinearAdd": 6, "QLinearMul": 6, "QLinearGlobalAveragePool": 3}


def _activation_scales(path: Path) -> dict[str, float]:
    """Scale of every quantized activation (tensor name -> scale) of a QDQ (QuantizeLinear) or QOperator file."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
           if n.op_type == "QuantizeLinear" and n.input[0] not in inits}
    out.update({n.output[0]: float(inits[n.input[_QOP_Y_SCALE[n.op_type]]]) for n in model.graph.node
                if n.op_type in _QOP_Y_SCALE})
    return out


def _conv_weight_scale_shapes(path: Path) -> set[tuple[int, ...]]:
    """Shapes of the scales of Conv weights (``()`` per tensor, ``(out_ch,)`` per channel): the DequantizeLinear
    feeding a Conv (QDQ) or a QLinearConv's weight scale (QOperator)."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    shapes = {tuple(inits[producer[n.input[1]].input[1]].shape) for n in model.graph.node
              if n.op_type == "Conv" and n.input[1] in producer}
    return shapes | {tuple(inits[n.input[4]].shape) for n in model.graph.node if n.op_type == "QLinearConv"}


@pytest.fixture(scope="module")
def per_method(setup, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The per-tensor int8 file of every onnxruntime calibration method, on the same 16 calibration images.

    Percentile at 99 %: the default 99.999 % of ~10^5 values clips about one value per tensor here, so its ranges
    are within 0.1 % of min-max (measured) and could not tell a fallback from the real method."""
    _, data, fp32, _ = setup
    calib = [x.numpy() for x in calibration_batches(data, n_images=16, resolution=RES, seed=1)]
    out = tmp_path_factory.mktemp("methods")
    return {m: quantize_onnx(fp32, out / f"{m}.onnx", calib_batches=calib,
                             config=QuantConfig(per_channel=False, calibration=m, calib_images=16, entropy_bins=256,
                                                percentile=99.0))
            for m in ("minmax", "percentile", "entropy")}


@pytest.mark.parametrize("calibration", ["minmax", "percentile", "entropy"])
def test_per_tensor_and_every_calibration_method_run(setup, per_method, calibration: str) -> None:
    _, _, _, xs = setup
    q = per_method[calibration]
    got = _run(q, xs[:8])
    assert got.shape == (8, 10) and np.isfinite(got).all()
    assert int8_weight_fraction(q) > 0.9
    assert _conv_weight_scale_shapes(q) == {()}  # per tensor: one scale per weight


def test_calibration_methods_really_differ(per_method) -> None:
    """Percentile and entropy must not silently fall back to min-max: their activation ranges differ (clipped
    ranges: smaller scales on most tensors), and from each other."""
    scales = {m: _activation_scales(p) for m, p in per_method.items()}
    assert set(scales["minmax"]) == set(scales["percentile"]) == set(scales["entropy"]) and scales["minmax"]
    names = sorted(scales["minmax"])
    mm, pc, en = (np.asarray([scales[m][n] for n in names]) for m in ("minmax", "percentile", "entropy"))
    # measured here: percentile (99 %) shrinks 98 % of the tensors' ranges, entropy (256 bins) 14 % (on
    # the rest its KL search keeps the full range); a fallback to min-max would change none
    assert np.mean(pc < mm * (1 - 1e-3)) > 0.5
    assert np.mean(en < mm * (1 - 1e-3)) > 0.05
    assert np.mean(~np.isclose(pc, en, rtol=1e-3)) > 0.5


def test_ort_per_channel_weights_have_one_scale_per_output_channel(setup, tmp_path) -> None:
    _, data, fp32, _ = setup
    calib = [x.numpy() for x in calibration_batches(data, n_images=8, resolution=RES, seed=1)]
    q = quantize_onnx(fp32, tmp_path / "pc.onnx", config=QuantConfig(calib_images=8), calib_batches=calib)
    shapes = _conv_weight_scale_shapes(q)
    assert shapes and all(len(s) == 1 and s[0] > 1 for s in shapes)
    out_channels = {next(iter(i.dims)) for i in onnx.load(str(q)).graph.initializer if len(i.dims) == 4}
    assert {s[0] for s in shapes} <= out_channels


def test_fp16_file_holds_float16_weights_and_matches_fp32(setup, tmp_path) -> None:
    pytest.importorskip("onnxruntime.transformers.float16")
    _model, _data, fp32, xs = setup
    p = quantize_onnx(fp32, tmp_path / "fp16.onnx", config=QuantConfig(precision="fp16"))
    dtypes = {i.data_type for i in onnx.load(str(p)).graph.initializer if len(i.dims) > 1}
    assert dtypes == {onnx.TensorProto.FLOAT16}
    ref, got = _run(fp32, xs[:8]), _run(p, xs[:8])
    assert _rel_err(got, ref) < 0.05
    assert p.stat().st_size < 0.6 * fp32.stat().st_size


def test_bad_inputs_give_clear_errors(setup, tmp_path) -> None:
    _, _, fp32, xs = setup
    with pytest.raises(ValueError, match="calibration method 'kl'.*minmax, percentile, entropy"):
        QuantConfig(calibration="kl")
    with pytest.raises(ValueError, match="precision 'int4'"):
        QuantConfig(precision="int4")
    with pytest.raises(ValueError, match="calib_images"):
        QuantConfig(calib_images=0)
    cfg = QuantConfig()
    with pytest.raises(ValueError, match="no calibration images"):
        quantize_onnx(fp32, tmp_path / "q.onnx", config=cfg, calib_batches=[])
    with pytest.raises(ValueError, match="needs calibration data"):
        quantize_onnx(fp32, tmp_path / "q.onnx", config=cfg)
    with pytest.raises(ValueError, match=r"shape \(2, 1, 8, 8\), the model expects \(1, 1, 24, 24\)"):
        quantize_onnx(fp32, tmp_path / "q.onnx", config=cfg, calib_batches=[np.zeros((2, 1, 8, 8), np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        quantize_onnx(fp32, tmp_path / "q.onnx", config=cfg, calib_batches=[np.full((1, 1, RES, RES), np.nan)])
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "q.onnx", config=cfg, calib_batches=[xs[:1]])
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        int8_weight_fraction(tmp_path / "missing.onnx")
    assert not (tmp_path / "q.onnx").exists()


def test_precision_report_has_one_row_per_variant(setup, tmp_path) -> None:
    model, data, _, _ = setup
    rows = precision_report(
        model, data, out_dir=tmp_path, config=QuantConfig(calib_images=16), max_eval_images=16, warmup=1, runs=3
    )
    assert [r["variant"] for r in rows] == ["fp32", "fp16", "int8-pc-minmax", "int8-pt-minmax"]
    assert {r["backend"] for r in rows} == {"onnxruntime"} and not any(r["simulated"] for r in rows)
    by = {r["variant"]: r for r in rows}
    assert by["fp32"]["top1_agreement_fp32"] == 1.0 and by["fp32"]["max_abs_diff_fp32"] == 0.0
    assert by["int8-pc-minmax"]["int8_weight_fraction"] > 0.9
    assert by["int8-pc-minmax"]["size_bytes"] < by["fp32"]["size_bytes"]
    for r in rows:
        assert 0.0 <= r["top1"] <= 1.0 and r["latency_p50_ms"] > 0 and r["latency_iqr_ms"] >= 0
        assert Path(r["path"]).is_file()
    saved = json.loads((tmp_path / "precision_report.json").read_text())
    assert saved["rows"] == rows and saved["eval_images"] == 16
    assert saved["protocol"]["threads"] == 1 and saved["protocol"]["runs"] == 3
    assert saved["protocol"]["backends"]["onnxruntime"]["backend_version"]
    assert by["fp32"]["speed_vs_fp32"]["median"] == pytest.approx(1.0)
    assert by["int8-pc-minmax"]["weight_dtypes"] == {"int8": sum(by["fp32"]["weight_dtypes"].values())}


def test_precision_report_emits_qat_rows_only_for_the_spec_the_model_was_trained_with(setup, tmp_path) -> None:
    """A QAT model trained per channel is not reported as ``int8-qat-pt-*`` (one exported per tensor)."""
    from supernet.qat import fold_batchnorm
    from supernet.quantize import qat_spec_for

    model, data, _, _ = setup
    cfg = QuantConfig(calib_images=8)
    qat_like = fold_batchnorm(model)  # stands in for a QAT result: only which rows appear matters here
    kw = {"precisions": ("int8",), "config": cfg, "max_eval_images": 8, "warmup": 0, "runs": 1, "qat_model": qat_like}
    rows = precision_report(model, data, out_dir=tmp_path / "pc", qat_spec=qat_spec_for(cfg, backend="onnxruntime"),
                            **kw)
    assert [r["variant"] for r in rows] == ["fp32", "int8-pc-minmax", "int8-pt-minmax", "int8-qat-pc-minmax"]
    pt = cfg.replace(per_channel=False)
    rows = precision_report(model, data, out_dir=tmp_path / "pt", qat_spec=qat_spec_for(pt, backend="onnxruntime"),
                            **kw)
    assert [r["variant"] for r in rows] == ["fp32", "int8-pc-minmax", "int8-pt-minmax", "int8-qat-pt-minmax"]
    with pytest.raises(ValueError, match="qat_model needs qat_spec"):
        precision_report(model, data, out_dir=tmp_path / "x", **kw)


def test_reduce_range_has_one_default_everywhere() -> None:
    """QuantConfig, the onnxruntime LUT backend and the CLI share `default_reduce_range` (by the CPU's VNNI flag)."""
    from latency_tables.backends.ort import OrtBackend
    from supernet.quantize import default_reduce_range

    assert QuantConfig().reduce_range == default_reduce_range()
    assert OrtBackend(precision="int8")._quant_config().reduce_range == default_reduce_range()


def test_quantize_cmd_writes_an_int8_file_and_rejects_unknown_backends(tmp_path) -> None:
    import typer
    from typer.testing import CliRunner

    from hwnas.commands.quantize import quantize_cmd
    from supernet.model import OFASupernet
    from supernet.train import save_supernet

    torch.manual_seed(0)
    net = OFASupernet(space=get_space("mnist"), backbone=Backbone(in_channels=1, num_classes=10, width_mult=0.25))
    sn = save_supernet(net, tmp_path / "supernet.pt", extra={"train_config": {"dataset": "digits"}})
    app = typer.Typer()
    app.command()(quantize_cmd)
    runner = CliRunner()
    args = ["--supernet", str(sn), "--arch", "smallest", "--calib-images", "8", "--bn-images", "32",
            "--no-report", "--out", str(tmp_path / "q")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    [q] = (tmp_path / "q").glob("*.int8-pc-minmax.onnx")
    assert int8_weight_fraction(q) > 0.9
    meta = json.loads(q.with_suffix(".json").read_text())
    assert meta["quant_config"]["calib_images"] == 8 and meta["backend"] == "onnxruntime"
    assert meta["path"] == str(q) and meta["qat"] is None and meta["weight_dtypes"]["int8"] > 0
    bad = runner.invoke(app, [*args, "--backend", "coreml"])
    assert bad.exit_code == 2 and "expected one of onnxruntime, tflite" in bad.output
    bad = runner.invoke(app, [*args, "--calibration", "kl"])
    assert bad.exit_code == 2 and "calibration method 'kl'" in bad.output
    bad = runner.invoke(app, [*args, "--calibration", "entropy", "--backend", "tflite"])
    assert bad.exit_code == 2 and "'entropy' is not available for tflite" in bad.output
    bad = runner.invoke(app, [*args, "--precision", "fp16", "--qat"])
    assert bad.exit_code == 2 and "QAT needs precision int8" in bad.output


@pytest.mark.slow  # ~7 s alone, 20 s on the loaded VM: QAT decision, QAT, 6 exports and a timed report
def test_quantize_cmd_report_with_qat_and_simulated_rows(tmp_path) -> None:
    """`--precision int8-qat` forces QAT; `--simulate-bits` adds accuracy-only rows without latency."""
    import typer
    from typer.testing import CliRunner

    from hwnas.commands.quantize import quantize_cmd
    from supernet.model import OFASupernet
    from supernet.train import save_supernet

    torch.manual_seed(0)
    net = OFASupernet(space=get_space("mnist"), backbone=Backbone(in_channels=1, num_classes=10, width_mult=0.25))
    sn = save_supernet(net, tmp_path / "supernet.pt",
                       extra={"train_config": {"dataset": "digits", "max_train_images": 64}})
    app = typer.Typer()
    app.command()(quantize_cmd)
    res = CliRunner().invoke(app, ["--supernet", str(sn), "--arch", "smallest", "--calib-images", "8",
                                   "--bn-images", "32", "--precision", "int8-qat", "--qat-epochs", "1",
                                   "--simulate-bits", "4", "--split", "val", "--out", str(tmp_path / "q")])
    assert res.exit_code == 0, res.output
    assert "QAT: PTQ loses" in res.output and "forced" in res.output and "(simulated: no latency)" in res.output
    [meta_path] = (tmp_path / "q").glob("*.int8-pc-minmax.json")
    meta = json.loads(meta_path.read_text())
    assert meta["qat"]["ran"] and meta["path"].endswith(".int8-qat-pc-minmax.onnx")
    variants = [r["variant"] for r in meta["report"]["rows"]]
    assert variants == ["fp32", "fp16", "int8-pc-minmax", "int8-pt-minmax", "int8-qat-pc-minmax",
                        "w4a8-pc (simulated)"]  # QAT ran per channel: no per-tensor QAT row
    sim = meta["report"]["rows"][-1]
    assert sim["simulated"] and sim["latency_p50_ms"] is None and sim["size_bytes"] is None


def _cli_supernet(tmp_path: Path) -> tuple[object, Path]:
    import typer

    from hwnas.commands.quantize import quantize_cmd
    from supernet.model import OFASupernet
    from supernet.train import save_supernet

    torch.manual_seed(0)
    net = OFASupernet(space=get_space("mnist"), backbone=Backbone(in_channels=1, num_classes=10, width_mult=0.25))
    sn = save_supernet(net, tmp_path / "supernet.pt", extra={"train_config": {"dataset": "digits"}})
    app = typer.Typer()
    app.command()(quantize_cmd)
    return app, sn


def test_quantize_cmd_mixed_refuses_tflite_and_half_a_table_pair(tmp_path) -> None:
    from typer.testing import CliRunner

    app, sn = _cli_supernet(tmp_path)
    args = ["--supernet", str(sn), "--arch", "smallest", "--precision", "mixed", "--no-report"]
    bad = CliRunner().invoke(app, [*args, "--backend", "tflite"])
    assert bad.exit_code == 2 and "implemented for onnxruntime" in bad.output
    bad = CliRunner().invoke(app, [*args, "--fp32-table", str(tmp_path / "t.csv")])
    assert bad.exit_code == 2 and "give both" in bad.output


@pytest.mark.slow  # one lowering per layer (sensitivity) plus the greedy steps: ~40 s on the loaded VM
def test_quantize_cmd_mixed_writes_a_file_with_the_chosen_fp32_layers(tmp_path) -> None:
    from typer.testing import CliRunner

    app, sn = _cli_supernet(tmp_path)
    res = CliRunner().invoke(app, ["--supernet", str(sn), "--arch", "smallest", "--precision", "mixed",
                                   "--budget-pts", "0", "--calib-images", "8", "--bn-images", "32", "--no-report",
                                   "--out", str(tmp_path / "q")])
    assert res.exit_code == 0, res.output
    assert "mixed: fp32 layers" in res.output
    [meta_path] = [p for p in (tmp_path / "q").glob("*.json")]
    meta = json.loads(meta_path.read_text())
    policy = meta["mixed_policy"]
    assert meta["quant_config"]["fp32_layers"] == policy["fp32_layers"]
    assert policy["mixed_loss_pts"] <= 0.0 or len(policy["fp32_layers"]) == len(policy["layers"])


TFLITE = [pytest.mark.slow, pytest.mark.tflite]  # conversion takes ~10 s per file


@pytest.fixture(scope="module")
def quant_setup(setup) -> tuple[StaticSubnet, list[np.ndarray], np.ndarray]:
    model, data, _, xs = setup
    return model, [x.numpy() for x in calibration_batches(data, n_images=64, resolution=RES, seed=0)], xs


@pytest.mark.parametrize("target_name", [pytest.param(n, marks=TFLITE if n.startswith("tflite") else [])
                                         for n in BACKENDS])
class TestEveryQuantTarget(QuantTargetContract):
    """`supernet.testing.QuantTargetContract`: fp32 matches torch; fp16 / int8 files agree with it on top-1."""

    @pytest.fixture(autouse=True)
    def _needs_converter(self, target_name: str) -> None:
        if target_name.startswith("tflite"):
            pytest.importorskip("litert_torch", reason="TFLite conversion needs the [tflite] extra (litert-torch)")
            pytest.importorskip("ai_edge_quantizer")
