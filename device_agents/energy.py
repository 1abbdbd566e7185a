"""Energy per inference and the battery-dependent budget on it.

Notation: f = CPU clock, f_max = its maximum, L = latency (ms), P = power (W). Since 1 W x 1 ms = 1 mJ, energy in
millijoules is simply ``P_w * L_ms``.

* Local inference: P(f) = P_static + P_dyn * (f / f_max)^3 (dynamic power ~ f V^2 with V ~ f). Because L ~ 1/f for
  compute-bound work, running slower costs less energy per inference.
* Offload: the radio draws P_radio during RTT and transfer, the device idles at P_wait while the server computes.

The budget (`BatteryBudget`) caps the *model* energy of a local variant, P(f) x predicted_latency x f_max/f,
a deterministic function of the variant and the reading, so every policy (and the oracle) sees the same admissible
set. Offloading is not capped: its radio energy is small next to local compute and is usually what a low battery
wants.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from .state import DeviceState

__all__ = ["BatteryBudget", "EnergyModel"]


@dataclass(frozen=True)
class EnergyModel:
    """Power draw of the simulated / modelled device, watts."""

    static_power_w: float = 0.6
    dynamic_power_w: float = 2.4
    radio_power_w: float = 0.9
    wait_power_w: float = 0.3

    def __post_init__(self) -> None:
        for name in ("static_power_w", "dynamic_power_w", "radio_power_w", "wait_power_w"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"EnergyModel.{name} must be >= 0, got {getattr(self, name)}")

    def compute_power_w(self, freq_mhz: float, freq_max_mhz: float) -> float:
        return self.static_power_w + self.dynamic_power_w * (freq_mhz / freq_max_mhz) ** 3

    def local_energy_mj(self, latency_ms: float, state: DeviceState) -> float:
        return self.compute_power_w(state.cpu_freq_mhz, state.cpu_freq_max_mhz) * latency_ms

    def offload_energy_mj(self, *, network_ms: float, server_ms: float) -> float:
        """``network_ms`` = RTT + transfer time (radio busy); ``server_ms`` = waiting for the server."""
        return self.radio_power_w * network_ms + self.wait_power_w * server_ms


@dataclass(frozen=True)
class BatteryBudget:
    """How much energy one local inference may take, depending on the battery.

    ``thresholds_pct`` (strictly decreasing) and ``fractions`` pair up: below ``thresholds_pct[i]`` the model
    energy of a local variant must not exceed ``fractions[i]`` x the reference energy (that of the most expensive
    variant of the bundle at full clock). Above the first threshold, or while charging, there is no cap
    (`fraction` returns inf). With the defaults: below 30 % at most half, below 15 % at most a quarter.
    """

    thresholds_pct: tuple[float, ...] = (30.0, 15.0)
    fractions: tuple[float, ...] = (0.5, 0.25)
    charging_relaxes: bool = True

    def __post_init__(self) -> None:
        th, fr = tuple(float(x) for x in self.thresholds_pct), tuple(float(x) for x in self.fractions)
        if len(th) != len(fr):
            raise ValueError(f"BatteryBudget: {len(th)} thresholds but {len(fr)} fractions; they pair up")
        if any(b >= a for a, b in itertools.pairwise(th)):
            raise ValueError(f"BatteryBudget.thresholds_pct must strictly decrease, got {th}")
        if any(not 0 < f for f in fr):
            raise ValueError(f"BatteryBudget.fractions must be > 0, got {fr}")
        object.__setattr__(self, "thresholds_pct", th)
        object.__setattr__(self, "fractions", fr)

    def fraction(self, state: DeviceState) -> float:
        """Cap as a fraction of the reference energy; ``math.inf`` = no cap."""
        if self.charging_relaxes and state.charging:
            return math.inf
        out = math.inf
        for th, fr in zip(self.thresholds_pct, self.fractions):
            if state.battery_pct < th:
                out = fr
        return out
