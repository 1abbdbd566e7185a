"""A new device's latency from a few end-to-end measurements, using what other devices already tell us.

Notation
--------
Target device: K architectures a_1..a_K measured end to end, y_i in ms; work in logs, z_i = log y_i (a squared
error in z is a squared *relative* error in y). Sources j = 1..J (other devices' tables or predictors) predict
s_j(a) ms; u_j(a) = log s_j(a). m(a) = log MACs(a) / 1e6. x(a) = the space's one-hot encoding.

    z(a) = mu(a) + g(a) + eps,   eps ~ N(0, n^2)

Mean candidates mu (least squares on the K points):
    affine:<j>     alpha + beta * u_j                 (an affine map of one source; the floor the issue asks for)
    sources        alpha + sum_j beta_j u_j            (ridge on standardised u, J >= 2)
    macs           alpha + beta * m                    (no source needed: the MACs baseline)
    ops            log(c_0 + sum_t c_t F_t(a)), c >= 0 (K >= 10: a per-op-type cost model, no source needed;
                                                        F = pointwise/dense MACs, depthwise MACs per kernel size,
                                                        activation traffic, SE blocks, layers; non-negative least
                                                        squares on relative error. A device that runs k7 depthwise
                                                        slowly, as int8 onnxruntime does here, gets its own c_t)
    const          alpha                               (only with the GP: a GP on the encoding alone)
Residual g ~ GP(0, b^2 x.x' + s^2 exp(-|x - x'|^2 / (2 l^2))) on the encoding: the linear term is a Bayesian
ridge over per-choice costs (latency is close to additive over layers), the RBF term what is not additive.
Hyper-parameters (b, s, l, n) by maximum marginal likelihood over a fixed grid (deterministic, numpy only).

Every (mean, with/without GP) pair is scored by leave-one-out squared error in z on the K points and the best
is kept (ties: the simpler one), so the affine map of the best source is always a candidate, and more
measurements only change the choice when they show another model predicts better.

Uncertainty: the GP's predictive variance v(a) (1 without the GP) times c = mean_i(e_i^2 / v_i) over the LOO
residuals e_i, so the interval exp(mu + g +- z_q sqrt(c v)) is calibrated on held-out points of the K.

HELP (Lee et al., NeurIPS 2021, arXiv:2106.08630) meta-learns a predictor from source devices and reports Spearman
0.93 on new devices from 10 samples; this module uses the sources as features instead, which needs no meta-training.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from supernet.errors import InputError
from supernet.io import atomic_write_json, read_json, sha256_file
from supernet.layers import Backbone, layer_specs
from supernet.space import ArchConfig, SearchSpace

__all__ = [
    "ADAPTED_KIND",
    "ADAPTED_SCHEMA_VERSION",
    "MIN_MEASURED",
    "AdaptedLatencyPredictor",
    "FewShotError",
    "LatencySource",
    "adapt",
    "backbone_of_sources",
    "choose_subnets",
    "is_adapted_predictor",
    "load_latency_model",
    "load_source",
    "macs_m",
    "op_features",
    "read_measured",
]

ADAPTED_SCHEMA_VERSION = 1
ADAPTED_KIND = "fewshot-latency-predictor"
MIN_MEASURED = 3  # an affine map has 2 parameters; LOO needs one more point
_RIDGE_ALPHA = 1.0
_TIE_REL = 0.02  # a more complex candidate must beat a simpler one's LOO error by 2 % to be chosen


class FewShotError(InputError):
    """Bad input to adaptation or a bad adapted-predictor file; the message names the row, file or option."""


# --------------------------------------------------------------------------- sources
@runtime_checkable
class LatencySource(Protocol):
    """Anything predicting ms for architectures of one space: a table (plain sum), a fitted LUT predictor, or
    another adapted predictor. ``describe()`` is what an adapted predictor records about the source."""

    @property
    def space(self) -> SearchSpace: ...

    def predict(self, archs: Sequence[ArchConfig]) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class _TableSource:
    table: Any  # latency_tables.table.LatencyTable
    path: str

    @property
    def space(self) -> SearchSpace:
        return self.table.space  # type: ignore[no-any-return]

    @property
    def backbone(self) -> dict[str, Any]:
        return dict(self.table.meta.backbone)

    def predict(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        return np.asarray([self.table.sum_ms(a) for a in archs], dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        m = self.table.meta
        return {"kind": "table", "path": self.path, "sha256": sha256_file(self.path), "device": m.device,
                "backend": m.backend, "precision": m.precision, "threads": m.threads,
                "statistic": getattr(m, "statistic", m.estimator)}


@dataclass(frozen=True)
class _PredictorSource:
    predictor: Any  # latency_tables.predictor.LatencyPredictor
    path: str

    @property
    def space(self) -> SearchSpace:
        return self.predictor.table.space  # type: ignore[no-any-return]

    @property
    def backbone(self) -> dict[str, Any]:
        return dict(self.predictor.table.meta.backbone)

    def predict(self, archs: Sequence[ArchConfig]) -> np.ndarray:
        return np.asarray(self.predictor.predict(list(archs)), dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        m = self.predictor.table.meta
        return {"kind": "lut-predictor", "path": self.path, "sha256": sha256_file(self.path), "device": m.device,
                "backend": m.backend, "precision": m.precision, "threads": m.threads,
                "statistic": getattr(m, "statistic", m.estimator)}


def _sniff_kind(path: Path) -> str:
    if path.suffix.lower() == ".csv":
        return "table"
    d = read_json(path, what="latency source")
    if isinstance(d, Mapping) and d.get("kind") == ADAPTED_KIND:
        return "adapted"
    if isinstance(d, Mapping) and "features" in d and "table" in d:
        return "lut-predictor"
    raise FewShotError(f"latency source {str(path)!r}: expected a table CSV, a fitted predictor JSON "
                       f"('hwnas lut validate --save-predictor') or an adapted predictor JSON ('hwnas lut adapt')")


def load_source(path: str | os.PathLike[str]) -> LatencySource:
    """A source from a file: ``*.csv`` -> table (plain LUT sum); predictor JSON -> corrected LUT predictor;
    adapted predictor JSON -> that predictor (with its own sources)."""
    p = Path(path)
    if not p.is_file():
        raise FewShotError(f"latency source {str(p)!r} does not exist or is not a file")
    kind = _sniff_kind(p)
    if kind == "table":
        from latency_tables.table import LatencyTable

        return _TableSource(LatencyTable.load(p), str(p))
    if kind == "lut-predictor":
        from latency_tables.predictor import LatencyPredictor

        return _PredictorSource(LatencyPredictor.load(p), str(p))
    return AdaptedLatencyPredictor.load(p)


def is_adapted_predictor(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an adapted predictor JSON (``hwnas lut adapt``); any unreadable file: False."""
    p = Path(path)
    if not p.is_file() or p.suffix.lower() != ".json":
        return False
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(d, Mapping) and d.get("kind") == ADAPTED_KIND


