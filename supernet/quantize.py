"""Reduced-precision export of a static subnet (fp16, int8 PTQ, int8 QAT) and its measured comparison.

Backends (a lazy registry, `get_target`): ``onnxruntime`` (this module) and ``tflite``
(`supernet.quantize_tflite`). Each lowers the fp32 export of `supernet.export` and runs the result:

``onnxruntime``: the fp32 ONNX file of `supernet.export.export_onnx` ->
  * ``fp16``: every float initializer and op converted to float16, graph inputs/outputs kept float32
    (`onnxruntime.transformers.float16`). On an x86 CPU onnxruntime has few fp16 kernels and inserts casts to
    fp32 around the rest, so fp16 there halves the file and gains little speed (docs/measurements.md); the
    real gains are on backends with fp16 arithmetic (ARM with fp16, GPU, NPU delegates).
  * ``int8``: static post-training quantization in QDQ format (`onnxruntime.quantization.quantize_static`)
    after `quant_pre_process` (shape inference, BN folded into Conv). Weights are symmetric int8, per output
    channel by default; activations are int8 with ranges calibrated on ``calib_images`` seeded training
    images (min-max, percentile or entropy). Per-tensor weights are available for comparison: folding BN
    into depthwise convs can give per-channel weight ranges that differ by orders of magnitude, and one
    scale per tensor then rounds the small channels to zero. That collapse is reported for MobileNets at
    ImageNet scale (MobileNetV2, 8-bit per-tensor PTQ: 71.7 -> 0.1 % top-1, Nagel et al. 2019,
    arXiv:1906.04721; Krishnamoorthi 2018, arXiv:1806.08342); it was not seen on this repository's
    digits-trained subnets, whose worst per-tensor loss was 0.9 points (`benchmarks/results/bitwidth.md`).
``tflite``: fp16 weights and full-integer int8 through ai-edge-quantizer, see `supernet.quantize_tflite`.

QAT (`supernet.qat`) fine-tunes a BN-folded copy of the subnet with fake quantization matching these
exports; its result is exported with the same `QuantConfig` (variants labelled ``int8-qat-...``). Lower
bit-widths that no backend here runs (4-bit weights, mixed per stage) are only *simulated* in torch
(`supernet.qat.simulate_quantized`): their rows say ``simulated`` and carry no latency and no size.

`compare_variants` measures any set of variants of one subnet side by side: top-1, agreement with fp32,
file size, stored weight dtypes, and latency timed in interleaved, shuffled rounds (every variant once per
round on the same input), with each variant's speed given as the median per-round ratio to the fp32 file of
the same backend, so machine-wide load changes cancel.

Notation: a QDQ model stores ``w_q = round(w / s)`` as an int8 initializer feeding a DequantizeLinear node;
onnxruntime fuses DQ -> Conv -> Q into an integer kernel at session creation.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from supernet.io import atomic_write_bytes, atomic_write_json
from supernet.registry import Registry
from supernet.runtime import Session, time_shuffled_runs
from supernet.space import PRECISIONS

if TYPE_CHECKING:
    from supernet.data import DataSplits
    from supernet.layers import StaticSubnet

__all__ = [
    "BACKENDS",
    "CALIBRATION_METHODS",
    "ORT_CALIBRATION_METHODS",
    "PRECISIONS",
    "OnnxRuntimeTarget",
    "Precision",
    "QATPolicy",
    "QuantConfig",
    "QuantRecipe",
    "QuantTarget",
    "Runner",
    "SimulatedVariant",
    "calibration_arrays",
    "calibration_samples",
    "check_backend_config",
    "compare_variants",
    "cpu_has_vnni",
    "default_reduce_range",
    "export_precision",
    "export_variant",
    "get_target",
    "int8_weight_fraction",
    "machine_state",
    "onnx_weight_dtypes",
    "precision_report",
    "ptq_loss",
    "qat_spec_for",
    "quantize_onnx",
    "quantize_subnet",
    "runner_top1",
    "split_arrays",
]

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8"]
ORT_CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy")
ORT_FORMATS: tuple[str, ...] = ("qoperator", "qdq")
# every method some backend has; `QuantTarget.calibration_methods` says which one has which
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy", "moving-average")
_WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# QOperator nodes with a weight, and the position of their (quantized) weight input
_QOP_WEIGHT_INPUT = {"QLinearConv": 3, "QGemm": 3, "QLinearMatMul": 3}
REPORT_SCHEMA_VERSION = 2


def cpu_has_vnni() -> bool | None:
    """True if this x86 CPU has AVX-VNNI or AVX512-VNNI (int8 dot products without int16 saturation); False if
    it is x86 without; None when it cannot tell (not Linux x86)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return None
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), None)
    if flags is None:
        return None  # ARM's /proc/cpuinfo has "Features", no "flags"
    return bool({"avx512_vnni", "avx_vnni"} & set(flags))


def default_reduce_range() -> bool:
    """onnxruntime's 7-bit weights are needed on x86 without VNNI only (see `QuantConfig.reduce_range`)."""
    return cpu_has_vnni() is False


