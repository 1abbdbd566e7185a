"""A seeded, deterministic fake backend for tests: no runtime, no sleeping, a known latency model.

Notation: for a model with M multiply-accumulates and K weight layers (Conv2d/Linear), one inference takes

    t = drift(c) * (overhead_s + M * s_per_mac + K * s_per_kernel) * noise

where ``c`` counts the fake's calls to `time_runs` (a virtual clock), ``drift(c) = 1 + drift_amp * sin(c / drift_period)``
imitates a shared machine's slow swings, and ``noise`` is log-normal with sigma ``noise`` from a generator seeded by
``seed``. Because a one-layer model pays ``overhead_s`` too, a plain sum of per-layer latencies over-counts it
``(n_layers - 1)`` times: exactly what the predictor's correction has to learn.

Precision scales the three terms: ``t_p = (overhead_s + q_p) + M * s_per_mac * m_p + K * s_per_kernel * k_p`` with
(m_p, k_p, q_p) from `PRECISION_COSTS` — int8 halves the MAC cost but adds a quantize/dequantize cost per model and
per kernel, so (as on real CPUs) lower precision is not uniformly faster, and a plain sum over one-layer int8 models
over-counts the boundary cost even more than at fp32. Artifacts record the precision they were exported at, and
`FakeBackend.load` refuses an artifact of another precision (an int8 table is measured on int8 artifacts).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.backends import Prepared, base_environment, check_precision

__all__ = ["PRECISION_COSTS", "FakeBackend", "count_macs_of_module"]

# precision -> (MAC cost factor, per-kernel cost factor, extra per-inference overhead in us)
PRECISION_COSTS: dict[str, tuple[float, float, float]] = {
    "fp32": (1.0, 1.0, 0.0),
    "fp16": (1.0, 1.5, 5.0),
    "int8": (0.5, 1.5, 15.0),
}


def count_macs_of_module(model: Any, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(MACs, number of Conv2d/Linear modules) of one forward pass, counted with forward hooks."""
    import torch
    from torch import nn

    macs = 0
    kernels = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal macs, kernels
        kernels += 1
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            k = int(kh) * int(kw) * (int(mod.in_channels) // int(mod.groups))
            macs += int(out.numel() // out.shape[0]) * k
        elif isinstance(mod, nn.Linear):
            macs += int(mod.in_features) * int(mod.out_features)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        was = model.training
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_shape))
        model.train(was)
    finally:
        for h in handles:
            h.remove()
    return macs, kernels


class FakeBackend:
    """Deterministic stand-in for a device. Artifacts are small JSON files with the model's MACs and kernels."""

    name = "fake"
    artifact_suffix: str | None = ".fake.json"
    precisions: tuple[str, ...] = tuple(PRECISION_COSTS)

    def __init__(
        self,
        *,
        threads: int = 1,
        precision: str = "fp32",
        seed: int = 0,
        overhead_us: float = 20.0,
        ns_per_mac: float = 0.5,
        us_per_kernel: float = 2.0,
        noise: float = 0.03,
        drift_amp: float = 0.3,
        drift_period: float = 200.0,
    ) -> None:
        check_precision("fake", precision, self.precisions)
        if threads < 1:
            raise ValueError(f"fake backend: threads must be >= 1, got {threads}")
        mac_f, kernel_f, extra_us = PRECISION_COSTS[precision]
        self.version = "0"
        self.precision = precision
        self.threads = int(threads)
        self.seed = int(seed)
        self.overhead_s = (overhead_us + extra_us) * 1e-6
        self.s_per_mac = ns_per_mac * mac_f * 1e-9 / threads
        self.s_per_kernel = us_per_kernel * kernel_f * 1e-6
        self.noise = noise
        self.drift_amp = drift_amp
        self.drift_period = drift_period
        self._rng = np.random.default_rng(seed)
        self._clock = 0

    def true_latency_s(self, macs: int, kernels: int) -> float:
        """Noise- and drift-free latency (s) of a model with ``macs`` MACs and ``kernels`` weight layers at this
        backend's precision."""
        return self.overhead_s + macs * self.s_per_mac + kernels * self.s_per_kernel

    def export(self, model: Any, input_shape: tuple[int, ...], path: Path) -> Path:
        from supernet.io import atomic_write_json

        macs, kernels = count_macs_of_module(model, tuple(input_shape))
        atomic_write_json(path, {"macs": macs, "kernels": kernels, "input_shape": list(input_shape),
                                 "precision": self.precision})
        return Path(path)

    def load(self, source: Path | Any, input_shape: tuple[int, ...], *, key: str = "") -> Prepared:
        if isinstance(source, (str, Path)):
            d = json.loads(Path(source).read_text(encoding="utf-8"))
            macs, kernels = int(d["macs"]), int(d["kernels"])
            exported = d.get("precision", "fp32")
            if exported != self.precision:
                raise ValueError(f"fake backend at {self.precision}: artifact {source} was exported at {exported}")
        else:
            macs, kernels = count_macs_of_module(source, tuple(input_shape))
        return Prepared(key=key or str(source), input_shape=tuple(input_shape), handle=(macs, kernels))

    def time_runs(self, prepared: Prepared, runs: int) -> np.ndarray:
        macs, kernels = prepared.handle
        self._clock += 1
        drift = 1.0 + self.drift_amp * math.sin(self._clock / self.drift_period)
        base = self.true_latency_s(macs, kernels) * drift
        return base * np.exp(self._rng.normal(0.0, self.noise, size=runs))

    def prepare(self, model: Any, input_shape: tuple[int, ...], workdir: Path) -> Prepared:
        return self.load(self.export(model, input_shape, Path(workdir) / "model.fake.json"), input_shape)

    def environment(self) -> dict[str, Any]:
        return base_environment(self, seed=self.seed)