def load_latency_model(path: str | os.PathLike[str], *, table: str | os.PathLike[str] | None = None) -> Any:
    """What `hwnas search` / `hwnas serve` / the agent use as a latency model: an adapted predictor file, or a
    LUT predictor (``path`` a predictor JSON, with its ``table``) — anything with ``predict(archs) -> ms``."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".json":
        d = read_json(p, what="latency predictor")
        if isinstance(d, Mapping) and d.get("kind") == ADAPTED_KIND:
            return AdaptedLatencyPredictor.load(p)
    from latency_tables.predictor import LatencyPredictor

    return LatencyPredictor.load(p, table=table)


def _source_backbone(src: LatencySource) -> dict[str, Any] | None:
    bb = getattr(src, "backbone", None)
    if isinstance(bb, Backbone):
        return bb.to_json()
    return dict(bb) if isinstance(bb, Mapping) else None


def backbone_of_sources(sources: Sequence[LatencySource]) -> Backbone | None:
    """The backbone the sources were built for (None without sources); sources disagreeing is an error."""
    bbs = [b for b in (_source_backbone(s) for s in sources) if b is not None]
    if not bbs:
        return None
    first = Backbone.from_json(bbs[0])
    for j, b in enumerate(bbs[1:], start=1):
        if Backbone.from_json(b) != first:
            raise FewShotError(f"source {j} ({sources[j].describe().get('path')}) was built for another backbone "
                               f"than source 0 ({b} vs {bbs[0]})")
    return first


# --------------------------------------------------------------------------- features
def macs_m(backbone: Backbone, archs: Sequence[ArchConfig]) -> np.ndarray:
    """Multiply-accumulates of each architecture, in millions (from `layer_specs`, the one walk)."""
    return np.asarray([sum(s.macs() for s in layer_specs(backbone, a)) / 1e6 for a in archs], dtype=np.float64)


OP_FEATURES = ("dense_macs_m", "dw3_macs_m", "dw5_macs_m", "dw7_macs_m", "act_traffic_m", "se_blocks", "layers")
MIN_FOR_OPS = 10


def op_features(backbone: Backbone, archs: Sequence[ArchConfig]) -> np.ndarray:
    """Per architecture the `OP_FEATURES` (N, 7): what a per-op-type cost model prices, from `layer_specs`."""
    out = np.zeros((len(archs), len(OP_FEATURES)))
    for n, a in enumerate(archs):
        f = out[n]
        for sp in layer_specs(backbone, a):
            ho = sp.out_hw
            if sp.op not in ("mbconv",):
                f[0] += sp.macs() / 1e6
                continue
            if sp.expand != 1:
                f[0] += sp.in_ch * sp.mid_ch * sp.in_hw ** 2 / 1e6
            f[0] += sp.mid_ch * sp.out_ch * ho * ho / 1e6
            f[{3: 1, 5: 2, 7: 3}.get(sp.kernel, 3)] += sp.mid_ch * sp.kernel ** 2 * ho * ho / 1e6
            f[4] += sp.mid_ch * (sp.in_hw ** 2 + ho * ho) / 1e6
            f[5] += float(sp.se)
            f[6] += 1.0
    return out


def _arch_matrix(backbone: Backbone, archs: Sequence[ArchConfig]) -> np.ndarray:
    """Column 0: m = log MACs (millions); columns 1..: `op_features`."""
    return np.column_stack([np.log(macs_m(backbone, archs)), op_features(backbone, archs)])


def _log_sources(sources: Sequence[LatencySource], archs: Sequence[ArchConfig]) -> np.ndarray:
    if not sources:
        return np.zeros((len(archs), 0))
    cols = []
    for j, s in enumerate(sources):
        ms = np.asarray(s.predict(list(archs)), dtype=np.float64)
        if not np.all(np.isfinite(ms) & (ms > 0)):
            raise FewShotError(f"source {j} ({s.describe().get('path')}) predicted a non-positive or non-finite "
                               "latency")
        cols.append(np.log(ms))
    return np.stack(cols, axis=1)


# --------------------------------------------------------------------------- GP on the encoding (numpy only)
_LS_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)      # l^2 in units of the median pairwise squared distance
_AMP_GRID = (0.1, 0.3, 1.0, 3.0)                # s^2 in units of the residual variance
_NOISE_GRID = (1e-3, 1e-2, 0.1, 0.3)            # n^2 in units of the residual variance
_LIN_GRID = (0.0, 0.01, 0.1, 1.0)               # b^2 in units of the residual variance per unit of x.x'


Hyper = tuple[float, float, float, float]  # (l^2, s^2, b^2, n^2)


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def _kernel(xa: np.ndarray, xb: np.ndarray, ls2: float, amp2: float, lin2: float) -> np.ndarray:
    return lin2 * (xa @ xb.T) + amp2 * np.exp(-_sqdist(xa, xb) / (2 * ls2))


@dataclass(frozen=True)
class _GP:
    x: np.ndarray       # (K, D) training encodings
    alpha: np.ndarray   # (K,) K_y^{-1} r
    chol: np.ndarray    # (K, K) lower Cholesky factor of K_y
    ls2: float
    amp2: float
    lin2: float
    noise2: float

    @classmethod
    def fit(cls, x: np.ndarray, r: np.ndarray, *, hyper: Hyper | None = None) -> _GP:
        d2, dot = _sqdist(x, x), x @ x.T
        if hyper is None:
            off = d2[np.triu_indices(len(x), 1)]
            med = float(np.median(off[off > 0])) if np.any(off > 0) else 1.0
            var = max(float(np.var(r)), 1e-6)
            scale = float(np.mean(np.diag(dot))) or 1.0
            best: tuple[float, Hyper] | None = None
            for ls in _LS_GRID:
                for a in _AMP_GRID:
                    for b in _LIN_GRID:
                        for n in _NOISE_GRID:
                            h = (ls * med, a * var, b * var / scale, n * var)
                            ll = cls._loglik(d2, dot, r, h)
                            if best is None or ll > best[0]:
                                best = (ll, h)
            assert best is not None
            hyper = best[1]
        ls2, amp2, lin2, noise2 = hyper
        ky = lin2 * dot + amp2 * np.exp(-d2 / (2 * ls2)) + noise2 * np.eye(len(x))
        chol = np.linalg.cholesky(ky)
        alpha = np.linalg.solve(chol.T, np.linalg.solve(chol, r))
        return cls(x=x, alpha=alpha, chol=chol, ls2=ls2, amp2=amp2, lin2=lin2, noise2=noise2)

    @staticmethod
    def _loglik(d2: np.ndarray, dot: np.ndarray, r: np.ndarray, h: Hyper) -> float:
        ls2, amp2, lin2, noise2 = h
        ky = lin2 * dot + amp2 * np.exp(-d2 / (2 * ls2)) + noise2 * np.eye(len(r))
        try:
            chol = np.linalg.cholesky(ky)
        except np.linalg.LinAlgError:
            return -math.inf
        a = np.linalg.solve(chol.T, np.linalg.solve(chol, r))
        return float(-0.5 * r @ a - np.log(np.diag(chol)).sum() - 0.5 * len(r) * math.log(2 * math.pi))

    @property
    def hyper(self) -> Hyper:
        return (self.ls2, self.amp2, self.lin2, self.noise2)

    def predict(self, xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and predictive variance (latent + noise) of the residual at ``xq``."""
        ks = _kernel(xq, self.x, self.ls2, self.amp2, self.lin2)
        mean = ks @ self.alpha
        v = np.linalg.solve(self.chol, ks.T)
        prior = self.lin2 * (xq * xq).sum(1) + self.amp2
        var = np.maximum(prior + self.noise2 - (v * v).sum(0), 1e-12)
        return mean, var

    def to_json(self) -> dict[str, Any]:
        return {"x": self.x.tolist(), "alpha": self.alpha.tolist(), "chol": self.chol.tolist(),
                "lengthscale2": self.ls2, "amplitude2": self.amp2, "linear2": self.lin2, "noise2": self.noise2}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> _GP:
        return cls(x=np.asarray(d["x"], dtype=np.float64), alpha=np.asarray(d["alpha"], dtype=np.float64),
                   chol=np.asarray(d["chol"], dtype=np.float64), ls2=float(d["lengthscale2"]),
                   amp2=float(d["amplitude2"]), lin2=float(d["linear2"]), noise2=float(d["noise2"]))


