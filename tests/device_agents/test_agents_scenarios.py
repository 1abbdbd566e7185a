from __future__ import annotations

import pytest

from device_agents import builtin_trace, describe_scenario, list_scenarios
from device_agents.scenarios import DEVICE_FREQ_MAX_MHZ


def test_at_least_five_scenarios_with_descriptions() -> None:
    names = list_scenarios()
    assert len(names) >= 5
    assert {"steady", "thermal-throttling", "battery-drain", "network-outages", "bursty-contention"} <= set(names)
    assert all(describe_scenario(n) for n in names)


@pytest.mark.parametrize("name", list_scenarios())
def test_deterministic_per_seed(name: str) -> None:
    a, b, c = (builtin_trace(name, seed=s, duration_s=60) for s in (4, 4, 5))
    assert a.states == b.states
    assert a.states != c.states
    assert len(a) == 60 and a.start_s == 0.0 and a.end_s == 59.0


def test_unknown_scenario_lists_known() -> None:
    with pytest.raises(KeyError, match="steady"):
        builtin_trace("moon")


def test_scenarios_show_their_situation() -> None:
    thermal = builtin_trace("thermal-throttling", duration_s=300)
    assert min(s.cpu_freq_mhz for s in thermal) <= 0.6 * DEVICE_FREQ_MAX_MHZ
    assert max(s.temp_c for s in thermal) > 72
    battery = builtin_trace("battery-drain", duration_s=300)
    assert min(s.battery_pct for s in battery) < 10
    assert battery[-1].charging and not battery[0].charging
    net = builtin_trace("network-outages", duration_s=300)
    assert any(s.bandwidth_mbps == 0 for s in net) and any(s.bandwidth_mbps > 10 for s in net)
    busy = builtin_trace("bursty-contention", duration_s=300)
    assert max(s.background_load for s in busy) > 0.4
    steady = builtin_trace("steady", duration_s=300)
    assert all(s.cpu_freq_mhz == DEVICE_FREQ_MAX_MHZ for s in steady)
