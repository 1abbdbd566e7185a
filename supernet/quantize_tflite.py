"""Reduced-precision TFLite (LiteRT) export of a static subnet: fp16 weights and full-integer int8 PTQ.

Pipeline: torch -> fp32 ``.tflite`` (`supernet.export.export_tflite`, litert-torch) -> ai-edge-quantizer (AEQ)
on the flatbuffer:
  * ``fp16``: AEQ ``float_casting`` on every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED weight: the file
    stores float16 weights behind DEQUANTIZE ops; compute stays fp32 on CPUs (XNNPACK dequantizes once at
    load), so it halves the file, not the time. GPU / NPU delegates can run it in fp16.
  * ``int8``: AEQ static ``a8w8`` ("full integer"): weights symmetric int8 in [-127, 127], per output channel
    (``CHANNELWISE``) or per tensor (``TENSORWISE``); every activation asymmetric int8 with a range calibrated
    on ``calib_images`` training images; bias int32; input and output tensors int8 (the runner here quantizes
    the float input with the input tensor's scale / zero point and dequantizes the logits). Every op of our
    subnets has an int8 kernel in TFLite's built-in kernels; XNNPACK (LiteRT 2.3) has none for HARD_SWISH, so
    by default (``QuantConfig.tflite_form="int8-friendly"``) the int8 file is converted from
    `int8_friendly_module` (h-swish as MUL / ADD+RELU6 / MUL), which XNNPACK takes in one partition.

Why AEQ rather than litert-torch's PT2E quantizer: the PT2E quantizer annotates conv, linear, add, mul, pools
and cat but not hardswish / hardsigmoid, so a MobileNetV3 subnet would keep float islands with
quantize/dequantize pairs around every h-swish (not full-integer). AEQ works on the converted TFLite ops.

Calibration methods (AEQ 0.10): AEQ's calibrator records each tensor's min / max per calibration batch and
merges batches with an update function. ``minmax`` (default) merges by taking the global min and max over all
calibration images (onnxruntime's MinMax rule); ``moving-average`` is AEQ's default merge, an exponential
moving average (factor 0.95) of the per-batch min / max (TensorFlow's legacy converter rule). With batch-1
calibration feeds the moving average tracks typical rather than extreme images and clips more, hence ``minmax``
by default (errors of both: docs/measurements.md). AEQ has no percentile or entropy
(KL) activation calibration; they are refused with a clear error. ``reduce_range`` does not apply: TFLite's
int8 kernels (XNNPACK, ruy) use the full range, on VNNI and non-VNNI x86 alike.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from supernet.io import atomic_write_bytes
from supernet.runtime import Session, open_session, tflite_interpreter

if TYPE_CHECKING:
    from supernet.quantize import QuantConfig

__all__ = [
    "TFLITE_CALIBRATION_METHODS",
    "MulClipHardswish",
    "TFLiteBuiltinTarget",
    "TFLiteTarget",
    "int8_friendly_module",
    "quantize_tflite",
    "tflite_weight_dtypes",
]

log = logging.getLogger(__name__)

TFLITE_CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "moving-average")
_WEIGHT_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"})


class MulClipHardswish(torch.nn.Module):
    """h-swish as ``(x / 6) * clip(x + 3, 0, 6)``: the same function as ``nn.Hardswish`` (up to float rounding).

    Written so on purpose: litert-torch / the TFLite converter fuses ``x * relu6(x + 3) / 6`` and
    ``x * (relu6(x + 3) / 6)`` back into HARD_SWISH, which LiteRT 2.3's XNNPACK delegate does not run in int8
    (measured: the int8 smallest subnet split into 16 partitions, one per HARD_SWISH, and ran 0.55x its fp32
    file), while this order converts to MUL, ADD (fused RELU6) and MUL, all of which XNNPACK runs in int8.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * (1.0 / 6.0)) * torch.clamp(x + 3.0, 0.0, 6.0)