# --------------------------------------------------------------------------- mean models
@dataclass(frozen=True)
class _Mean:
    """z ~ intercept + coef . f(a), where f is chosen by ``kind``: 'affine' (one source column ``source``),
    'sources' (every source column), 'macs' (log MACs) or 'const'."""

    kind: str
    intercept: float
    coef: tuple[float, ...] = ()
    source: int | None = None

    def columns(self, u: np.ndarray, m: np.ndarray) -> np.ndarray:
        if self.kind == "affine":
            assert self.source is not None
            return u[:, [self.source]]
        if self.kind == "sources":
            return u
        if self.kind == "macs":
            return m[:, [0]] if m.ndim == 2 else m[:, None]
        if self.kind == "ops":
            return m[:, 1:]
        return np.zeros((len(m), 0))

    def __call__(self, u: np.ndarray, m: np.ndarray) -> np.ndarray:
        f = self.columns(u, m)
        if self.kind == "ops":  # a cost model in ms, not in logs
            return np.asarray(np.log(np.maximum(self.intercept + f @ np.asarray(self.coef), 1e-9)), dtype=np.float64)
        lin = f @ np.asarray(self.coef) if f.shape[1] else np.zeros(len(m))
        return np.asarray(self.intercept + lin, dtype=np.float64)

    @classmethod
    def fit(cls, kind: str, u: np.ndarray, m: np.ndarray, z: np.ndarray, *, source: int | None = None) -> _Mean:
        proto = cls(kind=kind, intercept=0.0, source=source)
        f = proto.columns(u, m)
        if kind == "ops":
            from scipy.optimize import nnls

            y = np.exp(z)
            sd = f.std(0)
            sd[sd == 0] = 1.0
            a = np.column_stack([np.ones(len(y)), f / sd]) / y[:, None]  # rows / y: least squares in relative error
            c, _ = nnls(a, np.ones(len(y)))
            if not c.any():  # degenerate fit: a constant
                return cls(kind=kind, intercept=float(np.exp(z).mean()), coef=(0.0,) * f.shape[1], source=source)
            return cls(kind=kind, intercept=float(c[0]), coef=tuple(float(v) for v in c[1:] / sd), source=source)
        if f.shape[1] == 0:
            return cls(kind=kind, intercept=float(z.mean()), source=source)
        mu, sd = f.mean(0), f.std(0)
        sd[sd == 0] = 1.0
        fs = (f - mu) / sd
        lam = _RIDGE_ALPHA if kind == "sources" else 1e-6
        zc = z - z.mean()
        b = np.linalg.solve(fs.T @ fs + lam * np.eye(f.shape[1]), fs.T @ zc)
        coef = b / sd
        return cls(kind=kind, intercept=float(z.mean() - mu @ coef), coef=tuple(float(c) for c in coef), source=source)

    @property
    def name(self) -> str:
        return f"affine:{self.source}" if self.kind == "affine" else self.kind

    @property
    def n_params(self) -> int:
        return 1 + len(self.coef)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "intercept": self.intercept, "coef": list(self.coef), "source": self.source}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> _Mean:
        return cls(kind=str(d["kind"]), intercept=float(d["intercept"]), coef=tuple(float(c) for c in d["coef"]),
                   source=None if d.get("source") is None else int(d["source"]))


