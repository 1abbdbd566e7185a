"""Subnet latency from a table: the plain LUT sum plus a learned correction, and how well both do.

Notation
--------
For an architecture with layers l = 1..L and table latencies t_l (ms):

    plain sum      S = sum_l t_l
    corrected      y_hat = c_0 + sum_f c_f * x_f,   features x = (S, L, MACs / 1e6, sum of expanded channels / 1e3)

The correction captures what a plain sum misses: every one-layer measurement pays the runtime's per-inference
overhead once (a whole subnet pays it once, not L times), operator fusion across layer boundaries, and memory
effects of a larger working set. It is fitted by ridge regression (scikit-learn) on K end-to-end-measured subnets
with weights 1 / y^2, i.e. minimising squared *relative* error; coefficients are stored in raw feature units, so a
saved predictor is plain JSON (never a pickle) and predicting needs only numpy.

Precision: a predictor belongs to one table and so to its precision (``table.meta.precision``). Its correction is
fitted on subnets measured end to end at that precision (`validate` quantizes them exactly as the table's layers
were); every query may state the precision it means, and a different one raises
`latency_tables.table.PrecisionMismatchError`.

Statistic: likewise a predictor belongs to one statistic of its table (``table.statistic``: median by default, or
best, p90, p99, ...). Its correction is fitted on the same statistic of the end-to-end measurements, it records the
statistic, and loading it onto a table answering in another one, or asking it for another, raises
`latency_tables.table.StatisticMismatchError`. A p99 predictor is a tail model in its own right: the p99 of a whole
network is not the sum of its layers' p99s, which is what the correction is fitted to absorb.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.protocol import MeasurementProtocol, agreement
from latency_tables.table import (
    LatencyTable,
    PrecisionMismatchError,
    StatisticMismatchError,
    measure_models,
    measurement_agreement,
    table_backend_kwargs,
)
from supernet.errors import InputError
from supernet.io import atomic_write_json, read_json
from supernet.layers import LayerSpec
from supernet.progress import ProgressArg
from supernet.space import ArchConfig, InvalidArchError, SearchSpace

__all__ = [
    "FEATURES",
    "FEATURE_SETS",
    "PREDICTOR_SCHEMA_VERSION",
    "LatencyPredictor",
    "Metrics",
    "PredictorError",
    "ValidationReport",
    "as_arch",
    "candidate_feature_sets",
    "fit_correction",
    "metrics",
    "min_fit_subnets",
    "plot_predicted_vs_measured",
    "predict_latency",
    "predictor_statistic",
    "read_measured_archs",
    "resolve_table",
    "validate",
    "validate_measured",
]

PREDICTOR_SCHEMA_VERSION = 1
ArchLike = ArchConfig | str | Mapping[str, Any]


class PredictorError(InputError):
    """A predictor file cannot be used (schema, feature names, or it was fitted on another table)."""


# Feature name -> f(layers with their table latency). Everything here is derived from `layer_specs` output.
def _sum_ms(rows: Sequence[tuple[LayerSpec, float]]) -> float:
    return float(sum(ms for _, ms in rows))


def _lut_ms_of_kernel(k: int | None) -> Callable[[Sequence[tuple[LayerSpec, float]]], float]:
    """Table time of the MBConv layers with kernel ``k`` (None: every other layer: stem, head, other kernels)."""

    def f(rows: Sequence[tuple[LayerSpec, float]]) -> float:
        if k is None:
            return float(sum(ms for s, ms in rows if not (s.op == "mbconv" and s.kernel in _SPLIT_KERNELS)))
        return float(sum(ms for s, ms in rows if s.op == "mbconv" and s.kernel == k))

    return f


def _dense_weights(s: LayerSpec) -> int:
    """Weights of a layer's full and 1x1 convolutions and linear layers (the depthwise and SE weights excluded)."""
    if s.op in ("stem", "final_expand"):
        return s.in_ch * s.out_ch * s.kernel * s.kernel
    if s.op == "head":
        return s.in_ch * s.mid_ch + s.mid_ch * s.out_ch
    return (s.in_ch * s.mid_ch if s.expand != 1 else 0) + s.mid_ch * s.out_ch


