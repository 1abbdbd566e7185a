"""The agents benchmark (``benchmarks/agents.py`` is a thin wrapper): simulated scenarios, decision time, and a
live run on this machine.

1. Simulation: every built-in scenario x ``seeds``, the 18 synthetic `example_variants` (6 OFA sub-networks x
   fp32/fp16/int8), deadline 50 ms, request rate 2 Hz; policies agent (``kalman``), greedy, static
   smallest/middle/largest, oracle; then agent and oracle again with a server (`OffloadTarget` defaults).
   Metrics are means over seeds.
2. Decision time: ``time.perf_counter_ns`` around each `Policy.decide` of the agent over states replayed from the
   thermal-throttling trace (with an observe after each, untimed); p50 / p99 in microseconds.
3. Live: `device_agents.live.run_live` on a bundle of real ONNX models (default: the six example architectures of
   the ofa-mbv3 space exported with random weights; their accuracies are the synthetic example figures, so the
   live accuracy column ranks variants but is not a measurement; the miss rates are measured).

Targets (issue 8): agent within 2 points of the oracle's mean accuracy with <= 2 % misses on scenarios where
static-largest misses >= 20 %; decision p99 < 100 us.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .network import OffloadTarget
from .policies import AGENT_POLICY, create_policy
from .scenarios import builtin_trace, list_scenarios
from .simulator import DEFAULT_COMPARISON, compare_policies
from .variants import Variant, example_variants

__all__ = ["build_example_bundle", "decision_timing", "render_markdown", "run_benchmark", "simulation_benchmark"]

DEADLINE_MS = 50.0
GAP_TARGET = 0.02
MISS_TARGET = 0.02
LARGEST_MISS_CONDITION = 0.20
DECISION_P99_TARGET_US = 100.0
_METRICS = ("miss_rate", "mean_accuracy", "effective_accuracy")


def simulation_benchmark(
    *, seeds: Sequence[int] = (0, 1, 2), duration_s: float = 300.0, deadline_ms: float = DEADLINE_MS,
    variants: Sequence[Variant] | None = None,
) -> dict[str, Any]:
    """Per scenario: per policy the mean over seeds of miss_rate, mean_accuracy, effective_accuracy, and the
    target check."""
    vs = tuple(variants) if variants is not None else example_variants()
    out: dict[str, Any] = {}
    for sc in list_scenarios():
        acc: dict[str, dict[str, list[float]]] = {}
        for seed in seeds:
            tr = builtin_trace(sc, seed=seed, duration_s=duration_s)
            runs = dict(compare_policies(vs, tr, deadline_ms=deadline_ms, seed=seed, policies=DEFAULT_COMPARISON))
            srv = compare_policies(vs, tr, deadline_ms=deadline_ms, seed=seed, policies=(AGENT_POLICY, "oracle"),
                                   offload=OffloadTarget())
            runs.update({f"{k}+server": v for k, v in srv.items()})
            for name, r in runs.items():
                for m in _METRICS:
                    acc.setdefault(name, {}).setdefault(m, []).append(float(r.metrics[m]))
        pol = {name: {m: float(np.mean(v)) for m, v in ms.items()} for name, ms in acc.items()}
        agent, oracle, largest = pol[AGENT_POLICY], pol["oracle"], pol["static-largest"]
        gap = oracle["mean_accuracy"] - agent["mean_accuracy"]
        srv_gap = pol["oracle+server"]["mean_accuracy"] - pol[f"{AGENT_POLICY}+server"]["mean_accuracy"]
        applies = largest["miss_rate"] >= LARGEST_MISS_CONDITION
        out[sc] = {
            "policies": pol,
            "agent_gap_points": 100 * gap,
            "agent_server_gap_points": 100 * srv_gap,
            "target_applies": applies,
            "target_met": (gap <= GAP_TARGET and agent["miss_rate"] <= MISS_TARGET) if applies else None,
        }
    return out


def decision_timing(*, n: int = 20_000, offload: bool = False, variants: Sequence[Variant] | None = None,
                    clock_ns: Callable[[], int] = time.perf_counter_ns) -> dict[str, Any]:
    """Wall time of the agent's `decide`, microseconds (p50, p99, max) over ``n`` calls on replayed states."""
    vs = tuple(variants) if variants is not None else example_variants()
    pol = create_policy(AGENT_POLICY, vs, offload=OffloadTarget() if offload else None)
    states = list(builtin_trace("thermal-throttling", seed=0, duration_s=300))
    rng = np.random.default_rng(0)
    noise = np.exp(0.1 * rng.standard_normal(n))
    ns = np.empty(n, dtype=np.int64)
    for i in range(n):
        st = states[i % len(states)]
        t0 = clock_ns()
        d = pol.decide(st, deadline_ms=DEADLINE_MS)
        ns[i] = clock_ns() - t0
        pol.observe(d, d.expected_latency_ms * 1.2 * float(noise[i]) if math.isfinite(d.expected_latency_ms) else 1.0)
    us = ns / 1e3
    return {"n": n, "n_variants": len(vs), "offload": offload, "p50_us": float(np.percentile(us, 50)),
            "p99_us": float(np.percentile(us, 99)), "max_us": float(us.max()),
            "target_p99_us": DECISION_P99_TARGET_US,
            "target_met": bool(np.percentile(us, 99) < DECISION_P99_TARGET_US)}


