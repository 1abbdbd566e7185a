"""Structured channel pruning: exact surgery, the criteria, one-shot and iterative runs, pruned specs."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch

from supernet.finetune import FinetuneConfig
from supernet.layers import LayerSpec, StaticSubnet, layer_specs, se_channels
from supernet.prune import (
    PruneConfig,
    PrunedArch,
    PrunedSubnet,
    build_pruned_model,
    channel_importance,
    model_specs,
    prune_channels,
    prune_subnet,
)

TINY_FT = FinetuneConfig(epochs=0.25, batch_size=32, max_train_images=256, bn_images=64)


def _blocks(model: StaticSubnet) -> list[torch.nn.Module]:
    return list(model.children())[2:-2]


def _dead_channel_copy(model: StaticSubnet, dead: int) -> tuple[StaticSubnet, list[torch.Tensor]]:
    """A copy whose first ``dead`` expanded channels of every block reach nothing (projection and SE-input columns 0):
    removing them must not change the output. Returns the copy and the indices of the live channels per block."""
    m = copy.deepcopy(model)
    live = []
    with torch.no_grad():
        for b in _blocks(m):
            b.point_linear[0].weight[:, :dead] = 0.0
            if b.se is not None:  # nor the squeeze-excite's pooled input; SE hidden units beyond the pruned
                b.se.reduce.weight[:, :dead] = 0.0  # block's SE width are switched off (relu(0) = 0)
                r_new = se_channels(b.depthwise[0].out_channels - dead)
                b.se.reduce.weight[r_new:] = 0.0
                b.se.reduce.bias[r_new:] = 0.0
                b.se.expand.weight[:, r_new:] = 0.0
            live.append(torch.arange(dead, b.depthwise[0].out_channels))
    return m, live


def test_keeping_every_channel_is_exact(tiny_trained: tuple[StaticSubnet, object], tiny_val_inputs: np.ndarray) -> None:
    model, _ = tiny_trained
    full = [torch.arange(b.depthwise[0].out_channels) for b in _blocks(model)]
    pruned = prune_channels(model, full)
    x = torch.from_numpy(tiny_val_inputs[:8])
    with torch.no_grad():
        assert torch.allclose(model(x), pruned(x), atol=1e-6)
    assert model_specs(pruned) == layer_specs(model.backbone, model.arch)


def test_removing_dead_channels_keeps_the_output_and_shrinks_the_specs(
        tiny_trained: tuple[StaticSubnet, object], tiny_val_inputs: np.ndarray) -> None:
    model, _ = tiny_trained
    dead_model, live = _dead_channel_copy(model, dead=8)
    pruned = prune_channels(dead_model, live)
    x = torch.from_numpy(tiny_val_inputs[:16])
    with torch.no_grad():
        assert torch.allclose(dead_model(x), pruned(x), atol=1e-5)
    specs = model_specs(pruned)
    base = layer_specs(model.backbone, model.arch)
    for s, b, keep in zip(specs[2:-2], base[2:-2], live):
        assert s == replace(b, mid_ch=b.mid_ch - 8) and s.mid_ch == keep.numel()
        assert s.key != b.key  # a table row of the unpruned width can never price it
    assert sum(s.macs() for s in specs) < sum(s.macs() for s in base)
    # the pruned network is plain modules of its specs: a fresh build takes its weights exactly
    fresh = build_pruned_model(model.backbone, pruned.pruned_arch)
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), pruned.eval()(x))


@pytest.mark.parametrize("criterion", ["l1", "sensitivity"])
def test_criteria_rank_dead_channels_last(criterion: str, tiny_trained: tuple[StaticSubnet, object]) -> None:
    """Channels that reach nothing score 0 under both criteria (and live ones > 0), so they go first."""
    model, data = tiny_trained
    dead_model, live = _dead_channel_copy(model, dead=8)
    scores = channel_importance(dead_model, criterion=criterion, data=data, images=64)  # type: ignore[arg-type]
    for sc, keep in zip(scores, live):
        assert torch.all(sc[:8] == 0) and torch.all(sc[8:] > 0)
        assert set(sc.topk(keep.numel()).indices.tolist()) == set(keep.tolist())
    res = prune_subnet(dead_model, data, config=PruneConfig(  # type: ignore[arg-type]
        ratio=0.2, criterion=criterion, min_channels=1, round_to=1, finetune=None, sensitivity_images=64))
    want = [max(1, round(0.8 * b.depthwise[0].out_channels)) for b in _blocks(model)]
    assert list(res.pruned_arch.mid_channels) == want


def test_one_shot_and_iterative_runs(tiny_trained: tuple[StaticSubnet, object]) -> None:
    model, data = tiny_trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one = prune_subnet(model, data, config=PruneConfig(ratio=0.5, steps=1, finetune=TINY_FT))  # type: ignore[arg-type]
    it = prune_subnet(model, data, config=PruneConfig(ratio=0.5, steps=2, criterion="sensitivity",  # type: ignore[arg-type]
                                                      sensitivity_images=64, finetune=TINY_FT))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input is not modified
    assert one.pruned_arch.mid_channels == it.pruned_arch.mid_channels  # same target widths either way
    assert len(it.rounds) == 2
    first, second = (r["mid_channels"] for r in it.rounds)
    assert all(a >= b for a, b in zip(first, second)) and first != second  # the width shrinks round by round
    for r in (*one.rounds, *it.rounds):
        assert r["finetune"]["steps"] >= 1
    assert one.macs_after < one.macs_before
    assert isinstance(one.model, PrunedSubnet) and not one.model.training


def test_pruned_arch_json_and_validation(tiny_trained: tuple[StaticSubnet, object]) -> None:
    model, _ = tiny_trained
    pa = PrunedArch.unpruned(model.backbone, model.arch)
    assert pa.specs(model.backbone) == layer_specs(model.backbone, model.arch)
    small = PrunedArch(arch=pa.arch, mid_channels=tuple(max(1, m // 2) for m in pa.mid_channels))
    assert PrunedArch.from_json(small.to_json()) == small
    assert str(small).startswith(str(model.arch) + "~m")
    too_wide = PrunedArch(arch=pa.arch, mid_channels=tuple(m + 1 for m in pa.mid_channels))
    with pytest.raises(ValueError, match="more than the unpruned"):
        too_wide.specs(model.backbone)
    with pytest.raises(ValueError, match="mid widths"):
        PrunedArch(arch=pa.arch, mid_channels=(8,))
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=f"pruning ratio {bad}"):
            PruneConfig(ratio=bad)
    with pytest.raises(ValueError, match="criterion 'taylor'"):
        PruneConfig(criterion="taylor")


def test_pruned_subnet_exports_to_onnx(tmp_path, tiny_trained: tuple[StaticSubnet, object],  # type: ignore[no-untyped-def]
                                       tiny_val_inputs: np.ndarray) -> None:
    from supernet.export import check_export, export_onnx

    model, data = tiny_trained
    res = prune_subnet(model, data, config=PruneConfig(ratio=0.5, finetune=None))  # type: ignore[arg-type]
    path = export_onnx(res.model, tmp_path / "p.onnx", input_shape=res.model.input_shape)
    chk = check_export(res.model, path, fmt="onnx", inputs=torch.from_numpy(tiny_val_inputs[:8]))
    assert chk.ok, chk
    assert isinstance(model_specs(res.model)[2], LayerSpec)
