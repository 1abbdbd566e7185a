"""TFLite / LiteRT interpreter backend (fp32, XNNPACK delegate as applied by default by LiteRT).

Conversion uses litert-torch (the optional ``[tflite]`` extra) through `supernet.export.export_tflite`; the
interpreter (ai-edge-litert) is a core dependency.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.backends import Prepared, base_environment

__all__ = ["TFLiteBackend"]


class TFLiteBackend:
    name = "tflite"
    artifact_suffix: str | None = ".tflite"

    def __init__(self, *, threads: int = 1, precision: str = "fp32") -> None:
        if precision != "fp32":
            raise ValueError(f"tflite backend: precision {precision!r} is not supported; supported: ['fp32']")
        if threads < 1:
            raise ValueError(f"tflite backend: threads must be >= 1, got {threads}")
        try:
            from ai_edge_litert import interpreter as litert
        except ImportError as e:  # pragma: no cover - core dependency
            raise ImportError("tflite backend needs ai-edge-litert: pip install ai-edge-litert") from e
        self._litert = litert
        try:
            from importlib.metadata import version

            self.version = version("ai-edge-litert")
        except Exception:  # pragma: no cover - metadata missing
            self.version = "unknown"
        self.precision = precision
        self.threads = int(threads)

    def export(self, model: Any, input_shape: tuple[int, ...], path: Path) -> Path:
        from supernet.export import export_tflite

        return export_tflite(model, path, input_shape=tuple(input_shape))

    def load(self, source: Path | Any, input_shape: tuple[int, ...], *, key: str = "") -> Prepared:
        interp = self._litert.Interpreter(model_path=str(source), num_threads=self.threads)
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        if tuple(inp["shape"]) != tuple(input_shape):
            raise ValueError(f"tflite model {source}: input shape {tuple(inp['shape'])} != expected {tuple(input_shape)}")
        interp.set_tensor(inp["index"], np.zeros(tuple(input_shape), dtype=inp["dtype"]))
        return Prepared(key=key or str(source), input_shape=tuple(input_shape), handle=interp)

    def time_runs(self, prepared: Prepared, runs: int) -> np.ndarray:
        invoke = prepared.handle.invoke
        clock = time.perf_counter_ns
        out = np.empty(runs, dtype=np.float64)
        for i in range(runs):
            t0 = clock()
            invoke()
            out[i] = clock() - t0
        return out * 1e-9

    def prepare(self, model: Any, input_shape: tuple[int, ...], workdir: Path) -> Prepared:
        return self.load(self.export(model, input_shape, Path(workdir) / "model.tflite"), input_shape)

    def environment(self) -> dict[str, Any]:
        return base_environment(self, delegate="XNNPACK (LiteRT default)")
