"""QAT and simulated bit-widths: BN folding is exact, fake quantization matches the exporters' grids, a QAT model
exports to an onnxruntime int8 file that computes what the simulation computed, and simulated rows never carry a
latency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from supernet.data import iterate_batches, load_dataset
from supernet.evaluate import calibration_batches, recalibrate_bn
from supernet.layers import Backbone, StaticSubnet, build_static_model
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
    SimulatedVariant,
    Variant,
    compare_variants,
    export_variant,
    qat_spec_for,
    quantize_subnet,
)
from supernet.space import get_space

RES = 24


@pytest.fixture(scope="module")
def trained() -> tuple[StaticSubnet, object]:
    """Tiny subnet trained 2 epochs on digits (a few seconds), BN recalibrated: random nets amplify any error."""
    torch.manual_seed(0)
    data = load_dataset("digits")
    space = get_space("mnist")
    model = build_static_model(
        Backbone(in_channels=1, num_classes=10, width_mult=0.25), space.smallest(resolution=RES), space=space
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(2):
        model.train()
        g = torch.Generator().manual_seed(epoch)
        for x, y in iterate_batches(data.train, batch_size=64, mean=data.mean, std=data.std, resolution=RES, generator=g):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    recalibrate_bn(model, calibration_batches(data, n_images=256, resolution=RES, seed=0))
    return model.eval(), data


def _xs(data: object, n: int = 48, seed: int = 123) -> torch.Tensor:
    return torch.cat(list(calibration_batches(data, n_images=n, resolution=RES, seed=seed)))


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
    res = compare_variants({"fp32": model}, [Variant(config=QuantConfig(precision="fp32"))], data, out_dir=tmp_path,
                           max_eval_images=32, warmup=1, runs=3, simulated=sims, simulated_calib_images=32)
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
    model, data = trained
    names = stage_of_layers(model)
    assert names[0] == "stem" and names[-2:] == ["final_expand", "head"] and "stage3" in names
    assert len(names) == len(model)
    assert describe_spec(FakeQuantSpec(weight_bits=4, act_bits=8)) == "w4a8-pc"
    assert describe_spec(FakeQuantSpec(weight_bits=4, per_channel=False, act_bits=None)) == "w4-pt"
    with pytest.raises(ValueError, match="weight_bits"):
        FakeQuantSpec(weight_bits=1)
    with pytest.raises(ValueError, match="act_bits"):
        FakeQuantSpec(act_bits=4)
    with pytest.raises(ValueError, match="unknown part"):
        simulate_quantized(model, spec=FakeQuantSpec(act_bits=None), stage_weight_bits={"stage9": 4})
    with pytest.raises(ValueError, match="calib_batches"):
        simulate_quantized(model, spec=FakeQuantSpec(act_bits=8))
    with pytest.raises(ValueError, match="epochs and lr"):
        QATConfig(epochs=0)
    with pytest.raises(ValueError, match="QAT variants are int8"):
        Variant(config=QuantConfig(precision="fp16"), qat=True)


def test_qat_rule() -> None:
    assert should_run_qat(fp32_top1=0.95, ptq_top1=0.93, threshold_pts=1.0)
    assert not should_run_qat(fp32_top1=0.95, ptq_top1=0.945, threshold_pts=1.0)
    assert should_run_qat(fp32_top1=0.95, ptq_top1=0.95, threshold_pts=1.0, force=True)
    with pytest.raises(ValueError, match="threshold"):
        QATPolicy(threshold_pts=-1)


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