@dataclass(frozen=True, kw_only=True)
class QuantConfig:
    """How to lower an fp32 model.

    Attributes:
        precision: ``fp32`` (copy), ``fp16`` or ``int8``.
        per_channel: int8 only: one weight scale per output channel (True) or per tensor (False).
        calibration: int8 only: activation range estimator. onnxruntime: ``minmax``, ``percentile``,
            ``entropy``; tflite (ai-edge-quantizer): ``minmax``, ``moving-average``.
        percentile: for ``calibration="percentile"``: the percentile of |activation| taken as the range, in %.
        reduce_range: onnxruntime int8 only: 7-bit weights (-64..64). Needed for onnxruntime on x86 CPUs with
            AVX2 but no VNNI, whose u8 x s8 kernels (VPMADDUBSW) saturate int16 pair sums with full-range
            weights (the top-1 loss it avoids: docs/measurements.md). On a VNNI CPU and on ARM full-range
            weights are exact. Default: `default_reduce_range` (by this CPU's VNNI flag), the one
            default every caller shares (the CLI, search-time int8 accuracy, int8 LUTs, the benchmarks), so
            what a search measures is what ``hwnas quantize`` ships. Ignored by tflite.
        entropy_bins: for ``calibration="entropy"``: histogram bins searched for the 128-level range with the
            least KL divergence (TensorRT uses 2048). onnxruntime's search is a Python loop, roughly
            quadratic in the bins, hence 512 by default (timing: docs/measurements.md).
        calib_images: int8 only: training images used for calibration (seeded random subset).
        seed: seed of that subset.
        ort_format: onnxruntime int8 only: ``qoperator`` (default) is the fast lowering of issue 14: the fp32
            graph rewritten into ops with integer kernels (`supernet.onnx_lowering.int8_friendly`: HardSwish /
            HardSigmoid as Add-Clip-Mul, spatial ReduceMean as GlobalAveragePool), uint8 activations, QOperator
            nodes (QLinearConv, QLinearAdd, QLinearMul, QLinearGlobalAveragePool, QGemm) and the constant
            multiplications folded into scales (`fold_scalar_muls`). ``qdq`` is the previous recipe (QDQ,
            int8 activations, graph as exported), kept for comparison: measured on the AMD EPYC VM (1 thread,
            random-weight ofa-mbv3 subnets) it ran 0.30-0.56x fp32, the fast lowering 1.3-1.6x.
        tflite_form: tflite int8 only: ``int8-friendly`` (default) converts `supernet.quantize_tflite.
            int8_friendly_module` (h-swish written so the converter keeps it as MUL / ADD+RELU6 / MUL, which
            XNNPACK runs in int8, instead of HARD_SWISH, which LiteRT 2.3's XNNPACK does not take in int8: one
            partition break per h-swish); ``plain`` converts the model as is (the earlier recipe).
        fp32_layers: int8 only: indices into `supernet.layers.layer_specs` of layers kept in fp32 (mixed
            precision; onnxruntime: their nodes are excluded from quantization, with Quantize / Dequantize at
            the borders; tflite: not supported, refused). Empty: every layer int8.
    """

    precision: str = "int8"
    per_channel: bool = True
    calibration: str = "minmax"
    percentile: float = 99.999
    reduce_range: bool = field(default_factory=default_reduce_range)
    entropy_bins: int = 512
    calib_images: int = 256
    seed: int = 0
    ort_format: str = "qoperator"
    tflite_form: str = "int8-friendly"
    fp32_layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        # fp32_layers only mean something at int8 (replace(precision="fp32") of a mixed config is plain fp32)
        layers = tuple(sorted({int(i) for i in self.fp32_layers})) if self.precision == "int8" else ()
        object.__setattr__(self, "fp32_layers", layers)
        if self.ort_format not in ORT_FORMATS:
            raise ValueError(f"ort_format {self.ort_format!r}: expected one of {', '.join(ORT_FORMATS)}")
        if self.tflite_form not in ("int8-friendly", "plain"):
            raise ValueError(f"tflite_form {self.tflite_form!r}: expected 'int8-friendly' or 'plain'")
        if any(i < 0 for i in self.fp32_layers):
            raise ValueError(f"fp32_layers: expected layer indices >= 0, got {list(self.fp32_layers)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(
                f"calibration method {self.calibration!r}: expected one of {', '.join(CALIBRATION_METHODS)}"
            )
        if isinstance(self.calib_images, bool) or not isinstance(self.calib_images, int) or self.calib_images < 1:
            raise ValueError(f"calib_images: expected an integer >= 1, got {self.calib_images!r}")
        if isinstance(self.entropy_bins, bool) or not isinstance(self.entropy_bins, int) or self.entropy_bins < 256:
            raise ValueError(f"entropy_bins: expected an integer >= 256 (2 x 128 levels), got {self.entropy_bins!r}")
        if not 50.0 < float(self.percentile) <= 100.0:
            raise ValueError(f"percentile: expected a value in (50, 100] (per cent), got {self.percentile!r}")

    @property
    def label(self) -> str:
        """Short variant name for file names and reports, e.g. ``int8-pc-minmax``, ``fp16``."""
        if self.precision != "int8":
            return self.precision
        mixed = f"-fp32L{'.'.join(map(str, self.fp32_layers))}" if self.fp32_layers else ""
        return f"int8-{'pc' if self.per_channel else 'pt'}-{self.calibration}{mixed}"

    @property
    def is_mixed(self) -> bool:
        return bool(self.fp32_layers)

    def replace(self, **changes: Any) -> QuantConfig:
        return QuantConfig(**{**asdict(self), **changes})


