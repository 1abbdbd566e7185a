from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from supernet.export import check_export, export_onnx
from supernet.layers import Backbone, count_macs
from supernet.model import OFASupernet
from supernet.space import get_space
from supernet.testing import randomised_supernet

SPACE = get_space("mnist")
BACKBONE = Backbone(in_channels=1, num_classes=10, width_mult=0.35)


def _randomised_supernet(seed: int = 0) -> OFASupernet:
    """A supernet whose BN stats, affine params and kernel transforms are not at their initial values."""
    return randomised_supernet(SPACE, width_mult=BACKBONE.width_mult, seed=seed)


def _cfgs(n: int = 6) -> list:
    rng = np.random.default_rng(0)
    return [SPACE.largest(), SPACE.smallest()] + [SPACE.sample(rng) for _ in range(n)]


# activate(cfg) forward == get_active_subnet(cfg) forward and the static model's layer count are checked for
# every registered space by `supernet.testing.ModelContract` (tests/supernet/test_space.py).


def test_different_subnets_compute_different_functions() -> None:
    net = _randomised_supernet()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        with net.activate(SPACE.largest()):
            a = net(x)
        with net.activate(SPACE.smallest(resolution=32)):
            b = net(x)
    assert not torch.allclose(a, b)


def test_get_active_subnet_leaves_supernet_unchanged() -> None:
    net = _randomised_supernet()
    before = copy.deepcopy(net.state_dict())
    active_before = net.active
    sub = net.get_active_subnet(_cfgs()[3])
    with torch.no_grad():
        for p in sub.parameters():
            p.add_(1.0)
    assert net.active == active_before
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_activate_restores_previous_even_on_error() -> None:
    net = _randomised_supernet()
    outer, inner = SPACE.smallest(), SPACE.largest()
    with net.activate(outer):
        with pytest.raises(RuntimeError), net.activate(inner):
            assert net.active == inner
            raise RuntimeError("boom")
        assert net.active == outer
    assert net.active == SPACE.largest()


def test_sort_channels_keeps_full_network_function() -> None:
    net = _randomised_supernet()
    x = torch.randn(2, 1, 28, 28)
    cfg = SPACE.largest(resolution=28)
    with torch.no_grad(), net.activate(cfg):
        before = net(x)
        net.sort_channels()
        after = net(x)
    torch.testing.assert_close(before, after, rtol=1e-4, atol=1e-5)
    # most important channel first: L1 of the projection columns is non-increasing
    imp = net.blocks[0].pl_conv.weight.abs().sum(dim=(0, 2, 3))
    assert bool((imp[:-1] >= imp[1:] - 1e-6).all())


def test_macs_grow_with_the_architecture() -> None:
    assert count_macs(BACKBONE, SPACE.largest()) > count_macs(BACKBONE, SPACE.smallest())


def test_onnx_export_matches_torch(tmp_path) -> None:
    net = _randomised_supernet()
    cfg = _cfgs()[4]
    sub = net.get_active_subnet(cfg).eval()
    path = export_onnx(sub, tmp_path / "sub.onnx", input_shape=sub.input_shape)
    assert path.is_file() and not list(tmp_path.glob(".*.tmp"))
    check = check_export(sub, path, fmt="onnx", inputs=torch.randn(4, 1, cfg.resolution, cfg.resolution))
    assert check.ok, check
    assert check.top1_agreement == 1.0


def test_backbone_rejects_mismatched_space() -> None:
    with pytest.raises(ValueError, match="stages"):
        OFASupernet(space=get_space("mnist"), backbone=Backbone(stage_widths=(8, 8), stage_strides=(1, 1),
                                                                  stage_acts=("relu", "relu"),
                                                                  stage_se=(False, False)))