_SPLIT_KERNELS = (3, 5, 7)
FEATURES: dict[str, Callable[[Sequence[tuple[LayerSpec, float]]], float]] = {
    "lut_sum_ms": _sum_ms,
    "n_layers": lambda rows: float(len(rows)),
    "macs_m": lambda rows: sum(s.macs() for s, _ in rows) / 1e6,
    "se_ms": lambda rows: float(sum(ms for s, ms in rows if s.se)),
    "mid_ch_sum_k": lambda rows: sum(s.mid_ch for s, _ in rows) / 1e3,
    # weights a whole subnet streams through the caches once per inference, while each one-layer model of the table
    # keeps its own few weights hot: depthwise (mid_ch x k x k) and dense (1x1 / full convs, linear), in thousands
    "dw_weights_k": lambda rows: sum(s.mid_ch * s.kernel * s.kernel for s, _ in rows if s.op == "mbconv") / 1e3,
    "dense_weights_k": lambda rows: sum(_dense_weights(s) for s, _ in rows) / 1e3,
    # the table time split by depthwise kernel: each group gets its own scale (kernels run differently alone)
    **{f"lut_ms_k{k}": _lut_ms_of_kernel(k) for k in _SPLIT_KERNELS},
    "lut_ms_other": _lut_ms_of_kernel(None),
}
# Candidate feature sets of the correction; ``features="auto"`` (the default of `fit_correction` and `validate`) fits
# the largest one the fitting subnets support. History (Intel Xeon VM, 1 thread, fp32, 200 held-out subnets each):
# "compact" gave onnxruntime 98.5 % within +-10 % but LiteRT/XNNPACK only 86.5 % although two protocol runs agreed
# 100 %. On those measurements (random 50 / 150 splits) "memory" reached 93 % on LiteRT and 99.7 % on onnxruntime,
# "per-kernel" 96 % and 99.7 %; on a second, fresh set of 250 subnets the same (LiteRT 93 % / 96 %). The final check
# on fresh subnets is in benchmarks/results/latency.md. mid_ch_sum_k joined "compact" the same way earlier (77 % ->
# 98.5 % on onnxruntime).
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "compact": ("lut_sum_ms", "n_layers", "macs_m", "mid_ch_sum_k"),
    "memory": ("lut_sum_ms", "n_layers", "macs_m", "mid_ch_sum_k", "dw_weights_k", "dense_weights_k"),
    "per-kernel": (*(f"lut_ms_k{k}" for k in _SPLIT_KERNELS), "lut_ms_other", "n_layers", "macs_m", "mid_ch_sum_k",
                   "dw_weights_k", "dense_weights_k"),
}
DEFAULT_FEATURES = FEATURE_SETS["compact"]  # an unfitted predictor's (features only matter once fitted)


def as_arch(a: ArchLike, table: LatencyTable) -> ArchConfig:
    """An `ArchConfig` from a config, its string form (parsed with the table's depth) or its JSON."""
    if isinstance(a, ArchConfig):
        return a
    if isinstance(a, str):  # structure only here; membership of the table's space is checked by the table
        return ArchConfig.parse(a, max_depth=table.space.max_depth)
    if isinstance(a, Mapping):
        return ArchConfig.from_json(a)
    raise InvalidArchError(f"architecture: expected an ArchConfig, its string form or its JSON, got {type(a).__name__}")