# --------------------------------------------------------------------------- helpers
def _check_model_file(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX model {str(p)!r} does not exist or is not a file")
    return p


def _input_spec(model_path: Path) -> tuple[str, tuple[int | None, ...]]:
    """Name and shape (None for symbolic dims) of the model's single input."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ValueError(f"{str(model_path)!r}: expected a model with one input, got {len(inputs)}")
    dims = inputs[0].type.tensor_type.shape.dim
    return inputs[0].name, tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def calibration_samples(
    batches: Iterable[np.ndarray], *, shape: tuple[int | None, ...], where: str
) -> list[np.ndarray]:
    """Split calibration batches (N, C, H, W) into model-sized float32 feeds; check shapes and values."""
    fixed_batch = shape[0] if shape and shape[0] is not None else None
    samples: list[np.ndarray] = []
    for k, b in enumerate(batches):
        x = np.asarray(b.detach().cpu().numpy() if hasattr(b, "detach") else b, dtype=np.float32)
        if x.ndim != len(shape) or any(d is not None and d != xd for d, xd in zip(shape[1:], x.shape[1:])):
            raise ValueError(
                f"{where}: calibration batch {k} has shape {tuple(x.shape)}, the model expects "
                f"{tuple('N' if d is None else d for d in shape)} (batch first)"
            )
        if not np.isfinite(x).all():
            raise ValueError(f"{where}: calibration batch {k} holds NaN or inf values")
        if fixed_batch is None:
            if x.shape[0]:
                samples.append(x)
        else:
            samples.extend(x[i : i + fixed_batch] for i in range(0, x.shape[0] - fixed_batch + 1, fixed_batch))
    if not samples:
        raise ValueError(f"{where}: no calibration images; int8 activation ranges need at least one image")
    return samples


class _Reader:
    """Duck-typed `onnxruntime.quantization.CalibrationDataReader` over a list of feeds (no onnxruntime import)."""

    def __init__(self, name: str, samples: Sequence[np.ndarray]) -> None:
        self._name = name
        self._samples = samples
        self._it: Iterator[np.ndarray] = iter(samples)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {self._name: x}

    def rewind(self) -> None:
        self._it = iter(self._samples)

    def __iter__(self) -> _Reader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        feed = self.get_next()
        if feed is None:
            raise StopIteration
        return feed


def _calibrate(model: Path, samples: Sequence[np.ndarray], *, name: str, config: QuantConfig, tmp: Path) -> Path:
    """Activation ranges of every quantizable tensor of ``model`` on ``samples``, saved as an onnxruntime cache.

    Entropy: ``config.entropy_bins`` bins searched for the 128-level range that minimises KL divergence
    (TensorRT's method); percentile: onnxruntime's default (2048 bins, symmetric).
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    method, options = {
        "minmax": (CalibrationMethod.MinMax, {}),
        "percentile": (CalibrationMethod.Percentile,
                       {"num_bins": 2048, "percentile": float(config.percentile), "symmetric": True}),
        "entropy": (CalibrationMethod.Entropy,
                    {"num_bins": int(config.entropy_bins), "num_quantized_bins": 128, "symmetric": False}),
    }[config.calibration]
    calibrator = create_calibrator(
        model,
        sorted(set(QLinearOpsRegistry) | set(QDQRegistry)),
        augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=method,
        extra_options=options,
    )
    chatter = io.StringIO()  # the histogram calibrators print progress to stdout
    with contextlib.redirect_stdout(chatter):
        calibrator.collect_data(_Reader(name, samples))
        ranges = calibrator.compute_data()
    log.debug("calibration (%s): %s", config.calibration, chatter.getvalue().strip())
    cache = tmp / "calibration.json"
    save_tensors_data(ranges, cache)
    return cache


# --------------------------------------------------------------------------- public API
def quantize_onnx(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    config: QuantConfig,
    calib_batches: Iterable[np.ndarray] | None = None,
    calibration_memo: dict[str, bytes] | None = None,
) -> Path:
    """Lower the fp32 ONNX model ``fp32_path`` to ``config.precision`` and write it atomically to ``out_path``.

    ``calibration_memo``: a caller's dict in which int8 activation ranges are kept per (model file, samples,
    calibration settings), so lowering one subnet many times (mixed-precision sensitivity: one file per layer)
    calibrates once.

    ``calib_batches`` (int8 only, required there) yields float32 arrays (N, C, H, W) preprocessed exactly as
    at inference; a model with a fixed batch of 1 is fed one image at a time. All of them are used: choosing
    ``config.calib_images`` of them is the caller's job (`export_precision` does it).

    Raises:
        FileNotFoundError: ``fp32_path`` is missing.
        ValueError: int8 without calibration data, a calibration method onnxruntime does not have, or
            calibration arrays of the wrong shape / not finite.
        ImportError: fp16 requested but onnxruntime's float16 converter is not installed.
    """
    import onnx

    src = _check_model_file(fp32_path)
    target = Path(out_path)
    if config.precision == "fp32":
        atomic_write_bytes(target, src.read_bytes())
        return target
    if config.precision == "fp16":
        try:
            from onnxruntime.transformers.float16 import convert_float_to_float16
        except ImportError as e:  # pragma: no cover - depends on the onnxruntime build
            raise ImportError(
                "fp16 export is unsupported here: onnxruntime.transformers.float16 is not importable"
            ) from e
        model16 = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        atomic_write_bytes(target, model16.SerializeToString())
        return target

    import inspect

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if config.calibration not in ORT_CALIBRATION_METHODS:
        raise ValueError(
            f"calibration method {config.calibration!r} is not available for onnxruntime: expected one of "
            f"{', '.join(ORT_CALIBRATION_METHODS)}"
        )
    if calib_batches is None:
        raise ValueError("int8 quantization needs calibration data (calib_batches), got None")
    name, shape = _input_spec(src)
    samples = calibration_samples(calib_batches, shape=shape, where=f"quantize {src.name}")
    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[config.calibration]
    fast = config.ort_format == "qoperator"
    with tempfile.TemporaryDirectory(prefix="hwnas-quant-") as tmp:
        pre = _prepared_graph(src, Path(tmp) / "pre.onnx", fast=fast, fp32_layers=config.fp32_layers)
        kwargs: dict[str, Any] = {"calibration_data_reader": _Reader(name, samples)}
        if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
            # Calibrate ourselves so the histogram settings reach the calibrator (quantize_static does not pass
            # them on; its entropy default of 128 bins = 128 quantized bins leaves min-max as the only candidate).
            # Ranges always come from the all-int8 graph: a mixed file's boundary tensors keep their names, so
            # every variant of one subnet shares them (and `calibration_memo` can reuse them).
            cache = Path(tmp) / "calibration.json"
            digest = _calibration_key(src, samples, config)
            if calibration_memo is not None and digest in calibration_memo:
                cache.write_bytes(calibration_memo[digest])
            else:
                full = pre if not config.fp32_layers else _prepared_graph(src, Path(tmp) / "pre_all.onnx", fast=fast,
                                                                          fp32_layers=())
                cache = _calibrate(full, samples, name=name, config=config, tmp=Path(tmp))
                if calibration_memo is not None:
                    calibration_memo[digest] = cache.read_bytes()
            kwargs = {"calibration_data_reader": None, "calibration_cache_path": cache}
        elif config.calibration == "entropy":  # pragma: no cover - onnxruntime < 1.32
            log.warning("this onnxruntime cannot set entropy histogram bins; entropy calibration equals min-max")
        excluded = _layer_nodes(pre, config.fp32_layers)
        q_path = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre),
            str(q_path),
            # QOperator + uint8 activations: onnxruntime's x86 integer kernels are u8 x s8; int8 activations
            # in QDQ left most convs float here (per-op profile, AMD EPYC VM)
            quant_format=QuantFormat.QOperator if fast else QuantFormat.QDQ,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            activation_type=QuantType.QUInt8 if fast else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            nodes_to_exclude=excluded,
            extra_options={"CalibPercentile": float(config.percentile), "WeightSymmetric": True},
            **kwargs,
        )
        if fast:
            from supernet.onnx_lowering import fold_scalar_muls

            qmodel = onnx.load(str(q_path))
            fold_scalar_muls(qmodel)
            onnx.save(qmodel, str(q_path))
        atomic_write_bytes(target, q_path.read_bytes())
    log.info("wrote %s (%s, %d calibration feeds)", target, config.label, len(samples))
    return target


