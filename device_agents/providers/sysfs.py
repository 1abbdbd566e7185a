"""Linux sysfs/procfs state provider. Parsing is split into pure functions over file text (tested on captured
content); the provider only decides which files to read.

Files read (relative to ``sysfs_root``, default ``/sys``, and ``procfs_root``, default ``/proc``):

* ``class/power_supply/*/type`` = "Battery": ``capacity`` (percent), ``status`` ("Charging", "Discharging",
  "Full", "Not charging"); a supply of type "Mains"/"USB" with ``online`` = 1 also means external power.
* ``devices/system/cpu/cpu<N>/cpufreq/scaling_cur_freq`` (kHz; ``cpuinfo_cur_freq`` as fallback) and
  ``cpuinfo_max_freq`` (kHz; ``scaling_max_freq`` as fallback). Current = mean over cores, max = max over cores.
* ``class/thermal/thermal_zone*/temp`` (millidegrees C): the hottest zone.
* ``<procfs_root>/loadavg``: 1-minute load average / number of CPUs, clipped to 0..1, as background load (it
  includes the caller's own work: an upper bound on the contention).

Bandwidth and RTT are not in sysfs: they are always reported missing (combine with a `NetworkEstimator`).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from ..state import DeviceState, StateProvider, state_from_partial

__all__ = ["SysfsProvider", "parse_battery_status", "parse_int_file", "parse_loadavg"]

logger = logging.getLogger(__name__)
_CPU_DIR = re.compile(r"^cpu(\d+)$")


def parse_int_file(text: str) -> int | None:
    """First token of a sysfs attribute as an integer; None when empty or garbled."""
    tok = text.strip().split()
    if not tok:
        return None
    try:
        return int(tok[0])
    except ValueError:
        return None


def parse_battery_status(text: str) -> bool | None:
    """True when the status means external power ("Charging", "Full"), False when discharging, None if unknown."""
    s = text.strip().lower()
    if s in ("charging", "full"):
        return True
    if s in ("discharging", "not charging"):
        return False
    return None


def parse_loadavg(text: str) -> float | None:
    tok = text.split()
    try:
        return float(tok[0]) if tok else None
    except ValueError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None


class SysfsProvider(StateProvider):
    """Reads battery, CPU frequency, temperature and load from Linux sysfs/procfs. Never raises on absent files."""

    name = "sysfs"

    def __init__(
        self,
        *,
        sysfs_root: str | os.PathLike[str] = "/sys",
        procfs_root: str | os.PathLike[str] | None = "/proc",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sys = Path(sysfs_root)
        self._proc = Path(procfs_root) if procfs_root is not None else None
        self._clock = clock
        self._t0 = clock()
        self._last_s = 0.0

    # -- sensors; each returns None when unavailable ----------------------------------------------------
    def _battery(self) -> tuple[float | None, bool | None]:
        base = self._sys / "class" / "power_supply"
        capacity: float | None = None
        charging: bool | None = None
        mains_online = False
        try:
            supplies = sorted(base.iterdir())
        except OSError:
            return None, None
        for sup in supplies:
            kind = (_read(sup / "type") or "").strip().lower()
            if kind == "battery" and capacity is None:
                cap = parse_int_file(_read(sup / "capacity") or "")
                if cap is not None:
                    capacity = float(min(100, max(0, cap)))
                    charging = parse_battery_status(_read(sup / "status") or "")
            elif kind in ("mains", "usb", "usb_c", "usb_pd") and parse_int_file(_read(sup / "online") or "") == 1:
                mains_online = True
        if mains_online:
            charging = True
        return capacity, charging

    def _cpufreq(self) -> tuple[float | None, float | None]:
        base = self._sys / "devices" / "system" / "cpu"
        cur_khz: list[int] = []
        max_khz: list[int] = []
        try:
            cpus = sorted(d for d in base.iterdir() if _CPU_DIR.match(d.name))
        except OSError:
            return None, None
        for cpu in cpus:
            fd = cpu / "cpufreq"
            cur = parse_int_file(_read(fd / "scaling_cur_freq") or "") or parse_int_file(
                _read(fd / "cpuinfo_cur_freq") or ""
            )
            mx = parse_int_file(_read(fd / "cpuinfo_max_freq") or "") or parse_int_file(
                _read(fd / "scaling_max_freq") or ""
            )
            if cur and cur > 0:
                cur_khz.append(cur)
            if mx and mx > 0:
                max_khz.append(mx)
        cur_mhz = sum(cur_khz) / len(cur_khz) / 1000.0 if cur_khz else None
        max_mhz = max(max_khz) / 1000.0 if max_khz else None
        return cur_mhz, max_mhz

    def _temperature(self) -> float | None:
        base = self._sys / "class" / "thermal"
        temps: list[float] = []
        try:
            zones = sorted(d for d in base.iterdir() if d.name.startswith("thermal_zone"))
        except OSError:
            return None
        for z in zones:
            milli = parse_int_file(_read(z / "temp") or "")
            if milli is not None and -50_000 < milli < 200_000:  # outside: a broken sensor
                temps.append(milli / 1000.0)
        return max(temps) if temps else None

    def _n_cpus(self) -> int:
        try:
            n = sum(1 for d in (self._sys / "devices" / "system" / "cpu").iterdir() if _CPU_DIR.match(d.name))
        except OSError:
            n = 0
        return n or os.cpu_count() or 1

    def _load(self) -> float | None:
        if self._proc is None:
            return None
        la = parse_loadavg(_read(self._proc / "loadavg") or "")
        if la is None:
            return None
        return min(1.0, max(0.0, la / self._n_cpus()))

    def read(self) -> DeviceState:
        battery, charging = self._battery()
        cur, mx = self._cpufreq()
        values = {
            "battery_pct": battery,
            "charging": charging if battery is not None or charging else None,
            "cpu_freq_mhz": cur,
            "cpu_freq_max_mhz": mx,
            "temp_c": self._temperature(),
            "background_load": self._load(),
        }
        now = max(self._clock() - self._t0, self._last_s)
        self._last_s = now
        st = state_from_partial(now, values)
        if st.missing:
            logger.debug("sysfs provider: missing sensors %s (defaults used)", st.missing)
        return st
