"""The oracle: an upper bound for evaluation that knows each step's actual latencies before deciding.

It applies the same three-tier rule and the same battery budget as the latency-aware policies
(`device_agents.policies._select`), with the actual latencies as bounds, so at any step where the agent meets
the deadline with an admissible option, the oracle's option is at least as accurate. Usable only inside the
simulator, which calls `reveal` before each `decide`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..energy import BatteryBudget, EnergyModel
from ..network import OffloadTarget
from ..state import DeviceState
from ..variants import Variant
from ._select import OptionTable, select
from .adaptive import DEFAULT_BATTERY_BUDGET
from .base import ClairvoyantPolicy, Decision, StepTruth

__all__ = ["OraclePolicy"]


class OraclePolicy(ClairvoyantPolicy):
    name = "oracle"

    def __init__(
        self,
        variants: Sequence[Variant],
        *,
        offload: OffloadTarget | None = None,
        energy_model: EnergyModel | None = None,
        battery_budget: BatteryBudget | None = DEFAULT_BATTERY_BUDGET,
    ) -> None:
        self._table = OptionTable(variants, offload=offload, energy_model=energy_model, battery_budget=battery_budget)
        self._truth: StepTruth | None = None

    def reveal(self, truth: StepTruth) -> None:
        self._truth = truth

    def decide(self, state: DeviceState, *, deadline_ms: float) -> Decision:
        truth, self._truth = self._truth, None
        if truth is None:
            raise RuntimeError(
                "OraclePolicy.decide: no truth revealed for this step; the oracle only works inside simulate()"
            )
        t = self._table
        actual = [
            truth.offload_latency_ms if o is None else truth.latency_ms[o.name] for o in t.options
        ]
        choice = select(t, actual, truth.state, deadline_ms=deadline_ms)
        i = choice.index
        word = {1: "most accurate that really meets the deadline", 2: "budget: cheapest that meets the deadline",
                3: "nothing meets the deadline: fastest"}[choice.tier]
        return Decision(
            variant=t.options[i],
            expected_latency_ms=actual[i],
            reason=f"oracle: {word} ({actual[i]:.1f} ms vs {deadline_ms:.1f} ms)",
            offload=t.options[i] is None,
            accuracy=t.accuracy[i],
            scaled_latency_ms=math.nan,
            option=t.names[i],
        )

    def reset(self) -> None:
        self._truth = None