def build_example_bundle(out_dir: str | os.PathLike[str]) -> Path:
    """Export the six example architectures (ofa-mbv3 space, random weights, fp32) and bundle them; reuses a
    complete bundle already in ``out_dir``. Returns the bundle folder."""
    import torch

    from supernet.export import export
    from supernet.layers import Backbone, build_static_model
    from supernet.space import SearchSpace

    from .bundle import BundleError, build_bundle, load_bundle

    out = Path(out_dir)
    try:
        load_bundle(out)
        return out
    except BundleError:
        pass
    space, backbone = SearchSpace(), Backbone()
    variants = []
    for i, v in enumerate(example_variants(precisions=("fp32",))):
        cfg = space.parse(v.arch)
        torch.manual_seed(i)
        model = build_static_model(backbone, cfg, space=space)
        path = export(model, out.parent / f"{out.name}-export" / f"v{i}.onnx", format="onnx", input_shape=model.input_shape)
        variants.append(Variant(name=v.name, arch=v.arch, precision="fp32", predicted_latency_ms=v.predicted_latency_ms,
                                accuracy=v.accuracy, model_path=str(path)))
    build_bundle(variants, out, overwrite=True)
    return out


def run_benchmark(work_dir: str | os.PathLike[str], *, quick: bool = False, bundle_dir: str | None = None,
                  live: bool = True, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """All three parts; returns the JSON-able result (the caller writes it). ``work_dir`` holds the exported
    example bundle when no ``bundle_dir`` is given."""
    say = progress or (lambda msg: None)
    seeds = (0,) if quick else (0, 1, 2)
    duration_s = 150.0 if quick else 300.0
    say(f"simulation: {len(list_scenarios())} scenarios x {len(seeds)} seed(s) x {duration_s:g} s")
    t0 = time.perf_counter()
    sim = simulation_benchmark(seeds=seeds, duration_s=duration_s)
    sim_s = time.perf_counter() - t0
    say("decision time")
    n = 5_000 if quick else 50_000
    timing = {"on-device": decision_timing(n=n), "with-server": decision_timing(n=n, offload=True)}
    result: dict[str, Any] = {
        "schema_version": 1,
        "quick": quick,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                    "note": "shared 2-core VM loaded by other engineers' jobs; timings are as measured there"},
        "simulation": {"variants": "example_variants(): 6 OFA subnets x fp32/fp16/int8 (synthetic latencies and "
                                   "accuracies)", "deadline_ms": DEADLINE_MS, "request_rate_hz": 2.0,
                       "seeds": list(seeds), "duration_s": duration_s, "wall_s": sim_s, "scenarios": sim},
        "decision_time": timing,
    }
    if live:
        from .bundle import load_bundle
        from .live import run_live

        bdir = Path(bundle_dir) if bundle_dir else build_example_bundle(Path(work_dir) / "example-bundle")
        say(f"live run on bundle {bdir}")
        schedule = (0, 3, 0, 4) if quick else (0, 2, 0, 4, 1, 3, 0)
        phase_s = 8.0 if quick else 15.0
        live_res = run_live(load_bundle(bdir), schedule=schedule, phase_s=phase_s, request_interval_s=0.02,
                            calibration_runs=10 if quick else 20, progress=say)
        result["live"] = {"bundle": str(bdir), "default_bundle": bundle_dir is None, **live_res.to_json()}
    return result


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


