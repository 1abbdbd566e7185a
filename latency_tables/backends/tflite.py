"""TFLite / LiteRT interpreter backends: ``tflite`` on the XNNPACK delegate (the phone path), ``tflite-builtin`` on
LiteRT's built-in kernels without a delegate. Models are loaded by `supernet.runtime`, which checks that "tflite"
really runs on XNNPACK; each measured model's delegation (partitions, delegated nodes, ops left on built-in kernels)
travels back with its timings and lands in the table manifest.

Conversion uses litert-torch (the optional ``[tflite]`` extra) through `supernet.export.export_tflite`; the
interpreter (ai-edge-litert) is a core dependency. fp16 and int8 (full-integer: int8 weights per channel, int8
activations calibrated on seeded standard-normal inputs, int8 input/output tensors) are lowered from the fp32
file by `supernet.quantize_tflite.quantize_tflite` (ai-edge-quantizer) when that module is present; without it
the backend runs fp32 only and says so.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.backends import Prepared, base_environment, check_precision

__all__ = ["TFLiteBackend", "TFLiteBuiltinBackend"]


_LOWERING_PACKAGES = ("litert_torch", "ai_edge_quantizer")  # the `tflite` extra: torch -> .tflite, then quantize


def _lowering_available() -> bool:
    """True when this install can write fp16 / full-integer int8 .tflite layers (`supernet.quantize_tflite`,
    which needs the ``tflite`` extra's litert-torch and ai-edge-quantizer)."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in _LOWERING_PACKAGES)
    except (ImportError, ValueError):  # pragma: no cover - broken install
        return False


class TFLiteBackend:
    """``supernet.runtime`` backend ``runtime_backend`` ("tflite": XNNPACK delegate) with ``threads`` threads."""

    name = "tflite"
    runtime_backend = "tflite"
    artifact_suffix: str | None = ".tflite"
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8") if _lowering_available() else ("fp32",)

    def __init__(self, *, threads: int = 1, precision: str = "fp32", per_channel: bool = True,
                 calib_samples: int = 8, calib_seed: int = 0) -> None:
        check_precision(self.name, precision, self.precisions,
                        why="int8/fp16 .tflite layers need the 'tflite' extra (litert-torch and ai-edge-quantizer: "
                            "pip install -e '.[tflite]'), which this install lacks; for int8 latency use "
                            "--backend onnxruntime")
        if threads < 1:
            raise ValueError(f"{self.name} backend: threads must be >= 1, got {threads}")
        if calib_samples < 1:
            raise ValueError(f"{self.name} backend: calib_samples must be >= 1, got {calib_samples}")
        self.per_channel = bool(per_channel)
        self.calib_samples = int(calib_samples)
        self.calib_seed = int(calib_seed)
        if importlib.util.find_spec("ai_edge_litert") is None:  # pragma: no cover - core dependency
            raise ImportError("tflite backend needs ai-edge-litert: pip install ai-edge-litert")
        from supernet.runtime import RuntimeOptions, backend_version

        self.version = backend_version(self.runtime_backend)
        self.precision = precision
        self.threads = int(threads)
        self.runtime_options = RuntimeOptions(threads=self.threads)

    def export(self, model: Any, input_shape: tuple[int, ...], path: Path) -> Path:
        from supernet.export import export

        target = Path(path)
        if self.precision == "fp32":
            return export(model, target, format="tflite", input_shape=tuple(input_shape))
        from supernet.quantize import QuantConfig
        from supernet.quantize_tflite import quantize_tflite

        config = QuantConfig(precision=self.precision, per_channel=self.per_channel, calibration="minmax",
                             calib_images=self.calib_samples, seed=self.calib_seed)
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="hwnas-tflite-export-", dir=target.parent) as tmp:
            fp32 = export(model, Path(tmp) / "fp32.tflite", format="tflite", input_shape=tuple(input_shape))
            calib = None
            if self.precision == "int8":
                rng = np.random.default_rng([self.calib_seed, *input_shape[1:]])
                calib = [rng.standard_normal((self.calib_samples, *input_shape[1:])).astype(np.float32)]
            return quantize_tflite(fp32, target, config=config, calib_batches=calib)

    def load(self, source: Path | Any, input_shape: tuple[int, ...], *, key: str = "") -> Prepared:
        """A `supernet.runtime` session bound to a zero input; ``extra["delegation"]`` says what XNNPACK took."""
        from supernet.runtime import open_session

        sess = open_session(source, backend=self.runtime_backend, options=self.runtime_options)
        if tuple(sess.input_shape) != tuple(input_shape):
            raise ValueError(f"tflite model {source}: input shape {tuple(sess.input_shape)} != expected "
                             f"{tuple(input_shape)}")
        sess.bind()  # zeros of the model's input dtype (int8 for full-integer files)
        delegation = sess.delegation()
        return Prepared(key=key or str(source), input_shape=tuple(input_shape), handle=sess,
                        extra={"delegation": None if delegation is None else delegation.to_json()})

    def time_runs(self, prepared: Prepared, runs: int) -> np.ndarray:
        return np.asarray(prepared.handle.time_runs(runs))

    def prepare(self, model: Any, input_shape: tuple[int, ...], workdir: Path) -> Prepared:
        return self.load(self.export(model, input_shape, Path(workdir) / "model.tflite"), input_shape)

    def environment(self) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "delegate": "XNNPACK (LiteRT default delegate; loading fails if it takes no node)"
            if self.runtime_backend == "tflite" else "none: built-in kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES)",
            "runtime_options": {"threads": self.threads}}
        if self.precision == "int8":
            extra["quantization"] = {
                "method": "ai-edge-quantizer static a8w8 (supernet.quantize_tflite.quantize_tflite)",
                "weights": f"int8 symmetric, {'per-channel' if self.per_channel else 'per-tensor'}",
                "activations": "int8 (full integer, int8 input/output tensors)", "calibration": "minmax",
                "calibration_data": f"{self.calib_samples} seeded standard-normal inputs per model (seed "
                                    f"{self.calib_seed})"}
        elif self.precision == "fp16":
            extra["quantization"] = {"method": "ai-edge-quantizer float_casting", "weights": "float16",
                                     "compute": "fp32 on CPU (weights dequantized at load)"}
        return base_environment(self, **extra)


class TFLiteBuiltinBackend(TFLiteBackend):
    """The same .tflite files on LiteRT's built-in optimized kernels, no delegate (for comparison with XNNPACK)."""

    name = "tflite-builtin"
    runtime_backend = "tflite-builtin"
