"""The selection rule shared by the latency-aware policies and the oracle.

Given, per option, an accuracy, a latency bound and a local energy, pick:

1. the most accurate option whose latency bound meets the deadline and whose energy is within the budget
   (ties: lower latency);
2. else (budget too tight) the lowest-energy option that meets the deadline;
3. else the option with the lowest latency bound ("nothing fits").

Options are pre-sorted by accuracy (descending), so step 1 stops at the first admissible one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..energy import BatteryBudget, EnergyModel
from ..network import OffloadTarget
from ..state import DeviceState
from ..variants import Variant, validate_bundle

__all__ = ["Choice", "OptionTable", "select"]


@dataclass(frozen=True)
class Choice:
    index: int  # into OptionTable.options; -1 never happens
    tier: int  # 1, 2 or 3 as in the module docstring


class OptionTable:
    """Variants (and the offload target, as the entry whose variant is None) sorted by accuracy, descending;
    ties by predicted latency ascending."""

    def __init__(
        self,
        variants: Sequence[Variant],
        *,
        offload: OffloadTarget | None,
        energy_model: EnergyModel | None,
        battery_budget: BatteryBudget | None,
    ) -> None:
        self.variants = validate_bundle(variants)
        self.offload = offload
        self.energy_model = energy_model or EnergyModel()
        self.battery_budget = battery_budget
        entries: list[tuple[float, float, Variant | None]] = [
            (v.accuracy, v.predicted_latency_ms, v) for v in self.variants
        ]
        if offload is not None:
            entries.append((offload.accuracy, 0.0, None))
        entries.sort(key=lambda e: (-e[0], e[1]))
        self.options: tuple[Variant | None, ...] = tuple(e[2] for e in entries)
        self.accuracy: tuple[float, ...] = tuple(e[0] for e in entries)
        self.pred_ms: tuple[float, ...] = tuple(e[1] for e in entries)
        self.offload_index = next((i for i, o in enumerate(self.options) if o is None), -1)
        self.names: tuple[str, ...] = tuple(
            o.name if o is not None else (offload.option_name if offload else "offload") for o in self.options
        )
        # Reference energy of the budget: the most expensive variant at full clock, no load.
        em = self.energy_model
        self.reference_energy_mj = max(v.predicted_latency_ms for v in self.variants) * (
            em.static_power_w + em.dynamic_power_w
        )

    def budget_mj(self, state: DeviceState) -> float:
        if self.battery_budget is None:
            return math.inf
        return self.battery_budget.fraction(state) * self.reference_energy_mj

    def model_energy_factor(self, state: DeviceState) -> float:
        """Model energy of a local option = this x predicted_latency_ms (P(f) x f_max / f)."""
        return self.energy_model.compute_power_w(state.cpu_freq_mhz, state.cpu_freq_max_mhz) * state.freq_ratio


def select(
    table: OptionTable, bound_ms: Sequence[float], state: DeviceState, *, deadline_ms: float
) -> Choice:
    """Apply the three-tier rule; ``bound_ms[i]`` is the latency bound of ``table.options[i]``."""
    budget = table.budget_mj(state)
    e_factor = table.model_energy_factor(state)
    pred = table.pred_ms
    off = table.offload_index
    for i, b in enumerate(bound_ms):
        if b <= deadline_ms and (i == off or pred[i] * e_factor <= budget):
            return Choice(i, 1)
    best, best_e = -1, math.inf
    for i, b in enumerate(bound_ms):
        if b <= deadline_ms:
            e = 0.0 if i == off else pred[i] * e_factor
            if e < best_e:
                best, best_e = i, e
    if best >= 0:
        return Choice(best, 2)
    fastest = min(range(len(bound_ms)), key=bound_ms.__getitem__)
    return Choice(fastest, 3)
