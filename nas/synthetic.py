"""SYNTHETIC objectives for tests and benchmarks only — no network is trained or timed here.

They stand in for "supernet validation accuracy" and "LUT latency" so that search strategies can be compared
quickly and offline. They are shaped like the real thing (accuracy saturates with capacity and resolution, with
diminishing returns per stage, interactions and a few non-monotone preferences, calibrated so that the soft
MnasNet reward has an interior optimum rather than "smallest network wins"; latency is a sum of per-block
costs that grow like ``e * C * (2C + k^2) * HW`` plus per-block overhead), but their numbers mean nothing.

Notation
--------
For an architecture with resolution ``r``, stage depths ``d_s`` and per-slot kernel ``k`` / expand ``e``:
``u(x) = (x - min) / (max - min)`` maps a choice to [0, 1]. Stage ``s`` has width ``C_s`` and feature-map side
``r / 4 / 2**stride_s``.

    latency_ms = base + sum_blocks [ a * e * C_s * (2 C_s + eff(k) k^2) * HW_s(r) + overhead ]
    z          = sum_s sqrt( sum_{j<d_s} w_sj (1 + b_sj u(k) + c_sj u(e) + g_sj u(k) u(e) - h_sj (u(k) - .5)^2) )
                 + rho u(r) + eta u(r) * mean_active u(k)
    accuracy   = 0.83 - 0.70 * exp(-z / tau) + jitter(arch)        (tau = 3)

``jitter`` is a deterministic ±0.002 term from a hash of the architecture string (standing in for evaluation
noise). Weights come from ``np.random.default_rng(seed)``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from nas._codec import SpaceCodec
from nas.objective import ArchFn, Objective
from nas.reward import HardConstraint, Reward, RewardLike
from supernet.space import ArchConfig, SearchSpace, get_space

__all__ = ["SyntheticAccuracy", "SyntheticLatency", "make_synthetic_objective", "synthetic_macs"]

_WIDTHS = (24.0, 40.0, 80.0, 112.0, 160.0)
_STRIDES = (0, 1, 2, 2, 3)  # extra /2 steps after the /4 stem, per stage (OFA MobileNetV3)


def _stage_params(space: SearchSpace) -> tuple[np.ndarray, np.ndarray]:
    s = space.n_stages
    widths = np.asarray([_WIDTHS[i % len(_WIDTHS)] * (1 + i // len(_WIDTHS)) for i in range(s)])
    strides = np.asarray([_STRIDES[i % len(_STRIDES)] + 3 * (i // len(_STRIDES)) for i in range(s)])
    return widths, strides


def _unit(x: np.ndarray, choices: Sequence[int]) -> np.ndarray:
    lo, hi = min(choices), max(choices)
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def _split(space: SearchSpace, cfgs: Sequence[ArchConfig]) -> tuple[np.ndarray, ...]:
    """(resolution, depths, kernels, expands, active) arrays; activity comes from the depths, so inactive slots
    are ignored whether or not the configs are canonical (they are not re-validated, for speed)."""
    v = SpaceCodec(space).ordinal_values(list(cfgs))
    o = 1 + space.n_stages
    res, depths = v[:, 0], v[:, 1:o]
    ks = v[:, o : o + space.n_slots].reshape(len(v), space.n_stages, space.max_depth)
    es = v[:, o + space.n_slots :].reshape(len(v), space.n_stages, space.max_depth)
    active = np.arange(space.max_depth)[None, None, :] < depths[:, :, None]
    ks, es = np.where(active, ks, 0.0), np.where(active, es, 0.0)
    return res, depths, ks, es, active


@dataclass(frozen=True)
class SyntheticLatency:
    """SYNTHETIC latency (ms), see the module notation. ``scale_ms`` sets the largest network's latency."""

    space: SearchSpace
    scale_ms: float = 40.0
    overhead_ms: float = 0.08
    base_ms: float = 1.0
    _norm: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        cost, n_blocks = self._cost([self.space.largest()])
        norm = (self.scale_ms - self.base_ms - self.overhead_ms * float(n_blocks[0])) / float(cost[0])
        object.__setattr__(self, "_norm", norm)

    def _cost(self, cfgs: Sequence[ArchConfig]) -> tuple[np.ndarray, np.ndarray]:
        """(unnormalised compute cost, number of active blocks) per architecture."""
        res, _, ks, es, active = _split(self.space, cfgs)
        widths, strides = _stage_params(self.space)
        hw = (res[:, None] / 4.0 / (2.0 ** strides[None, :])) ** 2  # (N, S)
        # early, wide-feature-map stages are memory bound: more time per MAC than late ones
        stage_eff = np.linspace(1.8, 0.9, self.space.n_stages)[None, :, None]
        eff = np.where(ks >= 7, 1.3, 1.0)  # large depthwise kernels run below peak
        cost = stage_eff * es * widths[None, :, None] * (2 * widths[None, :, None] + eff * ks**2) * hw[:, :, None]
        return np.where(active, cost, 0.0).sum(axis=(1, 2)), active.sum(axis=(1, 2)).astype(np.float64)

    def __call__(self, cfgs: Sequence[ArchConfig]) -> np.ndarray:
        cost, n_blocks = self._cost(cfgs)
        return self.base_ms + cost * self._norm + self.overhead_ms * n_blocks


