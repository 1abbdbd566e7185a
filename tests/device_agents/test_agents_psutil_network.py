from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest

from device_agents import NetworkEstimator, OffloadTarget
from device_agents.network import transfer_ms
from device_agents.providers.psutil_provider import PsutilProvider


class _FakeProc:
    def cpu_percent(self, interval: Any = None) -> float:
        return 50.0  # this process: half of one core


def _fake_psutil(**over: Any) -> SimpleNamespace:
    ns = SimpleNamespace(
        Process=_FakeProc,
        cpu_percent=lambda interval=None: 75.0,
        cpu_count=lambda: 2,
        cpu_freq=lambda: SimpleNamespace(current=1200.0, min=400.0, max=2400.0),
        sensors_battery=lambda: SimpleNamespace(percent=33.0, power_plugged=False, secsleft=100),
        sensors_temperatures=lambda: {"coretemp": [SimpleNamespace(current=58.0), SimpleNamespace(current=61.0)]},
    )
    for k, v in over.items():
        setattr(ns, k, v)
    return ns


def test_psutil_reads_everything_it_has() -> None:
    st = PsutilProvider(psutil_module=_fake_psutil()).read()
    assert (st.cpu_freq_mhz, st.cpu_freq_max_mhz) == (1200.0, 2400.0)
    assert st.battery_pct == 33.0 and st.charging is False
    assert st.temp_c == 61.0
    assert st.background_load == pytest.approx(0.5)  # 75 % system minus 25 % (our 50 % of one of 2 cores)
    assert set(st.missing) == {"bandwidth_mbps", "rtt_ms"}


def test_psutil_vm_without_battery_or_max_clock() -> None:
    fake = _fake_psutil(
        cpu_freq=lambda: SimpleNamespace(current=2445.4, min=0.0, max=0.0),
        sensors_battery=lambda: None,
        sensors_temperatures=dict,
    )
    st = PsutilProvider(psutil_module=fake).read()
    assert st.cpu_freq_mhz == st.cpu_freq_max_mhz == 2445.4
    assert {"battery_pct", "charging", "temp_c", "cpu_freq_max_mhz"} <= set(st.missing)
    assert st.charging is True and st.battery_pct == 100.0


def test_transfer_and_offload_latency_formula() -> None:
    assert transfer_ms(20_000, 16.0) == pytest.approx(10.0)  # 160 kbit at 16 Mbit/s
    assert math.isinf(transfer_ms(1, 0.0))
    target = OffloadTarget(accuracy=0.8, server_latency_ms=5.0, payload_bytes=20_000)
    assert target.latency_ms(16.0, 30.0) == pytest.approx(45.0)
    assert math.isinf(target.latency_ms(0.0, 30.0))


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_estimator_smooths_collapses_and_goes_stale() -> None:
    clock = _Clock()
    est = NetworkEstimator(alpha=0.5, stale_after_s=10.0, clock=clock)
    st = est.read()
    assert {"bandwidth_mbps", "rtt_ms"} <= set(st.missing) and st.bandwidth_mbps == 0.0
    est.record_sample(bandwidth_mbps=20.0, rtt_ms=40.0)
    est.record_sample(bandwidth_mbps=10.0, rtt_ms=20.0)
    assert est.bandwidth_mbps == pytest.approx(15.0) and est.rtt_ms == pytest.approx(30.0)
    # A transfer of 25 kB in 30 ms with 10 ms RTT = 200 kbit in 20 ms = 10 Mbit/s.
    est.record_transfer(n_bytes=25_000, duration_ms=30.0, rtt_ms=10.0)
    assert est.bandwidth_mbps == pytest.approx(12.5)
    est.record_failure()
    st = est.read()
    assert st.bandwidth_mbps == 0.0 and math.isinf(st.rtt_ms) and "bandwidth_mbps" not in st.missing
    est.record_sample(bandwidth_mbps=8.0, rtt_ms=25.0)  # recovery restarts from the sample
    assert est.bandwidth_mbps == 8.0
    clock.t = 100.0
    assert "bandwidth_mbps" in est.read().missing
