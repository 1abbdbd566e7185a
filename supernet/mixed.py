"""Per-layer mixed int8 / fp32 precision for onnxruntime, chosen by measured sensitivity and latency gain.

As in HAQ (Wang et al., CVPR 2019) and APQ (Wang et al., CVPR 2020) the unit of choice is a layer (one
`supernet.layers.LayerSpec`: stem, an MBConv block, final expand, head) and the decision uses what was measured,
not a proxy:

* **sensitivity** ``s_i``: top-1 points lost against the fp32 file when *only* layer ``i`` is int8 (every other
  layer fp32), on the validation split;
* **gain** ``g_i``: milliseconds saved by running layer ``i`` in int8, from per-precision latency tables
  (``fp32 row - int8 row`` of the layer's key, `latency_tables`), when given.

Policy (`choose_mixed`): a layer whose int8 row is not faster than its fp32 row (``g_i <= 0``) stays fp32 (a
slower layer never pays); then, starting from every other layer int8, while the file loses more than
``budget_pts`` against fp32, the layer with the largest ``s_i / max(g_i, eps)`` (most accuracy per millisecond
given up) goes back to fp32 and the file is measured again. Each step is a real lowering and evaluation, so the
reported accuracy is the deployed file's. Without tables every ``g_i`` is 1 (order by sensitivity alone).

Notation: top-1 values are fractions in [0, 1]; ``*_pts`` are percentage points (100 x a top-1 difference).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from supernet.data import DataSplits
    from supernet.layers import StaticSubnet
    from supernet.quantize import QuantConfig

__all__ = ["LayerSensitivity", "MixedPolicy", "choose_mixed", "layer_gains_ms", "layer_sensitivities"]

log = logging.getLogger(__name__)
_EPS_MS = 1e-3


@dataclass(frozen=True, kw_only=True)
class LayerSensitivity:
    """One layer: its index in `supernet.layers.layer_specs`, LUT key, sensitivity and int8 gain."""

    index: int
    key: str
    only_int8_top1: float
    sensitivity_pts: float
    gain_ms: float | None


@dataclass(frozen=True, kw_only=True)
class MixedPolicy:
    """The chosen fp32 layers and the measured accuracy of the resulting file (split ``split``)."""

    fp32_layers: tuple[int, ...]
    budget_pts: float
    split: str
    images: int
    fp32_top1: float
    int8_top1: float
    mixed_top1: float
    layers: tuple[LayerSensitivity, ...]
    steps: tuple[dict[str, Any], ...]

    @property
    def mixed_loss_pts(self) -> float:
        return 100 * (self.fp32_top1 - self.mixed_top1)

    @property
    def int8_loss_pts(self) -> float:
        return 100 * (self.fp32_top1 - self.int8_top1)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["fp32_layers"] = list(self.fp32_layers)
        d["mixed_loss_pts"], d["int8_loss_pts"] = self.mixed_loss_pts, self.int8_loss_pts
        return d


def layer_gains_ms(keys: Sequence[str], *, fp32_rows: Mapping[str, float], int8_rows: Mapping[str, float]
                   ) -> list[float | None]:
    """Per layer, fp32 minus int8 latency (ms) from two tables' rows (key -> ms); None where a row is missing."""
    return [fp32_rows[k] - int8_rows[k] if k in fp32_rows and k in int8_rows else None for k in keys]


class _Evaluator:
    """Lowers one subnet with different fp32 layer sets and measures each file's top-1 (calibrating once)."""

    def __init__(self, model: StaticSubnet, data: DataSplits, *, config: QuantConfig, split: str,
                 max_images: int | None, tmp: Path) -> None:
        from supernet.quantize import calibration_arrays, get_target, split_arrays

        self._target = get_target("onnxruntime")
        self._tmp = tmp
        self._config = config
        self.fp32 = self._target.export_fp32(model, tmp / "fp32.onnx")
        self._calib = calibration_arrays(data, config=config, resolution=model.arch.resolution)
        self._memo: dict[str, bytes] = {}
        self.xs, self.ys = split_arrays(data, split=split, resolution=model.arch.resolution, max_images=max_images)
        self.fp32_top1 = self._top1(self.fp32)
        self._seen: dict[tuple[int, ...], float] = {}

    def _top1(self, path: Path) -> float:
        from supernet.quantize import runner_top1

        return runner_top1(self._target.runner(path), self.xs, self.ys)

    def lower(self, fp32_layers: Sequence[int], out: Path) -> Path:
        from supernet.quantize import quantize_onnx

        cfg = self._config.replace(precision="int8", fp32_layers=tuple(fp32_layers))
        return quantize_onnx(self.fp32, out, config=cfg, calib_batches=self._calib, calibration_memo=self._memo)

    def top1(self, fp32_layers: Sequence[int]) -> float:
        key = tuple(sorted(fp32_layers))
        if key not in self._seen:
            self._seen[key] = self._top1(self.lower(key, self._tmp / f"m{len(self._seen)}.onnx"))
        return self._seen[key]


