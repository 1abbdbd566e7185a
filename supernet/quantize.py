"""Reduced-precision export of a static subnet: fp16 and int8 post-training quantization for onnxruntime.

Pipeline: the fp32 ONNX file of `supernet.export.export_onnx` ->
  * ``fp16``: every float initializer and op converted to float16, graph inputs/outputs kept float32
    (`onnxruntime.transformers.float16`). On an x86 CPU onnxruntime has few fp16 kernels and inserts casts to
    fp32 around the rest, so fp16 there halves the file but is not a speed-up; it is for backends with fp16
    arithmetic (ARM with fp16, GPU, NPU delegates).
  * ``int8``: static post-training quantization in QDQ format (`onnxruntime.quantization.quantize_static`)
    after `quant_pre_process` (shape inference, BN folded into Conv). Weights are symmetric int8, per output
    channel by default; activations are int8 with ranges calibrated on ``calib_images`` seeded training
    images (min-max, percentile or entropy). Per-tensor weights are available for comparison only: folding
    BN into MobileNetV3's depthwise convs gives per-channel weight ranges that differ by orders of
    magnitude, and a single scale per tensor rounds the small channels to zero (known accuracy collapse).

TFLite full-integer quantization is not implemented here (see docs/bitwidths.md).

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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import typer

from supernet.io import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from supernet.data import DataSplits
    from supernet.layers import StaticSubnet

__all__ = [
    "CALIBRATION_METHODS",
    "PRECISIONS",
    "Precision",
    "QuantConfig",
    "export_precision",
    "int8_weight_fraction",
    "precision_report",
    "quantize_cmd",
    "quantize_onnx",
]

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy")
_WEIGHT_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
REPORT_SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class QuantConfig:
    """How to lower an fp32 model.

    Attributes:
        precision: ``fp32`` (copy), ``fp16`` or ``int8``.
        per_channel: int8 only: one weight scale per output channel (True) or per tensor (False).
        calibration: int8 only: activation range estimator, ``minmax``, ``percentile`` or ``entropy``.
        percentile: for ``calibration="percentile"``: the percentile of |activation| taken as the range, in %.
        reduce_range: int8 only: 7-bit weights (-64..63). Needed for onnxruntime on x86 CPUs with AVX2 but no
            VNNI, whose u8 x s8 kernels (VPMADDUBSW) saturate int16 pair sums with full-range weights; measured
            here on a digits-trained subnet: per-channel top-1 agreement with fp32 0.94 without, 0.98 with
            (the un-fused QDQ graph gives 0.98 either way). Set False for ARM or VNNI targets.
        entropy_bins: for ``calibration="entropy"``: histogram bins searched for the 128-level range with the
            least KL divergence (TensorRT uses 2048). onnxruntime's search is a Python loop, roughly
            quadratic in the bins: on the tiny test subnet (120 tensors, loaded 2-core VM) 2048 bins took
            135 s, hence 512 by default.
        calib_images: int8 only: training images used for calibration (seeded random subset).
        seed: seed of that subset.
    """

    precision: str = "int8"
    per_channel: bool = True
    calibration: str = "minmax"
    percentile: float = 99.999
    reduce_range: bool = True
    entropy_bins: int = 512
    calib_images: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
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
        return f"int8-{'pc' if self.per_channel else 'pt'}-{self.calibration}"


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


def _calibration_samples(
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


def _session(path: str | os.PathLike[str], *, threads: int = 1) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- public API
def quantize_onnx(
    fp32_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    config: QuantConfig,
    calib_batches: Iterable[np.ndarray] | None = None,
) -> Path:
    """Lower the fp32 ONNX model ``fp32_path`` to ``config.precision`` and write it atomically to ``out_path``.

    ``calib_batches`` (int8 only, required there) yields float32 arrays (N, C, H, W) preprocessed exactly as
    at inference; a model with a fixed batch of 1 is fed one image at a time. All of them are used: choosing
    ``config.calib_images`` of them is the caller's job (`export_precision` does it).

    Raises:
        FileNotFoundError: ``fp32_path`` is missing.
        ValueError: int8 without calibration data, or calibration arrays of the wrong shape / not finite.
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

    if calib_batches is None:
        raise ValueError("int8 quantization needs calibration data (calib_batches), got None")
    name, shape = _input_spec(src)
    samples = _calibration_samples(calib_batches, shape=shape, where=f"quantize {src.name}")
    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[config.calibration]
    with tempfile.TemporaryDirectory(prefix="hwnas-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        except ImportError:  # pragma: no cover - older onnxruntime
            log.warning("quant_pre_process unavailable; quantizing the un-optimised graph (BN not folded)")
            pre = src
        kwargs: dict[str, Any] = {"calibration_data_reader": _Reader(name, samples)}
        if "calibration_cache_path" in inspect.signature(quantize_static).parameters:
            # Calibrate ourselves so the histogram settings reach the calibrator (quantize_static does not pass
            # them on; its entropy default of 128 bins = 128 quantized bins leaves min-max as the only candidate).
            kwargs = {"calibration_data_reader": None,
                      "calibration_cache_path": _calibrate(pre, samples, name=name, config=config, tmp=Path(tmp))}
        elif config.calibration == "entropy":  # pragma: no cover - onnxruntime < 1.32
            log.warning("this onnxruntime cannot set entropy histogram bins; entropy calibration equals min-max")
        q_path = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre),
            str(q_path),
            quant_format=QuantFormat.QDQ,
            per_channel=config.per_channel,
            reduce_range=config.reduce_range,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            extra_options={"CalibPercentile": float(config.percentile), "WeightSymmetric": True},
            **kwargs,
        )
        atomic_write_bytes(target, q_path.read_bytes())
    log.info("wrote %s (%s, %d calibration feeds)", target, config.label, len(samples))
    return target