def synthetic_macs(space: SearchSpace) -> ArchFn:
    """A SYNTHETIC MACs-like proxy (millions): same cost model as the latency without kernel inefficiency/overhead."""
    widths, strides = _stage_params(space)

    def macs(cfgs: Sequence[ArchConfig]) -> np.ndarray:
        res, _, ks, es, active = _split(space, cfgs)
        hw = (res[:, None] / 4.0 / (2.0 ** strides[None, :])) ** 2
        cost = es * widths[None, :, None] * (2 * widths[None, :, None] + ks**2) * hw[:, :, None]
        return np.where(active, cost, 0.0).sum(axis=(1, 2)) / 1e6

    return macs


@dataclass(frozen=True)
class SyntheticAccuracy:
    """SYNTHETIC accuracy in [0, 1], see the module notation; deterministic given ``seed``."""

    space: SearchSpace
    seed: int = 0
    tau: float = 3.0
    jitter: float = 0.002

    def _weights(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        shape = (self.space.n_stages, self.space.max_depth)
        depth_decay = 0.8 ** np.arange(self.space.max_depth)[None, :]
        return {
            "w": rng.uniform(0.25, 0.6, shape) * depth_decay,
            "b": rng.uniform(0.1, 0.8, shape),
            "c": rng.uniform(0.2, 1.0, shape),
            "g": rng.uniform(-0.3, 0.4, shape),
            "h": rng.uniform(0.0, 1.0, shape) * (rng.random(shape) < 0.3),  # some slots prefer the middle kernel
        }

    def __call__(self, cfgs: Sequence[ArchConfig]) -> np.ndarray:
        res, _, ks, es, active = _split(self.space, cfgs)
        w = self._weights()
        uk = np.where(active, _unit(ks, self.space.kernel_choices), 0.0)
        ue = np.where(active, _unit(es, self.space.expand_choices), 0.0)
        ur = _unit(res, self.space.resolutions)
        block = w["w"] * (1 + w["b"] * uk + w["c"] * ue + w["g"] * uk * ue - w["h"] * 4 * (uk - 0.5) ** 2)
        stage = np.sqrt(np.maximum(np.where(active, block, 0.0).sum(axis=2), 0.0))
        mean_uk = uk.sum(axis=(1, 2)) / np.maximum(active.sum(axis=(1, 2)), 1)
        z = stage.sum(axis=1) + 0.9 * ur + 0.5 * ur * mean_uk
        acc = 0.83 - 0.70 * np.exp(-z / self.tau)
        # str() shows active slots only, so it is the same for every form of one network
        jit = np.asarray([zlib.crc32(f"{self.seed}:{c}".encode()) / 2**32 - 0.5 for c in cfgs]) * 2 * self.jitter
        return np.clip(acc + jit, 0.0, 1.0)


def make_synthetic_objective(
    space: SearchSpace | str = "ofa-mbv3",
    *,
    seed: int = 0,
    target_ms: float | None = None,
    target_quantile: float = 0.4,
    reward: str = "soft",
) -> Objective:
    """A SYNTHETIC `Objective` for tests and benchmarks.

    Args:
        space: a space or a registered space name.
        seed: fixes the accuracy weights (the latency model has no randomness).
        target_ms: latency target; by default the ``target_quantile`` of latency over 2,000 random subnets
            (drawn with a fixed generator, so the target is reproducible).
        reward: "soft", "hard" (MnasNet presets) or "constraint" (`HardConstraint`).
    """
    sp = get_space(space) if isinstance(space, str) else space
    lat = SyntheticLatency(sp)
    if target_ms is None:
        rng = np.random.default_rng(12345)
        sample = [sp.sample(rng) for _ in range(2000)]
        target_ms = float(np.quantile(lat(sample), target_quantile))
    rewards: dict[str, RewardLike] = {
        "soft": Reward.soft(target_ms),
        "hard": Reward.hard(target_ms),
        "constraint": HardConstraint(target_ms=target_ms),
    }
    if reward not in rewards:
        raise ValueError(f"reward {reward!r}: expected one of {sorted(rewards)}")
    return Objective(
        space=sp,
        accuracy_fn=SyntheticAccuracy(sp, seed=seed),
        latency_fn=lat,
        reward=rewards[reward],
        features={"macs": synthetic_macs(sp)},
    )