def int8_friendly_module(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` with every ``nn.Hardswish`` replaced by `MulClipHardswish` (``model`` unchanged;
    attributes such as ``arch`` / ``input_shape`` are kept). The TFLite int8 lowering converts this form."""
    import copy

    out = copy.deepcopy(model)
    for mod in list(out.modules()):
        for name, child in list(mod.named_children()):
            if isinstance(child, torch.nn.Hardswish):
                setattr(mod, name, MulClipHardswish())
    return out.eval()


def _global_minmax(qsv: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """AEQ QSV update: widen the recorded range to cover the new batch (global min-max)."""
    if not qsv:
        return new
    return {**qsv, "min": np.minimum(qsv["min"], new["min"]), "max": np.maximum(qsv["max"], new["max"])}


def _signature(model_path: Path) -> tuple[str, str, tuple[int, ...]]:
    """(signature key, input name, input shape) of a single-input, single-signature model."""
    interp = tflite_interpreter(model_path)
    sigs = interp.get_signature_list()
    if len(sigs) != 1:
        raise ValueError(f"{str(model_path)!r}: expected one signature, got {sorted(sigs)}")
    key, sig = next(iter(sigs.items()))
    if len(sig["inputs"]) != 1:
        raise ValueError(f"{str(model_path)!r}: expected a model with one input, got {len(sig['inputs'])}")
    shape = tuple(int(d) for d in interp.get_input_details()[0]["shape"])
    return key, sig["inputs"][0], shape


def quantize_tflite(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    config: QuantConfig,
    calib_batches: Iterable[np.ndarray] | None = None,
) -> Path:
    """Lower the fp32 ``.tflite`` at ``fp32_path`` to ``config.precision``; write it atomically to ``out_path``.

    ``calib_batches`` (int8 only, required there) yields float32 arrays (N, C, H, W) preprocessed as at
    inference; the model's fixed batch of 1 is fed one image at a time, all of them.

    Raises:
        FileNotFoundError: ``fp32_path`` is missing.
        ValueError: a calibration method AEQ does not have, int8 without calibration data, calibration arrays
            of the wrong shape or not finite.
        ImportError: ai-edge-quantizer is not installed.
    """
    from supernet.quantize import calibration_samples

    src = Path(fp32_path)
    if not src.is_file():
        raise FileNotFoundError(f"TFLite model {str(src)!r} does not exist or is not a file")
    target = Path(out_path)
    if config.precision == "fp32":
        atomic_write_bytes(target, src.read_bytes())
        return target
    if config.fp32_layers:
        raise ValueError("tflite: per-layer mixed precision (fp32_layers) is not supported; use onnxruntime")
    if config.precision == "int8" and config.calibration not in TFLITE_CALIBRATION_METHODS:
        raise ValueError(
            f"calibration method {config.calibration!r} is not available for tflite (ai-edge-quantizer): "
            f"expected one of {', '.join(TFLITE_CALIBRATION_METHODS)}"
        )
    try:
        from ai_edge_quantizer import algorithm_manager, calibrator, qtyping, quantizer
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("TFLite fp16/int8 export needs ai-edge-quantizer (pip install ai-edge-quantizer)") from e

    q = quantizer.Quantizer(str(src))
    ops = qtyping.TFLOperationName.ALL_SUPPORTED
    if config.precision == "fp16":
        q.add_weight_only_config(regex=".*", operation_name=ops, num_bits=16,
                                 algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING)
        calibration = None
        n_feeds = 0
    else:
        if calib_batches is None:
            raise ValueError("int8 quantization needs calibration data (calib_batches), got None")
        key, name, shape = _signature(src)
        samples = calibration_samples(calib_batches, shape=shape, where=f"quantize {src.name}")
        gran = qtyping.QuantGranularity.CHANNELWISE if config.per_channel else qtyping.QuantGranularity.TENSORWISE
        q.add_static_config(regex=".*", operation_name=ops, activation_num_bits=8, weight_num_bits=8,
                            weight_granularity=gran)
        feeds = {key: [{name: x} for x in samples]}
        chatter = io.StringIO()  # AEQ prints progress bars
        with contextlib.redirect_stderr(chatter), contextlib.redirect_stdout(chatter), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging": it is how AEQ calibrates
            if config.calibration == "minmax":
                cal = calibrator.Calibrator(q._float_model_buffer, num_threads=1, qsv_update_func=_global_minmax)
                cal.calibrate(feeds, q._recipe_manager)
                calibration = cal.get_model_qsvs()
            else:
                calibration = q.calibrate(feeds, num_threads=1)
        n_feeds = len(samples)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        result = q.quantize(calibration, enable_progress_report=False)
    atomic_write_bytes(target, bytes(result.quantized_model))
    log.info("wrote %s (tflite %s, %d calibration feeds)", target, config.label, n_feeds)
    return target


def tflite_weight_dtypes(path: str | os.PathLike[str]) -> dict[str, int]:
    """Weight elements of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / TRANSPOSE_CONV ops by stored dtype.

    A weight behind a DEQUANTIZE op (fp16 files) counts with the DEQUANTIZE's input dtype, e.g.
    ``{"float16": 150000}``; an int8 full-integer file gives ``{"int8": ...}``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"TFLite model {str(p)!r} does not exist or is not a file")
    interp = tflite_interpreter(p)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # LiteRT's op table; the public API has no graph walk
    producer = {out: op for op in ops for out in op["outputs"]}
    counts: dict[str, int] = {}
    for op in ops:
        if op["op_name"] not in _WEIGHT_OPS or len(op["inputs"]) < 2:
            continue
        w = int(op["inputs"][1])
        src = producer.get(w)
        if src is not None and src["op_name"] == "DEQUANTIZE":
            w = int(src["inputs"][0])
        t = tensors.get(w)
        if t is None:
            continue
        name = np.dtype(t["dtype"]).name
        counts[name] = counts.get(name, 0) + int(np.prod(t["shape"]))
    return counts


class TFLiteTarget:
    """LiteRT interpreter, default CPU path (XNNPACK delegate); fp16 / int8 files from `quantize_tflite`.

    Runs through `supernet.runtime` backend ``name`` ("tflite": XNNPACK, checked at load; "tflite-builtin")."""

    name = "tflite"
    suffix = ".tflite"
    calibration_methods = TFLITE_CALIBRATION_METHODS
    default_delegates = True

    def export_fp32(self, model: Any, path: Path, *, form: str = "plain") -> Path:
        """fp32 ``.tflite`` of ``model`` (``plain``) or of `int8_friendly_module` (``int8-friendly``)."""
        from supernet.export import export

        if form not in ("plain", "int8-friendly"):
            raise ValueError(f"tflite export form {form!r}: expected 'plain' or 'int8-friendly'")
        src = int8_friendly_module(model) if form == "int8-friendly" else model
        return export(src, path, format="tflite", input_shape=model.input_shape)

    def export_form(self, config: QuantConfig) -> str:
        return "int8-friendly" if config.precision == "int8" and config.tflite_form == "int8-friendly" else "plain"

    def lower(self, fp32_path: Path, out_path: Path, *, config: QuantConfig,
              calib_batches: Iterable[np.ndarray] | None) -> Path:
        return quantize_tflite(fp32_path, out_path, config=config,
                               calib_batches=calib_batches if config.precision == "int8" else None)

    def runner(self, path: Path, *, threads: int = 1) -> Session:
        return open_session(path, backend=self.name, threads=threads)

    def weight_dtypes(self, path: Path) -> dict[str, int]:
        return tflite_weight_dtypes(path)

    def environment(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        def v(pkg: str) -> str | None:
            try:
                return version(pkg)
            except PackageNotFoundError:  # pragma: no cover - depends on the install
                return None

        return {"backend": self.name, "backend_version": v("ai-edge-litert"), "runtime": "LiteRT Interpreter",
                "delegate": "XNNPACK (LiteRT default)" if self.default_delegates else
                "none: built-in kernels (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)",
                "converter": f"litert-torch {v('litert-torch')}",
                "quantizer": f"ai-edge-quantizer {v('ai-edge-quantizer')}"}


class TFLiteBuiltinTarget(TFLiteTarget):
    """The same .tflite files on LiteRT's built-in optimized kernels, without the default XNNPACK delegate.

    XNNPACK can run int8 files slower than fp32 ones (it splits the graph into partitions at HARD_SWISH ops) while
    the built-in kernels do not (figures: docs/measurements.md); a deployment picks one path, so both are
    reported.
    """

    name = "tflite-builtin"
    default_delegates = False
