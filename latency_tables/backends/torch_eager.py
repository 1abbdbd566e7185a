"""PyTorch eager backend: times ``model(x)`` under ``torch.inference_mode`` on the CPU (fp32).

There is no artifact: `load` takes the module itself, so in measuring processes the module is built from a
picklable factory (see `latency_tables.protocol.MeasureItem`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.backends import Prepared, base_environment, check_precision

__all__ = ["TorchEagerBackend"]


class TorchEagerBackend:
    name = "pytorch"
    artifact_suffix: str | None = None
    precisions: tuple[str, ...] = ("fp32",)

    def __init__(self, *, threads: int = 1, precision: str = "fp32") -> None:
        check_precision("pytorch", precision, self.precisions,
                        why="eager mode times the fp32 module; int8/fp16 latency is measured with onnxruntime")
        if threads < 1:
            raise ValueError(f"pytorch backend: threads must be >= 1, got {threads}")
        import torch

        self._torch = torch
        self.version = str(torch.__version__)
        self.precision = precision
        self.threads = int(threads)

    def export(self, model: Any, input_shape: tuple[int, ...], path: Path) -> Path:
        raise NotImplementedError("the pytorch backend runs modules directly; it has no export step")

    def load(self, source: Path | Any, input_shape: tuple[int, ...], *, key: str = "") -> Prepared:
        torch = self._torch
        if isinstance(source, (str, Path)):
            raise TypeError("pytorch backend: load() takes an nn.Module, not a file path")
        torch.set_num_threads(self.threads)
        model = source.eval()
        x = torch.zeros(tuple(input_shape))
        return Prepared(key=key or type(model).__name__, input_shape=tuple(input_shape), handle=model, feeds=x)

    def time_runs(self, prepared: Prepared, runs: int) -> np.ndarray:
        torch = self._torch
        model, x = prepared.handle, prepared.feeds
        clock = time.perf_counter_ns
        out = np.empty(runs, dtype=np.float64)
        with torch.inference_mode():
            for i in range(runs):
                t0 = clock()
                model(x)
                out[i] = clock() - t0
        return out * 1e-9

    def prepare(self, model: Any, input_shape: tuple[int, ...], workdir: Path) -> Prepared:
        return self.load(model, input_shape)

    def environment(self) -> dict[str, Any]:
        return base_environment(self, mode="eager, inference_mode")