def _prepared_graph(src: Path, out: Path, *, fast: bool, fp32_layers: Sequence[int]) -> Path:
    """The graph `quantize_static` gets: with ``fast``, `supernet.onnx_lowering.int8_friendly` (layers
    ``fp32_layers`` kept float), then ``quant_pre_process`` (shape inference, BN folding)."""
    import onnx

    graph = src
    if fast:  # rewrite first: quant_pre_process would inline HardSwish under names without the layer prefix
        from supernet.onnx_lowering import int8_friendly

        graph = out.with_suffix(".rewritten.onnx")
        keep = [f"/{i}/" for i in fp32_layers]
        onnx.save(int8_friendly(onnx.load(str(src)), keep_float=keep), str(graph))
    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process

        quant_pre_process(str(graph), str(out), skip_symbolic_shape=False)
    except ImportError:  # pragma: no cover - older onnxruntime
        log.warning("quant_pre_process unavailable; quantizing the un-optimised graph (BN not folded)")
        return graph
    return out


def _calibration_key(src: Path, samples: Sequence[np.ndarray], config: QuantConfig) -> str:
    import hashlib

    h = hashlib.sha256(src.read_bytes())
    h.update(repr((config.calibration, config.percentile, config.entropy_bins, config.ort_format)).encode())
    for x in samples:
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()


def _layer_nodes(model_path: Path, layers: Sequence[int]) -> list[str]:
    """Names of the nodes of the exported subnet's layers ``layers`` (indices into `supernet.layers.layer_specs`).

    The TorchScript exporter names a node of the i-th module of the `StaticSubnet` (``nn.Sequential``) ``/i/...``;
    `supernet.onnx_lowering.int8_friendly` keeps that prefix. A layer index with no node is an error (a
    model not exported by `supernet.export.export_onnx`, or an index past the last layer)."""
    if not layers:
        return []
    import onnx

    names = [n.name for n in onnx.load(str(model_path), load_external_data=False).graph.node]
    out: list[str] = []
    for i in layers:
        mine = [n for n in names if n.startswith(f"/{i}/")]
        if not mine:
            raise ValueError(f"fp32_layers: layer {i} has no node in {model_path.name} (layers are /<index>/ "
                             "prefixes of the exported node names)")
        out += mine
    return out


def export_precision(
    model: StaticSubnet, out_path: str | os.PathLike[str], *, config: QuantConfig, data: DataSplits
) -> Path:
    """Export ``model`` (eval mode, BN already recalibrated) at ``config.precision`` to ``out_path``.

    int8 calibrates on ``config.calib_images`` un-augmented training images of ``data`` at the model's
    resolution (seeded by ``config.seed``), normalised as at inference. The onnxruntime case of `export_variant`.
    """
    return export_variant(model, out_path, backend="onnxruntime", config=config, data=data)


def onnx_weight_dtypes(onnx_path: str | os.PathLike[str]) -> dict[str, int]:
    """Weight elements of Conv/ConvTranspose/Gemm/MatMul nodes by stored dtype, e.g. ``{"int8": 150000}``.

    A weight is the node's second input when it is an initializer, or the input of the DequantizeLinear
    producing it (QDQ format), or the weight input of a QLinearConv / QGemm / QLinearMatMul (QOperator format).
    Weights computed at run time (MatMul of two activations) are not counted.
    """
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    model = onnx.load(str(_check_model_file(onnx_path)))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    counts: dict[str, int] = {}
    for node in model.graph.node:
        k = _QOP_WEIGHT_INPUT.get(node.op_type)
        if k is not None and len(node.input) > k:
            w = node.input[k]
        elif node.op_type not in _WEIGHT_OPS or len(node.input) < 2:
            continue
        else:
            w = node.input[1]
        src = producer.get(w)
        if w not in inits and src is not None and src.op_type == "DequantizeLinear":
            w = src.input[0]
        if w not in inits:
            continue
        t = inits[w]
        name = np.dtype(tensor_dtype_to_np_dtype(t.data_type)).name
        counts[name] = counts.get(name, 0) + (int(np.prod(t.dims)) if len(t.dims) else 1)
    return counts


def int8_weight_fraction(onnx_path: str | os.PathLike[str]) -> float:
    """Share of weight parameters of Conv/ConvTranspose/Gemm/MatMul nodes stored as int8 initializers.

    A weight counts as int8 when the node's second input is an INT8 initializer or the output of a
    DequantizeLinear whose input is one (QDQ format). Weighted by element count; 0.0 for a model without such
    weights. ``.tflite`` files are read by the ``tflite`` target (through `BACKENDS`, so this module never
    imports `supernet.quantize_tflite`, which builds on it).
    """
    p = Path(onnx_path)
    counts = get_target("tflite").weight_dtypes(p) if p.suffix == ".tflite" else onnx_weight_dtypes(p)
    total = sum(counts.values())
    return counts.get("int8", 0) / total if total else 0.0


# --------------------------------------------------------------------------- backends
Runner = Session
"""A loaded model (`supernet.runtime.Session`): `prepare` converts a float (1, C, H, W) input to what `invoke` feeds
(the part timed); calling it maps float (N, C, H, W) inputs to float logits (N, classes)."""


class QuantTarget(Protocol):
    """A runtime that runs lowered subnets: export fp32, lower to a precision, load, describe itself.

    ``lower`` takes the fp32 file of ``export_fp32`` and writes the file of ``config.precision`` (a copy for
    fp32); ``calib_batches`` (float32 (N, C, H, W) arrays) is required for int8 and ignored otherwise.
    ``export_form(config)`` names the fp32 graph form ``lower`` wants for ``config`` (``plain``: the model as
    is; tflite int8: ``int8-friendly``, the same function written with ops its int8 delegate runs), passed to
    ``export_fp32(..., form=...)``.
    """

    name: str
    suffix: str
    calibration_methods: tuple[str, ...]

    def export_fp32(self, model: Any, path: Path, *, form: str = "plain") -> Path: ...

    def export_form(self, config: QuantConfig) -> str: ...

    def lower(self, fp32_path: Path, out_path: Path, *, config: QuantConfig,
              calib_batches: Iterable[np.ndarray] | None) -> Path: ...

    def runner(self, path: Path, *, threads: int = 1) -> Runner: ...

    def weight_dtypes(self, path: Path) -> dict[str, int]: ...

    def environment(self) -> dict[str, Any]: ...


