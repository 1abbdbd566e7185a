"""Static baselines: always the same variant, whatever the device does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..state import DeviceState
from ..variants import Variant, validate_bundle
from .base import Decision, Policy

__all__ = ["StaticPolicy"]


class StaticPolicy(Policy):
    """Runs one fixed variant: ``which`` = "smallest" (fastest predicted latency), "middle" (median by predicted
    latency), "largest" (slowest) or a variant name.

    It accepts and ignores the environment keywords every policy takes (``offload``, ``energy_model``,
    ``battery_budget``): a static deployment never offloads and has no budget. The expected latency it reports is
    the predicted latency scaled by the frequency ratio, for display only.
    """

    def __init__(self, variants: Sequence[Variant], *, which: str = "largest", **_environment: Any) -> None:
        vs = validate_bundle(variants)
        by_latency = sorted(vs, key=lambda v: (v.predicted_latency_ms, -v.accuracy, v.name))
        presets = {"smallest": by_latency[0], "middle": by_latency[(len(by_latency) - 1) // 2],
                   "largest": by_latency[-1]}
        if which in presets:
            self.variant = presets[which]
        else:
            named = {v.name: v for v in vs}
            if which not in named:
                raise ValueError(
                    f"StaticPolicy: which={which!r} is neither one of {list(presets)} nor a variant name in the bundle"
                )
            self.variant = named[which]
        self.name = f"static-{which}" if which in presets else f"static:{which}"

    def decide(self, state: DeviceState, *, deadline_ms: float) -> Decision:
        expected = self.variant.predicted_latency_ms * state.freq_ratio
        return Decision(
            variant=self.variant,
            expected_latency_ms=expected,
            reason=f"static: always {self.variant.name}",
            scaled_latency_ms=expected,
        )
