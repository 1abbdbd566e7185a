"""XNNPACK vs LiteRT's built-in kernels on the same .tflite files: is the delegate applied, and what does it do.

Issue 17 asked whether the default ("tflite") interpreter applies XNNPACK at all, since it timed a subnet at
19.95 ms against 20.21 ms on the built-in kernels. For ``--n-subnets`` random-weight ``ofa-mbv3`` subnets (w1.0,
1000 classes, the largest plus seeded samples, at ``--resolution`` px) and one-op depthwise-conv probes (k3/5/7/9),
this script records what `supernet.runtime` reports about delegation (partitions, delegated nodes, ops left on
built-in kernels) and times ``tflite`` (XNNPACK) against ``tflite-builtin`` (and onnxruntime for the subnets)
side by side (`supernet.runtime.time_interleaved`): per round each session's median of ``--runs`` runs, rounds in
a random order, the per-round ratio's median and quartiles reported.

Subnets come from `supernet.layers.build_static_model` (what latency tables time), not from `get_active_subnet`
of a freshly initialised supernet: its residual blocks start with a zero BN scale, so litert-torch folds their
branches away and the .tflite file is a much smaller network than the ONNX one.

Usage:

    python benchmarks/xnnpack.py                         # 4 subnets at 224 px + 6 probes, 1 thread
    python benchmarks/xnnpack.py --threads 2 --out /tmp/x
    python benchmarks/xnnpack.py --render-only           # rewrite xnnpack.md from xnnpack.json

Resumable: converted files are cached under ``--work`` by architecture string (conversion takes 10-60 s per
224-px subnet here); each finished row is kept in ``--work/state-t<threads>.json`` and reused on a rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from latency_tables.environment import machine_environment
from supernet.export import export
from supernet.runtime import Session, backend_version, open_session, time_interleaved

PROBES = ((3, 144, 56), (5, 144, 56), (7, 144, 56), (9, 144, 56), (7, 16, 56), (7, 144, 28))  # (kernel, C, side)


def _subnets(n: int, resolution: int) -> list[tuple[str, Any, tuple[int, ...]]]:
    import torch

    from supernet.layers import Backbone, build_static_model
    from supernet.space import get_space

    if n < 1:
        return []
    space, bb = get_space("ofa-mbv3"), Backbone()
    rng = np.random.default_rng(17)
    archs = [space.largest(resolution)] + [space.sample(rng, resolution=resolution) for _ in range(n - 1)]
    out = []
    for a in archs:
        torch.manual_seed(0)
        out.append((f"subnet {a}", lambda a=a: build_static_model(bb, a, space=space).eval(),
                    (1, 3, resolution, resolution)))
    return out


def _probes() -> list[tuple[str, Any, tuple[int, ...]]]:
    import torch
    from torch import nn

    out = []
    for k, c, hw in PROBES:
        def make(k: int = k, c: int = c) -> nn.Module:
            torch.manual_seed(0)
            return nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, groups=c)).eval()
        out.append((f"depthwise k{k} c{c} {hw}x{hw}", make, (1, c, hw, hw)))
    return out


def _file(work: Path, name: str, fmt: str, make: Any, shape: tuple[int, ...]) -> Path:
    path = work / f"{name.replace(' ', '_').replace('/', '_')}.{fmt}"
    if not path.exists():
        t0 = time.perf_counter()
        export(make(), path, format=fmt, input_shape=shape)
        print(f"  converted {path.name[:60]} in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def _quartiles(x: np.ndarray) -> dict[str, float]:
    q25, q50, q75 = np.quantile(x, [0.25, 0.5, 0.75])
    return {"median": float(q50), "q25": float(q25), "q75": float(q75)}


def measure(name: str, sessions: dict[str, Session], *, rounds: int, runs: int, seed: int) -> dict[str, Any]:
    med = time_interleaved(sessions, rounds=rounds, runs=runs, warmup=10, seed=seed)
    row: dict[str, Any] = {
        "model": name, "loadavg": list(os.getloadavg()),
        "delegation": {b: s.delegation().to_json() for b, s in sessions.items() if s.delegation() is not None},
        "median_ms": {b: float(np.median(v)) for b, v in med.items()},
        "round_medians_ms": {b: [round(float(t), 4) for t in v] for b, v in med.items()},
        "builtin_over_xnnpack": _quartiles(med["tflite-builtin"] / med["tflite"]),
    }
    if "onnxruntime" in med:
        row["xnnpack_over_onnxruntime"] = _quartiles(med["tflite"] / med["onnxruntime"])
    return row


def render(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = [
        "# XNNPACK vs LiteRT built-in kernels (`benchmarks/xnnpack.py`)", "",
        (f"{env['cpu_model']} ({env.get('cpu_cores_logical')} logical cores), ai-edge-litert "
        f"{res['versions']['ai-edge-litert']}, onnxruntime {res['versions']['onnxruntime']}, fp32, "
        f"{res['threads']} thread(s), batch 1. Protocol: {res['protocol']}. Load average at start "
        f"{res['loadavg_start'][0]:.1f}, at end {res['loadavg_end'][0]:.1f} (shared VM: compare the ratios, "
        "not the absolute times)."), "",
        *([f"Models: {res['note']}.", ""] if res.get("note") else []),
        ("| model | XNNPACK nodes / all (partitions) | XNNPACK ms | built-in ms | onnxruntime ms | built-in / XNNPACK "
        "(q25-q75) | XNNPACK / onnxruntime |"),
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in res["rows"]:
        d, m, b = r["delegation"]["tflite"], r["median_ms"], r["builtin_over_xnnpack"]
        x = r.get("xnnpack_over_onnxruntime")
        ort = f"{m['onnxruntime']:.2f}" if "onnxruntime" in m else "-"
        x_ort = f"{x['median']:.2f}" if x else "-"
        lines.append(f"| {r['model'][:60]} | {d['delegated_nodes']} / {d['total_nodes']} ({d['partitions']}) | "
                     f"{m['tflite']:.2f} | {m['tflite-builtin']:.2f} | {ort} | "
                     f"{b['median']:.2f} ({b['q25']:.2f}-{b['q75']:.2f}) | {x_ort} |")
    rows = res["rows"]
    full = sum(r["delegation"]["tflite"]["delegated_nodes"] == r["delegation"]["tflite"]["total_nodes"] for r in rows)
    none = sum(r["delegation"]["tflite-builtin"]["delegated_nodes"] == 0 for r in rows)
    lines += ["", (f"XNNPACK took every node of {full} of {len(rows)} models (`tflite`); the built-in path delegated "
              f"nothing in {none} of {len(rows)} (`tflite-builtin`). Ratios are per round (same round, same "
              "machine state), so they hold under load where the absolute times do not."), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-subnets", type=int, default=4, help="the largest plus seeded samples; 0: probes only")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=10, help="consecutive runs per session and round")
    ap.add_argument("--no-probes", action="store_true", help="skip the one-op depthwise probes")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / ".xnnpack-work")
    ap.add_argument("--render-only", action="store_true")
    a = ap.parse_args(argv)
    json_path, md_path = a.out / "xnnpack.json", a.out / "xnnpack.md"
    if a.render_only:
        md_path.write_text(render(json.loads(json_path.read_text())), encoding="utf-8")
        return
    a.work.mkdir(parents=True, exist_ok=True)
    state_path = a.work / f"state-t{a.threads}.json"
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {}
    res: dict[str, Any] = {
        "environment": machine_environment(), "threads": a.threads, "precision": "fp32",
        "versions": {"ai-edge-litert": backend_version("tflite"), "onnxruntime": backend_version("onnxruntime")},
        "note": (f"random-weight ofa-mbv3 w1.0 subnets (build_static_model, torch seed 0; the largest and "
                 f"{max(a.n_subnets - 1, 0)} samples of numpy seed 17) at {a.resolution} px, 1000 classes, and "
                 "one-op depthwise probes; converted with litert-torch"),
        "protocol": f"10 warm-ups per session, then {a.rounds} rounds; each round times {a.runs} consecutive "
                    "invokes per session in a fresh random order; per session the median of its round medians; "
                    "ratios per round, median and quartiles over rounds",
        "loadavg_start": list(os.getloadavg()), "rows": []}
    models = _subnets(a.n_subnets, a.resolution) + ([] if a.no_probes else _probes())
    for i, (name, make, shape) in enumerate(models):
        if name not in state:
            tfl = _file(a.work, name, "tflite", make, shape)
            sessions = {b: open_session(tfl, backend=b, threads=a.threads) for b in ("tflite", "tflite-builtin")}
            if name.startswith("subnet"):
                sessions["onnxruntime"] = open_session(_file(a.work, name, "onnx", make, shape),
                                                       threads=a.threads)
            state[name] = measure(name, sessions, rounds=a.rounds, runs=a.runs, seed=i)
            state_path.write_text(json.dumps(state), encoding="utf-8")
            r = state[name]
            print(f"{name[:50]}: {r['median_ms']} built-in/XNNPACK {r['builtin_over_xnnpack']['median']:.2f}",
                  flush=True)
        res["rows"].append(state[name])
    res["loadavg_end"] = list(os.getloadavg())
    a.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(res, indent=1), encoding="utf-8")
    md_path.write_text(render(res), encoding="utf-8")


if __name__ == "__main__":
    main()
