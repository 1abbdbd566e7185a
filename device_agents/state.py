"""What an agent knows about the device at one instant (`DeviceState`) and who tells it (`StateProvider`).

Every reading carries units in its field names. A provider that cannot read a sensor fills in the documented
default from `STATE_DEFAULTS` and lists the field in ``DeviceState.missing``; it never raises for a missing or
unreadable sensor. Policies may look at ``missing`` to be more careful, the CLI reports it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Self

__all__ = [
    "NOMINAL_FREQ_MHZ",
    "SENSOR_FIELDS",
    "STATE_DEFAULTS",
    "STATE_FIELDS",
    "DeviceState",
    "StateProvider",
    "state_from_partial",
]

NOMINAL_FREQ_MHZ = 1000.0
"""Used for both current and max CPU frequency when neither can be read, so the frequency ratio is 1."""

STATE_DEFAULTS: Mapping[str, Any] = {
    # A device without a battery sensor is treated as mains-powered: full and charging, so no energy budget.
    "battery_pct": 100.0,
    "charging": True,
    # Current frequency falls back to the max when only the max is known, else both to NOMINAL_FREQ_MHZ.
    "cpu_freq_mhz": NOMINAL_FREQ_MHZ,
    "cpu_freq_max_mhz": NOMINAL_FREQ_MHZ,
    "temp_c": 40.0,
    # Unknown contention is assumed absent; the Kalman policy's learned slowdown absorbs what is really there.
    "background_load": 0.0,
    # Unknown network = no network: a policy never offloads on a guess.
    "bandwidth_mbps": 0.0,
    "rtt_ms": math.inf,
}


@dataclass(frozen=True)
class DeviceState:
    """One reading of the device, as a policy sees it.

    Attributes:
        time_s: seconds since the start of the trace / provider (monotonic, not wall-clock).
        battery_pct: remaining charge, 0..100.
        charging: True when on external power (charging or full on mains).
        cpu_freq_mhz: current CPU frequency, mean over online cores.
        cpu_freq_max_mhz: the frequency at which ``Variant.predicted_latency_ms`` holds (hardware max).
        temp_c: hottest thermal zone, degrees Celsius.
        background_load: share of the CPU taken by other processes, 0..1.
        bandwidth_mbps: estimated throughput to the offload server, megabit/s (0 = no network).
        rtt_ms: estimated round-trip time to the offload server (inf = unknown / unreachable).
        missing: names of the fields above that fell back to `STATE_DEFAULTS`.
    """

    time_s: float
    battery_pct: float
    charging: bool
    cpu_freq_mhz: float
    cpu_freq_max_mhz: float
    temp_c: float
    background_load: float
    bandwidth_mbps: float
    rtt_ms: float
    missing: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("time_s", "battery_pct", "cpu_freq_mhz", "cpu_freq_max_mhz", "temp_c", "background_load",
                     "bandwidth_mbps", "rtt_ms"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"DeviceState.{name}: expected a number, got {v!r}")
            object.__setattr__(self, name, float(v))
            if math.isnan(float(v)):
                raise ValueError(f"DeviceState.{name}: NaN is not a valid reading")
        if not isinstance(self.charging, bool):
            raise TypeError(f"DeviceState.charging: expected a bool, got {self.charging!r}")
        if not 0.0 <= self.battery_pct <= 100.0:
            raise ValueError(f"DeviceState.battery_pct: {self.battery_pct} is outside 0..100")
        if not 0.0 <= self.background_load <= 1.0:
            raise ValueError(f"DeviceState.background_load: {self.background_load} is outside 0..1")
        if not (self.cpu_freq_mhz > 0 and math.isfinite(self.cpu_freq_mhz)):
            raise ValueError(f"DeviceState.cpu_freq_mhz: expected a positive frequency, got {self.cpu_freq_mhz}")
        if not (self.cpu_freq_max_mhz > 0 and math.isfinite(self.cpu_freq_max_mhz)):
            raise ValueError(
                f"DeviceState.cpu_freq_max_mhz: expected a positive frequency, got {self.cpu_freq_max_mhz}"
            )
        if self.bandwidth_mbps < 0 or not math.isfinite(self.bandwidth_mbps):
            raise ValueError(f"DeviceState.bandwidth_mbps: expected a finite value >= 0, got {self.bandwidth_mbps}")
        if self.rtt_ms < 0:
            raise ValueError(f"DeviceState.rtt_ms: expected >= 0 (inf = unknown), got {self.rtt_ms}")
        missing = tuple(self.missing)
        unknown = [m for m in missing if m not in SENSOR_FIELDS]
        if unknown:
            raise ValueError(f"DeviceState.missing: unknown field(s) {unknown}; expected some of {SENSOR_FIELDS}")
        object.__setattr__(self, "missing", missing)

    @property
    def freq_ratio(self) -> float:
        """``cpu_freq_max_mhz / cpu_freq_mhz`` (>= 1 when throttled): how much slower compute-bound code runs."""
        return self.cpu_freq_max_mhz / self.cpu_freq_mhz

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["missing"] = list(self.missing)
        if math.isinf(d["rtt_ms"]):
            d["rtt_ms"] = None  # JSON has no inf; None reads back as unknown
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DeviceState:
        kw = dict(d)
        if kw.get("rtt_ms") is None:
            kw["rtt_ms"] = math.inf
        kw["missing"] = tuple(kw.get("missing", ()))
        return cls(**kw)


STATE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(DeviceState) if f.name != "missing")
SENSOR_FIELDS: tuple[str, ...] = tuple(n for n in STATE_FIELDS if n != "time_s")


class StateProvider(ABC):
    """Source of `DeviceState` readings.

    Contract (checked by ``tests/device_agents/test_provider_contract.py`` for every registered provider):

    * `read` returns a valid `DeviceState` every time it is called, in any environment. A sensor that is absent,
      unreadable or garbled takes its value from `STATE_DEFAULTS` and is named in ``missing``; `read` does not
      raise for that.
    * ``time_s`` never decreases between calls on one provider.
    * `read` is cheap enough to call once per inference (no sleeping, no blocking network I/O).
    * `close` releases resources; calling it more than once is harmless.
    """

    name: str = "provider"

    @abstractmethod
    def read(self) -> DeviceState:
        """Take one reading now."""

    def close(self) -> None:
        """Release resources (files, sockets). The default has nothing to release."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def state_from_partial(time_s: float, values: Mapping[str, Any]) -> DeviceState:
    """Build a state from whatever sensors were read; fill the rest from defaults and list them as missing.

    ``values`` may hold any subset of `SENSOR_FIELDS`; a value of None counts as missing. Readings are clipped into
    their valid ranges (a battery reporting 101 % is 100 %), which is what a robust provider wants.
    """
    got = {k: v for k, v in values.items() if v is not None}
    unknown = sorted(set(got) - set(SENSOR_FIELDS))
    if unknown:
        raise ValueError(f"state_from_partial: unknown field(s) {unknown}")
    missing = [k for k in SENSOR_FIELDS if k not in got]
    out: dict[str, Any] = {}
    for k in SENSOR_FIELDS:
        out[k] = got.get(k, STATE_DEFAULTS[k])
    # Frequencies: the current falls back to the max when only the max is known, and vice versa.
    if "cpu_freq_mhz" not in got and "cpu_freq_max_mhz" in got:
        out["cpu_freq_mhz"] = got["cpu_freq_max_mhz"]
    if "cpu_freq_max_mhz" not in got and "cpu_freq_mhz" in got:
        out["cpu_freq_max_mhz"] = got["cpu_freq_mhz"]
    out["cpu_freq_max_mhz"] = max(float(out["cpu_freq_max_mhz"]), float(out["cpu_freq_mhz"]))
    out["battery_pct"] = min(100.0, max(0.0, float(out["battery_pct"])))
    out["background_load"] = min(1.0, max(0.0, float(out["background_load"])))
    out["bandwidth_mbps"] = max(0.0, float(out["bandwidth_mbps"]))
    out["rtt_ms"] = max(0.0, float(out["rtt_ms"]))
    out["charging"] = bool(out["charging"])
    return DeviceState(time_s=float(time_s), missing=tuple(missing), **out)
