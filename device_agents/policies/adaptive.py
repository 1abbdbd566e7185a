"""Latency-aware policies: pick the most accurate variant expected to meet the deadline under the current state.

Notation: L_v = ``Variant.predicted_latency_ms`` (full clock, idle CPU); r = f_max / f (frequency ratio);
u = background load; kappa = ``contention_coeff``; s = slowdown factor; z = ``confidence_z``.

    scaled latency      L~_v = L_v * r * (1 + kappa * u)
    expected latency    E_v  = s * L~_v
    latency bound       U_v  = E_v * exp(z * sigma)   (sigma: predictive std of log(observed / scaled))

* `GreedyPolicy` (the walking skeleton): s = 1, sigma = 0; scales by frequency and load only (``greedy``), or by
  frequency alone (``greedy-frequency``, kappa = 0). It never learns, so a device slower than its latency table
  makes it miss deadlines.
* `KalmanPolicy` (the agent, after ALERT): s = exp(x^) and sigma from a `LogKalman` filter fed by every observed
  latency; a second filter does the same for the offload path. ``z = 2.05`` aims at ~2 % misses when the log
  error is Gaussian.

Offload is one more option: accuracy of the server model, E = s_net * (RTT + 8 S / (1e3 B) + L_server).
The choice among options follows `device_agents.policies._select` (deadline first, then the battery budget).

Hysteresis (`Hysteresis`): a switch to a *less* accurate option happens at once (it is needed to meet the
deadline); a switch to a *more* accurate one only after ``cooldown_steps`` decisions on the current option and
only if the new option's bound leaves ``upgrade_headroom`` of the deadline free. This damps flapping around the
deadline without ever knowingly missing it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..energy import BatteryBudget, EnergyModel
from ..kalman import LogKalman
from ..network import OffloadTarget
from ..state import DeviceState
from ..variants import Variant
from ._select import OptionTable, select
from .base import Decision, Policy

__all__ = ["DEFAULT_BATTERY_BUDGET", "GreedyPolicy", "Hysteresis", "KalmanPolicy", "LatencyAwarePolicy"]

DEFAULT_BATTERY_BUDGET = BatteryBudget()


@dataclass(frozen=True)
class Hysteresis:
    """Damping of upgrades; see the module docstring. ``cooldown_steps`` counts decisions."""

    cooldown_steps: int = 5
    upgrade_headroom: float = 0.05

    def __post_init__(self) -> None:
        if self.cooldown_steps < 0 or not 0 <= self.upgrade_headroom < 1:
            raise ValueError(f"Hysteresis: need cooldown_steps >= 0 and 0 <= upgrade_headroom < 1, got {self}")


class LatencyAwarePolicy(Policy):
    """Shared machinery: option table, scaling by frequency and load, selection, hysteresis.

    Subclasses give the slowdown and spread via `_local_factors` / `_offload_factors`.
    """

    name = "latency-aware"

    def __init__(
        self,
        variants: Sequence[Variant],
        *,
        contention_coeff: float = 1.0,
        offload: OffloadTarget | None = None,
        energy_model: EnergyModel | None = None,
        battery_budget: BatteryBudget | None = DEFAULT_BATTERY_BUDGET,
        hysteresis: Hysteresis | None = None,
    ) -> None:
        if contention_coeff < 0:
            raise ValueError(f"contention_coeff must be >= 0, got {contention_coeff}")
        self._table = OptionTable(variants, offload=offload, energy_model=energy_model, battery_budget=battery_budget)
        self._kappa = float(contention_coeff)
        self._hysteresis = hysteresis
        self._current = -1
        self._since_switch = 0
        # Per-option latency used for the bounds: the table's, times any learned per-option correction.
        self._pred_adj: list[float] = list(self._table.pred_ms)

    @property
    def variants(self) -> tuple[Variant, ...]:
        return self._table.variants

    # -- hooks ------------------------------------------------------------------------------------------
    def _local_factors(self) -> tuple[float, float]:
        """(mean, bound) multipliers on the scaled local latency."""
        return 1.0, 1.0

    def _offload_factors(self) -> tuple[float, float]:
        return 1.0, 1.0

    # -- contract ---------------------------------------------------------------------------------------
    def decide(self, state: DeviceState, *, deadline_ms: float) -> Decision:
        t = self._table
        scale = state.freq_ratio * (1.0 + self._kappa * state.background_load)
        mean_f, bound_f = self._local_factors()
        k = scale * bound_f
        bounds = [p * k for p in self._pred_adj]
        off_scaled, off_mean_f = math.inf, 1.0
        if t.offload_index >= 0:
            assert t.offload is not None
            off_scaled = t.offload.latency_ms(state.bandwidth_mbps, state.rtt_ms)
            off_mean_f, off_bound_f = self._offload_factors()
            bounds[t.offload_index] = off_scaled * off_bound_f
        choice = select(t, bounds, state, deadline_ms=deadline_ms)
        idx, why = choice.index, ""
        h, cur = self._hysteresis, self._current
        # An upgrade (options are sorted by accuracy) while the current option still meets the deadline.
        if h is not None and cur >= 0 and idx < cur and choice.tier == 1 and t.accuracy[idx] > t.accuracy[cur]:
            if self._since_switch < h.cooldown_steps:
                idx, why = cur, f"hysteresis: hold for {h.cooldown_steps - self._since_switch} more decisions; "
            else:
                roomy = select(t, bounds, state, deadline_ms=deadline_ms * (1.0 - h.upgrade_headroom))
                if roomy.tier == 1 and roomy.index < cur and t.accuracy[roomy.index] > t.accuracy[cur]:
                    idx = roomy.index
                else:
                    idx, why = cur, "hysteresis: upgrade lacks headroom; "
        if idx != self._current:
            self._current, self._since_switch = idx, 0
        self._since_switch += 1

        if idx == t.offload_index:
            assert t.offload is not None
            expected, scaled = off_scaled * off_mean_f, off_scaled
            variant = None
        else:
            scaled = t.pred_ms[idx] * scale
            expected = self._pred_adj[idx] * scale * mean_f
            variant = t.options[idx]
        bound = bounds[idx]
        if choice.tier == 3:
            why += f"nothing fits: fastest option, bound {bound:.1f} ms > deadline {deadline_ms:.1f} ms"
        elif choice.tier == 2:
            why += (
                f"battery {state.battery_pct:.0f}%: budget {t.budget_mj(state):.0f} mJ excludes all options meeting "
                f"the deadline; cheapest that meets it (bound {bound:.1f} ms)"
            )
        else:
            why += f"most accurate within deadline: bound {bound:.1f} <= {deadline_ms:.1f} ms"
        reason = (
            f"{why} [f {state.cpu_freq_mhz:.0f}/{state.cpu_freq_max_mhz:.0f} MHz, load {state.background_load:.2f}"
            f", slowdown {mean_f:.2f}]"
        )
        return Decision(
            variant=variant,
            expected_latency_ms=expected,
            reason=reason,
            offload=variant is None,
            accuracy=t.accuracy[idx],
            scaled_latency_ms=scaled,
            option=t.names[idx],
        )

    def reset(self) -> None:
        self._current, self._since_switch = -1, 0
        self._pred_adj = list(self._table.pred_ms)


class GreedyPolicy(LatencyAwarePolicy):
    """Trusts the latency table scaled by frequency and load; never learns. ``safety_factor`` inflates bounds."""

    name = "greedy"

    def __init__(self, variants: Sequence[Variant], *, safety_factor: float = 1.0, **kwargs: object) -> None:
        super().__init__(variants, **kwargs)  # type: ignore[arg-type]
        if not safety_factor > 0:
            raise ValueError(f"safety_factor must be > 0, got {safety_factor}")
        self._safety = float(safety_factor)

    def _local_factors(self) -> tuple[float, float]:
        return 1.0, self._safety

    def _offload_factors(self) -> tuple[float, float]:
        return 1.0, self._safety


class KalmanPolicy(LatencyAwarePolicy):
    """The runtime agent: learns the device's slowdown against the latency table with a Kalman filter (ALERT).

    ``confidence_z`` sets the margin: the chosen option's predicted log-latency plus z predictive standard
    deviations must meet the deadline. ``local_filter`` / ``offload_filter`` are templates (copied, not shared).

    Per-variant correction (``offset_rate`` > 0): latency tables err per architecture, so a single slowdown learnt
    on the large variant is wrong for the small one, and the policy flaps between them. Each variant v keeps an
    offset d_v of its log residual; the filter sees y - d_v, and d_v <- d_v + rate * (y - x - d_v) after the
    update. Variants never run keep d_v = 0.

    ``gate`` (robustness to heavy tails, e.g. OS preemption on a loaded machine): innovations of the filters and
    residuals of the offsets are clipped to ``gate`` predictive standard deviations (`LogKalman.gate`); None = off.
    """

    name = "kalman"

    def __init__(
        self,
        variants: Sequence[Variant],
        *,
        confidence_z: float = 2.05,
        local_filter: LogKalman | None = None,
        offload_filter: LogKalman | None = None,
        hysteresis: Hysteresis | None = Hysteresis(),
        offset_rate: float = 0.05,
        gate: float | None = 3.0,
        **kwargs: object,
    ) -> None:
        super().__init__(variants, hysteresis=hysteresis, **kwargs)  # type: ignore[arg-type]
        if gate is not None and not gate > 0:
            raise ValueError(f"gate must be > 0 or None, got {gate}")
        self._gate = gate
        if confidence_z < 0:
            raise ValueError(f"confidence_z must be >= 0, got {confidence_z}")
        self._z = float(confidence_z)
        if not 0 <= offset_rate <= 1:
            raise ValueError(f"offset_rate must be in [0, 1], got {offset_rate}")
        self._offset_rate = float(offset_rate)
        self._offsets = [0.0] * len(self._table.options)
        self._index = {name: i for i, name in enumerate(self._table.names)}
        self._local = dataclasses.replace(local_filter or LogKalman(gate=gate))
        # The offload path has no latency table to be wrong about (RTT and bandwidth are measured), so it starts
        # with less uncertainty; otherwise the margin would keep the policy from ever trying it.
        self._net = dataclasses.replace(offload_filter or LogKalman(p=0.005, gate=gate))

    @property
    def slowdown(self) -> float:
        """Current estimate of observed / scaled local latency."""
        return self._local.slowdown

    def _local_factors(self) -> tuple[float, float]:
        f = self._local
        return math.exp(f.x), math.exp(f.x + self._z * f.predictive_std())

    def _offload_factors(self) -> tuple[float, float]:
        f = self._net
        return math.exp(f.x), math.exp(f.x + self._z * f.predictive_std())

    def observe(self, decision: Decision, observed_latency_ms: float) -> None:
        """Update the filter of the path taken. A failed request (inf) is a network outage, which the network
        estimator reports; it says nothing about the slowdown, so it is not fed to the filter."""
        scaled = decision.scaled_latency_ms
        if not (math.isfinite(observed_latency_ms) and observed_latency_ms > 0 and scaled > 0 and math.isfinite(scaled)):
            return
        y = math.log(observed_latency_ms / scaled)
        if decision.offload:
            self._net.update(y)
            return
        i = self._index.get(decision.option, -1)
        if i < 0:
            return  # not one of ours: nothing sensible to learn
        d = self._offsets[i]
        spread = self._local.predictive_std()
        self._local.update(y - d)
        if self._offset_rate:
            resid = y - self._local.x - d
            if self._gate is not None:  # a preempted request must not shift the variant's offset either
                resid = min(self._gate * spread, max(-self._gate * spread, resid))
            d += self._offset_rate * resid
            self._offsets[i] = d
            self._pred_adj[i] = self._table.pred_ms[i] * math.exp(d)

    def reset(self) -> None:
        super().reset()
        self._local.reset()
        self._net.reset()
        self._offsets = [0.0] * len(self._table.options)