def export_precision(
    model: StaticSubnet, out_path: str | os.PathLike[str], *, config: QuantConfig, data: DataSplits
) -> Path:
    """Export ``model`` (eval mode, BN already recalibrated) at ``config.precision`` to ``out_path``.

    int8 calibrates on ``config.calib_images`` un-augmented training images of ``data`` at the model's
    resolution (seeded by ``config.seed``), normalised as at inference.
    """
    from supernet.evaluate import calibration_batches
    from supernet.export import export_onnx

    with tempfile.TemporaryDirectory(prefix="hwnas-export-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", input_shape=model.input_shape)
        calib = None
        if config.precision == "int8":
            calib = (
                x.numpy()
                for x in calibration_batches(
                    data, n_images=config.calib_images, resolution=model.arch.resolution, seed=config.seed
                )
            )
        return quantize_onnx(fp32, out_path, config=config, calib_batches=calib)


def int8_weight_fraction(onnx_path: str | os.PathLike[str]) -> float:
    """Share of weight parameters of Conv/ConvTranspose/Gemm/MatMul nodes stored as int8 initializers.

    A weight counts as int8 when the node's second input is an INT8 initializer or the output of a
    DequantizeLinear whose input is one (QDQ format). Weighted by element count; 0.0 for a model without such
    weights.
    """
    import onnx

    model = onnx.load(str(_check_model_file(onnx_path)))
    inits = {i.name: i for i in model.graph.initializer}
    producer = {out: n for n in model.graph.node for out in n.output}
    int8 = total = 0
    for node in model.graph.node:
        if node.op_type not in _WEIGHT_OPS or len(node.input) < 2:
            continue
        w = node.input[1]
        src = producer.get(w)
        if w not in inits and src is not None and src.op_type == "DequantizeLinear":
            w = src.input[0]
        if w not in inits:
            continue  # weight computed at run time (e.g. MatMul of two activations)
        t = inits[w]
        n = int(np.prod(t.dims)) if len(t.dims) else 1
        total += n
        int8 += n if t.data_type == onnx.TensorProto.INT8 else 0
    return int8 / total if total else 0.0


