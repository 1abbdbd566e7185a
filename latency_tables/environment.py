"""What machine a measurement ran on: read once, stored with every table and report.

Fields that cannot be read on this OS or VM (e.g. the cpufreq governor inside a VM) are ``None``, never guessed.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
from pathlib import Path
from typing import Any

__all__ = ["is_this_machine", "machine_environment"]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _cpu_model() -> str:
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_environment(*, device: str | None = None) -> dict[str, Any]:
    """CPU model, core counts, frequency and governor where readable, OS and Python versions.

    ``device`` names the machine in tables (default: the host name).
    """
    freq_mhz: float | None = None
    physical: int | None = None
    try:
        import psutil

        f = psutil.cpu_freq()
        freq_mhz = round(float(f.current), 1) if f and f.current else None
        physical = psutil.cpu_count(logical=False)
    except Exception as e:  # noqa: BLE001  # pragma: no cover - psutil missing or unsupported platform
        logging.getLogger(__name__).debug("psutil CPU facts unavailable: %s", e)
    max_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    affinity: int | None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        affinity = os.cpu_count()
    return {
        "device": device or socket.gethostname(),
        "cpu_model": _cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_physical": physical,
        "cpu_affinity": affinity,
        "cpu_freq_mhz": freq_mhz,
        "cpu_max_freq_mhz": round(int(max_khz) / 1000, 1) if max_khz and max_khz.isdigit() else None,
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def is_this_machine(meta: Any) -> bool:
    """Whether a table's manifest (``meta.cpu_model``, ``meta.device``) names this host and its CPU model, so
    that measuring here is measuring the table's device."""
    env = machine_environment()
    same_cpu = getattr(meta, "cpu_model", None) == env.get("cpu_model")
    same_host = getattr(meta, "device", None) in (env.get("device"), socket.gethostname())
    return bool(same_cpu and same_host)
