"""Does the agent adapt on a measured ladder? Simulated scenarios scaled to a bundle's measured range
(`ladder_setting`, `run_adaptation`), scored by effective accuracy against every static variant and the oracle.

Setting (from the bundle's measured per-request latencies, `Bundle.latency_quantiles`):

* largest = the most accurate variant, smallest = the fastest (measured median); deadline
  D = ``deadline_factor`` x median(largest): with a factor < 1 the largest misses more than half of its requests
  at full speed, idle;
* the scenario traces are compressed (`scale_trace`) so that the worst row slows local inference by at most
  S = D / Q_small(level), Q_small the smallest's measured quantile function and level the highest of 0.99, 0.95,
  0.90, 0.75, 0.50 with Q_small(level) < D: the smallest variant meets the deadline in >= level of its requests
  in every row (``smallest_level``; on a loaded machine the OS scheduler's tail can make 0.99 impossible);
* the device is `MEASURED_DEVICE` (medians are measured: no hidden table error) and each variant's per-request
  noise is drawn from its own measured distribution.

Targets (issue 15): per scenario, agent effective accuracy within 1 point of the oracle, <= 1 % misses, and above
the best static variant wherever the largest static variant misses >= 20 %.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .network import OffloadTarget
from .policies import AGENT_POLICY
from .policies.static import StaticPolicy
from .scenarios import builtin_trace, list_scenarios, scale_trace
from .simulator import MEASURED_DEVICE, SimulationResult, simulate
from .variants import Variant, validate_bundle

__all__ = ["GAP_TARGET", "LARGEST_MISS_CONDITION", "MISS_TARGET", "LadderSetting", "effective_accuracy_table",
           "ladder_setting", "measure_offload", "run_adaptation"]

GAP_TARGET = 0.01
MISS_TARGET = 0.01
LARGEST_MISS_CONDITION = 0.20
_METRICS = ("miss_rate", "mean_accuracy", "effective_accuracy", "offload_rate", "switches")


@dataclass(frozen=True)
class LadderSetting:
    deadline_ms: float
    max_slowdown: float
    largest: str
    smallest: str
    largest_misses_at_full_speed: bool  # its measured median > deadline
    smallest_level: float  # share of the smallest's requests that meet the deadline in the slowest row (0 = none)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _q(quantiles: Sequence[float], level: float) -> float:
    qa = np.asarray(quantiles, dtype=np.float64)
    return float(np.interp(level, np.linspace(0.0, 1.0, len(qa)), qa))


def ladder_setting(variants: Sequence[Variant], quantiles: Mapping[str, Sequence[float]], *,
                   deadline_factor: float = 0.9) -> LadderSetting:
    """Deadline and trace depth for a measured ladder (see the module docstring)."""
    vs = validate_bundle(variants)
    missing = [v.name for v in vs if v.name not in quantiles]
    if missing:
        raise ValueError(f"ladder_setting: no measured latency quantiles for {missing}")
    largest = max(vs, key=lambda v: (v.accuracy, -_q(quantiles[v.name], 0.5)))
    smallest = min(vs, key=lambda v: (_q(quantiles[v.name], 0.5), -v.accuracy))
    deadline = deadline_factor * _q(quantiles[largest.name], 0.5)
    level = next((lv for lv in (0.99, 0.95, 0.90, 0.75, 0.50) if _q(quantiles[smallest.name], lv) < deadline), 0.0)
    slow = max(1.0, deadline / _q(quantiles[smallest.name], level)) if level else 1.0
    return LadderSetting(deadline_ms=deadline, max_slowdown=slow, largest=largest.name, smallest=smallest.name,
                         largest_misses_at_full_speed=_q(quantiles[largest.name], 0.5) > deadline,
                         smallest_level=level)


def run_adaptation(
    variants: Sequence[Variant], quantiles: Mapping[str, Sequence[float]], *,
    scenarios: Sequence[str] | None = None, seeds: Sequence[int] = (0,), duration_s: float = 300.0,
    request_rate_hz: float = 2.0, deadline_factor: float = 0.9, offload: OffloadTarget | None = None,
    link_rtt_ms: float | None = None, link_bandwidth_mbps: float | None = None,
    keep_results: bool = False,
) -> dict[str, Any]:
    """Every scenario x seed: the agent, greedy, every static variant and the oracle (and, with ``offload``, the
    agent and the oracle with the server on the scenario's link moved to ``link_rtt_ms`` / ``link_bandwidth_mbps``).

    Returns {"setting", "scenarios": {name: {"policies": {policy: mean metrics}, "targets": ...}}}; with
    ``keep_results`` also "results" (seed ``seeds[0]``'s `SimulationResult` per scenario and policy, not JSON).
    """
    vs = validate_bundle(variants)
    setting = ladder_setting(vs, quantiles, deadline_factor=deadline_factor)
    statics = {f"static:{v.name}": v.name for v in sorted(vs, key=lambda v: _q(quantiles[v.name], 0.5))}
    out: dict[str, Any] = {"setting": setting.to_json(), "deadline_factor": deadline_factor,
                           "seeds": list(seeds), "duration_s": duration_s, "request_rate_hz": request_rate_hz,
                           "offload": None if offload is None else dict(offload.__dict__), "scenarios": {}}
    kept: dict[str, dict[str, SimulationResult]] = {}
    for sc in scenarios or list_scenarios():
        acc: dict[str, dict[str, list[float]]] = {}
        for seed in seeds:
            tr = scale_trace(builtin_trace(sc, seed=seed, duration_s=duration_s), max_slowdown=setting.max_slowdown,
                             condition=MEASURED_DEVICE.condition_factor, link_rtt_ms=link_rtt_ms,
                             link_bandwidth_mbps=link_bandwidth_mbps)
            common: dict[str, Any] = {"deadline_ms": setting.deadline_ms, "seed": seed, "latency_model": MEASURED_DEVICE,
                      "request_rate_hz": request_rate_hz, "latency_quantiles": quantiles}
            runs: dict[str, SimulationResult] = {
                "agent": simulate(vs, tr, policy=AGENT_POLICY, **common),
                "greedy": simulate(vs, tr, policy="greedy", **common),
                "oracle": simulate(vs, tr, policy="oracle", **common),
            }
            for label, name in statics.items():
                runs[label] = simulate(vs, tr, policy=StaticPolicy(vs, which=name), **common)
            if offload is not None:
                runs["agent+server"] = simulate(vs, tr, policy=AGENT_POLICY, offload=offload, **common)
                runs["oracle+server"] = simulate(vs, tr, policy="oracle", offload=offload, **common)
            if keep_results and seed == seeds[0]:
                kept[sc] = runs
            for name, r in runs.items():
                for m in _METRICS:
                    acc.setdefault(name, {}).setdefault(m, []).append(float(r.metrics[m]))
        pol = {name: {m: float(np.mean(v)) for m, v in ms.items()} for name, ms in acc.items()}
        largest = pol[f"static:{setting.largest}"]
        best_static_name = max(statics, key=lambda k: pol[k]["effective_accuracy"])
        agent, oracle = pol["agent"], pol["oracle"]
        gap = oracle["effective_accuracy"] - agent["effective_accuracy"]
        applies = largest["miss_rate"] >= LARGEST_MISS_CONDITION
        beats = agent["effective_accuracy"] > pol[best_static_name]["effective_accuracy"]
        out["scenarios"][sc] = {
            "policies": pol,
            "max_slowdown_in_trace": setting.max_slowdown,
            "gap_to_oracle_points": 100 * gap,
            "best_static": best_static_name,
            "agent_minus_best_static_points": 100 * (agent["effective_accuracy"]
                                                     - pol[best_static_name]["effective_accuracy"]),
            "targets": {
                "gap_within_1_point": gap <= GAP_TARGET,
                "misses_at_most_1pct": agent["miss_rate"] <= MISS_TARGET,
                "beats_best_static_applies": applies,
                "beats_best_static": beats if applies else None,
            },
        }
        if offload is not None:
            out["scenarios"][sc]["server_gap_to_oracle_points"] = 100 * (
                pol["oracle+server"]["effective_accuracy"] - pol["agent+server"]["effective_accuracy"])
    out["variants"] = [{"name": v.name, "precision": v.precision, "accuracy": v.accuracy,
                        "median_ms": _q(quantiles[v.name], 0.5), "p99_ms": _q(quantiles[v.name], 0.99)}
                       for v in sorted(vs, key=lambda v: _q(quantiles[v.name], 0.5))]
    out["all_targets_met"] = all(
        t["gap_within_1_point"] and t["misses_at_most_1pct"] and t["beats_best_static"] in (True, None)
        for t in (d["targets"] for d in out["scenarios"].values()))
    if keep_results:
        out["results"] = kept
    return out


def effective_accuracy_table(study: Mapping[str, Any]) -> str:
    """Markdown: one row per policy, one column of effective accuracy (misses count as wrong) and miss rate per
    scenario."""
    scs = list(study["scenarios"])
    pols = list(next(iter(study["scenarios"].values()))["policies"])
    head = "| policy | " + " | ".join(f"{s} eff. acc (miss)" for s in scs) + " |"
    lines = [head, "|" + "---|" * (len(scs) + 1)]
    for p in pols:
        cells = []
        for s in scs:
            m = study["scenarios"][s]["policies"][p]
            cells.append(f"{m['effective_accuracy']:.4f} ({m['miss_rate']:.1%})")
        label = p.replace("static:", "static ") if len(p) < 60 else p[:57] + "..."
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measure_offload(url: str, *, requests: int = 60, warmup: int = 5, images_per_request: int = 1,
                    timeout_s: float = 2.0, name: str = "serve-model") -> tuple[OffloadTarget, dict[str, float],
                                                                               dict[str, Any]]:
    """Time ``requests`` inferences on the model server at ``url`` (after ``warmup``).

    Returns the `OffloadTarget` (the server's reported accuracy, median compute time, bytes per request), the link
    for `scale_trace` (``link_rtt_ms`` = half the median network time = round trip minus compute, and a bandwidth
    that makes the other half the transfer) and the measurement (median / p99 round trip, compute, network).
    """
    from .client import OffloadClient

    client = OffloadClient(url, timeout_s=timeout_s)
    try:
        health = client.health()
        shape = tuple(max(int(d), 1) for d in health["input_shape"])
        x = np.zeros((images_per_request, *shape[1:]), dtype=np.float32)
        for _ in range(warmup):
            client.infer(x)
        replies = [client.infer(x) for _ in range(requests)]
    finally:
        client.close()
    wall = np.array([r.wall_ms for r in replies])
    srv = np.array([r.server_ms for r in replies])
    net_ms = float(np.median(wall - srv))
    target = OffloadTarget(accuracy=float(health["accuracy"]), server_latency_ms=float(np.median(srv)),
                           payload_bytes=int(replies[0].n_bytes), name=name)
    link = {"link_rtt_ms": 0.5 * net_ms,
            "link_bandwidth_mbps": 8.0 * target.payload_bytes / (1e3 * 0.5 * max(net_ms, 1e-6))}
    info = {"url": url, "model": health.get("model"), "accuracy": health.get("accuracy"), "requests": requests,
            "images_per_request": images_per_request, "wall_median_ms": float(np.median(wall)),
            "wall_p99_ms": float(np.percentile(wall, 99)), "server_median_ms": float(np.median(srv)),
            "network_median_ms": net_ms, "payload_bytes": target.payload_bytes,
            "statistic": "median and p99 of client-side round trips (httpx, localhost)"}
    return target, link, info
