"""Supernet training benchmark: are subnets taken from the supernet as good as the same networks trained alone?

On the embedded MNIST subset, with one epoch budget and seeds for every method:
  * ``ps``        progressive shrinking with KD from the full network of its first phase (OFA);
  * ``ps-nokd``   the same without distillation (kd_ratio = 0);
  * ``one-stage`` every dimension elastic from the start, same epochs (PS ablation);
  * ``bignas``    sandwich rule + in-place distillation with AlphaNet's alpha-divergence, same epochs;
  * ``scratch``   each of 5 fixed subnets trained alone for the same epochs, distilled from the same teacher
                  as ``ps`` (its ``teacher.pt``).
All subnets are evaluated on the test split after BN recalibration. Training throughput is images/s of the
data loader (one image counts once however many subnets a step trains) on this machine, one torch thread.

Usage: ``python benchmarks/supernet.py --quick`` (wall time of the last run: ``benchmarks/results/supernet.md``),
``--size quick12`` (twice the epochs), or without options for the full size (3,500 images, 30 epochs, width 0.5,
3 seeds: roughly 100x the quick compute; see ``SIZES``). ``--size smoke``
checks the script in 2 min. Runs are resumable: re-running continues the training runs under ``--work`` and
re-evaluates. Writes ``supernet.json`` and ``supernet.md`` to ``--out`` (default ``benchmarks/results``);
``--render-only`` rewrites the Markdown from the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Run as a script, this folder is sys.path[0] and benchmarks/supernet.py would shadow the supernet package:
# the repository root takes its place (helpers here are imported as ``benchmarks.<module>``). Same lines in
# every script.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path
                             if Path(p or ".").resolve() not in (ROOT, ROOT / "benchmarks")]

from supernet.data import load_dataset
from supernet.evaluate import evaluate
from supernet.io import atomic_write_json, atomic_write_text
from supernet.space import ArchConfig, SearchSpace, get_space
from supernet.train import Phase, TrainConfig, load_supernet, train_supernet


@dataclass(frozen=True)
class Size:
    max_train_images: int | None  # None = the whole 3,500-image train split
    epochs: int  # total budget of every method
    width_mult: float
    seeds: tuple[int, ...]
    bn_images: int


SIZES = {
    "smoke": Size(max_train_images=64, epochs=6, width_mult=0.25, seeds=(0,), bn_images=64),  # checks the script
    "quick": Size(max_train_images=1000, epochs=6, width_mult=0.25, seeds=(0,), bn_images=500),
    "quick12": Size(max_train_images=1000, epochs=12, width_mult=0.25, seeds=(0,), bn_images=500),  # 2x budget
    "quick24": Size(max_train_images=1000, epochs=24, width_mult=0.25, seeds=(0, 1), bn_images=500),  # 4x budget
    "full": Size(max_train_images=None, epochs=30, width_mult=0.5, seeds=(0, 1, 2), bn_images=2000),
}
METHODS = ("ps", "ps-nokd", "one-stage", "bignas")


def fixed_subnets(space: SearchSpace, resolution: int = 28) -> dict[str, ArchConfig]:
    """Smallest, largest and three in between (one uniform middle, two seeded random), all at ``resolution``."""
    rng = np.random.default_rng(2024)
    mids = [replace(space.sample(rng), resolution=resolution) for _ in range(2)]
    return {
        "smallest": space.smallest(resolution=resolution),
        "mid-uniform": space.uniform(depth=3, kernel=5, expand=4, resolution=resolution),
        "random-a": space.canonical(mids[0]),
        "random-b": space.canonical(mids[1]),
        "largest": space.largest(resolution=resolution),
    }


def method_config(method: str, base: TrainConfig) -> TrainConfig:
    if method == "ps":
        return base.with_recipe("progressive-shrinking")
    if method == "ps-nokd":
        return replace(base.with_recipe("progressive-shrinking"), kd_ratio=0.0)
    if method == "one-stage":
        return base.with_recipe("one-stage")
    if method == "bignas":
        return base.with_recipe("bignas")
    raise ValueError(method)


def machine_state() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": cpu, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "loadavg_1_5_15": os.getloadavg()}


def rerender(out: Path) -> None:
    """Rewrite ``supernet.md`` from ``supernet.json`` (after changing the report, without retraining)."""
    results = json.loads((out / "supernet.json").read_text())
    names = list(results["subnets"])
    results["summary"] = summarise(results, names)
    atomic_write_json(out / "supernet.json", results)
    atomic_write_text(out / "supernet.md", render_markdown(results, names))


def run(size_name: str, work: Path, out: Path) -> dict[str, Any]:
    size = SIZES[size_name]
    torch.set_num_threads(1)
    space = get_space("mnist")
    subnets = fixed_subnets(space)
    state_start = machine_state()
    t0 = time.perf_counter()
    results: dict[str, Any] = {"size": size_name, "params": asdict(size), "subnets": {k: str(v) for k, v in subnets.items()},
                               "runs": {}, "machine_start": state_start}
    for seed in size.seeds:
        data = load_dataset("mnist", seed=seed, max_train=size.max_train_images)
        base = TrainConfig(dataset="mnist", space="mnist", width_mult=size.width_mult, epochs=size.epochs,
                           batch_size=32, max_train_images=size.max_train_images, eval_bn_images=size.bn_images,
                           seed=seed)
        jobs: list[tuple[str, TrainConfig]] = [(m, method_config(m, base)) for m in METHODS]
        teacher = work / size_name / f"s{seed}" / "ps" / "teacher.pt"
        for name, cfg in subnets.items():
            phase = Phase(name="scratch", epochs_frac=1.0, lr=0.1, arch=str(cfg), distill=True)
            jobs.append((f"scratch/{name}", replace(base, phases=(phase,), teacher=str(teacher))))
        for job, cfg in jobs:
            run_dir = work / size_name / f"s{seed}" / job
            t = time.perf_counter()
            print(f"[seed {seed}] training {job} ...", flush=True)
            res = train_supernet(cfg, out_dir=run_dir, data=data, progress=False)
            wall = time.perf_counter() - t
            net = load_supernet(res.supernet_path)
            targets = subnets if not job.startswith("scratch/") else {job.split("/", 1)[1]: subnets[job.split("/", 1)[1]]}
            acc = {k: evaluate(net, c, data, split="test", bn_images=size.bn_images, seed=seed).top1
                   for k, c in targets.items()}
            imgs = sum(p.steps for p in res.phases) * cfg.batch_size
            train_s = sum(p.steps * cfg.batch_size / p.images_per_s for p in res.phases if p.images_per_s > 0)
            entry = {"test_top1": acc, "wall_s_this_call": wall, "images_per_s": imgs / max(train_s, 1e-9),
                     "phases": [asdict(p) for p in res.phases], "resumed_from_step": res.resumed_from_step}
            results["runs"].setdefault(job, {})[str(seed)] = entry
            print(f"[seed {seed}] {job}: {json.dumps({k: round(v, 4) for k, v in acc.items()})} "
                  f"{entry['images_per_s']:.0f} img/s", flush=True)
            atomic_write_json(out / "supernet.json", results)
    results["machine_end"] = machine_state()
    results["wall_time_s"] = time.perf_counter() - t0
    results["summary"] = summarise(results, list(subnets))
    atomic_write_json(out / "supernet.json", results)
    atomic_write_text(out / "supernet.md", render_markdown(results, list(subnets)))
    return results


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def summarise(results: dict[str, Any], names: list[str]) -> dict[str, Any]:
    runs = results["runs"]
    table: dict[str, dict[str, float]] = {}
    for m in METHODS:
        table[m] = {n: _mean([r["test_top1"][n] for r in runs[m].values()]) for n in names}
    table["scratch"] = {n: _mean([r["test_top1"][n] for r in runs[f"scratch/{n}"].values()]) for n in names}
    gaps = {m: {n: table[m][n] - table["scratch"][n] for n in names} for m in METHODS}
    best = max(("ps", "bignas"), key=lambda m: _mean(list(table[m].values())))
    return {
        "test_top1": table,
        "gap_vs_scratch_pts": {m: {n: 100 * g for n, g in d.items()} for m, d in gaps.items()},
        "ps_within_1pt_of_scratch": all(g >= -0.01 for g in gaps["ps"].values()),
        "ps_ge_one_stage_on_smallest": table["ps"]["smallest"] >= table["one-stage"]["smallest"],
        "better_recipe_mean_over_5": "progressive-shrinking" if best == "ps" else "bignas",
        "images_per_s": {m: _mean([r["images_per_s"] for r in runs[m].values()]) for m in METHODS},
    }


def render_markdown(results: dict[str, Any], names: list[str]) -> str:
    s = results["summary"]
    p = results["params"]
    m0, m1 = results["machine_start"], results["machine_end"]
    cols = ["scratch", *METHODS]
    lines = [
        f"# Supernet benchmark ({results['size']})",
        "",
        (f"MNIST embedded subset, train images: {p['max_train_images'] or 3500}, width {p['width_mult']}, "
        f"budget {p['epochs']} epochs for every method, batch 32, seeds {list(p['seeds'])}, resolution 28 "
        f"for evaluation, BN recalibrated on {p['bn_images']} train images, top-1 on the 1,000-image test split."),
        (f"Machine: {m0['cpu_model']}, {m0['cpus']} CPUs, torch {m0['torch']} with {m0['torch_threads']} thread; "
        f"load average at start {tuple(round(x, 2) for x in m0['loadavg_1_5_15'])}, at end "
        f"{tuple(round(x, 2) for x in m1['loadavg_1_5_15'])} (shared VM). Wall time {results['wall_time_s'] / 60:.0f} min."),
        "",
        ("Test top-1 (%) of 5 fixed subnets; `scratch` = that subnet trained alone for the same epochs with the "
        "same KD teacher as `ps`."),
        "",
        "| subnet | arch | " + " | ".join(cols) + " | ps - scratch (pts) |",
        "|---|---|" + "---|" * len(cols) + "---|",
    ]
    for n in names:
        row = [f"{100 * s['test_top1'][c][n]:.2f}" for c in cols]
        lines.append(f"| {n} | `{results['subnets'][n]}` | " + " | ".join(row)
                     + f" | {s['gap_vs_scratch_pts']['ps'][n]:+.2f} |")
    mean_row = [f"{100 * _mean(list(s['test_top1'][c].values())):.2f}" for c in cols]
    lines.append("| **mean** | | " + " | ".join(mean_row) + " | |")
    lines += [
        "",
        "Training throughput (images/s, one image counted once per step however many subnets it trains): "
        + ", ".join(f"{m} {v:.0f}" for m, v in s["images_per_s"].items()) + ".",
        "",
        f"- PS subnets within 1 point of from-scratch on all 5: **{s['ps_within_1pt_of_scratch']}**",
        f"- PS >= one-stage on the smallest: **{s['ps_ge_one_stage_on_smallest']}**",
        (f"- better recipe (mean over the 5 subnets, PS vs BigNAS/alpha-divergence): "
        f"**{s['better_recipe_mean_over_5']}**"),
        "",
        "Notes:",
        "",
        (f"- The KD teacher of `ps` and `scratch` is the PS network after its first (full-network) phase: "
        f"val top-1 {_mean([r['phases'][0]['val_top1_largest'] for r in results['runs']['ps'].values()]):.3f}. "
        "A weak teacher makes KD a handicap (compare `ps` with `ps-nokd`); OFA distils from a fully trained one."),
        ("- Equal *epochs* is not equal compute: PS and BigNAS train 1-4 subnets per step, `scratch` one. "
        "Per-run wall times are in the JSON (`wall_s_this_call`)."),
        ("- Throughput counts images read per second of training (evaluation excluded) on a shared VM whose load "
        "changed during the run; compare methods within one run only."),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the small size (see SIZES)")
    ap.add_argument("--size", choices=sorted(SIZES), help="any size by name (overrides --quick)")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / ".runs", help="training run folders")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--render-only", action="store_true", help="rewrite supernet.md from supernet.json")
    args = ap.parse_args()
    if args.render_only:
        rerender(args.out)
        return
    run(args.size or ("quick" if args.quick else "full"), args.work, args.out)


if __name__ == "__main__":
    main()
