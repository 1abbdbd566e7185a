"""Few-shot latency adaptation benchmark: each device this machine has as a new "phone", the others as sources.

Input: the independent ordinary-median measurements of seeded ``ofa-mbv3`` subnets on every device
(`benchmarks/ofa_subnets.py` -> ``benchmarks/results/ofa-subnets.json``). Per seed the measured subnets are split
into a pool (the subnets a user could measure on the new device, and what the sources know) and a held-out test
set. For each target device:

* sources = the other devices, each as an adapted predictor fitted on *that device's* measurements of the pool
  (what hwnas knows about a device it has measured; no target data), so sources predict the test subnets out of
  sample, as a table of another device does;
* K = 5, 10, 20 target measurements from the pool, chosen by `choose_subnets` ("chosen") or uniformly ("random");
* methods: ``adapted`` (`latency_tables.fewshot.adapt`, every candidate), ``affine-best-source`` (an affine map of
  the source picked by LOO on the K), ``best-single-source`` (oracle: the affine map of whichever source is best
  on the test set), ``gp-no-source`` (GP on the encoding with a MACs mean, no source), ``macs`` (affine in log MACs);
* metrics on the held-out subnets: Spearman, Kendall tau, share within +-10 %, MAPE; mean over seeds.

    python benchmarks/fewshot.py                 # reads results/ofa-subnets.json, writes results/fewshot.{json,md}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Run as a script, this folder is sys.path[0] and benchmarks/supernet.py would shadow the supernet package:
# the repository root takes its place (helpers here are imported as ``benchmarks.<module>``). Same lines in
# every script.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path
                             if Path(p or ".").resolve() not in (ROOT, ROOT / "benchmarks")]

from latency_tables.fewshot import MIN_FOR_OPS, AdaptedLatencyPredictor, adapt, choose_subnets
from supernet.io import atomic_write_json, atomic_write_text
from supernet.layers import Backbone
from supernet.space import ArchConfig, get_space

METHODS: dict[str, Sequence[str] | None] = {
    "adapted": None,
    "affine-best-source": ["affine"],
    "gp-no-source": ["macs+gp"],
    "macs": ["macs"],
    "ops-no-source": ["ops"],
}
TARGETS = {"spearman_k10": 0.95, "within10_k20": 0.90}


def score(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    from scipy.stats import kendalltau, spearmanr

    rel = pred / true - 1.0
    return {"spearman": float(spearmanr(pred, true).statistic), "kendall": float(kendalltau(pred, true).statistic),
            "within10": float(np.mean(np.abs(rel) <= 0.10)), "within5": float(np.mean(np.abs(rel) <= 0.05)),
            "mape_pct": float(np.mean(np.abs(rel)) * 100), "bias_pct": float(np.mean(rel) * 100)}


def load_measurements(path: Path, statistic: str) -> tuple[dict[str, ArchConfig], dict[str, dict[str, float]], dict[str, Any]]:
    d = json.loads(path.read_text())
    archs = {sid: ArchConfig.from_json(a) for sid, a in d["archs"].items()}
    per: dict[str, dict[str, float]] = {}
    for dev, rec in d["devices"].items():
        per[dev] = {sid: float(v[f"{statistic}_ms"]) for sid, v in rec["subnets"].items()}
    return archs, per, d


def run(args: argparse.Namespace) -> dict[str, Any]:
    space = get_space("ofa-mbv3")
    archs, per, raw = load_measurements(args.measurements, args.statistic)
    bb = Backbone.from_json(raw["backbone"])
    devices = [d for d in per if len(per[d]) >= args.pool + args.min_test]
    skipped = {d: len(per[d]) for d in per if d not in devices}
    common = sorted(set.intersection(*(set(per[d]) for d in devices))) if devices else []
    if len(common) < args.pool + args.min_test:
        raise SystemExit(f"only {len(common)} subnets are measured on every device {devices}; need "
                         f"--pool {args.pool} + --min-test {args.min_test}")
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        rng = np.random.default_rng([seed, 7])
        ids = list(rng.permutation(common))
        pool_ids, test_ids = ids[: args.pool], ids[args.pool:]
        pool_a, test_a = [archs[i] for i in pool_ids], [archs[i] for i in test_ids]
        # what hwnas knows about each device: a predictor fitted on that device's measurements of the pool
        known: dict[str, AdaptedLatencyPredictor] = {
            d: adapt(pool_a, np.array([per[d][i] for i in pool_ids]), space=space, backbone=bb,
                     device=d)
            for d in devices
        }
        for target in devices:
            sources = [known[d] for d in devices if d != target]
            names = [d for d in devices if d != target]
            y_pool = {i: per[target][i] for i in pool_ids}
            y_test = np.array([per[target][i] for i in test_ids])
            for chooser in ("chosen", "random"):
                for k in args.ks:
                    if chooser == "chosen":
                        pick = choose_subnets(space, bb, k, sources=sources, candidates=pool_a,
                                              rng=np.random.default_rng(seed))
                    else:
                        pick = [pool_a[j] for j in np.random.default_rng([seed, k]).choice(len(pool_a), k, replace=False)]
                    by_str = {str(space.canonical(a)): i for a, i in zip(pool_a, pool_ids, strict=True)}
                    y_k = np.array([y_pool[by_str[str(space.canonical(a))]] for a in pick])
                    for method, allowed in METHODS.items():
                        if method == "ops-no-source" and k < MIN_FOR_OPS:
                            continue
                        srcs = [] if method in ("gp-no-source", "macs", "ops-no-source") else sources
                        p = adapt(pick, y_k, space=space, backbone=bb, sources=srcs, methods=allowed)
                        pred = p.predict(test_a)
                        lo, _, hi = p.predict_interval(test_a, level=0.9)
                        rows.append({"seed": seed, "target": target, "chooser": chooser, "k": k, "method": method,
                                     "chosen_model": p.info["chosen"], **score(pred, y_test),
                                     "coverage90": float(np.mean((y_test >= lo) & (y_test <= hi)))})
                    # oracle: the best single source's affine map, judged on the test set
                    best = None
                    for j, _ in enumerate(sources):
                        p = adapt(pick, y_k, space=space, backbone=bb, sources=[sources[j]], methods=["affine"])
                        sc = score(p.predict(test_a), y_test)
                        if best is None or sc["mape_pct"] < best[1]["mape_pct"]:
                            best = (names[j], sc)
                    assert best is not None
                    rows.append({"seed": seed, "target": target, "chooser": chooser, "k": k,
                                 "method": "best-single-source", "chosen_model": f"affine:{best[0]}", **best[1]})
        print(f"seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    return {"rows": rows, "devices": devices, "skipped_devices": skipped, "n_common": len(common),
            "n_test": len(common) - args.pool, "raw": raw}


def yardstick(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """How well the measurements reproduce themselves, per device: one timing process's median against the median
    of the others, per subnet (the ceiling for any predictor scored on these medians), and the schedule used."""
    out: dict[str, dict[str, Any]] = {}
    for dev, rec in raw["devices"].items():
        pm = [v["process_medians_ms"] for v in rec["subnets"].values() if len(v.get("process_medians_ms", [])) >= 3]
        if not pm:
            continue
        a = np.asarray(pm, dtype=np.float64)
        rel = a[:, 0] / np.median(a[:, 1:], axis=1) - 1.0
        out[dev] = {"n": len(a), "within10": float(np.mean(np.abs(rel) <= 0.10)),
                    "within5": float(np.mean(np.abs(rel) <= 0.05)),
                    "spread_median_pct": float(np.median(a.max(1) / a.min(1) - 1.0) * 100),
                    "schedule": rec.get("schedule", ["batched"]), "load1": rec.get("load1")}
    return out


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(f"{r['target']}|{r['chooser']}|{r['k']}|{r['method']}", []).append(r)
    out = {}
    for key, rs in groups.items():
        out[key] = {m: float(np.mean([r[m] for r in rs if m in r])) for m in
                    ("spearman", "kendall", "within10", "within5", "mape_pct", "coverage90") if any(m in r for r in rs)}
        out[key]["seeds"] = len(rs)
    return out


def markdown(res: dict[str, Any], summary: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    raw = res["raw"]
    mach = raw.get("machine", {})
    lines = [
        "# Few-shot latency adaptation (`benchmarks/fewshot.py`)", "",
        (f"Measurements: `{args.measurements.relative_to(ROOT) if args.measurements.is_relative_to(ROOT) else args.measurements}` "
        f"({raw.get('method')}); statistic: {args.statistic}. Machine: {mach.get('cpu_model')}, "
        f"{mach.get('logical_cpus', mach.get('cpus'))} logical CPUs; load during timing per device in that file."),
        (f"ofa-mbv3, width {raw['backbone'].get('width_mult')}, 128-224 px. {res['n_common']} subnets measured on "
        f"every device: pool {args.pool} (K chosen from it; sources fitted on it), {res['n_test']} held out; "
        f"{args.seeds} seeds (pool/test splits); mean over seeds."),
        "", "Devices: " + ", ".join(f"`{d}`" for d in res["devices"]) +
        (f"; skipped (too few measured subnets): {res['skipped_devices']}" if res["skipped_devices"] else ""), "",
        "## Spearman / within ±10 % on held-out subnets (chosen subnets)", "",
        "| target | K | adapted | affine-best-source | best single source (oracle) | GP no source | MACs | per-op costs, no source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in res["devices"]:
        for k in args.ks:
            cells = []
            for m in ("adapted", "affine-best-source", "best-single-source", "gp-no-source", "macs", "ops-no-source"):
                s = summary.get(f"{t}|chosen|{k}|{m}")
                cells.append("—" if s is None else f"{s['spearman']:.3f} / {100 * s['within10']:.0f} %")
            lines.append(f"| {t} | {k} | " + " | ".join(cells) + " |")
    lines += ["", "## Chosen vs random subnets (adapted: Spearman / within ±10 % / MAPE; 90 % interval coverage)", "",
              "| target | K | chosen | random |", "|---|---|---|---|"]
    for t in res["devices"]:
        for k in args.ks:
            cells = []
            for ch in ("chosen", "random"):
                s = summary.get(f"{t}|{ch}|{k}|adapted")
                cells.append("—" if s is None else f"{s['spearman']:.3f} / {100 * s['within10']:.0f} % / "
                             f"{s['mape_pct']:.1f} %; cov {100 * s.get('coverage90', float('nan')):.0f} %")
            lines.append(f"| {t} | {k} | " + " | ".join(cells) + " |")
    lines += ["", "## Yardstick: do the measurements reproduce? (one process's median vs the others')", "",
              "| device | schedule | subnets | within ±5 % | within ±10 % | max/min process median − 1 (median) | load1 |",
              "|---|---|---|---|---|---|---|"]
    for dev, y in res.get("yardstick", {}).items():
        load = y.get("load1") or {}
        lines.append(f"| {dev} | {', '.join(y['schedule'])} | {y['n']} | {100 * y['within5']:.0f} % | "
                     f"{100 * y['within10']:.0f} % | {y['spread_median_pct']:.1f} % | "
                     f"{load.get('min', float('nan')):.1f}–{load.get('max', float('nan')):.1f} |")
    lines += ["", "## Targets", ""]
    for name, verdict in res["targets"].items():
        lines.append(f"- {name}: {verdict}")
    return "\n".join(lines) + "\n"


def verdicts(res: dict[str, Any], summary: dict[str, dict[str, float]], args: argparse.Namespace) -> dict[str, str]:
    out = {}
    k10 = {t: summary[f"{t}|chosen|10|adapted"]["spearman"] for t in res["devices"] if f"{t}|chosen|10|adapted" in summary}
    worst = min(k10.values()) if k10 else float("nan")
    out["Spearman >= 0.95 at K = 10 on every target"] = (
        ("met" if worst >= TARGETS["spearman_k10"] else "MISSED") + f" (worst {worst:.3f}: "
        + ", ".join(f"{t} {v:.3f}" for t, v in k10.items()) + ")")
    k20 = {t: summary[f"{t}|chosen|20|adapted"]["within10"] for t in res["devices"] if f"{t}|chosen|20|adapted" in summary}
    worst = min(k20.values()) if k20 else float("nan")
    out["within +-10 % >= 90 % at K = 20"] = (
        ("met" if worst >= TARGETS["within10_k20"] else "MISSED") + f" (worst {100 * worst:.1f} %: "
        + ", ".join(f"{t} {100 * v:.1f} %" for t, v in k20.items()) + ")")
    worse = []
    for t in res["devices"]:
        for k in args.ks:
            a, b = summary.get(f"{t}|chosen|{k}|adapted"), summary.get(f"{t}|chosen|{k}|best-single-source")
            if a and b and a["mape_pct"] > b["mape_pct"] * 1.0 + 1e-9:
                worse.append(f"{t} K={k}: MAPE {a['mape_pct']:.1f} % vs {b['mape_pct']:.1f} %")
    out["adapted never worse than the best single source (MAPE, same K)"] = (
        "met" if not worse else f"MISSED in {len(worse)} of {len(res['devices']) * len(args.ks)} cases: " + "; ".join(worse))
    if res["n_test"] < 200:
        out[">= 200 held-out subnets"] = f"MISSED ({res['n_test']} held out)"
    else:
        out[">= 200 held-out subnets"] = f"met ({res['n_test']})"
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--measurements", type=Path, default=ROOT / "benchmarks/results/ofa-subnets.json")
    ap.add_argument("--statistic", default="median", choices=["median", "p90", "p99"])
    ap.add_argument("--ks", default="5,10,20")
    ap.add_argument("--pool", type=int, default=60, help="subnets the K are chosen from (and the sources know)")
    ap.add_argument("--min-test", type=int, default=40, help="refuse to run with fewer held-out subnets")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/fewshot.json")
    args = ap.parse_args(argv)
    args.ks = [int(k) for k in args.ks.split(",")]
    if not args.measurements.is_file():
        ap.error(f"--measurements {args.measurements}: no such file; run benchmarks/ofa_subnets.py first")
    t0 = time.perf_counter()
    res = run(args)
    summary = summarise(res["rows"])
    res["targets"] = verdicts(res, summary, args)
    res["yardstick"] = yardstick(res["raw"])
    raw = res.pop("raw")
    res["raw"] = raw
    out = {"schema_version": 1, "settings": {"pool": args.pool, "ks": args.ks, "seeds": args.seeds,
                                             "statistic": args.statistic,
                                             "measurements": str(args.measurements.relative_to(ROOT))
                                             if args.measurements.is_relative_to(ROOT) else str(args.measurements)},
           "devices": res["devices"], "skipped_devices": res["skipped_devices"], "n_test": res["n_test"],
           "summary": summary, "targets": res["targets"], "yardstick": res["yardstick"], "rows": res["rows"],
           "wall_s": round(time.perf_counter() - t0, 1)}
    atomic_write_json(args.out, out)
    atomic_write_text(args.out.with_suffix(".md"), markdown(res, summary, args))
    print(markdown(res, summary, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
