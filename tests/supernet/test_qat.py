"""QAT and simulated bit-widths: BN folding is exact, fake quantization matches the exporters' grids, a QAT model
exports to an onnxruntime int8 file that computes what the simulation computed, and simulated rows never carry a
latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from supernet.evaluate import calibration_batches
from supernet.layers import StaticSubnet
from supernet.qat import (
    FakeQuant,
    FakeQuantSpec,
    QATConfig,
    describe_spec,
    fold_batchnorm,
    qat_finetune,
    should_run_qat,
    simulate_quantized,
    stage_of_layers,
)
from supernet.quantize import (
    QATPolicy,
    QuantConfig,
    QuantRecipe,
    SimulatedVariant,
    compare_variants,
    export_variant,
    qat_spec_for,
    quantize_subnet,
    split_arrays,
)

RES = 24


@pytest.fixture(scope="module")
def trained(tiny_trained) -> tuple[StaticSubnet, object]:
    """The shared tiny subnet trained 2 epochs on digits (conftest): random nets amplify any error."""
    return tiny_trained  # type: ignore[no-any-return]


def _xs(data: object, n: int = 48) -> torch.Tensor:
    """``n`` held-out validation inputs (never used for training or calibration)."""
    xs, _ = split_arrays(data, split="val", resolution=RES, max_images=n)  # type: ignore[arg-type]
    return torch.from_numpy(xs)


def _dequantized_conv_weights(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(dequantized weight, per-output-channel step) of every Conv of an int8 ONNX file, in graph order: the
    DequantizeLinear feeding a Conv (QDQ) or a QLinearConv's weight and weight scale (QOperator)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = []
    for node in model.graph.node:
        if node.op_type == "QLinearConv":
            q, scale = inits[node.input[3]], inits[node.input[4]].astype(np.float64)
        elif node.op_type == "Conv":
            dq = producer[node.input[1]]
            assert dq.op_type == "DequantizeLinear"
            q, scale = inits[dq.input[0]], inits[dq.input[1]].astype(np.float64)
        else:
            continue
        assert q.dtype == np.int8
        step = scale.reshape(-1, *([1] * (q.ndim - 1))) if scale.ndim else np.full((q.shape[0],) + (1,) * (q.ndim - 1),
                                                                                   float(scale))
        out.append((q.astype(np.float64) * step, step))
    return out


def test_fold_batchnorm_is_exact_and_leaves_the_model_alone(trained) -> None:
    model, data = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded = fold_batchnorm(model)
    x = _xs(data)
    with torch.no_grad():
        assert torch.allclose(folded(x), model(x), atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(folded, StaticSubnet) and folded.arch == model.arch


def test_fake_quant_puts_weights_on_the_grid_per_channel(trained) -> None:
    model, _ = trained
    folded = fold_batchnorm(model)
    FakeQuant(folded, FakeQuantSpec(weight_bits=4, per_channel=True, act_bits=None)).remove(bake=True)
    for m in folded.modules():
        if isinstance(m, torch.nn.Conv2d):
            w = m.weight.detach().flatten(1)
            scale = w.abs().amax(1, keepdim=True) / 7  # 4 bits: q_max = 7
            q = w / scale.clamp_min(1e-12)
            assert torch.allclose(q, q.round(), atol=1e-3)
            assert int(q.abs().max().round()) <= 7
    with pytest.raises(ValueError, match="fold BN first"):
        FakeQuant(model, FakeQuantSpec())


def test_remove_without_bake_restores_float_weights(trained) -> None:
    model, _ = trained
    folded = fold_batchnorm(model)
    ref = {k: v.clone() for k, v in folded.state_dict().items()}
    FakeQuant(folded, FakeQuantSpec(weight_bits=4)).remove(bake=False)
    assert all(torch.equal(ref[k], v) for k, v in folded.state_dict().items())


def test_qat_model_exports_to_int8_onnx_matching_the_simulation(trained, tmp_path: Path) -> None:
    """The QAT result (weights on the 8-bit grid) quantized by onnxruntime computes close to its fake-quant
    simulation and to fp32, and short QAT does not lose accuracy against PTQ on calibration-like data."""
    model, data = trained
    cfg = QuantConfig(calib_images=64, reduce_range=False)
    spec = qat_spec_for(cfg, backend="onnxruntime")
    res = qat_finetune(model, data, config=QATConfig(epochs=1, max_train_images=256, batch_size=32), spec=spec,
                       calib_images=64)
    assert res.steps == 8 and res.images == 256 and np.isfinite(res.loss_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in res.model.modules())
    path = export_variant(res.model, tmp_path / "qat.onnx", backend="onnxruntime", config=cfg, data=data)
    from supernet.quantize import get_target, int8_weight_fraction

    assert int8_weight_fraction(path) > 0.9
    # the file holds the QAT weights (on their grid, so stored exactly), not a rounding of the fp32 weights
    qat_w = [m.weight.detach().double().numpy() for m in res.model.modules() if isinstance(m, torch.nn.Conv2d)]
    fp32_w = [m.weight.detach().double().numpy() for m in fold_batchnorm(model).modules()
              if isinstance(m, torch.nn.Conv2d)]
    stored = _dequantized_conv_weights(path)
    assert [w.shape for w, _ in stored] == [w.shape for w in qat_w] == [w.shape for w in fp32_w]
    off_fp32 = 0
    for (deq, step), wq, wf in zip(stored, qat_w, fp32_w):
        assert np.all(np.abs(deq - wq) <= 0.01 * step + 1e-7), "exported weights are not the QAT weights"
        off_fp32 += int((np.abs(deq - wf) > 0.5 * step + 1e-7).sum())
    assert off_fp32 > 0, "every stored weight is the rounding of an fp32 weight: the fp32 model was exported"
    x = _xs(data)
    got = get_target("onnxruntime").runner(path)(x.numpy())
    sim = simulate_quantized(res.model, spec=spec, calib_batches=calibration_batches(data, n_images=64,
                                                                                     resolution=RES, seed=0))
    with torch.no_grad():
        ref = model(x).numpy()
        simulated = sim(x).numpy()
    spread = np.linalg.norm(ref - ref.mean(0))
    assert np.linalg.norm(got - simulated) / spread < 0.2
    assert np.linalg.norm(got - ref) / spread < 0.35
    assert float((got.argmax(1) == ref.argmax(1)).mean()) >= 0.85


def test_simulated_rows_have_no_latency_and_say_simulated(trained, tmp_path: Path) -> None:
    model, data = trained
    sims = [SimulatedVariant(spec=FakeQuantSpec(weight_bits=4, act_bits=8)),
            SimulatedVariant(spec=FakeQuantSpec(weight_bits=8, act_bits=None), stage_weight_bits={"stage5": 4})]
    res = compare_variants(
        {"fp32": model},
        [QuantRecipe(config=QuantConfig(precision="fp32"))],
        data,
        out_dir=tmp_path,
        max_eval_images=32,
        warmup=1,
        runs=3,
        simulated=sims,
        simulated_calib_images=32,
    )
    rows = [r for r in res["rows"] if r["simulated"]]
    assert [r["variant"] for r in rows] == ["w4a8-pc (simulated)", "w8[stage5:4]-pc (simulated)"]
    for r in rows:
        assert r["latency_p50_ms"] is None and r["speed_vs_fp32"] is None and r["size_bytes"] is None
        assert r["path"] is None and "simulated" in r["backend"] and 0 <= r["top1"] <= 1
    assert res["rows"][0]["speed_vs_fp32"]["median"] == pytest.approx(1.0)


def test_simulation_of_8_bits_stays_close_and_2_bits_does_not(trained) -> None:
    model, data = trained
    x = _xs(data)
    with torch.no_grad():
        ref = model(x)
        w8 = simulate_quantized(model, spec=FakeQuantSpec(weight_bits=8, act_bits=None))(x)
        w2 = simulate_quantized(model, spec=FakeQuantSpec(weight_bits=2, act_bits=None))(x)
    spread = (ref - ref.mean(0)).norm()
    assert (w8 - ref).norm() / spread < 0.05
    assert (w2 - ref).norm() / spread > 0.3


def test_stage_names_labels_and_bad_specs(trained) -> None:
    model, _data = trained
    names = stage_of_layers(model)
    assert names[0] == "stem" and names[-2:] == ["final_expand", "head"] and "stage3" in names
    assert len(names) == len(model)
    assert describe_spec(FakeQuantSpec(weight_bits=4, act_bits=8)) == "w4a8-pc"
    assert describe_spec(FakeQuantSpec(weight_bits=4, per_channel=False, act_bits=None)) == "w4-pt"
    with pytest.raises(ValueError, match="weight_bits"):
        FakeQuantSpec(weight_bits=0)
    with pytest.raises(ValueError, match="act_bits"):
        FakeQuantSpec(act_bits=4)
    with pytest.raises(ValueError, match="unknown part"):
        simulate_quantized(model, spec=FakeQuantSpec(act_bits=None), stage_weight_bits={"stage9": 4})
    with pytest.raises(ValueError, match="calib_batches"):
        simulate_quantized(model, spec=FakeQuantSpec(act_bits=8))
    with pytest.raises(ValueError, match="epochs and lr"):
        QATConfig(epochs=0)
    with pytest.raises(ValueError, match="QAT variants are int8"):
        QuantRecipe(config=QuantConfig(precision="fp16"), qat=True)


def test_qat_rule() -> None:
    assert should_run_qat(fp32_top1=0.95, ptq_top1=0.93, threshold_pts=1.0)
    assert not should_run_qat(fp32_top1=0.95, ptq_top1=0.945, threshold_pts=1.0)
    assert should_run_qat(fp32_top1=0.95, ptq_top1=0.95, threshold_pts=1.0, force=True)
    with pytest.raises(ValueError, match="threshold"):
        QATPolicy(threshold_pts=-1)


@pytest.mark.parametrize(("drop_pts", "ran"), [(2.5, True), (0.5, False)])
def test_the_rule_triggers_unforced_qat_only_above_the_threshold(trained, tmp_path: Path, monkeypatch,
                                                                 drop_pts: float, ran: bool) -> None:
    """Unforced QAT: the PTQ loss measured on validation (stubbed here) decides, threshold 1 point."""
    import supernet.quantize as q

    model, data = trained
    seen: list[dict] = []

    def fake_ptq_loss(*args, **kw):
        seen.append(kw)
        return {"backend": kw["backend"], "variant": kw["config"].label, "split": kw["split"], "images": 64,
                "fp32_top1": 0.9, "ptq_top1": 0.9 - drop_pts / 100, "ptq_drop_pts": drop_pts}

    monkeypatch.setattr(q, "ptq_loss", fake_ptq_loss)
    res = quantize_subnet(model, data, out_dir=tmp_path, config=QuantConfig(calib_images=16), report=False,
                          qat=QATPolicy(threshold_pts=1.0, decide_max_images=64,
                                        config=QATConfig(epochs=1, max_train_images=32)))
    assert seen and seen[0]["split"] == "val"
    d = res["qat"]
    assert d["ran"] is ran and d["forced"] is False and d["ptq_drop_pts"] == drop_pts
    assert (res["path"] != res["ptq_path"]) is ran and (".int8-qat-" in res["path"]) is ran


def test_quantize_subnet_runs_qat_only_when_the_rule_says_so(trained, tmp_path: Path) -> None:
    model, data = trained
    cfg = QuantConfig(calib_images=32, reduce_range=False)
    skip = quantize_subnet(model, data, out_dir=tmp_path / "a", config=cfg, report=False,
                           qat=QATPolicy(threshold_pts=100.0, decide_max_images=64))
    assert skip["qat"]["ran"] is False and skip["path"] == skip["ptq_path"]
    assert skip["qat"]["images"] == 64 and skip["qat"]["split"] == "val"
    forced = quantize_subnet(model, data, out_dir=tmp_path / "b", config=cfg, report=False,
                             qat=QATPolicy(threshold_pts=100.0, force=True, decide_max_images=64,
                                           config=QATConfig(epochs=1, max_train_images=64)))
    d = forced["qat"]
    assert d["ran"] and d["forced"] and Path(d["path"]).is_file() and forced["path"] == d["path"]
    assert ".int8-qat-pc-minmax.onnx" in d["path"] and forced["weight_dtypes"].get("int8", 0) > 0
    assert (tmp_path / "b" / f"{model.arch}.int8-pc-minmax.json").is_file()
    with pytest.raises(ValueError, match="QAT needs precision int8"):
        quantize_subnet(model, data, out_dir=tmp_path / "c", config=cfg.replace(precision="fp16"), report=False,
                        qat=QATPolicy())