def render_markdown(r: dict[str, Any]) -> str:
    sim = r["simulation"]
    lines = [
        "# Device agents benchmark",
        "",
        f"Mode: {'quick' if r['quick'] else 'full'}. Machine: {r['machine']['platform']}, "
        f"{r['machine']['cpu_count']} cores, load average at start {r['machine']['loadavg']} "
        f"({r['machine']['note']}).",
        "",
        "## Simulated scenarios",
        "",
        f"Variants: {sim['variants']}; deadline {sim['deadline_ms']:g} ms; {sim['request_rate_hz']:g} requests/s; "
        f"{sim['duration_s']:g} s per trace; seeds {sim['seeds']} (means over seeds). Accuracy = mean accuracy of "
        "the chosen options; effective accuracy scores a miss as 0. Target: agent within 2 points of the oracle "
        "with <= 2 % misses where static-largest misses >= 20 %.",
        "",
        "| scenario | policy | miss rate | accuracy | effective acc |",
        "|---|---|---|---|---|",
    ]
    for sc, d in sim["scenarios"].items():
        for name, m in d["policies"].items():
            lines.append(f"| {sc} | {name} | {_pct(m['miss_rate'])} | {m['mean_accuracy']:.4f} | "
                         f"{m['effective_accuracy']:.4f} |")
    lines += ["", "| scenario | static-largest misses | agent misses | gap to oracle (points) | target applies | "
              "target met | gap with server (points) |", "|---|---|---|---|---|---|---|"]
    for sc, d in sim["scenarios"].items():
        p = d["policies"]
        met = {None: "-", True: "yes", False: "**no**"}[d["target_met"]]
        lines.append(f"| {sc} | {_pct(p['static-largest']['miss_rate'])} | {_pct(p[AGENT_POLICY]['miss_rate'])} | "
                     f"{d['agent_gap_points']:.2f} | {'yes' if d['target_applies'] else 'no'} | {met} | "
                     f"{d['agent_server_gap_points']:.2f} |")
    lines += ["", "## Decision time", "",
              "`time.perf_counter_ns` around each `decide` of the agent (18 variants), over replayed "
              "thermal-throttling states, measured on this shared machine. Target p99 < 100 us.", "",
              "| setting | decisions | p50 us | p99 us | max us | target met |", "|---|---|---|---|---|---|"]
    for k, t in r["decision_time"].items():
        lines.append(f"| {k} | {t['n']} | {t['p50_us']:.1f} | {t['p99_us']:.1f} | {t['max_us']:.1f} | "
                     f"{'yes' if t['target_met'] else '**no**'} |")
    if "live" in r:
        from .live import LiveResult, format_live

        lv = r["live"]
        res = LiveResult(deadline_ms=lv["deadline_ms"], calibrated_ms=lv["calibrated_ms"], models=lv["models"],
                         phases=lv["phases"], conditions=lv["conditions"])
        c = lv["conditions"]
        lines += ["", "## Live run on this machine", "",
                  f"Bundle: {lv['bundle']}" + (" (the six example architectures, ofa-mbv3, random weights: the "
                                               "accuracy column uses their synthetic figures, the miss rates are "
                                               "measured)" if lv.get("default_bundle") else "") + ". "
                  f"Deadline {lv['deadline_ms']:.2f} ms (1.5 x the largest variant's calibrated median). "
                  f"Injected busy processes per phase {c['schedule_busy_procs']}, {c['phase_s']:g} s each; agent and "
                  f"static-largest answer alternately in each request slot. Load average {c['loadavg_start']} -> "
                  f"{c['loadavg_end']}; background load seen by the agent mean {c['background_load_seen']['mean']:.2f}. "
                  f"State: {c['frequency_note']}; missing fields {c['missing_state_fields']}.", "",
                  format_live(res)]
    return "\n".join(lines) + "\n"
