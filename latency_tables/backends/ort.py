"""ONNX Runtime CPU backend (fp32; intra-op threads configurable, inter-op fixed to 1)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.backends import Prepared, base_environment

__all__ = ["OrtBackend"]

_PRECISIONS = ("fp32",)


class OrtBackend:
    """Runs ONNX models exported by `supernet.export.export_onnx` on ``CPUExecutionProvider``.

    Graph optimisations are at ORT's default level (ALL), so Conv+BN+activation fuse as in deployment.
    """

    name = "onnxruntime"
    artifact_suffix: str | None = ".onnx"

    def __init__(self, *, threads: int = 1, precision: str = "fp32") -> None:
        if precision not in _PRECISIONS:
            raise ValueError(f"onnxruntime backend: precision {precision!r} is not supported; supported: {list(_PRECISIONS)}")
        if threads < 1:
            raise ValueError(f"onnxruntime backend: threads must be >= 1, got {threads}")
        import onnxruntime as ort

        self._ort = ort
        self.version = str(ort.__version__)
        self.precision = precision
        self.threads = int(threads)

    def export(self, model: Any, input_shape: tuple[int, ...], path: Path) -> Path:
        from supernet.export import export_onnx

        return export_onnx(model, path, input_shape=tuple(input_shape))

    def load(self, source: Path | Any, input_shape: tuple[int, ...], *, key: str = "") -> Prepared:
        ort = self._ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(source), sess_options=opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        feeds = {name: np.zeros(tuple(input_shape), dtype=np.float32)}
        return Prepared(key=key or str(source), input_shape=tuple(input_shape), handle=sess, feeds=feeds)

    def time_runs(self, prepared: Prepared, runs: int) -> np.ndarray:
        run, feeds = prepared.handle.run, prepared.feeds
        clock = time.perf_counter_ns
        out = np.empty(runs, dtype=np.float64)
        for i in range(runs):
            t0 = clock()
            run(None, feeds)
            out[i] = clock() - t0
        return out * 1e-9

    def prepare(self, model: Any, input_shape: tuple[int, ...], workdir: Path) -> Prepared:
        path = self.export(model, input_shape, Path(workdir) / "model.onnx")
        return self.load(path, input_shape)

    def environment(self) -> dict[str, Any]:
        return base_environment(self, execution_provider="CPUExecutionProvider", graph_optimization="ORT_ENABLE_ALL")