class OnnxRuntimeTarget:
    """onnxruntime CPUExecutionProvider, sequential execution; QDQ int8 and fp16 from `quantize_onnx`."""

    name = "onnxruntime"
    suffix = ".onnx"
    calibration_methods = ORT_CALIBRATION_METHODS

    def export_fp32(self, model: Any, path: Path, *, form: str = "plain") -> Path:
        """fp32 ONNX; the int8 rewrite happens on the ONNX graph (`quantize_onnx`), so one form only."""
        from supernet.export import export

        if form != "plain":
            raise ValueError(f"onnxruntime export form {form!r}: expected 'plain'")
        return export(model, path, format="onnx", input_shape=model.input_shape)

    def export_form(self, config: QuantConfig) -> str:
        return "plain"

    def lower(self, fp32_path: Path, out_path: Path, *, config: QuantConfig,
              calib_batches: Iterable[np.ndarray] | None) -> Path:
        return quantize_onnx(fp32_path, out_path, config=config,
                             calib_batches=calib_batches if config.precision == "int8" else None)

    def runner(self, path: Path, *, threads: int = 1) -> Runner:
        from supernet.runtime import open_session

        return open_session(path, backend="onnxruntime", threads=threads)

    def weight_dtypes(self, path: Path) -> dict[str, int]:
        return onnx_weight_dtypes(path)

    def environment(self) -> dict[str, Any]:
        from supernet.runtime import backend_version

        return {"backend": "onnxruntime", "backend_version": backend_version("onnxruntime"),
                "provider": "CPUExecutionProvider", "execution_mode": "sequential", "graph_optimization": "all (default)"}


# Quantization targets: name -> "module:Class", imported on first use (TFLite needs the [tflite] extra).
BACKENDS: Registry[Callable[[], QuantTarget]] = Registry("quantization backend")
BACKENDS.add("onnxruntime", "supernet.quantize:OnnxRuntimeTarget")
BACKENDS.add("tflite", "supernet.quantize_tflite:TFLiteTarget")
BACKENDS.add("tflite-builtin", "supernet.quantize_tflite:TFLiteBuiltinTarget")


def get_target(name: str) -> QuantTarget:
    """A new target of backend ``name`` of `BACKENDS`; `UnknownNameError` lists the known ones."""
    return BACKENDS.create(name)  # type: ignore[no-any-return]


def calibration_arrays(data: DataSplits, *, config: QuantConfig, resolution: int) -> list[np.ndarray]:
    """``config.calib_images`` seeded training images at ``resolution``, float32 NCHW (int8 ranges)."""
    from supernet.evaluate import calibration_batches

    return [x.numpy() for x in calibration_batches(data, n_images=config.calib_images, resolution=resolution,
                                                     seed=config.seed)]


def check_backend_config(target: QuantTarget, config: QuantConfig) -> None:
    if config.precision == "int8" and config.calibration not in target.calibration_methods:
        raise ValueError(
            f"calibration method {config.calibration!r} is not available for {target.name}: expected one of "
            f"{', '.join(target.calibration_methods)}"
        )


def export_variant(
    model: StaticSubnet, out_path: str | os.PathLike[str], *, backend: str, config: QuantConfig, data: DataSplits
) -> Path:
    """Export ``model`` (eval mode, BN recalibrated) for ``backend`` at ``config.precision`` to ``out_path``.

    int8 calibrates on ``config.calib_images`` seeded training images, as `export_precision` does.
    """
    target = get_target(backend)
    check_backend_config(target, config)
    with tempfile.TemporaryDirectory(prefix="hwnas-variant-") as tmp:
        form = target.export_form(config)
        fp32 = target.export_fp32(model, Path(tmp) / f"fp32-{form}{target.suffix}", form=form)
        calib = None
        if config.precision == "int8":
            calib = calibration_arrays(data, config=config, resolution=model.arch.resolution)
        return target.lower(fp32, Path(out_path), config=config, calib_batches=calib)


# --------------------------------------------------------------------------- variants and their comparison
@dataclass(frozen=True, kw_only=True)
class QuantRecipe:
    """How to make one deployable file of a subnet: a backend, a precision config, and whether the weights come
    from QAT. (Not `device_agents.variants.Variant`, which is a subnet ready to serve.)"""

    backend: str = "onnxruntime"
    config: QuantConfig
    qat: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if self.qat and self.config.precision != "int8":
            raise ValueError(f"QAT variants are int8, got precision {self.config.precision!r}")

    @property
    def label(self) -> str:
        """``fp32``, ``fp16``, ``int8-pc-minmax``, ``int8-qat-pc-minmax``..."""
        return self.config.label.replace("int8-", "int8-qat-", 1) if self.qat else self.config.label


# Deprecated alias (collided with device_agents.variants.Variant); new code uses QuantRecipe.
Variant = QuantRecipe


@dataclass(frozen=True, kw_only=True)
class SimulatedVariant:
    """A bit-width no backend here runs, simulated in torch (`supernet.qat.simulate_quantized`).

    ``spec`` is a `supernet.qat.FakeQuantSpec`; ``stage_weight_bits`` overrides weight bits per part of the
    network (``stem``, ``stage1``.. ``head``). Rows made from it have ``simulated: True``, no latency, no size.
    """

    spec: Any
    stage_weight_bits: Mapping[str, int] | None = None

    @property
    def label(self) -> str:
        from supernet.qat import describe_spec

        return f"{describe_spec(self.spec, self.stage_weight_bits)} (simulated)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_state() -> dict[str, Any]:
    """Device, CPU model and flags relevant to int8, and the load when called (shared machines drift)."""
    import socket

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not Unix
        load = None
    return {"device": socket.gethostname(), "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "cpu_vnni": cpu_has_vnni(), "loadavg_1_5_15": load,
            "python": platform.python_version()}


