"""ONNX Runtime CPU backend: fp32, fp16 and int8 (QDQ) models; intra-op threads configurable, inter-op fixed to 1.

Lower precisions are produced by `supernet.quantize.quantize_onnx` from the fp32 export, exactly as a deployed
subnet is (`supernet.quantize.export_precision`), so a table row and a quantized subnet are the same kind of graph:

* ``int8``: static post-training quantization in QDQ format, symmetric int8 weights per output channel (default),
  int8 activations whose ranges are calibrated on ``calib_samples`` inputs. A one-layer model inside a network sees
  activations, not images, so by default it is calibrated on seeded standard-normal inputs; ``calib_data`` (an
  ``.npy`` array, batch first) is used instead for models whose input shape it matches (e.g. whole subnets).
  Calibration only sets scales and zero points — the graph and the kernels onnxruntime runs are the same — so the
  data do not change the latency, only the numbers the model computes.
* ``fp16``: float16 initializers and ops with float32 inputs/outputs. On x86 CPUs onnxruntime has few fp16 kernels
  and inserts casts around the rest, so expect little gain (figures: docs/measurements.md); the table measures
  what it is per layer, nothing is assumed.

``reduce_range`` None takes `supernet.quantize.QuantConfig`'s default (`supernet.quantize.default_reduce_range`,
by the CPU's VNNI flag), the same default the deployed file and search-time int8 accuracy use.

The measuring processes only load and time artifacts; quantization happens in `export` (the coordinating process).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.backends import Prepared, base_environment, check_precision

__all__ = ["OrtBackend"]

_CALIBRATIONS = ("minmax", "percentile", "entropy")


class OrtBackend:
    """Runs ONNX models exported by `supernet.export.export_onnx` (and lowered by `supernet.quantize`) on
    ``CPUExecutionProvider``.

    Graph optimisations are at ORT's default level (ALL), so Conv+BN+activation fuse as in deployment, and int8
    QDQ node groups fuse into integer kernels at session creation.

    Args (int8 only, besides ``threads`` and ``precision``):
        per_channel: one weight scale per output channel (True; per-tensor is for accuracy comparisons only).
        calibration: activation range estimator: minmax | percentile | entropy.
        reduce_range: 7-bit weights (x86 AVX2 without VNNI); None: `supernet.quantize.QuantConfig`'s default, so
            table layers are lowered like the subnets `supernet.quantize.export_precision` deploys.
        calib_samples: calibration inputs per model. calib_seed: seed of the random ones.
        calib_data: optional ``.npy`` file (N, C, H, W) of calibration inputs for models with that input shape.
    """

    name = "onnxruntime"
    artifact_suffix: str | None = ".onnx"
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")

    def __init__(
        self,
        *,
        threads: int = 1,
        precision: str = "fp32",
        per_channel: bool = True,
        calibration: str = "minmax",
        reduce_range: bool | None = None,
        calib_samples: int = 8,
        calib_seed: int = 0,
        calib_data: str | None = None,
    ) -> None:
        check_precision("onnxruntime", precision, self.precisions)
        if threads < 1:
            raise ValueError(f"onnxruntime backend: threads must be >= 1, got {threads}")
        if calibration not in _CALIBRATIONS:
            raise ValueError(f"onnxruntime backend: calibration {calibration!r}: expected one of {list(_CALIBRATIONS)}")
        if calib_samples < 1:
            raise ValueError(f"onnxruntime backend: calib_samples must be >= 1, got {calib_samples}")
        if calib_data is not None and not Path(calib_data).is_file():
            raise FileNotFoundError(f"onnxruntime backend: calib_data {calib_data!r} does not exist or is not a file")
        import onnxruntime as ort

        from supernet.runtime import RuntimeOptions

        self.version = str(ort.__version__)
        self.precision = precision
        self.threads = int(threads)
        # Sequential execution, graph optimisation ALL, inter-op 1, errors-only logging, and onnxruntime's own
        # thread spinning: pool threads keep spinning for a while after a Run, as in an application running
        # inferences back to back. Tried and dropped: session.force_spinning_stop=1 ("stop-after-run") at 2
        # threads (so that a model is not timed beside the still-spinning threads of the sessions timed before it)
        # made whole subnets 1.5x slower and unpredictable from their layers - corrected predictor 49 % within
        # +-10 % on 200 held-out subnets against 99.5 % with the defaults, same VM, same day - as every Run then
        # wakes its threads.
        self.runtime_options = RuntimeOptions(threads=self.threads, inter_op_threads=1, graph_optimization="all",
                                              execution_mode="sequential", spinning="default", log_severity=3)
        self.per_channel = bool(per_channel)
        self.calibration = calibration
        self.reduce_range = None if reduce_range is None else bool(reduce_range)
        self.calib_samples = int(calib_samples)
        self.calib_seed = int(calib_seed)
        self.calib_data = None if calib_data is None else os.fspath(calib_data)

    # ---- export (coordinating process)
    def _quant_config(self) -> Any:
        from supernet.quantize import QuantConfig

        config = QuantConfig(precision=self.precision, per_channel=self.per_channel, calibration=self.calibration,
                             calib_images=self.calib_samples, seed=self.calib_seed)
        if self.reduce_range is not None:  # otherwise QuantConfig's own default (by this CPU's VNNI flag)
            config = dataclasses.replace(config, reduce_range=self.reduce_range)
        return config

    def _calibration_inputs(self, input_shape: tuple[int, ...]) -> np.ndarray:
        """(calib_samples, C, H, W) float32: rows of ``calib_data`` when its shape fits, else seeded N(0, 1)."""
        per_sample = tuple(input_shape[1:])
        if self.calib_data is not None:
            data = np.load(self.calib_data, allow_pickle=False)
            if data.ndim == len(input_shape) and tuple(data.shape[1:]) == per_sample and len(data):
                return np.asarray(data[: self.calib_samples], dtype=np.float32)
        rng = np.random.default_rng([self.calib_seed, *per_sample])
        return rng.standard_normal((self.calib_samples, *per_sample)).astype(np.float32)

    def export(self, model: Any, input_shape: tuple[int, ...], path: Path) -> Path:
        from supernet.export import export

        target = Path(path)
        if self.precision == "fp32":
            return export(model, target, format="onnx", input_shape=tuple(input_shape))
        from supernet.quantize import quantize_onnx

        config = self._quant_config()
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="hwnas-ort-export-", dir=target.parent) as tmp:
            fp32 = export(model, Path(tmp) / "fp32.onnx", format="onnx", input_shape=tuple(input_shape))
            calib = [self._calibration_inputs(tuple(input_shape))] if self.precision == "int8" else None
            return quantize_onnx(fp32, target, config=config, calib_batches=calib)

    # ---- measurement (measuring processes)
    def load(self, source: Path | Any, input_shape: tuple[int, ...], *, key: str = "") -> Prepared:
        """A `supernet.runtime` onnxruntime session (`RUNTIME_OPTIONS` with this backend's threads) bound to a
        zero input of ``input_shape``."""
        from supernet.runtime import open_session

        sess = open_session(source, backend="onnxruntime", options=self.runtime_options)
        sess.bind(np.zeros(tuple(input_shape), dtype=np.float32))
        return Prepared(key=key or str(source), input_shape=tuple(input_shape), handle=sess)

    def time_runs(self, prepared: Prepared, runs: int) -> np.ndarray:
        return np.asarray(prepared.handle.time_runs(runs))

    def prepare(self, model: Any, input_shape: tuple[int, ...], workdir: Path) -> Prepared:
        path = self.export(model, input_shape, Path(workdir) / "model.onnx")
        return self.load(path, input_shape)

    def quantization(self) -> dict[str, Any] | None:
        """How models are lowered to this backend's precision (stored in table manifests); None at fp32."""
        if self.precision == "fp32":
            return None
        if self.precision == "fp16":
            return {"method": "onnxruntime.transformers.float16", "io": "float32", "ops": "float16 where supported"}
        qop = self._quant_config().ort_format == "qoperator"
        return {
            "method": "onnxruntime static quantization (supernet.quantize.quantize_onnx)",
            "format": "QOperator (int8-friendly rewrite, scalar muls folded)" if qop else "QDQ",
            "weights": f"int8 symmetric, {'per-channel' if self.per_channel else 'per-tensor'}",
            "activations": "uint8" if qop else "int8", "calibration": self.calibration,
            "reduce_range": bool(self._quant_config().reduce_range),
            "calibration_data": (f"{self.calib_samples} seeded standard-normal inputs per model (seed "
                                 f"{self.calib_seed})" + (f"; {self.calib_data} where its shape fits"
                                                          if self.calib_data else "")),
        }

    def environment(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"execution_provider": "CPUExecutionProvider", "graph_optimization": "ORT_ENABLE_ALL",
                                 "thread_spinning": "onnxruntime default (pool threads spin on after a Run)",
                                 "runtime_options": self.runtime_options.to_json()}
        q = self.quantization()
        if q is not None:
            extra["quantization"] = q
        return base_environment(self, **extra)