@dataclass(frozen=True)
class LatencyPredictor:
    """A table plus (optionally) a fitted linear correction. Unfitted, it predicts the plain sum.

    Attributes:
        table: the latency table the features come from.
        features: names from `FEATURES`, in coefficient order.
        coef: one coefficient per feature (raw units; ms per feature unit), or None when unfitted.
        intercept_ms: c_0.
        info: provenance (number of fitting subnets, fit metrics, alpha, ...).
    """

    table: LatencyTable
    features: tuple[str, ...] = DEFAULT_FEATURES
    coef: tuple[float, ...] | None = None
    intercept_ms: float = 0.0
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [f for f in self.features if f not in FEATURES]
        if unknown:
            raise PredictorError(f"unknown feature(s) {unknown}; known: {sorted(FEATURES)}")
        if self.coef is not None and len(self.coef) != len(self.features):
            raise PredictorError(f"{len(self.coef)} coefficients for {len(self.features)} features {list(self.features)}")

    @classmethod
    def from_table(cls, table: LatencyTable, *, features: Sequence[str] = DEFAULT_FEATURES) -> LatencyPredictor:
        return cls(table=table, features=tuple(features))

    @property
    def fitted(self) -> bool:
        return self.coef is not None

    @property
    def precision(self) -> str:
        """The precision of the table (and of the subnets the correction was fitted on)."""
        return self.table.meta.precision

    @property
    def statistic(self) -> str:
        """The statistic of the table's latencies (and of the measurements the correction was fitted on)."""
        return self.table.statistic

    # ---- features and predictions
    def feature_matrix(self, archs: Sequence[ArchLike]) -> np.ndarray:
        """(N, F) features; raises the table's errors (outside space, missing layer) naming the architecture."""
        return self._features_and_sums(archs)[0]

    def _features_and_sums(self, archs: Sequence[ArchLike]) -> tuple[np.ndarray, np.ndarray]:
        """(N, F) features and (N,) plain LUT sums from one walk of each architecture's layers."""
        x, sums = np.empty((len(archs), len(self.features))), np.empty(len(archs))
        for i, a in enumerate(archs):
            rows = self.table.layer_ms(as_arch(a, self.table))
            x[i] = [FEATURES[f](rows) for f in self.features]
            sums[i] = _sum_ms(rows)
        return x, sums

    def predict_sum(self, archs: Sequence[ArchLike]) -> np.ndarray:
        """Plain LUT sums in ms, shape (N,)."""
        return np.asarray([self.table.sum_ms(as_arch(a, self.table)) for a in archs], dtype=np.float64)

    def predict(self, archs: Sequence[ArchLike], *, precision: str | None = None,
                statistic: str | None = None) -> np.ndarray:
        """Predicted latency in ms, shape (N,): corrected when fitted, else the plain sum.

        ``precision`` (optional) states which precision the caller means; `PrecisionMismatchError` if it is not
        the table's. A correction is linear and may extrapolate badly far outside its fitting data; predictions
        are floored at 10 % of the plain sum so they stay positive.
        """
        self.table.check_precision(precision)
        self.table.check_statistic(statistic)
        if self.coef is None:
            return self.predict_sum(archs)
        x, sums = self._features_and_sums(archs)
        y = self.intercept_ms + x @ np.asarray(self.coef)
        return np.maximum(y, 0.1 * sums)

    def fit(self, archs: Sequence[ArchLike], measured_ms: Sequence[float] | np.ndarray, *, alpha: float = 1e-2) -> LatencyPredictor:
        """A new predictor whose correction is fitted on ``archs`` measured end to end (ms). K >= 2 * F recommended."""
        from sklearn.linear_model import Ridge

        y = np.asarray(measured_ms, dtype=np.float64)
        if y.ndim != 1 or len(y) != len(archs):
            raise ValueError(f"fit: {len(archs)} architectures but measured_ms has shape {y.shape}")
        if len(y) < len(self.features) + 1:
            raise ValueError(f"fit: need at least {len(self.features) + 1} measured subnets for {len(self.features)} features, got {len(y)}")
        if not np.all(np.isfinite(y) & (y > 0)):
            raise ValueError("fit: measured_ms must be positive and finite")
        x = self.feature_matrix(archs)
        mu, sd = x.mean(axis=0), x.std(axis=0)
        sd[sd == 0] = 1.0
        model = Ridge(alpha=alpha).fit((x - mu) / sd, y, sample_weight=1.0 / y**2)
        coef = model.coef_ / sd
        intercept = float(model.intercept_ - np.sum(model.coef_ * mu / sd))
        fitted = LatencyPredictor(table=self.table, features=self.features, coef=tuple(float(c) for c in coef),
                                  intercept_ms=intercept, info={})
        train = metrics(fitted.predict(archs), y)
        info = {"n_fit": len(y), "alpha": alpha, "weights": "1/measured^2", "train": train.to_json()}
        return LatencyPredictor(table=self.table, features=self.features, coef=fitted.coef, intercept_ms=intercept,
                                info=info)

    # ---- persistence (JSON, versioned)
    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": PREDICTOR_SCHEMA_VERSION,
            "kind": "lut-sum-linear-correction",
            "features": list(self.features),
            "coef": None if self.coef is None else list(self.coef),
            "intercept_ms": self.intercept_ms,
            "table": {
                "csv_sha256": self.table.meta.csv_sha256, "path": str(self.table.path) if self.table.path else None,
                "backend": self.table.meta.backend, "device": self.table.meta.device,
                "precision": self.table.meta.precision, "statistic": self.table.statistic,
            },
            "statistic": self.table.statistic,
            "info": dict(self.info),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        atomic_write_json(path, self.to_json())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, table: LatencyTable | str | os.PathLike[str] | None = None) -> LatencyPredictor:
        """Read a predictor; ``table`` defaults to the path recorded in it. The table's sha256 must match."""
        d = read_json(path, what="latency predictor")
        where = str(path)
        if not isinstance(d, Mapping) or "schema_version" not in d:
            raise PredictorError(f"latency predictor {where}: not a predictor file (no schema_version)")
        if d["schema_version"] != PREDICTOR_SCHEMA_VERSION:
            raise PredictorError(
                f"latency predictor {where}: schema_version {d['schema_version']!r} is not supported "
                f"(this hwnas reads {PREDICTOR_SCHEMA_VERSION})"
            )
        for k in ("features", "coef", "intercept_ms", "table"):
            if k not in d:
                raise PredictorError(f"latency predictor {where}: missing field {k!r}")
        if table is None:
            tpath = d["table"].get("path")
            if not tpath:
                raise PredictorError(f"latency predictor {where}: records no table path; pass table=")
            table = tpath
        tab = table if isinstance(table, LatencyTable) else LatencyTable.load(Path(table))
        # Predictors written before statistics were named were fitted on the protocol's low percentile ("best").
        stat = d.get("statistic") or d["table"].get("statistic") or "best"
        if not isinstance(table, LatencyTable) and stat in tab.meta.statistics:
            tab = tab.with_statistic(stat)  # a path: open the table in the predictor's statistic
        if stat != tab.statistic:
            raise StatisticMismatchError(
                f"latency predictor {where} was fitted on {stat!r} latencies, but table {tab.path} answers in "
                f"{tab.statistic!r}"
                + ("" if stat in tab.meta.statistics else f" and has no {stat!r} at all (it has "
                   f"{', '.join(tab.meta.statistics)})")
                + "; a correction of one statistic does not apply to another (statistics never mix): open the "
                "table with the predictor's statistic (--statistic) or refit (hwnas lut validate --statistic)"
            )
        fitted_at = d["table"].get("precision")  # absent in predictors written before precision was recorded
        if fitted_at is not None and fitted_at != tab.meta.precision:
            raise PrecisionMismatchError(
                f"latency predictor {where} was fitted on a table measured at {fitted_at}, but table {tab.path} was "
                f"measured at {tab.meta.precision}; a correction of one precision does not apply to another "
                "(precisions never mix): load it with its own table or refit it on this one (hwnas lut validate)"
            )
        if tab.meta.csv_sha256 != d["table"].get("csv_sha256"):
            raise PredictorError(
                f"latency predictor {where} was fitted on a table with sha256 {str(d['table'].get('csv_sha256'))[:12]}..., "
                f"but table {tab.path} has {tab.meta.csv_sha256[:12]}...; refit it on this table (hwnas lut validate)"
            )
        coef = None if d["coef"] is None else tuple(float(c) for c in d["coef"])
        return cls(table=tab, features=tuple(d["features"]), coef=coef, intercept_ms=float(d["intercept_ms"]),
                   info=d.get("info", {}))


