from __future__ import annotations

from pathlib import Path

import pytest
from agents_helpers import small_bundle

from device_agents import (
    AGENT_POLICY,
    DeviceLatencyModel,
    OffloadTarget,
    Variant,
    builtin_trace,
    compare_policies,
    create_policy,
    list_scenarios,
    plot_timeline,
    simulate,
)

DEADLINE_MS = 50.0


def test_deterministic_per_seed(variants: tuple[Variant, ...]) -> None:
    tr = builtin_trace("bursty-contention", seed=2, duration_s=60)
    a = simulate(variants, tr, policy="kalman", deadline_ms=DEADLINE_MS, seed=7, offload=OffloadTarget())
    b = simulate(variants, tr, policy="kalman", deadline_ms=DEADLINE_MS, seed=7, offload=OffloadTarget())
    c = simulate(variants, tr, policy="kalman", deadline_ms=DEADLINE_MS, seed=8, offload=OffloadTarget())
    assert a.steps == b.steps and a.metrics == b.metrics
    assert [s.actual_latency_ms for s in a.steps] != [s.actual_latency_ms for s in c.steps]


def test_policies_meet_the_same_noise(variants: tuple[Variant, ...]) -> None:
    """Two static policies running the same variant see identical latencies: the draws do not depend on policy."""
    tr = builtin_trace("steady", duration_s=30)
    a = simulate(variants, tr, policy="static-largest", deadline_ms=DEADLINE_MS, seed=3)
    b = simulate(variants, tr, policy=create_policy("static", variants, which=a.steps[0].option),
                 deadline_ms=DEADLINE_MS, seed=3)
    assert [s.actual_latency_ms for s in a.steps] == [s.actual_latency_ms for s in b.steps]


def test_true_latency_model_is_the_documented_formula() -> None:
    v = small_bundle()[:1]
    model = DeviceLatencyModel(memory_bound_share=0.2, contention_coeff=2.0, device_slowdown=1.5,
                               variant_bias_sigma=0.0, noise_sigma=0.0)
    tr = builtin_trace("steady", duration_s=5)
    r = simulate(v, tr, policy="static-largest", deadline_ms=1000.0, latency_model=model, request_rate_hz=1.0)
    for step, st in zip(r.steps, tr):
        expected = 10.0 * (0.8 * st.freq_ratio + 0.2) * (1 + 2.0 * st.background_load) * 1.5
        assert step.actual_latency_ms == pytest.approx(expected)


def test_metrics_and_request_count(variants: tuple[Variant, ...]) -> None:
    r = simulate(variants, builtin_trace("steady", duration_s=20), policy="greedy", deadline_ms=DEADLINE_MS,
                 request_rate_hz=4.0)
    assert r.metrics["n_requests"] == len(r.steps) == 80
    for key in ("miss_rate", "mean_accuracy", "effective_accuracy", "energy_mj", "switches", "offloads"):
        assert key in r.metrics
    assert r.metrics["miss_rate"] == pytest.approx(sum(s.missed for s in r.steps) / 80)
    assert r.metrics["energy_mj"] > 0
    assert r.to_json()["metrics"] == dict(r.metrics)
    assert r.steps_csv().count("\n") == 81


def test_static_largest_misses_under_throttling(variants: tuple[Variant, ...]) -> None:
    tr = builtin_trace("thermal-throttling", duration_s=300)
    res = compare_policies(variants, tr, deadline_ms=DEADLINE_MS, policies=("static-largest", "kalman", "greedy"))
    assert res["static-largest"].metrics["miss_rate"] > 0.9
    assert res["greedy"].metrics["miss_rate"] > 0.2  # trusts the table: the hidden slowdown makes it miss
    assert res["kalman"].metrics["miss_rate"] < 0.02


@pytest.mark.parametrize("scenario", list_scenarios())
@pytest.mark.parametrize("with_server", [False, True])
def test_agent_near_oracle_with_few_misses(scenario: str, with_server: bool, variants: tuple[Variant, ...]) -> None:
    """The project target on every built-in scenario (seed 0, 150 s): <= 2 % misses and, on-device, within 2
    points of the oracle; the oracle is never worse than the agent on effective accuracy.

    With a server the gap is wider (up to ~3 points under throttling): the oracle knows every request's RTT and
    bandwidth draw, the agent must keep a margin for them. The bound here is a regression guard, not the target.
    """
    tr = builtin_trace(scenario, seed=0, duration_s=150)
    res = compare_policies(variants, tr, deadline_ms=DEADLINE_MS, seed=0, policies=(AGENT_POLICY, "oracle"),
                           offload=OffloadTarget() if with_server else None)
    agent, oracle = res[AGENT_POLICY].metrics, res["oracle"].metrics
    assert agent["miss_rate"] <= 0.02
    assert oracle["mean_accuracy"] - agent["mean_accuracy"] <= (0.035 if with_server else 0.02)
    assert oracle["effective_accuracy"] >= agent["effective_accuracy"]
    assert oracle["miss_rate"] <= agent["miss_rate"]


def test_compare_policies_default_set(variants: tuple[Variant, ...]) -> None:
    res = compare_policies(variants, builtin_trace("steady", duration_s=10), deadline_ms=DEADLINE_MS)
    assert list(res) == ["kalman", "greedy", "static-smallest", "static-middle", "static-largest", "oracle"]
    acc = {k: r.metrics["mean_accuracy"] for k, r in res.items()}
    assert acc["static-smallest"] < acc["static-middle"] < acc["static-largest"]


def test_offload_outage_is_a_miss(variants: tuple[Variant, ...]) -> None:
    tr = builtin_trace("network-outages", duration_s=300)
    r = simulate(variants, tr, policy="greedy", deadline_ms=DEADLINE_MS, offload=OffloadTarget(accuracy=0.9))
    failed = [s for s in r.steps if s.offload and s.bandwidth_mbps == 0]
    assert failed and all(s.missed for s in failed)
    assert r.metrics["failed_requests"] == len(failed)


def test_offload_without_target_is_rejected(variants: tuple[Variant, ...]) -> None:
    p = create_policy("greedy", variants, offload=OffloadTarget(accuracy=0.99))
    with pytest.raises(RuntimeError, match="no offload target"):
        simulate(variants, builtin_trace("steady", duration_s=5), policy=p, deadline_ms=DEADLINE_MS)


def test_bad_arguments(variants: tuple[Variant, ...]) -> None:
    tr = builtin_trace("steady", duration_s=5)
    with pytest.raises(ValueError, match="deadline_ms"):
        simulate(variants, tr, policy="greedy", deadline_ms=0.0)
    with pytest.raises(KeyError, match="known policies"):
        simulate(variants, tr, policy="nope", deadline_ms=10.0)


def test_plot_is_a_png(tmp_path: Path, variants: tuple[Variant, ...]) -> None:
    r = simulate(variants, builtin_trace("network-outages", duration_s=60), policy="kalman",
                 deadline_ms=DEADLINE_MS, offload=OffloadTarget())
    out = tmp_path / "sub" / "timeline.png"
    plot_timeline(r, out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
