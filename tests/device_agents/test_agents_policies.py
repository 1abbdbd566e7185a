"""Hand-built situations with a 3-variant bundle: s 10 ms / 0.70, m 20 ms / 0.75, l 40 ms / 0.80."""

from __future__ import annotations

import math

import pytest
from agents_helpers import make_state, small_bundle

from device_agents import BatteryBudget, OffloadTarget, create_policy
from device_agents.kalman import LogKalman
from device_agents.policies.adaptive import Hysteresis

B = small_bundle()


@pytest.mark.parametrize("name", ["greedy", "greedy-frequency", "kalman"])
def test_full_clock_picks_largest_that_fits(name: str) -> None:
    p = create_policy(name, B, **({"confidence_z": 0.0} if name == "kalman" else {}))
    assert p.decide(make_state(), deadline_ms=45.0).option == "l"


@pytest.mark.parametrize("name", ["greedy", "greedy-frequency"])
def test_a_variant_exactly_at_the_deadline_meets_it(name: str) -> None:
    """The deadline is met at equality (``bound <= deadline``): 40 ms against 40 ms picks l, not m."""
    d = create_policy(name, B).decide(make_state(), deadline_ms=40.0)
    assert d.option == "l" and d.expected_latency_ms == pytest.approx(40.0)
    assert create_policy(name, B).decide(make_state(), deadline_ms=39.999).option == "m"


@pytest.mark.parametrize("name", ["greedy", "greedy-frequency"])
def test_half_frequency_picks_smaller(name: str) -> None:
    p = create_policy(name, B)
    d = p.decide(make_state(cpu_freq_mhz=1000.0), deadline_ms=45.0)  # l -> 80 ms, m -> 40 ms
    assert d.option == "m" and d.expected_latency_ms == pytest.approx(40.0)
    assert "1000/2000 MHz" in d.reason


def test_load_counts_for_greedy_but_not_frequency_only() -> None:
    st = make_state(background_load=0.5)  # x1.5: l -> 60 ms
    assert create_policy("greedy", B).decide(st, deadline_ms=45.0).option == "m"
    assert create_policy("greedy-frequency", B).decide(st, deadline_ms=45.0).option == "l"


@pytest.mark.parametrize("name", ["greedy", "kalman"])
def test_nothing_fits_picks_fastest_and_says_so(name: str) -> None:
    d = create_policy(name, B).decide(make_state(cpu_freq_mhz=500.0), deadline_ms=15.0)  # s -> 40 ms
    assert d.option == "s"
    assert "nothing fits" in d.reason


def test_kalman_learns_a_slow_device() -> None:
    p = create_policy("kalman", B, hysteresis=None, offset_rate=0.0)
    st = make_state()
    assert p.decide(st, deadline_ms=45.0).option != "l"  # unsure at first: margin
    for _ in range(60):  # the device runs everything 1.6x slower than the table says
        d = p.decide(st, deadline_ms=200.0)
        p.observe(d, d.scaled_latency_ms * 1.6)
    assert p.slowdown == pytest.approx(1.6, rel=0.05)  # type: ignore[attr-defined]
    d = p.decide(st, deadline_ms=45.0)  # l would take 64 ms, m 32 ms
    assert d.option == "m" and d.expected_latency_ms == pytest.approx(32.0, rel=0.05)
    assert create_policy("greedy", B).decide(st, deadline_ms=45.0).option == "l"  # greedy never learns


def test_kalman_filter_converges_and_estimates_noise() -> None:
    import numpy as np

    f = LogKalman()
    rng = np.random.default_rng(0)
    for y in np.log(1.3) + 0.1 * rng.standard_normal(500):
        f.update(float(y))
    assert f.slowdown == pytest.approx(1.3, rel=0.03)
    assert f.r == pytest.approx(0.01, rel=0.5)
    f.reset()
    assert f.x == 0.0
    f.update(float("nan"))
    assert f.x == 0.0


def test_hysteresis_delays_upgrades_but_not_downgrades() -> None:
    p = create_policy("greedy", B, hysteresis=Hysteresis(cooldown_steps=3, upgrade_headroom=0.0))
    slow, fast = make_state(cpu_freq_mhz=1000.0), make_state()
    assert p.decide(fast, deadline_ms=45.0).option == "l"
    assert p.decide(slow, deadline_ms=45.0).option == "m"  # downgrade at once
    picks = [p.decide(fast, deadline_ms=45.0) for _ in range(4)]
    assert [d.option for d in picks] == ["m", "m", "l", "l"]
    assert "hysteresis" in picks[0].reason