def predictor_statistic(path: str | os.PathLike[str]) -> str:
    """The statistic a predictor file was fitted on ("best" for files written before statistics were named, which
    were fitted on the protocol's low percentile)."""
    d = read_json(path, what="latency predictor")
    if not isinstance(d, Mapping):
        raise PredictorError(f"latency predictor {path}: not a predictor file (expected a JSON object)")
    return str(d.get("statistic") or (d.get("table") or {}).get("statistic") or "best")


# --------------------------------------------------------------------------- the query function
@functools.lru_cache(maxsize=8)
def _load_table_cached(path: str, mtime_ns: int, size: int) -> LatencyTable:
    return LatencyTable.load(path)


def resolve_table(table: LatencyTable | str | os.PathLike[str]) -> LatencyTable:
    """The table itself, or the table at a path (loaded once per file version: cached by path, mtime, size)."""
    if isinstance(table, LatencyTable):
        return table
    p = Path(table)
    if not p.is_file():
        raise FileNotFoundError(f"latency table {str(p)!r} does not exist or is not a file")
    st = p.stat()
    return _load_table_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


def candidate_feature_sets(features: str | Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``"auto"`` -> every set of `FEATURE_SETS`; a set's name -> that set; a list of feature names -> itself."""
    if isinstance(features, str):
        if features == "auto":
            return dict(FEATURE_SETS)
        if features in FEATURE_SETS:
            return {features: FEATURE_SETS[features]}
        raise ValueError(f"features {features!r}: expected 'auto', one of {sorted(FEATURE_SETS)} or a list of feature "
                         f"names from {sorted(FEATURES)}")
    return {"given": tuple(features)}


def min_fit_subnets(features: str | Sequence[str]) -> int:
    """Fewest end-to-end measured subnets a correction with ``features`` can be fitted on (features + 1)."""
    return min(len(f) for f in candidate_feature_sets(features).values()) + 1


def fit_correction(
    table: LatencyTable | str | os.PathLike[str],
    archs: Sequence[ArchLike],
    measured_ms: Sequence[float] | np.ndarray,
    *,
    features: str | Sequence[str] = "auto",
    alpha: float = 1e-2,
) -> LatencyPredictor:
    """Fit the correction on ``archs`` measured end to end. ``features="auto"``: the largest set of `FEATURE_SETS`
    that the fitting subnets support (at least 2 x its size + 2 of them; else the smallest set), recorded in
    ``info["selection"]``. The ridge penalty keeps a larger set from hurting when its extra terms do not matter.

    Choosing by cross-validation on the fitting subnets was tried and dropped: with K = 50 its pick between
    "memory" and "per-kernel" was decided by CV errors 0.2 points apart and cost LiteRT 4 points on fresh subnets
    (92.5 % within +-10 % instead of ~96 %), while "per-kernel" was the best or within 0.2 points of the best set
    on every backend and both measurement sets examined (see `FEATURE_SETS`)."""
    tab = resolve_table(table)
    y = np.asarray(measured_ms, dtype=np.float64)
    cands = candidate_feature_sets(features)
    by_size = sorted(cands, key=lambda n: len(cands[n]))
    supported = [n for n in by_size if len(y) >= 2 * len(cands[n]) + 2]
    name = supported[-1] if supported else by_size[0]
    pred = LatencyPredictor.from_table(tab, features=cands[name]).fit(archs, y, alpha=alpha)
    rule = ("largest candidate set with >= 2 x size + 2 fitting subnets" if supported
            else "too few fitting subnets for 2 x size + 2: the smallest set")
    return replace(pred, info={**pred.info, "selection": {"feature_set": name, "candidates": list(cands), "rule": rule}})


def predict_latency(
    archs: ArchLike | Sequence[ArchLike],
    *,
    table: LatencyTable | str | os.PathLike[str],
    predictor: LatencyPredictor | str | os.PathLike[str] | None = None,
    precision: str | None = None,
    statistic: str | None = None,
) -> np.ndarray:
    """Predicted latency in ms of one or many architectures (ArchConfig, ``str(arch)`` or arch JSON).

    ``statistic`` (median, best, p90, p99, ...): which latency; default the predictor's, else the table's default.
    A predictor of another statistic raises `StatisticMismatchError` (statistics never mix).

    With ``predictor`` (object or JSON path) the learned correction is applied; otherwise the plain LUT sum.
    The precision is the table's; ``precision`` (optional) is checked against it (`PrecisionMismatchError`), so
    asking for int8 latency from an fp32 table fails instead of answering fp32 numbers. Always returns a 1-D array
    (length 1 for a single architecture). Tables loaded from a path are cached by (path, mtime, size).
    """
    tab = resolve_table(table)
    tab.check_precision(precision)
    batch: Sequence[ArchLike] = [archs] if isinstance(archs, (ArchConfig, str, Mapping)) else list(archs)
    if predictor is None:
        pred = LatencyPredictor.from_table(tab.with_statistic(statistic))
    elif isinstance(predictor, LatencyPredictor):
        pred = predictor
        pred.table.check_precision(tab.meta.precision)
        pred.table.check_statistic(statistic)
    else:
        if statistic is None:
            statistic = predictor_statistic(predictor)
        pred = LatencyPredictor.load(predictor, table=tab.with_statistic(statistic))
    return pred.predict(batch, statistic=statistic)


# --------------------------------------------------------------------------- metrics and validation
@dataclass(frozen=True)
class Metrics:
    """Prediction quality against measurements: share within ±5 % / ±10 % (relative to measured), RMSE (ms),
    MAPE (%), mean signed error (%), Spearman rank correlation."""

    n: int
    within_5pct: float
    within_10pct: float
    rmse_ms: float
    mape_pct: float
    bias_pct: float
    spearman: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def metrics(predicted_ms: np.ndarray, measured_ms: np.ndarray) -> Metrics:
    p, m = np.asarray(predicted_ms, dtype=np.float64), np.asarray(measured_ms, dtype=np.float64)
    if p.shape != m.shape or p.ndim != 1 or p.size == 0:
        raise ValueError(f"metrics: expected two equal-length non-empty 1-D arrays, got {p.shape} and {m.shape}")
    rel = (p - m) / m
    if p.size > 1 and np.ptp(p) > 0 and np.ptp(m) > 0:
        from scipy.stats import spearmanr

        rho = float(spearmanr(p, m).statistic)
    else:
        rho = float("nan")
    return Metrics(
        n=int(p.size), within_5pct=float(np.mean(np.abs(rel) <= 0.05)), within_10pct=float(np.mean(np.abs(rel) <= 0.10)),
        rmse_ms=float(np.sqrt(np.mean((p - m) ** 2))), mape_pct=float(np.mean(np.abs(rel)) * 100),
        bias_pct=float(np.mean(rel) * 100), spearman=rho,
    )


@dataclass(frozen=True)
class ValidationReport:
    """Plain LUT sum vs corrected predictor on held-out subnets measured end to end, side by side.

    ``rows``: one dict per held-out subnet with separate columns ``arch``, ``measured_ms`` (the protocol's
    estimate), ``measured_p50_ms`` / ``measured_iqr_ms`` (median and spread of its raw round medians),
    ``predicted_sum_ms``, ``predicted_corrected_ms`` (predicted and measured never share a column).
    """

    table: str | None
    n_fit: int
    n_test: int
    plain_sum: Metrics
    corrected: Metrics
    test_retest: dict[str, Any]
    measurement: dict[str, Any]
    predictor: dict[str, Any]
    rows: list[dict[str, Any]]
    seconds: float
    precision: str = "fp32"
    statistic: str = "median"
    other_statistics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    def summary(self) -> str:
        def line(name: str, m: Metrics) -> str:
            return (f"{name:<11} within±5% {m.within_5pct:6.1%}  within±10% {m.within_10pct:6.1%}  "
                    f"RMSE {m.rmse_ms:.4f} ms  MAPE {m.mape_pct:5.1f}%  bias {m.bias_pct:+5.1f}%  Spearman {m.spearman:.3f}")
        tr = self.test_retest
        parts = [(f"held-out subnets: {self.n_test} (correction fitted on {self.n_fit}); precision {self.precision}, "
                 f"statistic {self.statistic}"),
                 line("plain sum", self.plain_sum), line("corrected", self.corrected)]
        for st, o in self.other_statistics.items():
            parts.append(line(f"{st} sum", Metrics(**o["plain_sum"])))
            parts.append(line(f"{st} corr.", Metrics(**o["corrected"])))
        for k, v in tr.items():
            if v:
                parts.append(f"test-retest ({k}): within±5% {v['within_5pct']:.1%}, within±10% {v['within_10pct']:.1%}, "
                             f"median |diff| {v['median_abs_diff_pct']:.1f}%")
        return "\n".join(parts)


def validate(
    table: LatencyTable | str | os.PathLike[str],
    *,
    n_fit: int = 50,
    n_test: int = 200,
    seed: int = 0,
    protocol: MeasurementProtocol | None = None,
    features: str | Sequence[str] = "auto",
    alpha: float = 1e-2,
    retest: bool = False,
    scale: str = "own",
    predictor_out: str | os.PathLike[str] | None = None,
    report_out: str | os.PathLike[str] | None = None,
    plot_out: str | os.PathLike[str] | None = None,
    progress: ProgressArg = False,
    backend_kwargs: Mapping[str, Any] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    export_jobs: int | None = None,
    statistic: str | None = None,
    also_statistics: Sequence[str] = (),
) -> ValidationReport:
    """Measure ``n_fit + n_test`` random subnets of the table's space end to end (same backend, threads and
    precision as the table), fit the correction on the first ``n_fit``, and score plain sum and corrected predictor
    on the other ``n_test``. At the table's precision, every subnet is exported by the table's backend exactly as
    its layers were (for int8: QDQ-quantized, per-channel weights), so the correction is fitted per precision.
    ``features``: see `fit_correction` (default "auto": the largest feature set the ``n_fit`` subnets support).

    ``scale="own"`` (default) uses each subnet's own estimate in ms; ``"table"`` expresses measurements with the
    table's reference-probe latency (drift between the two sessions removed, the probe's noise added). ``retest=True`` measures the held-out
    subnets a second, independent time (other shuffles, fresh processes) and reports the agreement of the two:
    ``test_retest["two full protocol runs"]`` compares each model's ratio to the reference probe (the protocol's
    repeatable quantity: a machine uniformly faster or slower during one session, e.g. under another tenant's load
    for minutes, cancels); ``"two full protocol runs, own ms"`` compares ``latency_ms`` as measured, which with
    ``scale="own"`` carries each session's level (one factor common to all models of a session, which the
    correction, fitted within the same session, absorbs; so it does not bound this report's accuracy figures).
    ``workdir`` keeps the exported subnet models, so a validation killed and started again re-exports nothing
    (TFLite conversion is the slow part; ``export_jobs`` processes convert in parallel); default: a temporary
    directory. ``backend_kwargs`` default: the
    settings the table was built with (`latency_tables.table.table_backend_kwargs`).

    ``statistic`` (default: the table's): the latency the predictor is fitted on and scored against, the same
    statistic of the table rows and of the end-to-end measurements. ``also_statistics``: other statistics fitted
    and scored on the same measurements (``report.other_statistics``), e.g. ``("p99",)`` beside the median.
    """
    import time

    t0 = time.perf_counter()
    tab = resolve_table(table).with_statistic(statistic)
    for st in also_statistics:
        tab.with_statistic(st)  # refuses a statistic the table lacks before minutes of measuring
    if scale not in ("table", "own"):
        raise ValueError(f"validate: scale must be 'table' or 'own', got {scale!r}")
    if n_test < 1:
        raise ValueError(f"validate: n_test must be >= 1, got {n_test}")
    need = min_fit_subnets(features)  # also rejects an unknown feature set name, before minutes of measuring
    if 0 < n_fit < need:
        raise ValueError(f"validate: n_fit must be 0 (plain sum only) or >= {need} to fit the correction "
                         f"(features {features!r}), got {n_fit}")
    pr = protocol or MeasurementProtocol()
    rng = np.random.default_rng(seed)
    space = tab.space
    seen: set[ArchConfig] = set()
    archs: list[ArchConfig] = []
    for _ in range(100 * (n_fit + n_test)):
        if len(archs) == n_fit + n_test:
            break
        a = space.sample(rng)
        if a not in seen:
            seen.add(a)
            archs.append(a)
    fit_archs, test_archs = archs[:n_fit], archs[n_fit:]
    ref_ms = tab.meta.reference.get("latency_ms") if scale == "table" else None
    bkw = table_backend_kwargs(tab.meta) if backend_kwargs is None else backend_kwargs
    common = {"backend": tab.meta.backend, "threads": tab.meta.threads, "precision": tab.meta.precision,
              "protocol": pr, "reference_ms": ref_ms, "progress": progress, "backend_kwargs": bkw,
              "workdir": workdir, "export_jobs": export_jobs}
    ms = measure_models(archs, tab.backbone, **common)  # type: ignore[arg-type]
    measured = np.asarray([m.stat(tab.statistic) for m in ms])
    y_fit, y_test = measured[:n_fit], measured[n_fit:]
    base = LatencyPredictor.from_table(tab)
    pred = fit_correction(tab, fit_archs, y_fit, features=features, alpha=alpha) if n_fit > 0 else base
    if predictor_out is not None and pred.fitted:
        pred.save(predictor_out)
    p_sum = base.predict_sum(test_archs)
    p_cor = pred.predict(test_archs)
    tr: dict[str, Any] = {}
    pa = measurement_agreement(ms[n_fit:])
    tr["single processes"] = pa.to_json() if pa else None
    if retest:
        from dataclasses import replace as _replace

        ms2 = measure_models(test_archs, tab.backbone, **{**common, "protocol": _replace(pr, seed=pr.seed + 1)})  # type: ignore[arg-type]
        tr["two full protocol runs, " + tab.statistic] = agreement(
            y_test, [m.stat(tab.statistic) for m in ms2],
            source=f"two protocol runs, {tab.statistic} in ms as measured (each session's machine level in)",
        ).to_json()
        tr["two full protocol runs"] = agreement(
            [m.ratio for m in ms[n_fit:]], [m.ratio for m in ms2],
            source="two protocol runs, each model's ratio to the reference probe timed in the same rounds",
        ).to_json()
        tr["two full protocol runs, own ms"] = agreement(
            y_test, [m.latency_ms for m in ms2],
            source=f"two protocol runs, latency_ms as measured (scale {scale!r}: each session's machine level in)",
        ).to_json()
    env = dict(ms[0].environment) if ms else {}
    rows = [
        {"arch": str(a), "measured_ms": float(y), "measured_p50_ms": m.p50_ms, "measured_iqr_ms": m.iqr_ms,
         "predicted_sum_ms": float(s), "predicted_corrected_ms": float(c),
         "measured_stats_ms": {k: float(v) for k, v in m.stats_ms.items()}}
        for a, y, m, s, c in zip(test_archs, y_test, ms[n_fit:], p_sum, p_cor, strict=True)
    ]
    others: dict[str, Any] = {}
    for st in also_statistics:
        if st == tab.statistic:
            continue
        t_st = tab.with_statistic(st)
        y_st = np.asarray([m.stat(st) for m in ms])
        base_st = LatencyPredictor.from_table(t_st)
        pred_st = fit_correction(t_st, fit_archs, y_st[:n_fit], features=features, alpha=alpha) if n_fit > 0 else base_st
        ps, pc = base_st.predict_sum(test_archs), pred_st.predict(test_archs)
        others[st] = {"plain_sum": metrics(ps, y_st[n_fit:]).to_json(), "corrected": metrics(pc, y_st[n_fit:]).to_json(),
                      "predictor": pred_st.to_json(),
                      "rows": [{"arch": str(a), "measured_ms": float(y), "predicted_sum_ms": float(a1),
                                "predicted_corrected_ms": float(c1)}
                               for a, y, a1, c1 in zip(test_archs, y_st[n_fit:], ps, pc, strict=True)]}
    report = ValidationReport(
        table=str(tab.path) if tab.path else None, n_fit=len(fit_archs), n_test=len(test_archs),
        plain_sum=metrics(p_sum, y_test), corrected=metrics(p_cor, y_test), test_retest=tr,
        measurement={"scale": scale, "environment": env, "protocol": pr.to_json(), "seed": seed},
        predictor=pred.to_json(), rows=rows, seconds=round(time.perf_counter() - t0, 1), precision=tab.meta.precision,
        statistic=tab.statistic, other_statistics=others,
    )
    if report_out is not None:
        atomic_write_json(report_out, report.to_json())
    if plot_out is not None:
        plot_predicted_vs_measured(report, plot_out)
    return report


class MeasuredArchsError(InputError):
    """A CSV of measured architectures cannot be read; the message names the file and line."""


def read_measured_archs(path: str | os.PathLike[str], *, table: LatencyTable | None = None,
                        space: SearchSpace | None = None) -> tuple[list[ArchConfig], np.ndarray]:
    """Architectures and their latencies measured elsewhere, from a CSV with columns ``arch`` and ``latency_ms``.

    ``arch`` is ``str(ArchConfig)`` (e.g. ``r28-d2.2.2.2.2-k3e3...``) or the architecture's JSON object (quoted as a
    CSV field). With ``table``, each architecture is checked to belong to the table's space, and an optional
    ``precision`` column must name the table's precision on every row; with ``space`` (no table, e.g. a device
    known only from these measurements), each is checked to belong to that space. Errors name the line.
    """
    if space is None and table is not None:
        space = table.space
    import csv
    import io
    import json

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"measured-architectures CSV {str(p)!r} does not exist or is not a file")
    reader = csv.DictReader(io.StringIO(p.read_text(encoding="utf-8-sig")))
    header = reader.fieldnames or []
    if "arch" not in header or "latency_ms" not in header:
        raise MeasuredArchsError(f"{p}, line 1: expected columns 'arch' and 'latency_ms', got {header}")
    archs: list[ArchConfig] = []
    ys: list[float] = []
    for lineno, rec in enumerate(reader, start=2):
        where = f"{p}, line {lineno}"
        text = (rec.get("arch") or "").strip()
        if not text:
            raise MeasuredArchsError(f"{where}: empty 'arch'")
        try:
            if text.startswith("{"):
                a = ArchConfig.from_json(json.loads(text))
            else:
                if space is None:
                    raise MeasuredArchsError(f"{where}: an architecture string needs the table (its space's max depth)")
                a = ArchConfig.parse(text, max_depth=space.max_depth)
            if table is not None:
                table.specs(a)  # raises ArchOutsideTableError (a ValueError) naming the space
            if space is not None:
                a = space.canonical(a)
        except (json.JSONDecodeError, InvalidArchError, ValueError) as e:
            raise MeasuredArchsError(f"{where}: bad architecture {text[:60]!r}: {e}") from None
        try:
            y = float(rec.get("latency_ms") or "")
        except ValueError:
            raise MeasuredArchsError(f"{where}: latency_ms {rec.get('latency_ms')!r} is not a number") from None
        if not (np.isfinite(y) and y > 0):
            raise MeasuredArchsError(f"{where}: latency_ms must be positive and finite, got {y}")
        prec = (rec.get("precision") or "").strip()
        if table is not None and prec and prec != table.meta.precision:
            raise MeasuredArchsError(f"{where}: measured at precision {prec!r} but the table is {table.meta.precision!r}; "
                                     "latencies of different precisions never mix")
        stat = (rec.get("statistic") or "").strip()
        if table is not None and stat and stat != table.statistic:
            raise MeasuredArchsError(f"{where}: column 'statistic' says {stat!r} but the table answers in "
                                     f"{table.statistic!r}; latencies of different statistics never mix (open the "
                                     f"table with --statistic {stat})")
        archs.append(a)
        ys.append(y)
    if not archs:
        raise MeasuredArchsError(f"{p}: no rows")
    return archs, np.asarray(ys)


