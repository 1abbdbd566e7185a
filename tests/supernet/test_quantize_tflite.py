"""TFLite fp16 and full-integer int8 export: the .tflite really stores int8 (or float16) weights, per channel or per
tensor, its int8 graph has int8 input and output, and its logits stay close to fp32 on calibration-like data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from supernet.evaluate import calibration_batches
from supernet.layers import StaticSubnet
from supernet.quantize import (
    QuantConfig,
    QuantRecipe,
    compare_variants,
    get_target,
    int8_weight_fraction,
    quantize_onnx,
)
from supernet.quantize_tflite import quantize_tflite, tflite_weight_dtypes
from supernet.registry import UnknownNameError
from supernet.runtime import open_session

RES = 24


def test_tflite_refuses_calibration_methods_it_does_not_have(tmp_path: Path) -> None:
    fake = tmp_path / "m.tflite"
    fake.write_bytes(b"not read before the check")
    for method in ("percentile", "entropy"):
        with pytest.raises(ValueError, match=f"calibration method '{method}' is not available for tflite"):
            quantize_tflite(fake, tmp_path / "q.tflite", config=QuantConfig(calibration=method),
                            calib_batches=[np.zeros((1, 1, RES, RES), np.float32)])
    with pytest.raises(FileNotFoundError, match="missing.tflite"):
        quantize_tflite(tmp_path / "missing.tflite", tmp_path / "q.tflite", config=QuantConfig())
    with pytest.raises(ValueError, match="calibration method 'moving-average' is not available for onnxruntime"):
        quantize_onnx(fake, tmp_path / "q.onnx", config=QuantConfig(calibration="moving-average"))
    with pytest.raises(UnknownNameError, match="backend .coreml.; known quantization backends: onnxruntime, tflite"):
        get_target("coreml")
    assert not (tmp_path / "q.tflite").exists()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_trained, tiny_val_inputs
          ) -> tuple[StaticSubnet, object, Path, np.ndarray]:
    """The shared trained tiny subnet (conftest), its fp32 .tflite, held-out validation inputs."""
    pytest.importorskip("litert_torch", reason="TFLite conversion needs the [tflite] extra (litert-torch)")
    pytest.importorskip("ai_edge_quantizer")
    from supernet.export import export_tflite

    model, data = tiny_trained
    fp32 = export_tflite(model, tmp_path_factory.mktemp("tfl") / "fp32.tflite", input_shape=model.input_shape)
    return model, data, fp32, tiny_val_inputs


def _calib(data: object, n: int = 64) -> list[np.ndarray]:
    return [x.numpy() for x in calibration_batches(data, n_images=n, resolution=RES, seed=0)]


def _rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref - ref.mean(0)))


def _weight_scales(path: Path) -> list[int]:
    """Number of quantization scales of every CONV_2D / DEPTHWISE_CONV_2D weight."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    return [len(tensors[op["inputs"][1]]["quantization_parameters"]["scales"])
            for op in interp._get_ops_details() if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]


@pytest.mark.slow
@pytest.mark.tflite
def test_int8_per_channel_is_full_integer_and_close_to_fp32(setup, tmp_path: Path) -> None:
    model, data, fp32, xs = setup
    q = quantize_tflite(fp32, tmp_path / "int8.tflite", config=QuantConfig(calib_images=64), calib_batches=_calib(data))
    assert q.is_file() and not list(tmp_path.glob(".*.tmp"))
    dtypes = tflite_weight_dtypes(q)
    assert set(dtypes) == {"int8"} and sum(dtypes.values()) > 100_000
    assert int8_weight_fraction(q) == 1.0 and int8_weight_fraction(fp32) == 0.0
    assert max(_weight_scales(q)) > 1  # one scale per output channel
    runner = open_session(q)
    assert runner.prepare(xs[:1]).dtype == np.int8  # full integer: int8 input (and output)
    ref = open_session(fp32)(xs)
    with torch.no_grad():
        torch_ref = model(torch.from_numpy(xs)).numpy()
    assert _rel_err(ref, torch_ref) < 1e-3
    got = runner(xs)
    assert np.isfinite(got).all() and got.shape == (48, 10)
    assert _rel_err(got, ref) < 0.25
    assert float((got.argmax(1) == ref.argmax(1)).mean()) >= 0.8
    assert q.stat().st_size < 0.5 * fp32.stat().st_size