def _candidates(n_sources: int, k: int) -> list[tuple[str, int | None, bool]]:
    """(mean kind, source index, with GP), simplest first."""
    out: list[tuple[str, int | None, bool]] = []
    for gp in (False, True):
        if gp and k < MIN_MEASURED + 1:
            continue
        out += [("affine", j, gp) for j in range(n_sources)]
        if n_sources >= 2 and k >= n_sources + 2:
            out.append(("sources", None, gp))
        out.append(("macs", None, gp))
        if k >= MIN_FOR_OPS:
            out.append(("ops", None, gp))
        if gp:
            out.append(("const", None, gp))
    return out


def _fit_one(kind: str, source: int | None, use_gp: bool, u: np.ndarray, m: np.ndarray, x: np.ndarray,
             z: np.ndarray, *, hyper: Hyper | None = None) -> tuple[_Mean, _GP | None]:
    mean = _Mean.fit(kind, u, m, z, source=source)
    gp = _GP.fit(x, z - mean(u, m), hyper=hyper) if use_gp else None
    return mean, gp


def _loo(kind: str, source: int | None, use_gp: bool, u: np.ndarray, m: np.ndarray, x: np.ndarray,
         z: np.ndarray, hyper: Hyper | None) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out residuals e_i and predictive variances v_i (GP hyper-parameters fixed at the full fit's)."""
    e, v = np.empty(len(z)), np.ones(len(z))
    for i in range(len(z)):
        keep = np.arange(len(z)) != i
        mean, gp = _fit_one(kind, source, use_gp, u[keep], m[keep], x[keep], z[keep], hyper=hyper)
        pred = mean(u[[i]], m[[i]])
        if gp is not None:
            g, var = gp.predict(x[[i]])
            pred, v[i] = pred + g, var[0]
        e[i] = z[i] - float(np.asarray(pred).reshape(-1)[0])
    return e, v


# --------------------------------------------------------------------------- the adapted predictor
@dataclass(frozen=True, kw_only=True)
class AdaptedLatencyPredictor:
    """A target device's latency model fitted from K end-to-end measurements (see the module notation).

    Attributes:
        space / backbone: what the architectures are; every source shares them.
        sources: the source models, in feature order (their `describe()` is stored; loading re-opens them by path
            and checks their sha256).
        mean / gp: the chosen model; ``gp`` None when the residual GP did not pay in LOO.
        calibration: c, the variance scale from LOO residuals.
        info: K, statistic, the LOO error of every candidate, the measured CSV's sha256, fit time.
    """

    space: SearchSpace
    backbone: Backbone
    sources: tuple[LatencySource, ...]
    mean: _Mean
    gp: _GP | None
    calibration: float
    info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def precision(self) -> str | None:
        return self.info.get("precision")  # type: ignore[no-any-return]

    @property
    def statistic(self) -> str:
        return str(self.info.get("statistic", "median"))

    @property
    def k(self) -> int:
        return int(self.info.get("k", 0))

    def _check(self, archs: Sequence[ArchConfig]) -> list[ArchConfig]:
        out = []
        for a in archs:
            try:
                out.append(self.space.canonical(a))
            except ValueError as e:
                raise FewShotError(f"architecture {a}: not in space {self.space.name!r} of this predictor: {e}") from None
        return out

    def predict_log(self, archs: Sequence[ArchConfig]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and (calibrated) variance of log latency, shape (N,) each."""
        a = self._check(archs)
        u, m = _log_sources(self.sources, a), _arch_matrix(self.backbone, a)
        mu = self.mean(u, m)
        var = np.ones(len(a))
        if self.gp is not None:
            g, var = self.gp.predict(self.space.encode_many(a, "onehot"))
            mu = mu + g
        return mu, self.calibration * var

    def predict(self, archs: Sequence[ArchConfig], *, precision: str | None = None) -> np.ndarray:
        """Predicted latency (the median of the log-normal predictive), ms, shape (N,)."""
        if precision is not None and self.precision is not None and precision != self.precision:
            raise FewShotError(f"this adapted predictor is for precision {self.precision!r}, asked for {precision!r}")
        return np.exp(self.predict_log(archs)[0])

    def predict_interval(self, archs: Sequence[ArchConfig], *, level: float = 0.9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lower, median, upper) ms of the central ``level`` predictive interval."""
        if not 0 < level < 1:
            raise FewShotError(f"interval level must be in (0, 1), got {level}")
        from scipy.stats import norm

        mu, var = self.predict_log(archs)
        q = float(norm.ppf(0.5 + level / 2))
        sd = np.sqrt(var)
        return np.exp(mu - q * sd), np.exp(mu), np.exp(mu + q * sd)

    def predict_upper(self, archs: Sequence[ArchConfig], *, level: float = 0.9) -> np.ndarray:
        """Upper end of the ``level`` interval: what a search constraining on the upper bound uses."""
        return self.predict_interval(archs, level=level)[2]

    def describe(self) -> dict[str, Any]:
        return {"kind": "adapted", "path": self.info.get("path"),
                "sha256": sha256_file(self.info["path"]) if self.info.get("path") else None,
                "k": self.k, "statistic": self.statistic, "device": self.info.get("device")}

    # ---- persistence
    def to_json(self) -> dict[str, Any]:
        info = {k: v for k, v in self.info.items() if k != "path"}
        return {
            "schema_version": ADAPTED_SCHEMA_VERSION, "kind": ADAPTED_KIND,
            "space": self.space.to_json(), "backbone": self.backbone.to_json(),
            "sources": [s.describe() for s in self.sources],
            "mean": self.mean.to_json(), "gp": None if self.gp is None else self.gp.to_json(),
            "calibration": self.calibration, "info": info,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        atomic_write_json(path, self.to_json())
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, sources: Sequence[str | os.PathLike[str]] | None = None) -> AdaptedLatencyPredictor:
        """Read an adapted predictor. Its sources are re-opened from the recorded paths (or ``sources``, in the
        same order) and must have the recorded sha256, so a predictor never silently runs on another table."""
        p = Path(path)
        d = read_json(p, what="adapted latency predictor")
        where = str(p)
        if not isinstance(d, Mapping) or d.get("kind") != ADAPTED_KIND:
            raise FewShotError(f"{where}: not an adapted latency predictor (expected \"kind\": \"{ADAPTED_KIND}\")")
        if d.get("schema_version") != ADAPTED_SCHEMA_VERSION:
            raise FewShotError(f"{where}: schema_version {d.get('schema_version')!r} is not supported (this hwnas "
                               f"reads {ADAPTED_SCHEMA_VERSION})")
        try:
            recorded = list(d["sources"])
            paths = [str(s) for s in sources] if sources is not None else [str(r["path"]) for r in recorded]
            if len(paths) != len(recorded):
                raise FewShotError(f"{where}: fitted with {len(recorded)} source(s), {len(paths)} given")
            srcs: list[LatencySource] = []
            for j, (rec, sp) in enumerate(zip(recorded, paths, strict=True)):
                if not Path(sp).is_file():
                    raise FewShotError(f"{where}: source {j} {sp!r} does not exist (pass the sources' new paths)")
                if rec.get("sha256") and sha256_file(sp) != rec["sha256"]:
                    raise FewShotError(f"{where}: source {j} {sp!r} has changed since the fit (sha256 "
                                       f"{rec['sha256'][:12]}... recorded); refit with 'hwnas lut adapt'")
                srcs.append(load_source(sp))
            return cls(space=SearchSpace.from_json(d["space"]), backbone=Backbone.from_json(d["backbone"]),
                       sources=tuple(srcs), mean=_Mean.from_json(d["mean"]),
                       gp=None if d["gp"] is None else _GP.from_json(d["gp"]),
                       calibration=float(d["calibration"]), info={**d.get("info", {}), "path": where})
        except (KeyError, TypeError) as e:
            raise FewShotError(f"{where}: malformed adapted predictor ({e})") from None


def _check_inputs(archs: Sequence[ArchConfig], measured_ms: np.ndarray, space: SearchSpace,
                  sources: Sequence[LatencySource], backbone: Backbone) -> list[ArchConfig]:
    if measured_ms.ndim != 1 or len(measured_ms) != len(archs):
        raise FewShotError(f"{len(archs)} architectures but {measured_ms.shape} latencies")
    if len(archs) < MIN_MEASURED:
        raise FewShotError(f"adaptation needs at least {MIN_MEASURED} measured subnets (an affine map and one to "
                           f"check it), got {len(archs)}")
    for i, y in enumerate(measured_ms):
        if not (math.isfinite(float(y)) and y > 0):
            raise FewShotError(f"measured row {i + 1}: latency_ms must be positive and finite, got {y}")
    canon = []
    for i, a in enumerate(archs):
        try:
            canon.append(space.canonical(a))
        except ValueError as e:
            raise FewShotError(f"measured row {i + 1}: architecture {a} is not in space {space.name!r}: {e}") from None
    seen: dict[str, int] = {}
    for i, a in enumerate(canon):
        if str(a) in seen:
            raise FewShotError(f"measured rows {seen[str(a)] + 1} and {i + 1}: the same architecture twice ({a}); "
                               "average repeated measurements before adapting")
        seen[str(a)] = i
    for j, s in enumerate(sources):
        if s.space != space:
            raise FewShotError(f"source {j} ({s.describe().get('path')}) is for space {s.space.name!r}, the measured "
                               f"subnets for {space.name!r}")
        bb = _source_backbone(s)
        if bb is not None and Backbone.from_json(bb) != backbone:
            raise FewShotError(f"source {j} ({s.describe().get('path')}) was built for another backbone "
                               f"({bb}); the target's is {backbone.to_json()}")
    return canon


def adapt(
    archs: Sequence[ArchConfig],
    measured_ms: Sequence[float] | np.ndarray,
    *,
    space: SearchSpace,
    backbone: Backbone,
    sources: Sequence[LatencySource] = (),
    statistic: str = "median",
    precision: str | None = None,
    device: str | None = None,
    methods: Sequence[str] | None = None,
    info: Mapping[str, Any] | None = None,
) -> AdaptedLatencyPredictor:
    """Fit the target device's predictor from ``archs`` measured end to end (``measured_ms``, ms).

    ``methods`` restricts the candidates by name (``affine``, ``sources``, ``macs``, ``ops``, ``const``, each optionally
    suffixed ``+gp``); the benchmark uses it for its baselines. Raises `FewShotError` naming the row for bad input.
    """
    y = np.asarray(measured_ms, dtype=np.float64)
    canon = _check_inputs(archs, y, space, sources, backbone)
    z = np.log(y)
    u = _log_sources(sources, canon)
    m = _arch_matrix(backbone, canon)
    x = space.encode_many(canon, "onehot")
    cands = _candidates(len(sources), len(canon))
    if methods is not None:
        wanted = set(methods)
        cands = [c for c in cands if (c[0] + ("+gp" if c[2] else "")) in wanted]
        if not cands:
            raise FewShotError(f"methods {sorted(wanted)}: none applies with {len(sources)} source(s) and K = "
                               f"{len(canon)}")
    scores: dict[str, dict[str, float]] = {}
    best: tuple[float, int, tuple[str, int | None, bool], Hyper | None, float] | None = None
    for kind, src, use_gp in cands:
        hyper = _fit_one(kind, src, use_gp, u, m, x, z)[1]
        h = hyper.hyper if hyper is not None else None
        e, v = _loo(kind, src, use_gp, u, m, x, z, h)
        mse = float(np.mean(e * e))
        calib = float(np.mean(e * e / v))
        name = (f"affine:{src}" if kind == "affine" else kind) + ("+gp" if use_gp else "")
        scores[name] = {"loo_mse_log": mse, "loo_mape_pct": float(np.mean(np.abs(np.expm1(e))) * 100)}
        complexity = (1 if use_gp else 0) * 10 + (0 if kind == "affine" else 1)
        if best is None or mse < best[0] * (1 - _TIE_REL) or (mse <= best[0] and complexity <= best[1]):
            best = (mse, complexity, (kind, src, use_gp), h, calib)
    assert best is not None
    _, _, (kind, src, use_gp), h, calib = best
    mean, gp = _fit_one(kind, src, use_gp, u, m, x, z, hyper=h)
    chosen = mean.name + ("+gp" if gp is not None else "")
    meta: dict[str, Any] = {
        "k": len(canon), "statistic": statistic, "precision": precision, "device": device, "chosen": chosen,
        "candidates": scores, "fitted_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "measured_range_ms": [float(y.min()), float(y.max())],
        "resolutions": sorted({a.resolution for a in canon}),
        **dict(info or {}),
    }
    return AdaptedLatencyPredictor(space=space, backbone=backbone, sources=tuple(sources), mean=mean, gp=gp,
                                   calibration=max(calib, 1e-8), info=meta)


# --------------------------------------------------------------------------- which subnets to measure
def choose_subnets(
    space: SearchSpace,
    backbone: Backbone,
    k: int,
    *,
    sources: Sequence[LatencySource] = (),
    measured: Sequence[ArchConfig] = (),
    rng: np.random.Generator,
    pool: int = 2000,
    resolutions: Sequence[int] | None = None,
    candidates: Sequence[ArchConfig] | None = None,
) -> list[ArchConfig]:
    """``k`` new informative subnets to measure: greedy max-min distance in (predicted log latency, encoding)
    over a seeded pool, starting from the ``measured`` ones, so K -> 2K adds the subnets farthest from what is
    known. The predicted latency (mean of the sources' log predictions, or log MACs without a source) is weighted
    so its range counts as much as the whole encoding: the chosen set spans fast to slow and varied structure.
    ``candidates`` replaces the sampled pool (e.g. subnets that are already exported)."""
    if k < 1:
        raise FewShotError(f"--subnets must be >= 1, got {k}")
    res = tuple(resolutions) if resolutions else space.resolutions
    bad = [r for r in res if r not in space.resolutions]
    if bad:
        raise FewShotError(f"resolutions {bad} are not in space {space.name!r} (its resolutions: "
                           f"{list(space.resolutions)})")
    known = {str(space.canonical(a)) for a in measured}
    cands: dict[str, ArchConfig] = {}
    if candidates is not None:
        for a in candidates:
            c = space.canonical(a)
            if str(c) not in known and c.resolution in res:
                cands[str(c)] = c
    else:
        for _ in range(pool * 3):
            if len(cands) >= pool:
                break
            a = space.canonical(space.sample(rng, resolution=int(rng.choice(res))))
            if str(a) not in known:
                cands[str(a)] = a
        for a in (space.canonical(space.smallest(min(res))), space.canonical(space.largest(max(res)))):
            if str(a) not in known:
                cands.setdefault(str(a), a)
    if not cands:
        raise FewShotError("no candidate subnet left to choose from")
    pool_archs = list(cands.values())
    everything = [*measured, *pool_archs]
    u = _log_sources(sources, everything)
    score = u.mean(1) if u.shape[1] else np.log(macs_m(backbone, everything))
    enc = space.encode_many(everything, "onehot")
    enc_scale = float(np.sqrt(np.mean(_sqdist(enc[:200], enc[:200])))) or 1.0
    sd = float(np.std(score)) or 1.0
    feats = np.concatenate([((score - score.mean()) / sd * enc_scale / 2.0)[:, None], enc], axis=1)
    n_known = len(measured)
    chosen: list[int] = []
    if n_known:
        dmin = _sqdist(feats[n_known:], feats[:n_known]).min(1)
    else:  # start from both ends of the predicted range
        lo, hi = int(np.argmin(score)), int(np.argmax(score))
        chosen = [lo] if k == 1 else [lo, hi]
        dmin = _sqdist(feats[n_known:], feats[chosen]).min(1)
        chosen = [c - n_known for c in chosen]
    while len(chosen) < min(k, len(pool_archs)):
        dmin[chosen] = -1.0
        nxt = int(np.argmax(dmin))
        chosen.append(nxt)
        dmin = np.minimum(dmin, _sqdist(feats[n_known:], feats[[n_known + nxt]])[:, 0])
    return [pool_archs[i] for i in chosen[:k]]


def read_measured(path: str | os.PathLike[str], space: SearchSpace) -> tuple[list[ArchConfig], np.ndarray]:
    """Architectures and latencies from a measured CSV (columns ``arch``, ``latency_ms``; ``arch`` the string
    form or the JSON object), read by `latency_tables.predictor.read_measured_archs` (as `hwnas lut validate
    --measured`); errors name the line. Duplicates are refused by `adapt`."""
    from latency_tables.predictor import read_measured_archs

    if not Path(path).is_file():
        raise FewShotError(f"measured CSV {str(path)!r} does not exist or is not a file")
    return read_measured_archs(path, space=space)
