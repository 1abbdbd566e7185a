"""Trace-driven simulation of a policy on a simulated device: ``simulate`` and ``compare_policies``.

Requests arrive at a fixed rate (``request_rate_hz``) along the trace; for each one the policy decides, the
simulated device "runs" the choice, and the policy observes the latency. The device's true behaviour
(`DeviceLatencyModel`) is hidden from the policies, which only see the trace readings.

Notation: L_v = predicted latency of variant v (full clock, idle), r = f_max / f, u = background load,
m = memory-bound share, k = true contention coefficient, s_dev = hidden device slowdown, b_v = hidden per-variant
error of the latency table, eps ~ LogNormal(0, sigma) per request and variant.

    local actual     L = L_v * ((1 - m) * r + m) * (1 + k * u) * s_dev * b_v * eps
    offload actual   L = RTT * eps_rtt + 8 S / (1e3 * B * eps_bw) + L_server * eps_srv     (inf when B = 0)

so the agents' model L_v * r * (1 + u) is wrong in three learnable ways (s_dev, k, m) and one it can only cover
with margin (b_v, eps).

Measured variants (``latency_quantiles``, e.g. `Bundle.latency_quantiles` of a `device_agents.ladder` bundle):
eps of variant v is drawn from its own measured per-request distribution, eps = Q_v(U) / median_v with U ~ U(0, 1)
and Q_v the measured quantile function (linear between the stored quantiles), so tails are the device's, not a
log-normal's. With `MEASURED_DEVICE` (s_dev = 1, b_v = 1) L_v is the measured median itself. All draws come from generators seeded by (``seed``, crc32(variant name)), so every policy
simulated with the same seed meets the same noise, and the oracle is told exactly those draws.

The network fields a policy sees are those of a `NetworkEstimator` fed, after every request, with a noisy probe
of the true link: one request stale and smoothed, as a real estimator would be. The other fields are the trace's.
The battery trace is replayed open loop: the simulated energy use does not drain it.

A request misses its deadline when its actual latency exceeds ``deadline_ms``; a failed offload (link down)
is a miss with latency inf and costs radio energy for ``deadline_ms``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from supernet.io import atomic_write_text

from .energy import BatteryBudget, EnergyModel
from .network import NetworkEstimator, OffloadTarget
from .policies import AGENT_POLICY, ClairvoyantPolicy, Policy, StepTruth, create_policy
from .policies.adaptive import DEFAULT_BATTERY_BUDGET
from .state import DeviceState
from .trace import Trace
from .variants import Variant, validate_bundle

__all__ = [
    "DEFAULT_COMPARISON",
    "MEASURED_DEVICE",
    "DeviceLatencyModel",
    "SimulationResult",
    "StepRecord",
    "compare_policies",
    "simulate",
]

logger = logging.getLogger(__name__)

DEFAULT_COMPARISON: tuple[str, ...] = (
    AGENT_POLICY, "greedy", "static-smallest", "static-middle", "static-largest", "oracle",
)


@dataclass(frozen=True)
class DeviceLatencyModel:
    """The simulated device's true latency behaviour (see the module docstring for the formulas)."""

    memory_bound_share: float = 0.15
    contention_coeff: float = 1.3
    device_slowdown: float = 1.25
    variant_bias_sigma: float = 0.05
    noise_sigma: float = 0.06
    rtt_noise_sigma: float = 0.15
    bandwidth_noise_sigma: float = 0.2
    server_noise_sigma: float = 0.05

    def __post_init__(self) -> None:
        if not 0 <= self.memory_bound_share <= 1:
            raise ValueError(f"memory_bound_share must be in [0, 1], got {self.memory_bound_share}")
        if self.device_slowdown <= 0:
            raise ValueError(f"device_slowdown must be > 0, got {self.device_slowdown}")
        for name in ("contention_coeff", "variant_bias_sigma", "noise_sigma", "rtt_noise_sigma",
                     "bandwidth_noise_sigma", "server_noise_sigma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    def condition_factor(self, state: DeviceState) -> float:
        """((1 - m) r + m) (1 + k u) s_dev: the deterministic part of actual / predicted latency."""
        m = self.memory_bound_share
        return ((1 - m) * state.freq_ratio + m) * (1 + self.contention_coeff * state.background_load) * (
            self.device_slowdown
        )


MEASURED_DEVICE = DeviceLatencyModel(device_slowdown=1.0, variant_bias_sigma=0.0)
"""The device model for variants whose latency was measured here: no hidden slowdown or per-variant table error
(the medians are measured), contention and clock as in the default; pass ``latency_quantiles`` for the noise."""


@dataclass(frozen=True)
class StepRecord:
    """One simulated request. Latencies in ms, energy in mJ; ``option`` is a variant name or "offload:<server>"."""

    time_s: float
    option: str
    precision: str  # "fp32" | "fp16" | "int8" | "server"
    offload: bool
    accuracy: float
    expected_latency_ms: float
    actual_latency_ms: float
    missed: bool
    energy_mj: float
    battery_pct: float
    charging: bool
    cpu_freq_mhz: float
    cpu_freq_max_mhz: float
    temp_c: float
    background_load: float
    bandwidth_mbps: float
    estimated_bandwidth_mbps: float
    reason: str


@dataclass(frozen=True)
class SimulationResult:
    """Per-request records and summary metrics of one simulation.

    ``metrics`` keys: n_requests, miss_rate (fraction of requests over the deadline), mean_accuracy (of the
    chosen options), effective_accuracy (misses score 0), energy_mj (total), energy_per_request_mj, switches
    (changes of option between consecutive requests), offloads, offload_rate, mean_latency_ms and p95_latency_ms
    (over finite latencies; None if there are none), failed_requests (offloads lost to a link outage).
    """

    policy: str
    trace: str
    deadline_ms: float
    seed: int
    request_rate_hz: float
    steps: tuple[StepRecord, ...]
    metrics: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        """Metrics and configuration (not the per-step records; see `steps_csv`)."""
        return {
            "policy": self.policy,
            "trace": self.trace,
            "deadline_ms": self.deadline_ms,
            "seed": self.seed,
            "request_rate_hz": self.request_rate_hz,
            "metrics": dict(self.metrics),
        }

    def steps_csv(self) -> str:
        cols = [f.name for f in dataclasses.fields(StepRecord)]
        lines = [",".join(cols)]
        for s in self.steps:
            cells = []
            for c in cols:
                v = getattr(s, c)
                if isinstance(v, str):
                    cells.append('"' + v.replace('"', '""') + '"')
                elif isinstance(v, bool):
                    cells.append("1" if v else "0")
                else:
                    cells.append(repr(float(v)))
            lines.append(",".join(cells))
        return "\n".join(lines) + "\n"

    def save_steps_csv(self, path: str | os.PathLike[str]) -> None:
        atomic_write_text(path, self.steps_csv())


def _request_times(trace: Trace, rate_hz: float) -> np.ndarray:
    times = [s.time_s for s in trace]
    last_dt = float(np.median(np.diff(times))) if len(times) > 1 else 1.0 / rate_hz
    n = max(1, math.floor((trace.duration_s + last_dt) * rate_hz + 1e-9))
    return trace.start_s + np.arange(n) / rate_hz


def _name_rng(seed: int, label: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])