def validate_measured(
    table: LatencyTable | str | os.PathLike[str],
    archs: Sequence[ArchLike],
    measured_ms: Sequence[float] | np.ndarray,
    *,
    n_fit: int = 50,
    predictor: LatencyPredictor | str | os.PathLike[str] | None = None,
    features: str | Sequence[str] = "auto",
    alpha: float = 1e-2,
    source: str = "imported",
    predictor_out: str | os.PathLike[str] | None = None,
    report_out: str | os.PathLike[str] | None = None,
    plot_out: str | os.PathLike[str] | None = None,
) -> ValidationReport:
    """`validate` for latencies measured elsewhere (e.g. on a phone, `read_measured_archs`).

    Without ``predictor``: fit the correction on the first ``n_fit`` architectures and score plain sum and
    corrected on the rest. With ``predictor`` (fitted earlier): check it, and the plain sum, on all of them.
    """
    import time

    t0 = time.perf_counter()
    tab = resolve_table(table)
    y = np.asarray(measured_ms, dtype=np.float64)
    cfgs = [as_arch(a, tab) for a in archs]
    if len(cfgs) != len(y):
        raise ValueError(f"validate_measured: {len(cfgs)} architectures but {len(y)} latencies")
    base = LatencyPredictor.from_table(tab)
    if predictor is not None:
        pred = predictor if isinstance(predictor, LatencyPredictor) else LatencyPredictor.load(predictor, table=tab)
        fit_archs, test_archs, y_test = [], cfgs, y
    else:
        if len(cfgs) <= n_fit:
            raise ValueError(f"validate_measured: {len(cfgs)} architectures leave none held out after fitting on {n_fit}")
        fit_archs, test_archs, y_test = cfgs[:n_fit], cfgs[n_fit:], y[n_fit:]
        pred = fit_correction(tab, fit_archs, y[:n_fit], features=features, alpha=alpha) if n_fit > 0 else base
        if predictor_out is not None and pred.fitted:
            pred.save(predictor_out)
    p_sum = base.predict_sum(test_archs)
    p_cor = pred.predict(test_archs)
    rows = [{"arch": str(a), "measured_ms": float(m), "predicted_sum_ms": float(s), "predicted_corrected_ms": float(c)}
            for a, m, s, c in zip(test_archs, y_test, p_sum, p_cor, strict=True)]
    report = ValidationReport(
        table=str(tab.path) if tab.path else None, n_fit=len(fit_archs) if predictor is None else int(pred.info.get("n_fit", 0)),
        n_test=len(test_archs), plain_sum=metrics(p_sum, y_test), corrected=metrics(p_cor, y_test), test_retest={},
        measurement={"scale": "as imported", "source": source}, predictor=pred.to_json(), rows=rows,
        seconds=round(time.perf_counter() - t0, 1), precision=tab.meta.precision, statistic=tab.statistic,
    )
    if report_out is not None:
        atomic_write_json(report_out, report.to_json())
    if plot_out is not None:
        plot_predicted_vs_measured(report, plot_out)
    return report


