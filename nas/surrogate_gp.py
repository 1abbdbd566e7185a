"""A small exact Gaussian process in numpy, built for the GP-surrogate architecture search.

Notation
--------
Inputs ``x in R^d`` are split into ``G`` column groups (e.g. resolution, depths, kernels of stage s, derived
latency). ``D_g(x, x') = sum_{j in g} (x_j - x'_j)^2``.

    r^2(x, x') = sum_g D_g(x, x') / l_g^2                       (one length scale per group: order-respecting,
                                                                 few enough hyperparameters for 10-300 points)
    k(x, x')   = s_m^2 * Matern52(r) + s_l^2 * <x - c, x' - c> / d + s_n^2 * [x == x']
    Matern52(r) = (1 + sqrt5 r + 5 r^2 / 3) exp(-sqrt5 r)

The linear term (``c`` = training mean) lets the GP extrapolate the "more capacity, more accuracy" trend that a
stationary kernel alone forgets away from the data. Targets are standardised; an optional prior mean (e.g. an
accuracy predictor's output) is subtracted first. Hyperparameters ``theta = log(l_1..l_G, s_m^2, s_l^2, s_n^2)``
are MAP estimates (log-normal priors, L-BFGS-B with analytic gradients, warm-started from the previous fit).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from scipy.optimize import minimize
from scipy.special import erfcx, log_ndtr, ndtr

__all__ = ["GroupGP", "expected_improvement", "log_expected_improvement", "probability_of_improvement",
           "upper_confidence_bound"]

log = logging.getLogger(__name__)

_SQRT5 = math.sqrt(5.0)


@dataclass
class _Fit:
    X: np.ndarray
    center: np.ndarray
    y_mean: float
    y_std: float
    L: np.ndarray
    alpha: np.ndarray
    theta: np.ndarray


class GroupGP:
    """Exact GP regression with per-group Matern-5/2 length scales plus a linear term (see module notation).

    Args:
        groups: group index (0..G-1) of every input column.
        linear: include the linear kernel term.
    """

    def __init__(self, groups: Sequence[int], *, linear: bool = True) -> None:
        g = np.asarray(groups, dtype=np.int64)
        if g.ndim != 1 or g.size == 0 or g.min() < 0:
            raise ValueError("groups: expected a non-empty list of non-negative group indices, one per column")
        self.groups = g
        self.n_groups = int(g.max()) + 1
        self.group_sizes = np.bincount(g, minlength=self.n_groups).astype(np.float64)
        self.linear = linear
        self._fit: _Fit | None = None
        self._n_fits = 0
        # log-normal prior centres: a length scale of ~sqrt(group size) means "moving every column of the group by
        # its whole range is one length scale"
        self._ls_centre = np.log(np.sqrt(np.maximum(self.group_sizes, 1.0)))

    # ----------------------------------------------------------------- kernel pieces
    def _sqdist_groups(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        out = np.empty((self.n_groups, len(A), len(B)))
        for gi in range(self.n_groups):
            cols = self.groups == gi
            a, b = A[:, cols], B[:, cols]
            d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
            out[gi] = np.maximum(d, 0.0)
        return out

    def _unpack(self, theta: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        G = self.n_groups
        return np.exp(theta[:G]), float(np.exp(theta[G])), float(np.exp(theta[G + 1])), float(np.exp(theta[G + 2]))

    def _bounds(self) -> list[tuple[float, float]]:
        ls = [(c - 3.0, c + 4.0) for c in self._ls_centre]
        return [*ls, (math.log(1e-2), math.log(20.0)), (math.log(1e-5), math.log(10.0)),
                (math.log(1e-6), math.log(1.0))]

    def _default_theta(self) -> np.ndarray:
        return np.concatenate([self._ls_centre, [0.0, math.log(0.1), math.log(1e-2)]])

    def _log_prior(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Log-normal priors: length scales around sqrt(group size) (sd 1.5), noise around 1e-2 (sd 2)."""
        G = self.n_groups
        centre = np.concatenate([self._ls_centre, [0.0, math.log(0.1), math.log(1e-2)]])
        sd = np.concatenate([np.full(G, 1.5), [2.0, 2.0, 2.0]])
        z = (theta - centre) / sd
        return float(-0.5 * (z * z).sum()), -z / sd

    def _nll(self, theta: np.ndarray, D: np.ndarray, lin: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        ls, sm, sl, sn = self._unpack(theta)
        r2 = np.tensordot(1.0 / ls**2, D, axes=1)
        r = np.sqrt(r2)
        e = np.exp(-_SQRT5 * r)
        M = (1 + _SQRT5 * r + 5.0 / 3.0 * r2) * e
        dM_dr2 = -5.0 / 6.0 * (1 + _SQRT5 * r) * e
        n = len(y)
        K = sm * M + (sl * lin if self.linear else 0.0) + (sn + 1e-8) * np.eye(n)
        try:
            L = np.linalg.cholesky(K)
        except np.linalg.LinAlgError:
            return 1e10, np.zeros_like(theta)
        alpha = cho_solve((L, True), y)
        nll = 0.5 * y @ alpha + np.log(np.diag(L)).sum() + 0.5 * n * math.log(2 * math.pi)
        Kinv = cho_solve((L, True), np.eye(n))
        W = Kinv - np.outer(alpha, alpha)  # dNLL/dtheta_i = 0.5 tr(W dK_i)
        grad = np.empty_like(theta)
        G = self.n_groups
        base = sm * dM_dr2
        for gi in range(G):
            dK = base * (-2.0 * D[gi] / ls[gi] ** 2)
            grad[gi] = 0.5 * (W * dK).sum()
        grad[G] = 0.5 * (W * (sm * M)).sum()
        grad[G + 1] = 0.5 * (W * (sl * lin)).sum() if self.linear else 0.0
        grad[G + 2] = 0.5 * np.trace(W) * sn
        lp, dlp = self._log_prior(theta)
        return float(nll - lp), grad - dlp

    # ----------------------------------------------------------------- public
    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        *,
        prior_mean: np.ndarray | None = None,
        optimize: bool = True,
        theta0: np.ndarray | None = None,
        maxiter: int = 100,
    ) -> GroupGP:
        """Fit to ``X (n, d)``, ``y (n,)``; with ``optimize=False`` keep ``theta0`` (or the last fit's).

        ``maxiter`` caps the L-BFGS-B iterations of each hyperparameter optimisation (warm-started from the last
        fit, so later fits need few)."""
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if X.ndim != 2 or X.shape[1] != self.groups.size or len(X) != len(y):
            raise ValueError(f"fit: expected X of shape (n, {self.groups.size}) and y of shape (n,), got "
                             f"{X.shape} and {y.shape}")
        resid = y - (0.0 if prior_mean is None else np.asarray(prior_mean, dtype=np.float64).reshape(-1))
        y_mean = float(resid.mean())
        y_std = float(resid.std()) if len(resid) > 1 and resid.std() > 1e-12 else 1.0
        ys = (resid - y_mean) / y_std
        center = X.mean(axis=0)
        Xc = X - center
        lin = Xc @ Xc.T / X.shape[1]
        D = self._sqdist_groups(X, X)
        if theta0 is None:
            theta0 = self._fit.theta if self._fit is not None else self._default_theta()
        theta = np.clip(theta0, [b[0] for b in self._bounds()], [b[1] for b in self._bounds()])
        if optimize and len(y) >= 2:
            best_val, best_theta = math.inf, theta
            self._n_fits += 1
            # warm start; every few fits also from the default, so a poor local optimum is not kept for ever
            starts = [theta] if (self._fit is not None and self._n_fits % 4) else [theta, self._default_theta()]
            for start in starts:
                res = minimize(self._nll, start, args=(D, lin, ys), jac=True, method="L-BFGS-B",
                               bounds=self._bounds(), options={"maxiter": maxiter})
                if res.fun < best_val:
                    best_val, best_theta = float(res.fun), res.x
            theta = best_theta
        ls, sm, sl, sn = self._unpack(theta)
        K = self._kernel_from(D, lin, ls, sm, sl) + (sn + 1e-8) * np.eye(len(y))
        L = np.linalg.cholesky(K)
        alpha = cho_solve((L, True), ys)
        self._fit = _Fit(X=X, center=center, y_mean=y_mean, y_std=y_std, L=L, alpha=alpha, theta=theta)
        return self

    def _kernel_from(self, D: np.ndarray, lin: np.ndarray, ls: np.ndarray, sm: float, sl: float) -> np.ndarray:
        r2 = np.tensordot(1.0 / ls**2, D, axes=1)
        r = np.sqrt(r2)
        M = (1 + _SQRT5 * r + 5.0 / 3.0 * r2) * np.exp(-_SQRT5 * r)
        return sm * M + (sl * lin if self.linear else 0.0)

    @property
    def theta(self) -> np.ndarray:
        if self._fit is None:
            raise RuntimeError("GroupGP: call fit() first")
        return self._fit.theta.copy()

    def predict(self, Xs: np.ndarray, *, prior_mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean and standard deviation of the latent function (noise excluded) at ``Xs``."""
        f = self._fit
        if f is None:
            raise RuntimeError("GroupGP: call fit() first")
        Xs = np.asarray(Xs, dtype=np.float64)
        ls, sm, sl, _ = self._unpack(f.theta)
        # r^2 = sum_g D_g / l_g^2 is one squared distance between inputs scaled column-wise by 1 / l_g(column):
        # one matrix product instead of one per group (candidate pools have thousands of rows)
        inv = 1.0 / ls[self.groups]
        A, B = Xs * inv, f.X * inv
        r2 = np.maximum((A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T, 0.0)
        r = np.sqrt(r2)
        lin = (Xs - f.center) @ (f.X - f.center).T / Xs.shape[1]
        Ks = sm * (1 + _SQRT5 * r + 5.0 / 3.0 * r2) * np.exp(-_SQRT5 * r) + (sl * lin if self.linear else 0.0)
        mu = Ks @ f.alpha
        V = solve_triangular(f.L, Ks.T, lower=True)
        xc = Xs - f.center
        prior_var = sm + (sl * (xc * xc).sum(1) / Xs.shape[1] if self.linear else 0.0)
        var = np.maximum(prior_var - (V * V).sum(0), 1e-12)
        mean = mu * f.y_std + f.y_mean
        if prior_mean is not None:
            mean = mean + np.asarray(prior_mean, dtype=np.float64).reshape(-1)
        return mean, np.sqrt(var) * f.y_std


# --------------------------------------------------------------------------- acquisition functions (maximisation)
def _log_h(z: np.ndarray) -> np.ndarray:
    """log(z Phi(z) + phi(z)), stable for very negative z (LogEI, Ament et al. 2023)."""
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    log_phi = -0.5 * z * z - 0.5 * math.log(2 * math.pi)
    hi = z > -1.0
    zh = z[hi]
    out[hi] = np.log(zh * ndtr(zh) + np.exp(log_phi[hi]))
    mid = (~hi) & (z > -1e3)
    zm = -z[mid]
    out[mid] = log_phi[mid] + np.log1p(-zm * math.sqrt(math.pi / 2) * erfcx(zm / math.sqrt(2)))
    lo = z <= -1e3
    out[lo] = log_phi[lo] - 2 * np.log(-z[lo])
    return out


def log_expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, *, xi: float = 0.0) -> np.ndarray:
    """log EI for maximisation (Brochu et al. 2010, eq. 4; computed in log space to rank far-off candidates).

    Candidates with zero predictive std get ``log(max(mean - best - xi, 0))`` (``-inf`` when not better).
    """
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    out = np.full(mean.shape, -np.inf)
    pos = std > 1e-12
    z = (mean[pos] - best - xi) / std[pos]
    out[pos] = np.log(std[pos]) + _log_h(z)
    imp = mean[~pos] - best - xi
    with np.errstate(divide="ignore"):
        out[~pos] = np.where(imp > 0, np.log(np.maximum(imp, 1e-300)), -np.inf)
    return out


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, *, xi: float = 0.0) -> np.ndarray:
    return np.exp(log_expected_improvement(mean, std, best, xi=xi))


def probability_of_improvement(mean: np.ndarray, std: np.ndarray, best: float, *, xi: float = 0.0) -> np.ndarray:
    """log PI (Brochu et al. 2010, eq. 3); log space for the same reason as EI."""
    std = np.maximum(np.asarray(std, dtype=np.float64), 1e-12)
    return log_ndtr((np.asarray(mean) - best - xi) / std)


def upper_confidence_bound(mean: np.ndarray, std: np.ndarray, *, kappa: float = 2.0) -> np.ndarray:
    return np.asarray(mean) + kappa * np.asarray(std)