def _metrics(steps: Sequence[StepRecord]) -> dict[str, Any]:
    n = len(steps)
    lat = np.array([s.actual_latency_ms for s in steps])
    finite = lat[np.isfinite(lat)]
    missed = np.array([s.missed for s in steps])
    acc = np.array([s.accuracy for s in steps])
    energy = float(sum(s.energy_mj for s in steps))
    switches = sum(1 for a, b in itertools.pairwise(steps) if a.option != b.option)
    offloads = sum(1 for s in steps if s.offload)
    return {
        "n_requests": n,
        "miss_rate": float(missed.mean()),
        "mean_accuracy": float(acc.mean()),
        "effective_accuracy": float(np.where(missed, 0.0, acc).mean()),
        "energy_mj": energy,
        "energy_per_request_mj": energy / n,
        "switches": switches,
        "offloads": offloads,
        "offload_rate": offloads / n,
        "mean_latency_ms": float(finite.mean()) if finite.size else None,
        "p95_latency_ms": float(np.percentile(finite, 95)) if finite.size else None,
        "failed_requests": int(n - finite.size),
    }


def simulate(
    variants: Sequence[Variant],
    trace: Trace,
    *,
    policy: str | Policy,
    deadline_ms: float,
    seed: int = 0,
    latency_model: DeviceLatencyModel | None = None,
    request_rate_hz: float = 2.0,
    offload: OffloadTarget | None = None,
    energy_model: EnergyModel | None = None,
    battery_budget: BatteryBudget | None = DEFAULT_BATTERY_BUDGET,
    policy_kwargs: Mapping[str, Any] | None = None,
    network_alpha: float = 0.3,
    latency_quantiles: Mapping[str, Sequence[float]] | None = None,
) -> SimulationResult:
    """Replay ``trace`` with one request every ``1 / request_rate_hz`` seconds and score ``policy``.

    ``policy`` is a registry name (built with ``offload``, ``energy_model``, ``battery_budget`` and
    ``policy_kwargs``) or a ready `Policy` (used as is; it is not reset first). Deterministic for a given
    ``seed``. See the module docstring for the device model; ``latency_quantiles`` (variant name -> measured
    per-request latency quantiles, evenly spaced from 0 to 100 %) replaces the log-normal noise of those variants.
    """
    bundle = validate_bundle(variants)
    if not (deadline_ms > 0 and math.isfinite(deadline_ms)):
        raise ValueError(f"simulate: deadline_ms must be a finite number > 0, got {deadline_ms}")
    if not request_rate_hz > 0:
        raise ValueError(f"simulate: request_rate_hz must be > 0, got {request_rate_hz}")
    if not isinstance(trace, Trace):
        trace = Trace(name="trace", states=tuple(trace))
    lm = latency_model or DeviceLatencyModel()
    em = energy_model or EnergyModel()
    if isinstance(policy, str):
        pol = create_policy(
            policy, bundle, offload=offload, energy_model=em, battery_budget=battery_budget,
            **dict(policy_kwargs or {}),
        )
    else:
        if policy_kwargs:
            raise ValueError("simulate: policy_kwargs only apply when the policy is given by name")
        pol = policy

    times = _request_times(trace, request_rate_hz)
    n = len(times)
    names = [v.name for v in bundle]
    index = {nm: i for i, nm in enumerate(names)}
    pred = np.array([v.predicted_latency_ms for v in bundle])
    # Per-variant hidden bias and per-request noise: one generator per variant name.
    bias = np.empty(len(bundle))
    eps = np.empty((n, len(bundle)))
    for j, v in enumerate(bundle):
        g = _name_rng(seed, v.name)
        bias[j] = math.exp(lm.variant_bias_sigma * g.standard_normal())
        q = (latency_quantiles or {}).get(v.name)
        if q is not None and len(q) >= 2:
            qa = np.asarray(q, dtype=np.float64)
            levels = np.linspace(0.0, 1.0, len(qa))
            eps[:, j] = np.interp(g.random(n), levels, qa) / float(np.interp(0.5, levels, qa))
        else:
            eps[:, j] = np.exp(lm.noise_sigma * g.standard_normal(n))
    g_net = _name_rng(seed, "__network__")
    eps_rtt = np.exp(lm.rtt_noise_sigma * g_net.standard_normal(n))
    eps_bw = np.exp(lm.bandwidth_noise_sigma * g_net.standard_normal(n))
    eps_srv = np.exp(lm.server_noise_sigma * g_net.standard_normal(n))
    probe_bw = np.exp(lm.bandwidth_noise_sigma * g_net.standard_normal(n))
    probe_rtt = np.exp(lm.rtt_noise_sigma * g_net.standard_normal(n))

    clock_s = [float(times[0])]
    estimator = NetworkEstimator(alpha=network_alpha, stale_after_s=math.inf, clock=lambda: clock_s[0])
    first = trace.at(float(times[0]))
    estimator.record_sample(bandwidth_mbps=first.bandwidth_mbps, rtt_ms=first.rtt_ms)

    steps: list[StepRecord] = []
    clairvoyant = isinstance(pol, ClairvoyantPolicy)
    for i in range(n):
        t = float(times[i])
        clock_s[0] = t
        true_state = trace.at(t)
        cond = lm.condition_factor(true_state)
        local_ms = pred * (cond * bias) * eps[i]
        off_ms, off_server_ms = math.inf, math.nan
        if offload is not None:
            off_server_ms = offload.server_latency_ms * float(eps_srv[i])
            if true_state.bandwidth_mbps > 0 and math.isfinite(true_state.rtt_ms):
                off_ms = offload.network_ms(true_state.bandwidth_mbps * float(eps_bw[i]),
                                            true_state.rtt_ms * float(eps_rtt[i])) + off_server_ms
        view = dataclasses.replace(
            true_state, time_s=t,
            bandwidth_mbps=estimator.bandwidth_mbps or 0.0,
            rtt_ms=estimator.rtt_ms if estimator.rtt_ms is not None else math.inf,
        )
        if clairvoyant:
            assert isinstance(pol, ClairvoyantPolicy)
            pol.reveal(StepTruth(latency_ms=dict(zip(names, local_ms.tolist())), offload_latency_ms=off_ms,
                                 state=dataclasses.replace(true_state, time_s=t)))
        d = pol.decide(view, deadline_ms=deadline_ms)
        if d.offload:
            if offload is None:
                raise RuntimeError(f"policy {pol.name!r} offloaded, but the simulation has no offload target")
            actual = off_ms
            energy = (em.offload_energy_mj(network_ms=off_ms - off_server_ms, server_ms=off_server_ms)
                      if math.isfinite(off_ms) else em.radio_power_w * deadline_ms)
            option, precision = offload.option_name, "server"
        else:
            assert d.variant is not None
            chosen = index.get(d.variant.name)
            if chosen is None:
                raise RuntimeError(f"policy {pol.name!r} chose {d.variant.name!r}, which is not in the bundle")
            actual = float(local_ms[chosen])
            energy = em.local_energy_mj(actual, true_state)
            option, precision = d.variant.name, d.variant.precision
        pol.observe(d, actual)
        steps.append(
            StepRecord(
                time_s=t, option=option, precision=precision, offload=d.offload, accuracy=d.accuracy,
                expected_latency_ms=d.expected_latency_ms, actual_latency_ms=actual,
                missed=not actual <= deadline_ms, energy_mj=energy, battery_pct=true_state.battery_pct,
                charging=true_state.charging, cpu_freq_mhz=true_state.cpu_freq_mhz,
                cpu_freq_max_mhz=true_state.cpu_freq_max_mhz, temp_c=true_state.temp_c,
                background_load=true_state.background_load, bandwidth_mbps=true_state.bandwidth_mbps,
                estimated_bandwidth_mbps=view.bandwidth_mbps, reason=d.reason,
            )
        )
        # The estimator learns the link as it was during this request (a probe / the transfer itself).
        if true_state.bandwidth_mbps > 0 and math.isfinite(true_state.rtt_ms):
            estimator.record_sample(bandwidth_mbps=true_state.bandwidth_mbps * float(probe_bw[i]),
                                    rtt_ms=true_state.rtt_ms * float(probe_rtt[i]))
        else:
            estimator.record_failure()

    metrics = _metrics(steps)
    logger.debug("simulate %s on %s: %s", pol.name, trace.name, metrics)
    return SimulationResult(
        policy=pol.name, trace=trace.name, deadline_ms=float(deadline_ms), seed=seed,
        request_rate_hz=float(request_rate_hz), steps=tuple(steps), metrics=metrics,
    )


def compare_policies(
    variants: Sequence[Variant],
    trace: Trace,
    *,
    deadline_ms: float,
    seed: int = 0,
    policies: Sequence[str] = DEFAULT_COMPARISON,
    **simulate_kwargs: Any,
) -> dict[str, SimulationResult]:
    """Simulate each named policy on the same trace, seed and device; keys are the policy names, in order."""
    return {
        name: simulate(variants, trace, policy=name, deadline_ms=deadline_ms, seed=seed, **simulate_kwargs)
        for name in policies
    }