def plot_predicted_vs_measured(report: ValidationReport, path: str | os.PathLike[str]) -> Path:
    """Two panels (plain sum | corrected), predicted vs measured with the ±10 % band; PNG/SVG by suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray([r["measured_ms"] for r in report.rows])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharex=True, sharey=True)
    lo, hi = 0.0, 1.0
    if y.size:
        both = np.concatenate([y, [r["predicted_sum_ms"] for r in report.rows], [r["predicted_corrected_ms"] for r in report.rows]])
        lo, hi = float(both.min()) * 0.9, float(both.max()) * 1.1
    for ax, col, name, m in (
        (axes[0], "predicted_sum_ms", "plain LUT sum", report.plain_sum),
        (axes[1], "predicted_corrected_ms", "LUT sum + learned correction", report.corrected),
    ):
        p = np.asarray([r[col] for r in report.rows])
        xs = np.linspace(lo, hi, 10)
        ax.plot(xs, xs, "k-", lw=1)
        ax.fill_between(xs, xs * 0.9, xs * 1.1, color="tab:green", alpha=0.15, label="±10 %")
        ax.scatter(y, p, s=10, alpha=0.7)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured latency (ms)")
        ax.set_title(f"{name}\n±10 %: {m.within_10pct:.0%}  MAPE {m.mape_pct:.1f} %  ρ {m.spearman:.2f}", fontsize=10)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("predicted latency (ms)")
    fig.suptitle(f"{report.n_test} held-out subnets at {report.precision} ({report.statistic}), correction fitted on "
                 f"{report.n_fit}",
                 fontsize=10)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
