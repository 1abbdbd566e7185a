"""MnasNet's latency-aware reward (Tan et al., 2019, "MnasNet: Platform-Aware Neural Architecture Search").

Notation
--------
ACC in [0, 1] is top-1 accuracy, LAT the latency in ms on the target device, T the target latency in ms.

    reward = ACC * (LAT / T) ** w,     w = alpha if LAT <= T else beta

* soft preset (MnasNet's default): alpha = beta = -0.07 — a model twice as fast gains ~5 %, twice as slow loses ~5 %.
* hard preset: alpha = 0, beta = -1 — no bonus below the target, a steep penalty above it.

`HardConstraint` is the other common form: maximise ACC subject to LAT <= T (infeasible models score below every
feasible one, but keep an ordering among themselves so that a search can climb towards feasibility).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from supernet.errors import InputError

__all__ = ["HardConstraint", "Reward", "RewardLike", "reward_from_json"]


def _check_inputs(accuracy: float, latency_ms: float) -> None:
    if not math.isfinite(accuracy):
        raise InputError(f"accuracy must be finite, got {accuracy!r}")
    if not (math.isfinite(latency_ms) and latency_ms > 0):
        raise InputError(f"latency_ms must be a positive finite number of milliseconds, got {latency_ms!r}")


@dataclass(frozen=True)
class Reward:
    """MnasNet reward ``ACC * (LAT/T)**w`` with ``w = alpha`` if ``LAT <= T`` else ``beta``.

    Attributes:
        target_ms: target latency T in milliseconds (> 0).
        alpha: exponent used at or below the target (<= 0: being faster never hurts).
        beta: exponent used above the target (<= 0: being slower never helps).

    The reward is monotone non-decreasing in accuracy and non-increasing in latency; at ``LAT == T`` it equals
    the accuracy.
    """

    target_ms: float
    alpha: float = -0.07
    beta: float = -0.07

    kind: ClassVar[str] = "mnasnet"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_ms) and self.target_ms > 0):
            raise InputError(f"target_ms (--target-ms): expected a positive finite number of milliseconds, got {self.target_ms!r}")
        if not (math.isfinite(self.alpha) and math.isfinite(self.beta)):
            raise InputError(f"reward exponents (--alpha, --beta) must be finite, got {self.alpha}, {self.beta}")
        if self.alpha > 0 or self.beta > 0:
            raise InputError(
                f"Reward exponents must be <= 0 (alpha={self.alpha}, beta={self.beta}); a positive exponent "
                "would reward being slower"
            )

    @classmethod
    def soft(cls, target_ms: float) -> Reward:
        """MnasNet's soft constraint: alpha = beta = -0.07."""
        return cls(target_ms=target_ms, alpha=-0.07, beta=-0.07)

    @classmethod
    def hard(cls, target_ms: float) -> Reward:
        """MnasNet's hard preset: alpha = 0 (no bonus below T), beta = -1 (steep penalty above T)."""
        return cls(target_ms=target_ms, alpha=0.0, beta=-1.0)

    def exponent(self, latency_ms: float) -> float:
        return self.alpha if latency_ms <= self.target_ms else self.beta

    def factor(self, latency_ms: float) -> float:
        """The latency multiplier ``(LAT/T)**w`` (> 0), so ``reward = accuracy * factor``."""
        _check_inputs(0.0, latency_ms)
        return (latency_ms / self.target_ms) ** self.exponent(latency_ms)

    def affine(self, latency_ms: float) -> tuple[float, float]:
        """``(scale, offset)`` with ``reward = scale * accuracy + offset`` at this latency.

        Lets a surrogate that models accuracy alone turn its prediction into a reward prediction exactly, since
        latency comes from a cheap table.
        """
        return self.factor(latency_ms), 0.0

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        _check_inputs(accuracy, latency_ms)
        return float(accuracy) * self.factor(latency_ms)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "target_ms": self.target_ms, "alpha": self.alpha, "beta": self.beta}


@dataclass(frozen=True, kw_only=True)
class HardConstraint:
    """Maximise accuracy subject to ``LAT <= T``.

    Feasible models score their accuracy (in [0, 1]); an infeasible one scores ``-LAT/T`` (< -1), so every
    feasible model beats every infeasible one and, among infeasible ones, faster is better. The reward is
    therefore *not* a scaled accuracy — `factor` is undefined for it.
    """

    target_ms: float
    kind: ClassVar[str] = "hard-constraint"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.target_ms) and self.target_ms > 0):
            raise InputError(
                f"target_ms (--target-ms): expected a positive finite number of milliseconds, got {self.target_ms!r}"
            )

    def affine(self, latency_ms: float) -> tuple[float, float]:
        """``(scale, offset)`` with ``reward = scale * accuracy + offset`` at this latency (see `Reward.affine`)."""
        _check_inputs(0.0, latency_ms)
        if latency_ms <= self.target_ms:
            return 1.0, 0.0
        return 0.0, -latency_ms / self.target_ms

    def __call__(self, accuracy: float, latency_ms: float) -> float:
        _check_inputs(accuracy, latency_ms)
        if latency_ms <= self.target_ms:
            return float(accuracy)
        return -latency_ms / self.target_ms

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "target_ms": self.target_ms}


RewardLike = Reward | HardConstraint


def reward_from_json(d: dict[str, Any]) -> RewardLike:
    """Inverse of ``to_json`` for either reward form."""
    kind = d.get("kind")
    if kind == "mnasnet":
        return Reward(target_ms=float(d["target_ms"]), alpha=float(d["alpha"]), beta=float(d["beta"]))
    if kind == "hard-constraint":
        return HardConstraint(target_ms=float(d["target_ms"]))
    raise InputError(f"reward JSON: unknown kind {kind!r}; expected 'mnasnet' or 'hard-constraint'")
