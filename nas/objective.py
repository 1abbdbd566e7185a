"""What a search strategy maximises, and the unit its budget is counted in.

An `Objective` bundles a search space, a batched accuracy function (expensive: in the real pipeline one supernet
validation pass after BN recalibration, ~1 s per subnet), a batched latency function (cheap: a LUT prediction),
and a reward (`nas.reward`). `Objective.evaluate` measures accuracy and latency and scores the reward.

Budget accounting: one *evaluation* is one accuracy measurement of one distinct canonical architecture.
`evaluate` caches by canonical architecture, so asking again for a network already measured (under any
equivalent non-canonical form) returns the stored `Evaluation` and is not counted again. Latency and the
optional derived ``features`` are treated as free: strategies may query `predict_latency` / `features_of` on
candidates they never evaluate (as OFA's evolution does with its latency predictor).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.reward import Reward, RewardLike
from supernet.space import ArchConfig, SearchSpace

__all__ = ["ArchFn", "Evaluation", "Objective", "reward_json"]

log = logging.getLogger(__name__)

ArchFn = Callable[[Sequence[ArchConfig]], np.ndarray]
"""A batched function of architectures: ``fn(cfgs) -> array of shape (len(cfgs),)``."""


@dataclass(frozen=True)
class Evaluation:
    """One measured architecture.

    Attributes:
        arch: the canonical architecture.
        accuracy: validation accuracy in [0, 1].
        latency_ms: predicted or measured latency on the target device, ms.
        reward: the objective's reward for (accuracy, latency_ms); larger is better.
    """

    arch: ArchConfig
    accuracy: float
    latency_ms: float
    reward: float

    def to_json(self) -> dict[str, Any]:
        return {
            "arch": str(self.arch),
            "arch_json": self.arch.to_json(),
            "accuracy": self.accuracy,
            "latency_ms": self.latency_ms,
            "reward": self.reward,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Evaluation:
        return cls(
            arch=ArchConfig.from_json(d["arch_json"]),
            accuracy=float(d["accuracy"]),
            latency_ms=float(d["latency_ms"]),
            reward=float(d["reward"]),
        )


def _as_batch(name: str, values: Any, n: int) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape != (n,):
        raise ValueError(f"{name} returned {arr.size} values for {n} architectures; expected one per architecture")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} returned non-finite values: {arr[~np.isfinite(arr)][:5]}")
    return arr


@dataclass
class Objective:
    """What a strategy maximises; the owner of the evaluation count (the budget unit).

    Attributes:
        space: the search space; every architecture is canonicalised through it.
        accuracy_fn: batched accuracy in [0, 1]; expensive, called only for architectures not yet measured.
        latency_fn: batched latency in ms; assumed cheap (LUT), may be called on unevaluated candidates.
        reward: maps (accuracy, latency_ms) to the scalar to maximise (`Reward` or `HardConstraint`).
        features: optional cheap derived features for surrogates, name -> batched callable (e.g. a MACs proxy).
        accuracy_prior: optional cheap accuracy predictor (e.g. `nas.predictor.AccuracyPredictor.at(precision)`)
            that surrogate strategies may use as a prior mean or an input feature.
        precision: the numeric precision the searched subnets will run at ("fp32", "fp16", "int8"). Provenance:
            ``accuracy_fn``, ``latency_fn`` and ``accuracy_prior`` must all be at this precision (the pipeline
            builds them from one latency table and one precision); it is shown by `describe`.

    Not thread-safe; one objective per search process.
    """

    space: SearchSpace
    accuracy_fn: ArchFn
    latency_fn: ArchFn
    reward: RewardLike
    features: Mapping[str, ArchFn] = field(default_factory=dict)
    accuracy_prior: ArchFn | None = None
    precision: str = "fp32"
    _cache: dict[ArchConfig, Evaluation] = field(default_factory=dict, init=False, repr=False)
    _n_measured: int = field(default=0, init=False, repr=False)

    @property
    def n_measured(self) -> int:
        """Accuracy measurements made so far (each distinct canonical architecture counts once)."""
        return self._n_measured

    def canonical(self, cfg: ArchConfig) -> ArchConfig:
        return self.space.canonical(cfg)

    def lookup(self, cfg: ArchConfig) -> Evaluation | None:
        """The stored evaluation of ``cfg`` (canonicalised), or None if it was never measured."""
        return self._cache.get(self.space.canonical(cfg))

    def remember(self, evals: Iterable[Evaluation]) -> None:
        """Seed the cache with evaluations made elsewhere (e.g. restored from an Optuna study on resume).

        They are not counted as measurements of this objective. The reward is re-scored with this objective's
        reward so a changed target cannot leak stale rewards.
        """
        for ev in evals:
            arch = self.space.canonical(ev.arch)
            self._cache[arch] = Evaluation(arch, ev.accuracy, ev.latency_ms, self.score(ev.accuracy, ev.latency_ms))

    def score(self, accuracy: float, latency_ms: float) -> float:
        return float(self.reward(float(accuracy), float(latency_ms)))

    def evaluate(self, cfgs: Sequence[ArchConfig]) -> list[Evaluation]:
        """Evaluate architectures, in order, measuring each distinct new canonical architecture once.

        Returns one `Evaluation` per input (repeats share the cached one). ``accuracy_fn`` and ``latency_fn``
        are called once each, batched over the new architectures only.
        """
        canon = [self.space.canonical(c) for c in cfgs]
        new: list[ArchConfig] = []
        seen_new: set[ArchConfig] = set()
        for c in canon:
            if c not in self._cache and c not in seen_new:
                new.append(c)
                seen_new.add(c)
        if new:
            acc = _as_batch("accuracy_fn", self.accuracy_fn(new), len(new))
            lat = _as_batch("latency_fn", self.latency_fn(new), len(new))
            if np.any((acc < 0) | (acc > 1)):
                raise ValueError(f"accuracy_fn must return values in [0, 1]; got range [{acc.min()}, {acc.max()}]")
            if np.any(lat <= 0):
                raise ValueError(f"latency_fn must return positive milliseconds; got minimum {lat.min()}")
            for c, a, t in zip(new, acc, lat, strict=True):
                self._cache[c] = Evaluation(c, float(a), float(t), self.score(float(a), float(t)))
            self._n_measured += len(new)
            log.debug("measured %d new architectures (%d total)", len(new), self._n_measured)
        return [self._cache[c] for c in canon]

    # ----------------------------------------------------------------- free side information
    def predict_latency(self, cfgs: Sequence[ArchConfig]) -> np.ndarray:
        """Latency in ms of (canonical) architectures; not counted against the budget."""
        if not cfgs:
            return np.zeros(0)
        return _as_batch("latency_fn", self.latency_fn(list(cfgs)), len(cfgs))

    def features_of(self, cfgs: Sequence[ArchConfig]) -> np.ndarray:
        """The derived features, shape ``(len(cfgs), len(features))`` in the mapping's order; not counted."""
        cols = [_as_batch(f"feature {name!r}", fn(list(cfgs)), len(cfgs)) for name, fn in self.features.items()]
        return np.stack(cols, axis=1) if cols else np.zeros((len(cfgs), 0))

    def reward_affine(self, latency_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-latency ``(scale, offset)`` with ``reward = scale * accuracy + offset``, if the reward has that form.

        Both `Reward` and `HardConstraint` do; a custom reward without ``affine`` gives None and surrogates then
        model the reward directly.
        """
        affine = getattr(self.reward, "affine", None)
        if affine is None:
            return None
        pairs = [affine(float(t)) for t in np.asarray(latency_ms, dtype=np.float64)]
        scale = np.asarray([p[0] for p in pairs], dtype=np.float64)
        offset = np.asarray([p[1] for p in pairs], dtype=np.float64)
        return scale, offset

    def describe(self) -> str:
        target = getattr(self.reward, "target_ms", math.nan)
        return f"{self.space.name} at {self.precision}, target {target:g} ms, reward {self.reward!r}"


def default_reward(target_ms: float) -> Reward:
    """The soft MnasNet reward, the default everywhere a reward is not given."""
    return Reward.soft(target_ms)


def reward_json(objective: Objective) -> Any:
    """The objective's reward as stored in study metadata: its ``to_json()``, or its repr when it has none."""
    to_json = getattr(objective.reward, "to_json", None)
    return to_json() if to_json is not None else repr(objective.reward)