def layer_sensitivities(
    model: StaticSubnet,
    data: DataSplits,
    *,
    config: QuantConfig,
    gains_ms: Sequence[float | None] | None = None,
    split: str = "val",
    max_images: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    _evaluator: _Evaluator | None = None,
) -> tuple[float, float, list[LayerSensitivity]]:
    """(fp32 top-1, all-int8 top-1, per-layer sensitivity) of ``model`` lowered by onnxruntime with ``config``.

    One int8 file per layer (that layer int8, the rest fp32), calibrated once; ``progress(done, total)``."""
    from supernet.layers import layer_specs

    specs = layer_specs(model.backbone, model.arch)
    if gains_ms is not None and len(gains_ms) != len(specs):
        raise ValueError(f"gains_ms: expected one value per layer ({len(specs)}), got {len(gains_ms)}")
    with tempfile.TemporaryDirectory(prefix="hwnas-mixed-") as tmp:
        ev = _evaluator or _Evaluator(model, data, config=config, split=split, max_images=max_images, tmp=Path(tmp))
        everything = list(range(len(specs)))
        int8_top1 = ev.top1(())
        out = []
        for i, spec in enumerate(specs):
            only = ev.top1([j for j in everything if j != i])
            out.append(LayerSensitivity(index=i, key=spec.key, only_int8_top1=only,
                                        sensitivity_pts=100 * (ev.fp32_top1 - only),
                                        gain_ms=None if gains_ms is None else gains_ms[i]))
            if progress is not None:
                progress(i + 1, len(specs))
        return ev.fp32_top1, int8_top1, out


def choose_mixed(
    model: StaticSubnet,
    data: DataSplits,
    *,
    config: QuantConfig,
    budget_pts: float = 0.5,
    gains_ms: Sequence[float | None] | None = None,
    split: str = "val",
    max_images: int | None = None,
    out_path: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> MixedPolicy:
    """The per-layer int8 / fp32 policy of the module docstring; with ``out_path`` also writes its file."""
    from supernet.quantize import QuantConfig as _QC

    if not isinstance(config, _QC):
        raise TypeError("config: expected a supernet.quantize.QuantConfig")
    if not budget_pts >= 0:
        raise ValueError(f"budget_pts: expected >= 0 top-1 points, got {budget_pts}")
    with tempfile.TemporaryDirectory(prefix="hwnas-mixed-") as tmp:
        ev = _Evaluator(model, data, config=config, split=split, max_images=max_images, tmp=Path(tmp))
        fp32_top1, int8_top1, layers = layer_sensitivities(
            model, data, config=config, gains_ms=gains_ms, split=split, _evaluator=ev,
            progress=None if progress is None else (lambda d, n: progress(f"sensitivity {d}/{n}")))
        keep = sorted(ly.index for ly in layers if ly.gain_ms is not None and ly.gain_ms <= 0)
        steps: list[dict[str, Any]] = []
        top1 = ev.top1(keep)
        steps.append({"fp32_layers": list(keep), "top1": top1, "why": "int8 not faster (tables)" if keep else "all int8"})

        def score(ly: LayerSensitivity) -> float:
            gain = 1.0 if ly.gain_ms is None else max(ly.gain_ms, _EPS_MS)
            return ly.sensitivity_pts / gain

        order = sorted((ly for ly in layers if ly.index not in keep), key=score, reverse=True)
        for ly in order:
            if 100 * (fp32_top1 - top1) <= budget_pts:
                break
            keep = sorted([*keep, ly.index])
            top1 = ev.top1(keep)
            steps.append({"fp32_layers": list(keep), "top1": top1, "added": ly.index,
                          "sensitivity_pts": ly.sensitivity_pts, "gain_ms": ly.gain_ms})
            if progress is not None:
                progress(f"fp32 layers {keep}: top-1 {top1:.4f}")
        if out_path is not None:
            ev.lower(keep, Path(out_path))
        return MixedPolicy(fp32_layers=tuple(keep), budget_pts=float(budget_pts), split=split, images=len(ev.ys),
                           fp32_top1=fp32_top1, int8_top1=int8_top1, mixed_top1=top1, layers=tuple(layers),
                           steps=tuple(steps))
