"""TFLite export of a subnet: litert-torch conversion (fp32) reproduces torch within tolerance."""

from __future__ import annotations

import pytest
import torch

from supernet.export import check_export, export_tflite
from supernet.layers import Backbone
from supernet.model import OFASupernet
from supernet.space import get_space

pytest.importorskip("litert_torch", reason="TFLite conversion needs the [tflite] extra (litert-torch)")


# ~27 s on the shared 2-core VM (conversion traces through JAX), over the 20 s budget of the default run
@pytest.mark.slow
@pytest.mark.tflite
def test_tflite_export_of_a_tiny_subnet_matches_torch(tmp_path) -> None:
    space = get_space("mnist")
    torch.manual_seed(0)
    net = OFASupernet(space=space, backbone=Backbone(in_channels=1, num_classes=10, width_mult=0.25))
    with torch.no_grad():  # non-trivial BN statistics and residual branches
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    cfg = space.smallest(resolution=24)
    sub = net.get_active_subnet(cfg).eval()
    path = export_tflite(sub, tmp_path / "sub.tflite", input_shape=sub.input_shape)
    assert path.is_file() and path.stat().st_size > 0 and not list(tmp_path.glob(".*.tmp"))
    check = check_export(sub, path, fmt="tflite", inputs=torch.randn(3, 1, 24, 24), atol=1e-3)
    assert check.ok, check
    assert check.top1_agreement == 1.0