def test_hysteresis_requires_headroom_for_upgrades() -> None:
    p = create_policy("greedy", B, hysteresis=Hysteresis(cooldown_steps=0, upgrade_headroom=0.2))
    assert p.decide(make_state(cpu_freq_mhz=1000.0), deadline_ms=45.0).option == "m"
    assert p.decide(make_state(), deadline_ms=45.0).option == "m"  # l: 40 ms > 0.8 * 45 ms
    assert p.decide(make_state(), deadline_ms=55.0).option == "l"  # 40 <= 44


def test_low_battery_tightens_and_charging_relaxes() -> None:
    budget = BatteryBudget(thresholds_pct=(30.0, 15.0), fractions=(0.6, 0.3))
    p = create_policy("greedy", B, battery_budget=budget)
    assert p.decide(make_state(battery_pct=50.0), deadline_ms=100.0).option == "l"
    assert p.decide(make_state(battery_pct=25.0), deadline_ms=100.0).option == "m"  # l exceeds 60 %
    assert p.decide(make_state(battery_pct=10.0), deadline_ms=100.0).option == "s"  # m (50 %) exceeds 30 %
    assert p.decide(make_state(battery_pct=10.0, charging=True), deadline_ms=100.0).option == "l"
    assert math.isinf(budget.fraction(make_state(battery_pct=90.0)))


def test_budget_yields_to_deadline_with_cheapest_option() -> None:
    budget = BatteryBudget(thresholds_pct=(30.0,), fractions=(0.01,))  # nothing is cheap enough
    d = create_policy("greedy", B, battery_budget=budget).decide(make_state(battery_pct=5.0), deadline_ms=100.0)
    assert d.option == "s" and "budget" in d.reason


def test_offload_when_network_beats_local() -> None:
    server = OffloadTarget(accuracy=0.82, server_latency_ms=5.0, payload_bytes=20_000)
    p = create_policy("greedy", B, offload=server)
    d = p.decide(make_state(bandwidth_mbps=16.0, rtt_ms=20.0), deadline_ms=45.0)  # 20 + 10 + 5 = 35 ms
    assert d.offload and d.variant is None and d.accuracy == 0.82 and d.option == "offload:server"
    assert d.expected_latency_ms == pytest.approx(35.0)
    assert p.decide(make_state(bandwidth_mbps=16.0, rtt_ms=40.0), deadline_ms=45.0).option == "l"  # 55 ms
    assert not p.decide(make_state(bandwidth_mbps=0.0, rtt_ms=math.inf), deadline_ms=45.0).offload


def test_offload_saves_a_throttled_device() -> None:
    server = OffloadTarget(accuracy=0.78, server_latency_ms=5.0, payload_bytes=20_000)
    d = create_policy("greedy", B, offload=server).decide(
        make_state(cpu_freq_mhz=700.0, bandwidth_mbps=16.0, rtt_ms=20.0), deadline_ms=45.0)
    assert d.offload  # local m would take 57 ms


def test_static_presets_and_names() -> None:
    assert create_policy("static-smallest", B).decide(make_state(), deadline_ms=1.0).option == "s"
    assert create_policy("static-middle", B).decide(make_state(), deadline_ms=1.0).option == "m"
    assert create_policy("static-largest", B).decide(make_state(), deadline_ms=1.0).option == "l"
    assert create_policy("static", B, which="m").decide(make_state(), deadline_ms=1.0).option == "m"
    with pytest.raises(ValueError, match="neither"):
        create_policy("static", B, which="xl")


def test_oracle_refuses_to_guess() -> None:
    with pytest.raises(RuntimeError, match="simulate"):
        create_policy("oracle", B).decide(make_state(), deadline_ms=45.0)


def test_budget_fallback_breaks_energy_ties_towards_accuracy() -> None:
    """Over budget, the cheapest option meeting the deadline; of two equally cheap ones, the more accurate."""
    from device_agents import Variant

    twins = (Variant(name="a", arch="r128-d2", precision="int8", predicted_latency_ms=10.0, accuracy=0.72),
             Variant(name="b", arch="r128-d2", precision="fp32", predicted_latency_ms=10.0, accuracy=0.70),
             Variant(name="c", arch="r224-d4", precision="fp32", predicted_latency_ms=40.0, accuracy=0.80))
    budget = BatteryBudget(thresholds_pct=(30.0,), fractions=(0.01,))  # nothing is cheap enough
    d = create_policy("greedy", twins, battery_budget=budget).decide(make_state(battery_pct=5.0), deadline_ms=100.0)
    assert d.option == "a" and "budget" in d.reason
