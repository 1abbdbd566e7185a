"""psutil state provider: CPU frequency and load on any OS, battery and temperatures where psutil has them.

``psutil.cpu_freq()`` may return None, or a max of 0 (VMs, containers); ``sensors_battery()`` returns None on
machines without one; ``sensors_temperatures()`` exists only on Linux/FreeBSD. Each gap becomes a missing field.
Background load = system CPU utilisation minus this process's share, since the previous `read` (the first read
primes the counters and reports load missing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ..state import DeviceState, StateProvider, state_from_partial

__all__ = ["PsutilProvider"]

logger = logging.getLogger(__name__)


class PsutilProvider(StateProvider):
    """``psutil_module`` lets tests pass a fake with the same functions; default: the real psutil."""

    name = "psutil"

    def __init__(self, *, psutil_module: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        if psutil_module is None:
            import psutil  # heavy-ish and optional at import time of the package

            psutil_module = psutil
        self._ps = psutil_module
        self._clock = clock
        self._t0 = clock()
        self._last_s = 0.0
        self._primed = False
        self._proc: Any = None
        try:
            self._proc = self._ps.Process()
            self._ps.cpu_percent(interval=None)
            self._proc.cpu_percent(interval=None)
            self._primed = True
        except Exception as e:  # noqa: BLE001 - any psutil failure is a missing sensor, not a crash
            logger.debug("psutil provider: cannot prime CPU counters: %s", e)

    def _call(self, fn_name: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self._ps, fn_name, None)
        if fn is None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            logger.debug("psutil provider: %s failed: %s", fn_name, e)
            return None

    def read(self) -> DeviceState:
        values: dict[str, Any] = {}
        freq = self._call("cpu_freq")
        if freq is not None:
            cur, mx = float(getattr(freq, "current", 0.0) or 0.0), float(getattr(freq, "max", 0.0) or 0.0)
            values["cpu_freq_mhz"] = cur if cur > 0 else None
            values["cpu_freq_max_mhz"] = mx if mx > 0 else None
        batt = self._call("sensors_battery")
        if batt is not None and getattr(batt, "percent", None) is not None:
            values["battery_pct"] = float(batt.percent)
            plugged = getattr(batt, "power_plugged", None)
            values["charging"] = bool(plugged) if plugged is not None else None
        temps = self._call("sensors_temperatures")
        if temps:
            readings = [float(t.current) for entries in temps.values() for t in entries
                        if getattr(t, "current", None) is not None and -50 < float(t.current) < 200]
            if readings:
                values["temp_c"] = max(readings)
        if self._primed:
            total = self._call("cpu_percent", interval=None)
            n = self._call("cpu_count") or 1
            try:
                own = float(self._proc.cpu_percent(interval=None)) / n
            except Exception:  # noqa: BLE001
                own = 0.0
            if total is not None:
                values["background_load"] = max(0.0, min(1.0, (float(total) - own) / 100.0))
        now = max(self._clock() - self._t0, self._last_s)
        self._last_s = now
        return state_from_partial(now, values)