def split_arrays(
    data: DataSplits, *, split: str, resolution: int, max_images: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, C, r, r) float32, normalised as at inference, and labels (N,) of the first ``max_images``
    images of ``data.<split>`` (all of them for None), in dataset order."""
    from supernet.data import iterate_batches

    if split not in ("train", "val", "test"):
        raise ValueError(f"split {split!r}: expected 'train', 'val' or 'test'")
    ds = getattr(data, split)
    xs_l, ys_l = [], []
    for x, y in iterate_batches(ds, batch_size=256, mean=data.mean, std=data.std, resolution=resolution):
        xs_l.append(x.numpy())
        ys_l.append(y.numpy())
    if not xs_l:
        raise ValueError(f"split {split!r} of {data.name!r} is empty; nothing to measure accuracy on")
    return np.concatenate(xs_l)[:max_images], np.concatenate(ys_l)[:max_images]


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    q25, q50, q75 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return float(q25), float(q50), float(q75)


def compare_variants(
    models: Mapping[str, Any],
    variants: Sequence[QuantRecipe],
    data: DataSplits,
    *,
    out_dir: str | os.PathLike[str],
    split: str = "test",
    max_eval_images: int | None = None,
    warmup: int = 10,
    runs: int = 50,
    threads: int = 1,
    simulated: Sequence[SimulatedVariant] = (),
    simulated_calib_images: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Export every variant of one subnet, then measure them side by side; return rows and the protocol.

    ``models``: ``"fp32"`` (required: the BN-recalibrated static subnet, eval mode) and ``"qat"`` (the
    `supernet.qat.qat_finetune` result, required if a variant has ``qat=True``); ``"qat:<backend>"`` takes
    precedence over ``"qat"`` for that backend's QAT variants (QAT models trained on different grids, e.g.
    onnxruntime's 7-bit reduce_range and TFLite's 8 bits). Files go to
    ``out_dir/<label><suffix>`` (``.onnx`` / ``.tflite``); each backend exports each model to fp32 once.

    Accuracy: top-1 on the first ``max_eval_images`` images of ``data.<split>``, plus top-1 agreement and max
    |logit difference| with the fp32 file of the same backend (torch fp32 for simulated rows).
    Latency (batch 1, ``threads`` threads): ``warmup + runs`` rounds; in each round every non-simulated
    variant runs once on the same prepared input, in an order shuffled per round (seeded), so load drift
    on a shared machine hits all variants alike. Per variant: median and IQR of its ``runs`` times, and
    ``speed_vs_fp32`` = median over rounds of (fp32 time / variant time) in the same round, fp32 of the same
    backend (> 1 means faster than fp32). Simulated rows have ``latency_* = None`` and ``size_bytes = None``.
    """
    import torch

    if "fp32" not in models:
        raise ValueError("compare_variants: models needs the fp32 subnet under key 'fp32'")
    def model_key(v: QuantRecipe) -> str:
        if not v.qat:
            return "fp32"
        return f"qat:{v.backend}" if f"qat:{v.backend}" in models else "qat"

    missing = sorted({v.backend for v in variants if model_key(v) not in models})
    if missing:
        raise ValueError(f"compare_variants: a QAT variant needs the fine-tuned model under key 'qat' (or "
                         f"'qat:<backend>'); none for {', '.join(missing)}")
    labels = [(v.backend, v.label) for v in variants]
    if len(set(labels)) != len(labels):
        raise ValueError(f"compare_variants: duplicate variants {labels}")
    if warmup < 0 or runs < 1:
        raise ValueError(f"latency protocol: expected warmup >= 0 and runs >= 1, got {warmup} and {runs}")
    targets = {v.backend: get_target(v.backend) for v in variants}
    for v in variants:
        check_backend_config(targets[v.backend], v.config)
    base = models["fp32"]
    res = base.arch.resolution
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_start = machine_state()

    calib_cache: dict[tuple[int, int], list[np.ndarray]] = {}
    paths: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="hwnas-compare-") as tmp:
        fp32_files: dict[tuple[str, str, str], Path] = {}  # (backend, model, export form)
        lowered: dict[Path, Path] = {}
        for v in variants:
            key = model_key(v)
            t = targets[v.backend]
            path = out / f"{v.label}{t.suffix}"
            form = t.export_form(v.config)
            fk = (v.backend, key, form)
            if path not in lowered and fk not in fp32_files:
                fp32_files[fk] = t.export_fp32(models[key], Path(tmp) / f"{v.backend}-{key.replace(':', '-')}-{form}{t.suffix}",
                                               form=form)
            calib = None
            if v.config.precision == "int8":
                ck = (v.config.calib_images, v.config.seed)
                if ck not in calib_cache:
                    calib_cache[ck] = calibration_arrays(data, config=v.config, resolution=res)
                calib = calib_cache[ck]
            path = out / f"{v.label}{t.suffix}"
            if path not in lowered:  # tflite and tflite-builtin run the same file
                lowered[path] = t.lower(fp32_files[fk], path, config=v.config, calib_batches=calib)
            paths.append(lowered[path])

    xs, ys = split_arrays(data, split=split, resolution=res, max_images=max_eval_images)
    runners = [targets[v.backend].runner(p, threads=threads) for v, p in zip(variants, paths)]
    logits = [r(xs) for r in runners]
    with torch.no_grad():
        base.eval()
        torch_ref = np.concatenate([base(torch.from_numpy(xs[i : i + 256])).numpy() for i in range(0, len(xs), 256)])
    ref_idx = {v.backend: i for i, v in enumerate(variants) if v.config.precision == "fp32" and not v.qat}

    feed_x = xs[:1]
    feeds = [r.prepare(feed_x) for r in runners]
    times_ns = time_shuffled_runs(runners, feeds, runs=runs, warmup=warmup, seed=seed)
    times_ms = times_ns / 1e6

    rows: list[dict[str, Any]] = []
    for i, (v, p, lg) in enumerate(zip(variants, paths, logits)):
        ref = logits[ref_idx[v.backend]] if v.backend in ref_idx else torch_ref
        q25, q50, q75 = _quartiles(times_ms[i])
        speed = None
        if v.backend in ref_idx:
            s25, s50, s75 = _quartiles(times_ms[ref_idx[v.backend]] / times_ms[i])
            speed = {"median": s50, "q25": s25, "q75": s75}
        dtypes = targets[v.backend].weight_dtypes(p)
        total_w = sum(dtypes.values())
        rows.append({
            "variant": v.label,
            "backend": v.backend,
            "precision": v.config.precision,
            "qat": v.qat,
            "simulated": False,
            "per_channel": v.config.per_channel if v.config.precision == "int8" else None,
            "calibration": v.config.calibration if v.config.precision == "int8" else None,
            "calib_images": v.config.calib_images if v.config.precision == "int8" else None,
            "reduce_range": (v.config.reduce_range if v.config.precision == "int8" and v.backend == "onnxruntime"
                             else None),
            "path": str(p),
            "top1": float((lg.argmax(1) == ys).mean()),
            "top1_agreement_fp32": float((lg.argmax(1) == ref.argmax(1)).mean()),
            "max_abs_diff_fp32": float(np.abs(lg - ref).max()),
            "size_bytes": p.stat().st_size,
            "weight_dtypes": dtypes,
            "int8_weight_fraction": dtypes.get("int8", 0) / total_w if total_w else 0.0,
            "latency_p50_ms": q50,
            "latency_iqr_ms": q75 - q25,
            "speed_vs_fp32": speed,
            "delegation": None if (dg := runners[i].delegation()) is None else dg.to_json(),
        })
    if simulated:
        from supernet.evaluate import calibration_batches
        from supernet.qat import simulate_quantized

        for sv in simulated:
            # torch batches here; `calib` above holds the exporters' numpy arrays
            sim_calib = (calibration_batches(data, n_images=simulated_calib_images, resolution=res, seed=seed)
                         if sv.spec.act_bits is not None else None)
            sim = simulate_quantized(base, spec=sv.spec, calib_batches=sim_calib,
                                     stage_weight_bits=sv.stage_weight_bits)
            with torch.no_grad():
                lg = np.concatenate([sim(torch.from_numpy(xs[i : i + 256])).numpy() for i in range(0, len(xs), 256)])
            rows.append({
                "variant": sv.label, "backend": "torch (simulated)", "precision": "simulated", "qat": False,
                "simulated": True, "weight_bits": sv.spec.weight_bits, "act_bits": sv.spec.act_bits,
                "per_channel": sv.spec.per_channel, "stage_weight_bits": dict(sv.stage_weight_bits or {}),
                "path": None, "top1": float((lg.argmax(1) == ys).mean()),
                "top1_agreement_fp32": float((lg.argmax(1) == torch_ref.argmax(1)).mean()),
                "max_abs_diff_fp32": float(np.abs(lg - torch_ref).max()),
                "size_bytes": None, "latency_p50_ms": None, "latency_iqr_ms": None, "speed_vs_fp32": None,
            })
    return {
        "arch": str(base.arch),
        "dataset": data.name,
        "split": split,
        "eval_images": int(xs.shape[0]),
        "torch_fp32_top1": float((torch_ref.argmax(1) == ys).mean()),
        "protocol": {
            "threads": threads, "batch_size": int(feed_x.shape[0]), "warmup": warmup, "runs": runs,
            "order": "interleaved: each round runs every variant once, order shuffled per round (seeded)",
            "timer": "time.perf_counter_ns around one invoke of an already prepared input",
            "backends": {name: t.environment() for name, t in targets.items()},
            "machine": platform.machine(), "processor": env_start["cpu_model"],
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "environment_start": env_start,
        "environment_end": machine_state(),
        "rows": rows,
    }


def precision_report(
    model: StaticSubnet,
    data: DataSplits,
    *,
    out_dir: str | os.PathLike[str],
    precisions: Sequence[str] = PRECISIONS,
    per_channel: Sequence[bool] = (True, False),
    config: QuantConfig | None = None,
    split: str = "test",
    max_eval_images: int | None = None,
    warmup: int = 10,
    runs: int = 50,
    backends: Sequence[str] = ("onnxruntime",),
    qat_model: Any = None,
    qat_spec: Any = None,
    simulated: Sequence[SimulatedVariant] = (),
    threads: int = 1,
) -> list[dict[str, Any]]:
    """Export ``model`` at every precision for every backend and compare the variants; one row per variant.

    Variants per backend: fp32 first (the reference, always), then each other entry of ``precisions``; int8
    once per ``per_channel`` setting, with the other int8 settings of ``config`` (default `QuantConfig()`),
    plus ``int8-qat-*`` rows when ``qat_model`` is given, then the ``simulated`` rows (torch only, no
    latency). ``qat_spec`` (required with ``qat_model``) is the `supernet.qat.FakeQuantSpec` it was trained with:
    a QAT row is emitted only for the (backend, int8 setting) whose `qat_spec_for` is that spec, so a model
    trained per channel is never reported as ``int8-qat-pt-*`` (nor one trained on onnxruntime's 7-bit grid
    as a TFLite file). Rows, measurement and protocol as in `compare_variants`; written with the machine state to
    ``out_dir/precision_report.json``; models go to ``out_dir/<label>.onnx`` / ``.tflite``.
    """
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ValueError(f"precisions {list(precisions)!r}: expected a non-empty subset of {', '.join(PRECISIONS)}")
    if qat_model is not None and qat_spec is None:
        raise ValueError("precision_report: qat_model needs qat_spec, the FakeQuantSpec it was trained with")
    base = config or QuantConfig()
    variants: list[QuantRecipe] = []
    for backend in backends:
        variants.append(QuantRecipe(backend=backend, config=base.replace(precision="fp32")))
        for p in precisions:
            if p == "int8":
                int8 = [base.replace(precision="int8", per_channel=pc) for pc in per_channel]
                variants += [QuantRecipe(backend=backend, config=c) for c in int8]
                if qat_model is not None:
                    variants += [QuantRecipe(backend=backend, config=c, qat=True) for c in int8
                                 if qat_spec_for(c, backend=backend) == qat_spec]
            elif p != "fp32":
                variants.append(QuantRecipe(backend=backend, config=base.replace(precision=p)))
    models = {"fp32": model} if qat_model is None else {"fp32": model, "qat": qat_model}
    result = compare_variants(models, variants, data, out_dir=out_dir, split=split, max_eval_images=max_eval_images,
                              warmup=warmup, runs=runs, threads=threads, simulated=simulated)
    atomic_write_json(Path(out_dir) / "precision_report.json", {"schema_version": REPORT_SCHEMA_VERSION, **result})
    return result["rows"]


# --------------------------------------------------------------------------- one subnet, end to end
@dataclass(frozen=True, kw_only=True)
class QATPolicy:
    """When and how `quantize_subnet` runs QAT.

    QAT runs if ``force`` or if int8 PTQ loses more than ``threshold_pts`` top-1 points against the fp32 file
    of the same backend on ``decide_split`` (validation by default: the test split is never used to decide).
    ``config`` is a `supernet.qat.QATConfig` (None: its defaults).
    """

    threshold_pts: float = 1.0
    force: bool = False
    config: Any = None
    decide_split: str = "val"
    decide_max_images: int | None = None

    def __post_init__(self) -> None:
        if not self.threshold_pts >= 0:
            raise ValueError(f"QAT threshold: expected >= 0 top-1 points, got {self.threshold_pts}")
        if self.decide_split not in ("train", "val", "test"):
            raise ValueError(f"decide_split {self.decide_split!r}: expected 'train', 'val' or 'test'")


def qat_spec_for(config: QuantConfig, *, backend: str) -> Any:
    """The fake quantization that matches ``config`` on ``backend``: 8-bit symmetric weights (7-bit, q_max 64,
    for onnxruntime's reduce_range), per channel or per tensor as ``config``; int8 activations."""
    from supernet.qat import FakeQuantSpec

    qmax = 64 if backend == "onnxruntime" and config.reduce_range else None
    return FakeQuantSpec(weight_bits=8, per_channel=config.per_channel, weight_qmax=qmax, act_bits=8)


def runner_top1(runner: Runner, xs: np.ndarray, ys: np.ndarray) -> float:
    """Top-1 of a loaded model on inputs ``xs`` (N, C, H, W) with labels ``ys`` (N,)."""
    return float((runner(xs).argmax(1) == ys).mean())


def ptq_loss(
    model: StaticSubnet,
    data: DataSplits,
    *,
    backend: str,
    config: QuantConfig,
    split: str = "val",
    max_images: int | None = None,
    ptq_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Top-1 of the fp32 and the int8 PTQ file of ``model`` on ``backend`` over ``data.<split>``: the numbers
    the QAT rule (`supernet.qat.should_run_qat`) decides on. ``ptq_path``: an existing PTQ export to reuse."""
    target = get_target(backend)
    xs, ys = split_arrays(data, split=split, resolution=model.arch.resolution, max_images=max_images)
    with tempfile.TemporaryDirectory(prefix="hwnas-ptq-loss-") as tmp:
        fp32 = export_variant(model, Path(tmp) / f"fp32{target.suffix}", backend=backend,
                              config=config.replace(precision="fp32"), data=data)
        fp32_top1 = runner_top1(target.runner(fp32), xs, ys)
        if ptq_path is None:
            ptq_path = export_variant(model, Path(tmp) / f"ptq{target.suffix}", backend=backend, config=config,
                                      data=data)
        ptq_top1 = runner_top1(target.runner(Path(ptq_path)), xs, ys)
    return {"backend": backend, "variant": config.label, "split": split, "images": len(ys),
            "fp32_top1": fp32_top1, "ptq_top1": ptq_top1, "ptq_drop_pts": 100 * (fp32_top1 - ptq_top1)}


def quantize_subnet(
    model: StaticSubnet,
    data: DataSplits,
    *,
    out_dir: str | os.PathLike[str],
    config: QuantConfig,
    backend: str = "onnxruntime",
    qat: QATPolicy | None = None,
    report: bool = True,
    split: str = "test",
    simulated: Sequence[SimulatedVariant] = (),
    warmup: int = 10,
    runs: int = 50,
) -> dict[str, Any]:
    """Export ``model`` for ``backend`` at ``config``; optionally QAT (per ``qat``) and a precision report.

    Writes ``out_dir/<arch>.<label><suffix>`` (PTQ), with QAT also ``<arch>.int8-qat-...<suffix>`` (then the
    deliverable), ``<arch>.<label>.json`` (this summary) and with ``report`` ``<arch>.report/``. Returns the
    summary: ``path`` (the file to deploy), sizes, the QAT decision with its numbers, and the report rows.
    """
    target = get_target(backend)
    check_backend_config(target, config)
    if qat is not None and config.precision != "int8":
        raise ValueError(f"QAT needs precision int8, got {config.precision!r}")
    out = Path(out_dir)
    arch = str(model.arch)
    ptq = export_variant(model, out / f"{arch}.{config.label}{target.suffix}", backend=backend, config=config,
                         data=data)
    summary: dict[str, Any] = {
        "arch": model.arch.to_json(), "arch_str": arch, "backend": backend,
        "backend_environment": target.environment(),
        "quant_config": asdict(config), "path": str(ptq), "ptq_path": str(ptq), "size_bytes": ptq.stat().st_size,
        "weight_dtypes": target.weight_dtypes(ptq), "qat": None,
    }
    qat_model = qat_spec = None
    if qat is not None:
        from supernet.qat import QATConfig, qat_finetune, should_run_qat

        xs, ys = split_arrays(data, split=qat.decide_split, resolution=model.arch.resolution,
                               max_images=qat.decide_max_images)
        decision = ptq_loss(model, data, backend=backend, config=config, split=qat.decide_split,
                            max_images=qat.decide_max_images, ptq_path=ptq)
        run = should_run_qat(fp32_top1=decision["fp32_top1"], ptq_top1=decision["ptq_top1"],
                             threshold_pts=qat.threshold_pts, force=qat.force)
        decision.update({"threshold_pts": qat.threshold_pts, "forced": qat.force, "ran": run})
        fp32_top1 = decision["fp32_top1"]
        if run:
            qcfg = qat.config or QATConfig()
            qat_spec = qat_spec_for(config, backend=backend)
            res = qat_finetune(model, data, config=qcfg, spec=qat_spec, calib_images=config.calib_images,
                               calib_seed=config.seed)
            qat_model = res.model
            variant = QuantRecipe(backend=backend, config=config, qat=True)
            qpath = export_variant(qat_model, out / f"{arch}.{variant.label}{target.suffix}", backend=backend,
                                   config=config, data=data)
            qat_top1 = runner_top1(target.runner(qpath), xs, ys)
            decision.update({"qat_top1": qat_top1, "qat_drop_pts": 100 * (fp32_top1 - qat_top1), "path": str(qpath),
                             "steps": res.steps, "images_seen": res.images, "seconds": res.seconds,
                             "loss_first": res.loss_first, "loss_last": res.loss_last, "config": res.config})
            summary.update({"path": str(qpath), "size_bytes": qpath.stat().st_size,
                            "weight_dtypes": target.weight_dtypes(qpath)})
        summary["qat"] = decision
    if report:
        rows = precision_report(model, data, out_dir=out / f"{arch}.report", config=config, split=split,
                                backends=(backend,), qat_model=qat_model, qat_spec=qat_spec, simulated=simulated, warmup=warmup,
                                runs=runs)
        summary["report"] = {"path": str(out / f"{arch}.report" / "precision_report.json"), "rows": rows}
    atomic_write_json(out / f"{arch}.{config.label}.json", summary)
    return summary
