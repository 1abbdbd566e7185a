"""The policy contract: given a reading and a deadline, pick a variant (or offload) — `Policy`, `Decision`."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from ..state import DeviceState
from ..variants import Variant

__all__ = ["ClairvoyantPolicy", "Decision", "Policy", "StepTruth"]


@dataclass(frozen=True)
class Decision:
    """What to run for one request.

    Attributes:
        variant: the local model to run; None when offloading.
        expected_latency_ms: the policy's expected (mean) end-to-end latency of this choice.
        reason: one human-readable line on why (logged, shown in the CLI).
        offload: True = send the request to the server instead of running locally.
        accuracy: accuracy of the choice (the variant's, or the server's when offloading).
        scaled_latency_ms: the latency model's value before any learned correction (the predicted latency scaled
            to the current clock and load, or the network model's offload latency); a learning policy compares
            observations with it. NaN when the policy has no such model.
        option: name of the choice: ``variant.name`` or ``"offload:<server>"``.
    """

    variant: Variant | None
    expected_latency_ms: float
    reason: str
    offload: bool = False
    accuracy: float = math.nan
    scaled_latency_ms: float = math.nan
    option: str = ""

    def __post_init__(self) -> None:
        if self.offload == (self.variant is not None):
            raise ValueError("Decision: exactly one of `variant` (local) or `offload=True` must be given")
        if self.variant is not None:
            if math.isnan(self.accuracy):
                object.__setattr__(self, "accuracy", self.variant.accuracy)
            if not self.option:
                object.__setattr__(self, "option", self.variant.name)
        elif not self.option:
            object.__setattr__(self, "option", "offload")


@dataclass(frozen=True)
class StepTruth:
    """What will really happen at one step, revealed only to `ClairvoyantPolicy` (the oracle) by the simulator.

    ``latency_ms`` maps every variant name to its actual latency (the same noise draw the chosen variant would
    get); ``offload_latency_ms`` is the actual offload latency (inf when the link is down, NaN when no server).
    ``state`` is the true device state (the network fields the other policies only estimate).
    """

    latency_ms: Mapping[str, float]
    offload_latency_ms: float
    state: DeviceState


class Policy(ABC):
    """Chooses what to run for each inference request.

    Contract (checked for every registered policy by ``tests/device_agents/test_policy_contract.py``):

    * ``decide(state, deadline_ms=...)`` returns a `Decision` naming one variant of the bundle given at
      construction (or an offload, only if the policy was given an offload target). It never returns None: when
      nothing is expected to meet the deadline it still picks something (the fastest option) and says so in
      ``reason``.
    * `observe` is called at most once after each `decide`, with that decision and the observed end-to-end
      latency in ms (``inf`` for a request that failed, e.g. a dropped connection). It may update learned state.
    * `decide` is cheap (a few tens of microseconds for tens of variants): no I/O, no allocation-heavy work.
    * `reset` forgets everything learned; a fresh and a reset policy decide alike.
    """

    name: str = "policy"

    @abstractmethod
    def decide(self, state: DeviceState, *, deadline_ms: float) -> Decision:
        """Pick the variant (or offload) for one request due within ``deadline_ms``."""

    def observe(self, decision: Decision, observed_latency_ms: float) -> None:
        """Feedback after a request ran. The default learns nothing."""

    def reset(self) -> None:
        """Forget learned state. The default has none."""


class ClairvoyantPolicy(Policy):
    """A policy for evaluation only that is told the truth of each step before deciding (see `StepTruth`)."""

    @abstractmethod
    def reveal(self, truth: StepTruth) -> None:
        """Called by the simulator right before `decide` for the same step."""
