"""The fast onnxruntime int8 lowering (issue 14): graph rewrites keep the function, scale folding is exact, the
int8 file agrees with fp32 on held-out data, and mixed precision keeps exactly the chosen layers in fp32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from supernet.evaluate import calibration_batches
from supernet.export import export_onnx
from supernet.layers import StaticSubnet, layer_specs
from supernet.onnx_lowering import fold_scalar_muls, int8_friendly, rewrite_counts
from supernet.quantize import QuantConfig, onnx_weight_dtypes, quantize_onnx, split_arrays

RES = 24


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_trained, tiny_val_inputs
          ) -> tuple[StaticSubnet, object, Path, np.ndarray, list[np.ndarray]]:
    model, data = tiny_trained
    out = tmp_path_factory.mktemp("lowering")
    fp32 = export_onnx(model, out / "fp32.onnx", input_shape=model.input_shape)
    calib = [b.numpy()[i : i + 1] for b in calibration_batches(data, n_images=32, resolution=RES, seed=1)
             for i in range(b.shape[0])]
    return model, data, fp32, tiny_val_inputs, calib


def _run(path: Path | onnx.ModelProto, xs: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    src = path.SerializeToString() if isinstance(path, onnx.ModelProto) else str(path)
    sess = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": xs[i : i + 1]})[0] for i in range(xs.shape[0])])


def test_int8_friendly_rewrite_is_the_same_function_without_float_only_ops(setup) -> None:
    _, _, fp32, xs, _ = setup
    original = onnx.load(str(fp32))
    before = rewrite_counts(original)
    assert before["HardSwish"] > 0 and before["HardSigmoid"] > 0 and before["ReduceMean"] > 0  # the test subnet has them
    rewritten = int8_friendly(onnx.load(str(fp32)))
    assert rewrite_counts(rewritten) == {"HardSwish": 0, "HardSigmoid": 0, "ReduceMean": 0}
    ops = {n.op_type for n in rewritten.graph.node}
    assert {"Clip", "GlobalAveragePool"} <= ops
    np.testing.assert_allclose(_run(rewritten, xs), _run(fp32, xs), rtol=1e-4, atol=1e-5)


def test_keep_float_layers_keep_float_ops_under_their_own_names(setup) -> None:
    _, _, fp32, xs, _ = setup
    rewritten = int8_friendly(onnx.load(str(fp32)), keep_float=["/0/"])
    stem = [n for n in rewritten.graph.node if n.name.startswith("/0/")]
    assert {n.op_type for n in stem} == {"Conv", "HardSigmoid", "Mul"}  # HardSwish split, not Add/Clip
    np.testing.assert_allclose(_run(rewritten, xs), _run(fp32, xs), rtol=1e-4, atol=1e-5)


def test_folding_scalar_muls_into_scales_changes_no_output(setup, tmp_path) -> None:
    """QLinearMul by a positive constant and the same integers read with a multiplied scale are one tensor."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    _, _, fp32, xs, calib = setup
    rw = tmp_path / "rw.onnx"
    onnx.save(int8_friendly(onnx.load(str(fp32))), str(rw))

    class Reader:
        def __init__(self) -> None:
            self._it = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {"input": x}

    q = tmp_path / "q.onnx"
    quantize_static(str(rw), str(q), Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    model = onnx.load(str(q))
    n_mul = sum(n.op_type == "QLinearMul" for n in model.graph.node)
    folded = fold_scalar_muls(model)
    assert folded > 0 and sum(n.op_type == "QLinearMul" for n in model.graph.node) == n_mul - folded
    # equal up to one requantization step (the removed QLinearMul rounded to its own output grid)
    unfolded, got = _run(q, xs), _run(model, xs)
    assert float(np.abs(got - unfolded).max()) < 0.05 * float(np.abs(unfolded).max())


def test_fast_int8_agrees_with_fp32_on_held_out_data(setup, tmp_path) -> None:
    _, data, fp32, _, calib = setup
    xs, ys = split_arrays(data, split="val", resolution=RES, max_images=300)
    q = quantize_onnx(fp32, tmp_path / "int8.onnx", config=QuantConfig(calib_images=32), calib_batches=calib)
    ref, got = _run(fp32, xs), _run(q, xs)
    agreement = float((ref.argmax(1) == got.argmax(1)).mean())
    top1_fp32, top1_int8 = float((ref.argmax(1) == ys).mean()), float((got.argmax(1) == ys).mean())
    assert agreement >= 0.95, agreement
    assert top1_int8 >= top1_fp32 - 0.03, (top1_fp32, top1_int8)
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert not ops & {"HardSwish", "HardSigmoid", "ReduceMean", "Conv"}


def test_mixed_precision_keeps_exactly_the_chosen_layers_fp32(setup, tmp_path) -> None:
    model, _, fp32, xs, calib = setup
    n_layers = len(layer_specs(model.backbone, model.arch))
    keep = (0, n_layers - 1)  # stem and head
    cfg = QuantConfig(calib_images=32, fp32_layers=keep)
    assert cfg.label == f"int8-pc-minmax-fp32L0.{n_layers - 1}" and cfg.replace(precision="fp32").fp32_layers == ()
    q = quantize_onnx(fp32, tmp_path / "mixed.onnx", config=cfg, calib_batches=calib)
    graph = onnx.load(str(q)).graph
    float_convs = {n.name.split("/")[1] for n in graph.node if n.op_type in ("Conv", "Gemm")}
    assert float_convs == {str(i) for i in keep}
    stem_w = model[0][0].weight.numel()
    head_w = model[n_layers - 1].feature_mix.weight.numel() + model[n_layers - 1].classifier.weight.numel()
    assert onnx_weight_dtypes(q)["float32"] == stem_w + head_w
    ref, got = _run(fp32, xs), _run(q, xs)
    assert float((ref.argmax(1) == got.argmax(1)).mean()) >= 0.9
    with pytest.raises(ValueError, match="layer 99"):
        quantize_onnx(fp32, tmp_path / "bad.onnx", config=QuantConfig(calib_images=32, fp32_layers=(99,)),
                      calib_batches=calib)


def test_mixed_policy_meets_its_budget_with_measured_steps(setup) -> None:
    from supernet.mixed import choose_mixed, layer_sensitivities

    model, data, _, _, _ = setup
    cfg = QuantConfig(calib_images=32)
    n = len(layer_specs(model.backbone, model.arch))
    fp32_top1, _, layers = layer_sensitivities(model, data, config=cfg, max_images=200)
    assert [ly.index for ly in layers] == list(range(n))
    assert all(ly.sensitivity_pts == pytest.approx(100 * (fp32_top1 - ly.only_int8_top1)) for ly in layers)
    # a zero budget forces layers back to fp32 until the file is as accurate as fp32 (or all are fp32)
    strict = choose_mixed(model, data, config=cfg, budget_pts=0.0, max_images=200)
    assert strict.mixed_loss_pts <= 0.0 or len(strict.fp32_layers) == n
    assert strict.steps[-1]["top1"] == strict.mixed_top1
    # a layer the tables say is not faster in int8 stays fp32 whatever the budget
    gains = [1.0] * n
    gains[1] = -0.5
    loose = choose_mixed(model, data, config=cfg, budget_pts=100.0, gains_ms=gains, max_images=200)
    assert loose.fp32_layers == (1,)
