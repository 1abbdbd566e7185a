"""Rate-limit an expensive provider: re-read it at most every ``min_interval_s``, repeat the last reading between.

Reading psutil and sysfs costs about a millisecond on a small VM, as much as a small model's inference, and
psutil's CPU-load counters are quantised to scheduler ticks (10 ms), so a reading taken every few milliseconds
flips between 0 and 1. Holding a reading for ~0.1 s makes `read` cheap and the load a meaningful average.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from ..state import DeviceState, StateProvider

__all__ = ["ThrottledProvider"]


class ThrottledProvider(StateProvider):
    """Wraps ``provider``; between re-reads ``time_s`` still advances (inner time of the last reading plus the
    clock time elapsed since), so the contract's non-decreasing time holds."""

    name = "throttled"

    def __init__(self, provider: StateProvider, *, min_interval_s: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not min_interval_s >= 0:
            raise ValueError(f"ThrottledProvider.min_interval_s must be >= 0, got {min_interval_s}")
        self._inner = provider
        self._min_interval_s = float(min_interval_s)
        self._clock = clock
        self._last: DeviceState | None = None
        self._last_clock = 0.0
        self._last_time_s = 0.0

    def read(self) -> DeviceState:
        now = self._clock()
        if self._last is None or now - self._last_clock >= self._min_interval_s:
            self._last = self._inner.read()
            self._last_clock = now
            self._last_time_s = max(self._last.time_s, self._last_time_s)
            return dataclasses.replace(self._last, time_s=self._last_time_s)
        self._last_time_s = max(self._last_time_s, self._last.time_s + (now - self._last_clock))
        return dataclasses.replace(self._last, time_s=self._last_time_s)

    def close(self) -> None:
        self._inner.close()