def _logits(sess: Any, xs: np.ndarray) -> np.ndarray:
    """Run ``xs`` (N, C, H, W) through ``sess`` honouring a fixed batch dimension."""
    inp = sess.get_inputs()[0]
    b = inp.shape[0] if isinstance(inp.shape[0], int) else xs.shape[0]
    out = [sess.run(None, {inp.name: xs[i : i + b]})[0] for i in range(0, xs.shape[0] - b + 1, b)]
    return np.concatenate(out)


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
) -> list[dict[str, Any]]:
    """Export ``model`` at every precision and compare the variants; one row per variant.

    Variants: fp32 first (the reference, always), then each other entry of ``precisions``; int8 once per
    ``per_channel`` setting, with the other int8 settings of ``config`` (default `QuantConfig()`). Each row: top-1 on ``data.<split>`` (first ``max_eval_images``)
    through onnxruntime, top-1 agreement and max |logit difference| with the fp32 file on the same images,
    file size in bytes, int8 weight share, and latency in ms (median and IQR of ``runs`` batch-1 runs).
    Latency is measured interleaved: each round runs every variant once on the same input, after
    ``warmup`` rounds, so load drift on a shared machine hits all variants alike; onnxruntime CPU, 1 thread.
    Models go to ``out_dir/<label>.onnx``; rows plus the protocol to ``out_dir/precision_report.json``.
    """
    import onnxruntime as ort

    if split not in ("train", "val", "test"):
        raise ValueError(f"split {split!r}: expected 'train', 'val' or 'test'")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise ValueError(f"precisions {list(precisions)!r}: expected a non-empty subset of {', '.join(PRECISIONS)}")
    if warmup < 0 or runs < 1:
        raise ValueError(f"latency protocol: expected warmup >= 0 and runs >= 1, got {warmup} and {runs}")
    base = config or QuantConfig()
    variants: list[QuantConfig] = [QuantConfig(**{**asdict(base), "precision": "fp32"})]
    for p in precisions:
        if p == "int8":
            variants += [QuantConfig(**{**asdict(base), "precision": "int8", "per_channel": pc}) for pc in per_channel]
        elif p != "fp32":
            variants.append(QuantConfig(**{**asdict(base), "precision": p}))
    out = Path(out_dir)
    paths = [export_precision(model, out / f"{v.label}.onnx", config=v, data=data) for v in variants]

    from supernet.data import iterate_batches

    ds = getattr(data, split)
    xs_l, ys_l = [], []
    for x, y in iterate_batches(ds, batch_size=256, mean=data.mean, std=data.std, resolution=model.arch.resolution):
        xs_l.append(x.numpy())
        ys_l.append(y.numpy())
    if not xs_l:
        raise ValueError(f"split {split!r} of {data.name!r} is empty; nothing to measure accuracy on")
    xs, ys = np.concatenate(xs_l)[:max_eval_images], np.concatenate(ys_l)[:max_eval_images]

    sessions = [_session(p) for p in paths]
    logits = [_logits(s, xs) for s in sessions]
    ref = logits[0]

    feed = xs[:1]
    times_ns: list[list[int]] = [[] for _ in sessions]
    names = [s.get_inputs()[0].name for s in sessions]
    for r in range(warmup + runs):
        for i, s in enumerate(sessions):
            t0 = time.perf_counter_ns()
            s.run(None, {names[i]: feed})
            if r >= warmup:
                times_ns[i].append(time.perf_counter_ns() - t0)

    rows: list[dict[str, Any]] = []
    for v, p, lg, t in zip(variants, paths, logits, times_ns):
        q25, q50, q75 = np.percentile(np.asarray(t, dtype=np.float64) / 1e6, [25, 50, 75])
        rows.append({
            "variant": v.label,
            "precision": v.precision,
            "per_channel": v.per_channel if v.precision == "int8" else None,
            "calibration": v.calibration if v.precision == "int8" else None,
            "calib_images": v.calib_images if v.precision == "int8" else None,
            "reduce_range": v.reduce_range if v.precision == "int8" else None,
            "path": str(p),
            "top1": float((lg.argmax(1) == ys).mean()),
            "top1_agreement_fp32": float((lg.argmax(1) == ref.argmax(1)).mean()),
            "max_abs_diff_fp32": float(np.abs(lg - ref).max()),
            "size_bytes": p.stat().st_size,
            "int8_weight_fraction": int8_weight_fraction(p),
            "latency_p50_ms": float(q50),
            "latency_iqr_ms": float(q75 - q25),
        })
    atomic_write_json(out / "precision_report.json", {
        "schema_version": REPORT_SCHEMA_VERSION,
        "arch": str(model.arch),
        "dataset": data.name,
        "split": split,
        "eval_images": int(xs.shape[0]),
        "protocol": {
            "backend": "onnxruntime", "backend_version": ort.__version__, "provider": "CPUExecutionProvider",
            "threads": 1, "batch_size": int(feed.shape[0]), "warmup": warmup, "runs": runs,
            "order": "interleaved", "machine": platform.machine(), "processor": platform.processor(),
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "rows": rows,
    })
    return rows


# --------------------------------------------------------------------------- CLI
def quantize_cmd(
    arch: Annotated[str, typer.Option(help="largest | smallest | arch JSON file | inline JSON | r28-d2... string")],
    supernet: Annotated[Path, typer.Option(help="supernet.pt written by 'hwnas train'.")] = Path(
        "hwnas-runs/supernet/supernet.pt"
    ),
    precision: Annotated[str, typer.Option(help="fp32 | fp16 | int8")] = "int8",
    backend: Annotated[str, typer.Option(help="Target runtime; only onnxruntime for now.")] = "onnxruntime",
    per_channel: Annotated[
        bool, typer.Option("--per-channel/--per-tensor", help="int8 weight scales per output channel or per tensor.")
    ] = True,
    calibration: Annotated[str, typer.Option(help="int8 activation ranges: minmax | percentile | entropy")] = "minmax",
    reduce_range: Annotated[
        bool, typer.Option("--reduce-range/--full-range", help="7-bit int8 weights (x86 AVX2 without VNNI).")
    ] = True,
    calib_images: Annotated[int, typer.Option(help="Training images for int8 calibration.")] = 256,
    bn_images: Annotated[int, typer.Option(help="Training images for BN recalibration before export.")] = 1000,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: beside the supernet).")] = None,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Also compare fp32/fp16/int8: accuracy, size, latency.")
    ] = True,
    split: Annotated[str, typer.Option(help="Split for the report's accuracy: train | val | test.")] = "test",
    seed: Annotated[int, typer.Option(help="Seed of the calibration subset.")] = 0,
) -> None:
    """Export one subnet at reduced precision (QDQ int8 or fp16 ONNX) and report accuracy, size and latency."""
    from hwnas.pipeline import load_supernet_and_data
    from supernet.evaluate import recalibrated_subnet
    from supernet.space import InvalidArchError, resolve_arch

    def fail(msg: str) -> None:
        typer.echo(f"error: {msg}", err=True)
        raise typer.Exit(2)

    if backend != "onnxruntime":
        fail(f"--backend {backend!r}: only 'onnxruntime' is supported (TFLite full-integer is not implemented)")
    try:
        cfg_q = QuantConfig(precision=precision, per_channel=per_channel, calibration=calibration,
                            reduce_range=reduce_range, calib_images=calib_images, seed=seed)
        net, data = load_supernet_and_data(supernet)
        cfg = resolve_arch(arch, net.space)
        if bn_images > 0:
            sub = recalibrated_subnet(net, cfg, data, bn_images=bn_images, seed=seed)
        else:
            sub = net.get_active_subnet(cfg).eval()
        folder = out or supernet.parent / "quantized"
        path = export_precision(sub, folder / f"{cfg}.{cfg_q.label}.onnx", config=cfg_q, data=data)
        atomic_write_json(folder / f"{cfg}.{cfg_q.label}.json",
                          {"arch": cfg.to_json(), "quant_config": asdict(cfg_q), "backend": backend,
                           "supernet": str(supernet), "bn_images": bn_images})
        typer.echo(f"wrote {path} ({path.stat().st_size / 1e3:.1f} kB, int8 weight share "
                   f"{int8_weight_fraction(path):.2f})")
        if report:
            rows = precision_report(sub, data, out_dir=folder / f"{cfg}.report", config=cfg_q, split=split)
            typer.echo(f"{'variant':<22}{'top1':>8}{'agree':>8}{'size kB':>10}{'p50 ms':>9}{'iqr ms':>9}")
            for r in rows:
                typer.echo(f"{r['variant']:<22}{r['top1']:>8.4f}{r['top1_agreement_fp32']:>8.3f}"
                           f"{r['size_bytes'] / 1e3:>10.1f}{r['latency_p50_ms']:>9.3f}{r['latency_iqr_ms']:>9.3f}")
            typer.echo(f"report: {folder / f'{cfg}.report' / 'precision_report.json'}")
    except (InvalidArchError, ValueError, FileNotFoundError, ImportError) as e:
        fail(str(e))
