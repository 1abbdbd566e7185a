from __future__ import annotations

from pathlib import Path

import pytest
from agents_helpers import fake_sysfs, write_tree

from device_agents.providers.sysfs import SysfsProvider, parse_battery_status, parse_int_file, parse_loadavg


def test_full_tree_with_battery(tmp_path: Path) -> None:
    sys_root, proc_root = fake_sysfs(tmp_path, battery=True)
    st = SysfsProvider(sysfs_root=sys_root, procfs_root=proc_root).read()
    assert st.battery_pct == 42.0 and st.charging is False
    assert st.cpu_freq_mhz == pytest.approx(1500.0)  # mean of 1200 and 1800 MHz
    assert st.cpu_freq_max_mhz == 2400.0
    assert st.temp_c == 67.5  # hottest zone
    assert st.background_load == pytest.approx(0.25)  # loadavg 0.5 over 2 CPUs
    assert set(st.missing) == {"bandwidth_mbps", "rtt_ms"}


def test_tree_without_battery_degrades_to_mains_defaults(tmp_path: Path) -> None:
    sys_root, proc_root = fake_sysfs(tmp_path, battery=False)
    st = SysfsProvider(sysfs_root=sys_root, procfs_root=proc_root).read()
    assert "battery_pct" in st.missing and "charging" in st.missing
    assert st.battery_pct == 100.0 and st.charging is True
    assert st.cpu_freq_max_mhz == 2400.0


def test_mains_online_means_charging(tmp_path: Path) -> None:
    sys_root, proc_root = fake_sysfs(tmp_path, battery=True)
    (sys_root / "class/power_supply/AC/online").write_text("1\n")
    assert SysfsProvider(sysfs_root=sys_root, procfs_root=proc_root).read().charging is True


def test_garbled_files_are_missing_not_errors(tmp_path: Path) -> None:
    root = write_tree(tmp_path, {
        "sys/class/power_supply/BAT0/type": "Battery\n",
        "sys/class/power_supply/BAT0/capacity": "lots\n",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": "\n",
        "sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq": "2000000\n",
        "sys/class/thermal/thermal_zone0/temp": "999999999\n",
        "proc/loadavg": "garbage\n",
    })
    st = SysfsProvider(sysfs_root=root / "sys", procfs_root=root / "proc").read()
    assert {"battery_pct", "cpu_freq_mhz", "temp_c", "background_load"} <= set(st.missing)
    assert st.cpu_freq_mhz == st.cpu_freq_max_mhz == 2000.0  # current falls back to max


def test_frequency_changes_are_seen(tmp_path: Path) -> None:
    sys_root, proc_root = fake_sysfs(tmp_path)
    p = SysfsProvider(sysfs_root=sys_root, procfs_root=proc_root)
    for cpu in ("cpu0", "cpu1"):
        (sys_root / f"devices/system/cpu/{cpu}/cpufreq/scaling_cur_freq").write_text("600000\n")
    assert p.read().cpu_freq_mhz == 600.0


def test_parsers_on_captured_text() -> None:
    assert parse_int_file("2400000\n") == 2400000
    assert parse_int_file("") is None and parse_int_file("N/A") is None
    assert parse_battery_status("Charging\n") is True and parse_battery_status("Full") is True
    assert parse_battery_status("Discharging") is False and parse_battery_status("Not charging") is False
    assert parse_battery_status("Unknown") is None
    assert parse_loadavg("1.52 1.10 0.80 3/812 99\n") == 1.52 and parse_loadavg("") is None
