"""Scalar Kalman filter for the slowdown of a device relative to a latency model (as in ALERT, ASPLOS'20).

Notation: x = log(slowdown), with slowdown = observed latency / modelled latency. State model: a random walk
x_k = x_{k-1} + w, w ~ N(0, Q). Observation: y_k = log(observed_k / modelled_k) = x_k + v, v ~ N(0, R).
Working in log space makes multiplicative (lognormal) latency noise additive and Gaussian, so the filter is exact
for it, and keeps the slowdown positive.

R is adapted online from the innovations nu = y - x_prior: E[nu^2] = P_prior + R, so R tracks an exponential
average of nu^2 - P_prior (floored at ``r_min``). The predictive spread of the next observation, sqrt(P + Q + R),
is what a policy uses as its safety margin.

Heavy tails: a request preempted by the OS scheduler on a busy machine can take 10-100x its usual time. Such a
sample says nothing about the next request, so with ``gate`` set the innovation is clipped to ``gate`` predictive
standard deviations before it moves x or R (a Huber-type robust update): a run of slow requests (a real
slowdown) still moves the estimate, by up to ``gate`` sigma per request, one outlier barely does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["LogKalman"]


@dataclass
class LogKalman:
    """Mutable filter state; `update` once per observation. Units: log of a dimensionless ratio."""

    x: float = 0.0
    p: float = 0.1
    q: float = 5e-4
    r: float = 4e-3
    r_min: float = 1e-4
    r_adapt: float = 0.05
    clip: float = 3.0  # |y| is clipped to this (a factor e^3 ~ 20): one absurd sample must not wreck the state
    gate: float | None = None  # innovations clipped to gate x sqrt(P_prior + R); None: off

    def __post_init__(self) -> None:
        if not (self.p >= 0 and self.q >= 0 and self.r > 0 and self.r_min > 0 and 0 <= self.r_adapt <= 1):
            raise ValueError(f"LogKalman: invalid parameters {self}")
        self._init = (self.x, self.p, self.r)

    @property
    def slowdown(self) -> float:
        """Point estimate exp(x) of observed / modelled latency."""
        return math.exp(self.x)

    def predictive_std(self) -> float:
        """Standard deviation of the next observation's log ratio."""
        return math.sqrt(self.p + self.q + self.r)

    def update(self, y: float) -> None:
        if math.isnan(y):
            return
        y = min(self.clip, max(-self.clip, y))
        p_prior = self.p + self.q
        nu = y - self.x
        if self.gate is not None:
            bound = self.gate * math.sqrt(p_prior + self.r)
            nu = min(bound, max(-bound, nu))
        k = p_prior / (p_prior + self.r)
        self.x += k * nu
        self.p = (1.0 - k) * p_prior
        if self.r_adapt:
            self.r = max(self.r_min, (1.0 - self.r_adapt) * self.r + self.r_adapt * (nu * nu - p_prior))

    def reset(self) -> None:
        self.x, self.p, self.r = self._init
