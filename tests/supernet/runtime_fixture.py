"""The tiny model behind the checked-in runtime fixtures (``tests/supernet/data/runtime_tiny.*``).

Its weights live in ``runtime_tiny.npz`` so the torch reference is exact without relying on torch's init RNG;
`write_fixtures` regenerates every file (``python tests/supernet/runtime_fixture.py`` from the repo root, needs the [tflite] extra).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

DATA = Path(__file__).parent / "data"
INPUT_SHAPE = (1, 3, 16, 16)


class Tiny(nn.Module):
    """Conv-BN-hswish, a depthwise residual block with a squeeze-excite gate, mean pool, linear: the op kinds of
    an MBConv subnet in a few hundred weights."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 4, 1), nn.ReLU(), nn.Conv2d(4, 8, 1),
                                nn.Hardsigmoid())
        self.pw = nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.dw(x)
        x = x + self.pw(y * self.se(y))
        return self.head(x.mean((2, 3)))


def tiny_model() -> Tiny:
    """The fixture model with its stored weights, eval mode."""
    model = Tiny()
    with np.load(DATA / "runtime_tiny.npz") as z:
        model.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files})
    return model.eval()


def write_fixtures() -> None:
    from supernet.export import export_onnx, export_tflite
    from supernet.quantize import QuantConfig
    from supernet.quantize_tflite import quantize_tflite

    torch.manual_seed(0)
    model = Tiny()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    DATA.mkdir(exist_ok=True)
    np.savez(DATA / "runtime_tiny.npz", **{k: v.numpy() for k, v in model.state_dict().items()})
    model = tiny_model()
    export_onnx(model, DATA / "runtime_tiny.onnx", input_shape=INPUT_SHAPE)
    fp32 = export_tflite(model, DATA / "runtime_tiny.tflite", input_shape=INPUT_SHAPE)
    calib = [np.random.default_rng(0).standard_normal((16, *INPUT_SHAPE[1:])).astype(np.float32)]
    quantize_tflite(fp32, DATA / "runtime_tiny_int8.tflite", config=QuantConfig(precision="int8"),
                    calib_batches=calib)


if __name__ == "__main__":
    write_fixtures()
