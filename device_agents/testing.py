"""Policy and state-provider contracts as reusable pytest suites (as `optuna.testing` ships its sampler tests).

A test module gets every check for every registered implementation by parametrizing one subclass::

    @pytest.mark.parametrize("name", list_policies())
    class TestPolicies(PolicyContract):          # also needs a ``variants`` fixture (a bundle of Variant)
        pass

    @pytest.mark.parametrize("make_provider", [...])   # callables tmp_path -> StateProvider
    class TestProviders(ProviderContract):
        pass

Policy contract (`device_agents.policies.base.Policy`): for any state and deadline, a `Decision` with a reason
that either names a variant of the bundle (its accuracy, latency > 0) or offloads (only when an offload target
exists); observing a latency, or a failed request (inf), never breaks it; ``reset()`` returns it to a fresh
policy's choices. Provider contract (`device_agents.state.StateProvider`): every read is a valid `DeviceState`
(fields in range, ``missing`` a set of sensor names holding the documented defaults, time never going back, a
JSON round trip); ``close()`` may be called twice. Needs pytest (the ``[dev]`` extra).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from device_agents.network import OffloadTarget
from device_agents.policies import ClairvoyantPolicy, Decision, Policy, StepTruth, create_policy
from device_agents.state import SENSOR_FIELDS, STATE_DEFAULTS, DeviceState, StateProvider
from device_agents.variants import Variant

__all__ = ["DEADLINES_MS", "STATES", "PolicyContract", "ProviderContract", "decide", "make_state"]


def make_state(**overrides: Any) -> DeviceState:
    """A calm reading at full clock (2000 MHz), idle, 80 % battery, good network; override any field."""
    base: dict[str, Any] = {
        "time_s": 0.0, "battery_pct": 80.0, "charging": False, "cpu_freq_mhz": 2000.0, "cpu_freq_max_mhz": 2000.0,
        "temp_c": 45.0, "background_load": 0.0, "bandwidth_mbps": 50.0, "rtt_ms": 20.0,
    }
    base.update(overrides)
    return DeviceState(**base)


DEADLINES_MS = (5.0, 30.0, 60.0, 1000.0)
STATES = (  # calm; throttled, busy and nearly empty; offline and charging
    make_state(),
    make_state(cpu_freq_mhz=700.0, background_load=0.8, battery_pct=9.0),
    make_state(bandwidth_mbps=0.0, rtt_ms=math.inf, charging=True),
)


def decide(policy: Policy, variants: Sequence[Variant], state: DeviceState, deadline_ms: float) -> Decision:
    """``policy.decide``; the oracle is first told the step's truth (the table latencies scaled by the clock)."""
    if isinstance(policy, ClairvoyantPolicy):
        policy.reveal(StepTruth(latency_ms={v.name: v.predicted_latency_ms * state.freq_ratio for v in variants},
                                offload_latency_ms=40.0, state=state))
    return policy.decide(state, deadline_ms=deadline_ms)


class PolicyContract:
    """Checks every `Policy` must pass; parametrize a subclass with ``name`` and provide a ``variants`` fixture."""

    def test_decisions_are_valid(self, name: str, variants: tuple[Variant, ...]) -> None:
        names = {v.name for v in variants}
        for offload in (None, OffloadTarget()):
            p = create_policy(name, variants, offload=offload)
            assert isinstance(p, Policy) and p.name
            for st in STATES:
                for deadline in DEADLINES_MS:
                    d = decide(p, variants, st, deadline)
                    assert isinstance(d, Decision) and d.reason
                    if d.offload:
                        assert offload is not None and d.variant is None and d.option.startswith("offload")
                    else:
                        assert d.variant is not None and d.variant.name in names and d.option == d.variant.name
                        assert d.accuracy == d.variant.accuracy
                    assert d.expected_latency_ms > 0
                    p.observe(d, d.expected_latency_ms * 1.1)
                    p.observe(d, math.inf)  # a failed request must not break anything

    def test_reset_forgets(self, name: str, variants: tuple[Variant, ...]) -> None:
        fresh, used = create_policy(name, variants), create_policy(name, variants)
        st = make_state(cpu_freq_mhz=1200.0)
        for _ in range(30):
            d = decide(used, variants, st, 40.0)
            used.observe(d, d.expected_latency_ms * 2.5 if math.isfinite(d.expected_latency_ms) else 10.0)
        used.reset()
        for st in STATES:
            a, b = decide(fresh, variants, st, 40.0), decide(used, variants, st, 40.0)
            assert (a.option, a.expected_latency_ms) == (b.option, b.expected_latency_ms)


class ProviderContract:
    """Checks every `StateProvider` must pass; parametrize a subclass with ``make_provider`` (tmp_path -> it)."""

    reads: int = 7

    def test_reads_are_valid_states(self, make_provider: Callable[[Path], StateProvider], tmp_path: Path) -> None:
        provider = make_provider(tmp_path)
        assert isinstance(provider, StateProvider)
        last = -math.inf
        for _ in range(self.reads):
            st = provider.read()
            assert isinstance(st, DeviceState)
            assert set(st.missing) <= set(SENSOR_FIELDS)
            assert len(set(st.missing)) == len(st.missing)
            assert 0 <= st.battery_pct <= 100 and 0 <= st.background_load <= 1
            assert 0 < st.cpu_freq_mhz <= st.cpu_freq_max_mhz
            assert st.bandwidth_mbps >= 0 and st.rtt_ms >= 0
            assert st.time_s >= last
            last = st.time_s
            assert DeviceState.from_json(st.to_json()) == st
        provider.close()
        provider.close()

    def test_missing_fields_hold_defaults(self, make_provider: Callable[[Path], StateProvider],
                                          tmp_path: Path) -> None:
        st = make_provider(tmp_path).read()
        for f in st.missing:
            if f in ("cpu_freq_mhz", "cpu_freq_max_mhz"):
                continue  # documented: one falls back to the other when only one is known
            assert getattr(st, f) == STATE_DEFAULTS[f], f
