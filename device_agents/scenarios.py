"""Built-in synthetic device timelines for the simulator: ``builtin_trace(name, seed=..., duration_s=...)``.

Each scenario is a small generative model of one situation a deployed model meets; all randomness comes from
``numpy.random.default_rng(seed)``, so a (name, seed, duration_s, dt_s) tuple always gives the same trace.
The simulated device has a maximum CPU clock of `DEVICE_FREQ_MAX_MHZ`.

Notation: f = CPU clock (MHz), f_max = `DEVICE_FREQ_MAX_MHZ`, T = temperature (deg C), u = background load (0..1),
B = bandwidth (Mbit/s), dt = row spacing (s).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from supernet.registry import Registry

from .state import DeviceState
from .trace import Trace

__all__ = ["DEVICE_FREQ_MAX_MHZ", "SCENARIOS", "builtin_trace", "describe_scenario", "list_scenarios", "scale_trace"]

DEVICE_FREQ_MAX_MHZ = 2400.0
_AMBIENT_C = 25.0


@dataclass(frozen=True)
class _Columns:
    battery_pct: np.ndarray
    charging: np.ndarray
    freq_mhz: np.ndarray
    temp_c: np.ndarray
    load: np.ndarray
    bandwidth_mbps: np.ndarray
    rtt_ms: np.ndarray


def _walk(rng: np.random.Generator, n: int, *, mean: float, sigma: float, revert: float) -> np.ndarray:
    """Mean-reverting random walk in log space (an AR(1) on log values): positive, fluctuates around ``mean``."""
    out = np.empty(n)
    x = math.log(mean)
    for i in range(n):
        x += revert * (math.log(mean) - x) + sigma * rng.standard_normal()
        out[i] = math.exp(x)
    return out


def _base(rng: np.random.Generator, n: int, dt_s: float) -> _Columns:
    """Calm defaults every scenario starts from: full clock, cool, idle, good Wi-Fi, slow battery drain."""
    return _Columns(
        battery_pct=np.clip(85.0 - 0.01 * dt_s * np.arange(n), 0.0, 100.0),
        charging=np.zeros(n, dtype=bool),
        freq_mhz=np.full(n, DEVICE_FREQ_MAX_MHZ),
        temp_c=50.0 + 0.5 * rng.standard_normal(n),
        load=np.clip(0.05 + 0.02 * rng.standard_normal(n), 0.0, 1.0),
        bandwidth_mbps=_walk(rng, n, mean=40.0, sigma=0.08, revert=0.1),
        rtt_ms=_walk(rng, n, mean=25.0, sigma=0.08, revert=0.2),
    )


def _steady(rng: np.random.Generator, n: int, dt_s: float) -> _Columns:
    return _base(rng, n, dt_s)


def _thermal(rng: np.random.Generator, n: int, dt_s: float) -> _Columns:
    """First-order thermal model T' = (T_amb + R_th * P(f) - T) / tau with P(f) = P_other + 3.5 (f/f_max)^3 W,
    P_other alternating 2.2 / 1.0 W every 90 s (camera and screen phases), R_th = 20 K/W, tau = 40 s; a step governor drops f by 10 % of f_max when T > 72 and
    raises it when T < 66 (at most every 8 s, floor 40 % of f_max). Full clock heats well past the trip point, so
    once hot the clock saws between ~40 and ~80 % of f_max."""
    c = _base(rng, n, dt_s)
    temp, f = 45.0, DEVICE_FREQ_MAX_MHZ
    last_step = -math.inf
    for i in range(n):
        t = i * dt_s
        other_w = 2.2 if (t // 90.0) % 2 == 0 else 1.0  # camera/screen phases
        power_w = other_w + 3.5 * (f / DEVICE_FREQ_MAX_MHZ) ** 3
        temp += dt_s / 40.0 * (_AMBIENT_C + 20.0 * power_w - temp)
        if t - last_step >= 8.0:
            if temp > 72.0 and f > 0.4 * DEVICE_FREQ_MAX_MHZ:
                f = max(0.4 * DEVICE_FREQ_MAX_MHZ, f - 0.1 * DEVICE_FREQ_MAX_MHZ)
                last_step = t
            elif temp < 66.0 and f < DEVICE_FREQ_MAX_MHZ:
                f = min(DEVICE_FREQ_MAX_MHZ, f + 0.1 * DEVICE_FREQ_MAX_MHZ)
                last_step = t
        c.temp_c[i] = temp + 0.3 * rng.standard_normal()
        c.freq_mhz[i] = f
    return c


def _battery(rng: np.random.Generator, n: int, dt_s: float) -> _Columns:
    """Battery drains linearly from 45 % to ~3 % over the first 85 % of the trace, then a charger is plugged in.
    The OS power saver caps the clock at 60 % of f_max below 20 % battery and at 45 % below 10 %, unless charging."""
    c = _base(rng, n, dt_s)
    plug = int(0.85 * n)
    drain = np.linspace(45.0, 3.0, max(plug, 1))
    for i in range(n):
        if i < plug:
            c.battery_pct[i] = drain[i]
        else:
            c.charging[i] = True
            c.battery_pct[i] = min(100.0, c.battery_pct[i - 1] + 0.05 * dt_s) if i > 0 else 3.0
        b = c.battery_pct[i]
        if not c.charging[i]:
            if b < 10.0:
                c.freq_mhz[i] = 0.45 * DEVICE_FREQ_MAX_MHZ
            elif b < 20.0:
                c.freq_mhz[i] = 0.6 * DEVICE_FREQ_MAX_MHZ
    return c


def _network(rng: np.random.Generator, n: int, dt_s: float) -> _Columns:
    """Power-saving clock (55 % of f_max, so large local models are slow) and a mobile link: B wanders around
    15 Mbit/s in log space; outages (B = 0, RTT unknown) start at 1/60 per second and last 5..20 s."""
    c = _base(rng, n, dt_s)
    c.freq_mhz[:] = 0.55 * DEVICE_FREQ_MAX_MHZ
    c.bandwidth_mbps[:] = _walk(rng, n, mean=15.0, sigma=0.2, revert=0.08)
    c.rtt_ms[:] = _walk(rng, n, mean=45.0, sigma=0.15, revert=0.15)
    i = 0
    while i < n:
        if rng.random() < dt_s / 60.0 and i > 0:
            length = max(1, int(rng.uniform(5.0, 20.0) / dt_s))
            c.bandwidth_mbps[i : i + length] = 0.0
            c.rtt_ms[i : i + length] = math.inf
            i += length
        else:
            i += 1
    return c


def _contention(rng: np.random.Generator, n: int, dt_s: float) -> _Columns:
    """Bursty background work: bursts start with probability 0.06 per second, last ~Geometric(mean 6 s), and take
    u ~ U(0.4, 0.9) of the CPU; between bursts u ~ 0.05."""
    c = _base(rng, n, dt_s)
    i = 0
    while i < n:
        if rng.random() < 0.06 * dt_s:
            length = max(1, int(rng.geometric(1.0 / 6.0) / dt_s))
            c.load[i : i + length] = rng.uniform(0.4, 0.9)
            i += length
        else:
            i += 1
    c.load[:] = np.clip(c.load + 0.02 * rng.standard_normal(n), 0.0, 1.0)
    return c


# name -> (generator of the columns, one-line description)
SCENARIOS: Registry[tuple[Callable[[np.random.Generator, int, float], _Columns], str]] = Registry("scenario")
SCENARIOS.add("steady", (_steady, "full clock, idle CPU, good Wi-Fi, slow battery drain"))
SCENARIOS.add(
    "thermal-throttling",
    (_thermal, "sustained load heats the SoC; a step governor saws the clock between ~40 and ~80 %"),
)
SCENARIOS.add("battery-drain",
              (_battery, "45 % -> 3 % battery with power-saver clock caps, then a charger is plugged in"))
SCENARIOS.add("network-outages",
              (_network, "power-saving clock, fluctuating mobile bandwidth with 5-20 s outages"))
SCENARIOS.add("bursty-contention", (_contention, "bursts of 40-90 % background CPU load lasting seconds"))


def list_scenarios() -> list[str]:
    """Names accepted by `builtin_trace`, in a stable order."""
    return SCENARIOS.names()


def describe_scenario(name: str) -> str:
    """What scenario ``name`` simulates, in one line; `UnknownNameError` (a KeyError) lists the known ones."""
    return SCENARIOS.get(name)[1]


def builtin_trace(name: str, *, seed: int = 0, duration_s: float = 300.0, dt_s: float = 1.0) -> Trace:
    """A synthetic trace of ``duration_s`` seconds with one row every ``dt_s`` seconds, starting at time 0."""
    gen, description = SCENARIOS.get(name)
    if not (duration_s > 0 and dt_s > 0):
        raise ValueError(f"builtin_trace: duration_s and dt_s must be > 0, got {duration_s}, {dt_s}")
    n = max(1, round(duration_s / dt_s))
    rng = np.random.default_rng(seed)
    c = gen(rng, n, dt_s)
    states = tuple(
        DeviceState(
            time_s=round(i * dt_s, 9),
            battery_pct=float(np.clip(c.battery_pct[i], 0.0, 100.0)),
            charging=bool(c.charging[i]),
            cpu_freq_mhz=float(c.freq_mhz[i]),
            cpu_freq_max_mhz=DEVICE_FREQ_MAX_MHZ,
            temp_c=float(c.temp_c[i]),
            background_load=float(np.clip(c.load[i], 0.0, 1.0)),
            bandwidth_mbps=float(c.bandwidth_mbps[i]),
            rtt_ms=float(c.rtt_ms[i]),
        )
        for i in range(n)
    )
    return Trace(name=name, states=states, description=description)


def scale_trace(trace: Trace, *, max_slowdown: float, condition: Callable[[DeviceState], float],
                link_rtt_ms: float | None = None, link_bandwidth_mbps: float | None = None) -> Trace:
    """``trace`` compressed so that no row slows local inference by more than ``max_slowdown``, and its link
    moved to a measured one.

    Slowdown: ``condition(state)`` is the device model's actual / nominal latency factor (e.g.
    `DeviceLatencyModel.condition_factor`). When the trace exceeds ``max_slowdown`` (>= 1), every row's clock
    ratio r = f / f_max and load u are pulled toward idle full clock by one factor a in [0, 1],
    r' = 1 - a (1 - r), u' = a u, with a the largest value (bisection) that keeps every row within the bound:
    the scenario keeps its shape and timing, only its depth is scaled to what a ladder can absorb.

    Link: RTT and bandwidth are multiplied by ``link_rtt_ms`` / median RTT and ``link_bandwidth_mbps`` / median
    bandwidth of the trace's up rows, so the link fluctuates and drops out as the scenario says around a
    measured median (outages stay outages).
    """
    import dataclasses

    if not max_slowdown >= 1.0:
        raise ValueError(f"scale_trace: max_slowdown must be >= 1, got {max_slowdown}")
    states = list(trace)

    def squeezed(a: float) -> list[DeviceState]:
        out = []
        for st in states:
            r = st.cpu_freq_mhz / st.cpu_freq_max_mhz if st.cpu_freq_max_mhz > 0 else 1.0
            out.append(dataclasses.replace(st, cpu_freq_mhz=st.cpu_freq_max_mhz * (1.0 - a * (1.0 - r)),
                                           background_load=a * st.background_load))
        return out

    worst = max(condition(s) for s in states)
    base = max(condition(s) for s in squeezed(0.0))
    if worst > max_slowdown and base < max_slowdown:
        lo, hi = 0.0, 1.0
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if max(condition(s) for s in squeezed(mid)) <= max_slowdown:
                lo = mid
            else:
                hi = mid
        states = squeezed(lo)
    elif worst > max_slowdown:
        states = squeezed(0.0)
    up = [s for s in states if s.bandwidth_mbps > 0 and math.isfinite(s.rtt_ms)]
    if up and (link_rtt_ms is not None or link_bandwidth_mbps is not None):
        rtt_f = (link_rtt_ms / float(np.median([s.rtt_ms for s in up]))) if link_rtt_ms is not None else 1.0
        bw_f = (link_bandwidth_mbps / float(np.median([s.bandwidth_mbps for s in up]))
                if link_bandwidth_mbps is not None else 1.0)
        states = [dataclasses.replace(s, rtt_ms=s.rtt_ms * rtt_f, bandwidth_mbps=s.bandwidth_mbps * bw_f)
                  if (s.bandwidth_mbps > 0 and math.isfinite(s.rtt_ms)) else s for s in states]
    return Trace(name=trace.name, states=tuple(states), description=trace.description)