@pytest.mark.slow
@pytest.mark.tflite
def test_per_tensor_moving_average_and_fp16(setup, tmp_path: Path) -> None:
    _, data, fp32, xs = setup
    ref = open_session(fp32)(xs)
    pt = quantize_tflite(fp32, tmp_path / "pt.tflite", config=QuantConfig(per_channel=False, calib_images=64),
                         calib_batches=_calib(data))
    assert set(tflite_weight_dtypes(pt)) == {"int8"} and set(_weight_scales(pt)) == {1}
    assert _rel_err(open_session(pt)(xs), ref) < 0.5
    ma = quantize_tflite(fp32, tmp_path / "ma.tflite", config=QuantConfig(calibration="moving-average"),
                         calib_batches=_calib(data))
    assert np.isfinite(open_session(ma)(xs)).all()
    f16 = quantize_tflite(fp32, tmp_path / "fp16.tflite", config=QuantConfig(precision="fp16"))
    assert set(tflite_weight_dtypes(f16)) == {"float16"}
    assert _rel_err(open_session(f16)(xs), ref) < 0.05
    assert f16.stat().st_size < 0.65 * fp32.stat().st_size
    builtin = open_session(f16, backend="tflite-builtin")(xs)
    assert _rel_err(builtin, ref) < 0.05


@pytest.mark.slow
@pytest.mark.tflite
def test_compare_variants_measures_both_tflite_paths_side_by_side(setup, tmp_path: Path) -> None:
    model, data, _, _ = setup
    base = QuantConfig(calib_images=16)
    variants = [QuantRecipe(backend=b, config=c) for b in ("tflite", "tflite-builtin")
                for c in (base.replace(precision="fp32"), base)]
    res = compare_variants({"fp32": model}, variants, data, out_dir=tmp_path, max_eval_images=16, warmup=1, runs=5)
    rows = res["rows"]
    assert [(r["backend"], r["variant"]) for r in rows] == [
        ("tflite", "fp32"), ("tflite", "int8-pc-minmax"), ("tflite-builtin", "fp32"), ("tflite-builtin", "int8-pc-minmax")]
    assert rows[1]["path"] == rows[3]["path"]  # one file, two runtimes
    assert rows[1]["weight_dtypes"] == {"int8": sum(rows[0]["weight_dtypes"].values())}
    assert all(r["latency_p50_ms"] > 0 and r["speed_vs_fp32"]["median"] > 0 for r in rows)
    assert set(res["protocol"]["backends"]) == {"tflite", "tflite-builtin"}
    assert "XNNPACK" in res["protocol"]["backends"]["tflite"]["delegate"]
    # what each runtime really ran: fp32 wholly on XNNPACK, nothing delegated on the built-in path
    assert rows[0]["delegation"]["delegate"] == "XNNPACK"
    assert rows[0]["delegation"]["delegated_nodes"] == rows[0]["delegation"]["total_nodes"]
    assert rows[2]["delegation"]["delegated_nodes"] == rows[3]["delegation"]["delegated_nodes"] == 0


def test_int8_friendly_form_is_the_same_function_and_xnnpack_takes_its_whole_int8_graph(setup, tmp_path) -> None:
    """The tflite int8 lowering converts `int8_friendly_module` (no HARD_SWISH); XNNPACK then delegates the
    int8 graph in one partition, and the int8 file still agrees with fp32 on held-out inputs."""
    import collections

    from supernet.quantize_tflite import MulClipHardswish, TFLiteTarget, int8_friendly_module
    from supernet.runtime import tflite_interpreter

    model, data, fp32, xs = setup
    friendly = int8_friendly_module(model)
    assert any(isinstance(m, MulClipHardswish) for m in friendly.modules())
    assert any(isinstance(m, torch.nn.Hardswish) for m in model.modules())  # the caller's model is unchanged
    with torch.no_grad():
        x = torch.from_numpy(xs[:16])
        torch.testing.assert_close(friendly(x), model(x), rtol=1e-4, atol=1e-5)
    t = TFLiteTarget()
    form = t.export_form(QuantConfig())
    assert form == "int8-friendly" and t.export_form(QuantConfig(tflite_form="plain")) == "plain"
    assert t.export_form(QuantConfig(precision="fp32")) == "plain"
    f32 = t.export_fp32(model, tmp_path / "friendly.tflite", form=form)
    q = quantize_tflite(f32, tmp_path / "friendly.int8.tflite", config=QuantConfig(), calib_batches=_calib(data))
    ops = collections.Counter(o["op_name"] for o in tflite_interpreter(q)._get_ops_details())
    assert "HARD_SWISH" not in ops and ops["MUL"] > 0
    d = open_session(q, backend="tflite", threads=1).delegation()
    assert d is not None and d.partitions == 1 and d.fully_delegated, d
    ref, got = open_session(fp32, backend="tflite")(xs), open_session(q, backend="tflite")(xs)
    assert float((ref.argmax(1) == got.argmax(1)).mean()) >= 0.9
