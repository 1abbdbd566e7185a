"""One contract suite for every registered policy (see `device_agents.policies.base.Policy`)."""

from __future__ import annotations

import math

import pytest
from agents_helpers import make_state

from device_agents import Decision, OffloadTarget, Policy, Variant, create_policy, list_policies
from device_agents.policies import ClairvoyantPolicy, StepTruth
from device_agents.state import DeviceState

DEADLINES = (5.0, 30.0, 60.0, 1000.0)
STATES = (
    make_state(),
    make_state(cpu_freq_mhz=700.0, background_load=0.8, battery_pct=9.0),
    make_state(bandwidth_mbps=0.0, rtt_ms=math.inf, charging=True),
)


def _decide(p: Policy, variants: tuple[Variant, ...], st: DeviceState, deadline_ms: float) -> Decision:
    if isinstance(p, ClairvoyantPolicy):  # the oracle needs the truth of the step: give it the table latencies
        p.reveal(StepTruth(latency_ms={v.name: v.predicted_latency_ms * st.freq_ratio for v in variants},
                           offload_latency_ms=40.0, state=st))
    return p.decide(st, deadline_ms=deadline_ms)


@pytest.mark.parametrize("name", list_policies())
@pytest.mark.parametrize("with_offload", [False, True])
def test_contract(name: str, with_offload: bool, variants: tuple[Variant, ...]) -> None:
    offload = OffloadTarget() if with_offload else None
    p = create_policy(name, variants, offload=offload)
    assert isinstance(p, Policy) and p.name
    names = {v.name for v in variants}
    for st in STATES:
        for deadline in DEADLINES:
            d = _decide(p, variants, st, deadline)
            assert isinstance(d, Decision) and d.reason
            if d.offload:
                assert with_offload and d.variant is None and d.option.startswith("offload")
            else:
                assert d.variant is not None and d.variant.name in names and d.option == d.variant.name
                assert d.accuracy == d.variant.accuracy
            assert d.expected_latency_ms > 0
            p.observe(d, d.expected_latency_ms * 1.1)
            p.observe(d, math.inf)  # a failed request must not break anything


@pytest.mark.parametrize("name", list_policies())
def test_reset_forgets(name: str, variants: tuple[Variant, ...]) -> None:
    fresh, used = create_policy(name, variants), create_policy(name, variants)
    st = make_state(cpu_freq_mhz=1200.0)
    for _ in range(30):
        d = _decide(used, variants, st, 40.0)
        used.observe(d, d.expected_latency_ms * 2.5 if math.isfinite(d.expected_latency_ms) else 10.0)
    used.reset()
    for st in STATES:
        a, b = _decide(fresh, variants, st, 40.0), _decide(used, variants, st, 40.0)
        assert (a.option, a.expected_latency_ms) == (b.option, b.expected_latency_ms)


def test_unknown_policy_lists_known(variants: tuple[Variant, ...]) -> None:
    with pytest.raises(KeyError, match="kalman"):
        create_policy("psychic", variants)


def test_registry_has_the_required_policies() -> None:
    assert {"static-smallest", "static-middle", "static-largest", "greedy", "greedy-frequency", "kalman",
            "oracle"} <= set(list_policies())
