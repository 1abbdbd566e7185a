"""Accuracy predictor per bit-width: measured (subnet, precision) pairs and the cross-validated error of predictors.

Measures validation top-1 of ``n_both`` sampled subnets at fp32 and int8 and of ``n_fp32`` more at fp32 only
(`hwnas.pipeline.measure_accuracy_pairs`: fp32 in torch, int8 as deployed: onnxruntime QDQ per-channel, min-max
activation ranges on ``calib_images`` training images, this CPU's default reduce_range; every subnet BN-recalibrated
on ``bn_images`` training images), then runs k-fold cross-validation over the fp32+int8 architectures (every
record of a held-out architecture is held out; the fp32-only architectures always train) and compares:

  * ``apq``            `nas.predictor.fit_bitwidth_predictor`: fp32 predictor, then bit-width-aware fine-tuning;
  * ``scratch-aware``  the same bit-width-aware MLP trained from scratch on all training records;
  * ``scratch-int8``   an MLP trained from scratch on the int8 records only (predicts int8 only);
  * ``fp32-as-is``     the fp32 predictor's output used for both precisions;
  * ``fp32+mean-diff`` the fp32 predictor plus the training folds' mean int8 - fp32 difference for int8.

Reported per precision over the pooled out-of-fold predictions: RMSE (points of top-1) and Kendall tau; beside them
what the reader needs to judge those numbers: the measured int8 - fp32 differences (mean, sd), how well the
*measured* fp32 accuracy predicts int8 (a floor no fp32-based predictor beats), and the validation split's
sampling error (one image = 100 / n_val points).

Usage:

    python benchmarks/precision.py                         # full, 120 + 200 subnets: 22 min measured on a
                                                           # loaded 2-core VM (+ 4 min training the supernet)
    python benchmarks/precision.py --n-both 60 --n-fp32 100  # a reduced run (the N are written in the outputs)
    python benchmarks/precision.py --run hwnas-runs/demo   # take the supernet of a finished 'hwnas demo' run
    python benchmarks/precision.py --quick --out /tmp/p    # tiny supernet, a few subnets, 2 folds: checks the script
    python benchmarks/precision.py --render-only           # rewrite precision.md from precision.json

Resumable: the supernet trains with checkpoints under ``--work`` (`bitwidth.supernet_for_benchmark`, shared with
the bit-width benchmark) and every measured accuracy is stored at once in ``--work``'s sqlite accuracy cache,
keyed by (context, architecture, precision), so a rerun measures nothing twice; the context names the supernet
file's sha256, BN recalibration, calibration and the int8 recipe, so changed settings never reuse old rows.
``--import-cache FILE`` copies the rows of another cache with the *same* context (others are refused, logged).
Scratch lives in ``benchmarks/results/.precision-work/`` (gitignored). Writes ``precision.json`` and
``precision.md`` to ``--out`` (``precision.quick.*`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Sequence
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

from benchmarks.bitwidth import SIZES as BITWIDTH_SIZES
from benchmarks.bitwidth import supernet_for_benchmark
from benchmarks.portable_paths import portable_paths
from supernet.io import atomic_write_json, atomic_write_text, read_json
from supernet.space import ArchConfig, SearchSpace
from supernet.train import TrainConfig

log = logging.getLogger("bench.precision")
SCHEMA_VERSION = 1
PRECISIONS = ("fp32", "int8")
PREDICTORS = ("apq", "scratch-aware", "scratch-int8", "fp32-as-is", "fp32+mean-diff")
SAMPLE_SEED = 2024  # architectures: the first n_both of one seeded stream get both precisions, the next n_fp32 fp32
Record = tuple[ArchConfig, str, float]  # (canonical architecture, precision, top-1 as a fraction)


@dataclass(frozen=True)
class Size:
    train: TrainConfig | None  # None: the demo's full supernet (hwnas.demo.DemoConfig.preset(quick=False))
    n_both: int  # subnets measured at fp32 and int8
    n_fp32: int  # further subnets measured at fp32 only
    folds: int
    bn_images: int
    calib_images: int
    hidden: tuple[int, ...]
    epochs: int


SIZES = {
    "quick": Size(train=BITWIDTH_SIZES["quick"].train, n_both=8, n_fp32=4, folds=2, bn_images=64, calib_images=16,
                  hidden=(32, 32), epochs=30),
    "full": Size(train=None, n_both=120, n_fp32=200, folds=5, bn_images=500, calib_images=256,
                 hidden=(400, 400, 400), epochs=200),
}


def sample_archs(space: SearchSpace, n: int, *, seed: int = SAMPLE_SEED) -> list[ArchConfig]:
    """``n`` distinct canonical architectures from one seeded stream (a prefix of a longer call's list, so a
    larger N reuses the cached measurements of a smaller one). Bounded: gives up after ``100 n`` draws."""
    rng = np.random.default_rng(seed)
    out: list[ArchConfig] = []
    seen: set[str] = set()
    for _ in range(100 * max(n, 1)):
        if len(out) == n:
            break
        a = space.canonical(space.sample(rng))
        if str(a) not in seen:
            seen.add(str(a))
            out.append(a)
    if len(out) < n:
        raise ValueError(f"sample_archs: the space yielded only {len(out)} distinct architectures, {n} wanted")
    return out


def import_cache(src: Path, dst: Path, *, space: SearchSpace, context: str) -> dict[str, Any]:
    """Copy ``src``'s rows of ``context`` into ``dst``; rows of other contexts (another supernet, BN or int8
    recipe) are not comparable and are left behind. Returns what was done, for the results file."""
    from nas.cache import AccuracyCache, list_contexts

    found = list_contexts(src)
    if context not in found:
        log.warning("--import-cache %s: no rows of this run's context %r (it holds %s); importing nothing",
                    src, context, found)
        return {"path": str(src), "imported": 0, "contexts_found": found,
                "reason": "no rows of this context (other supernet, BN or int8 recipe)"}
    with AccuracyCache(src, space=space, context=context) as s:
        records = s.records()
    n = 0
    with AccuracyCache(dst, space=space, context=context) as d:
        for p in sorted({p for _, p, _ in records}):
            n += d.put_many([(a, y) for a, q, y in records if q == p], precision=p)
    log.info("--import-cache %s: %d rows of context %r", src, n, context)
    return {"path": str(src), "imported": n, "contexts_found": found}


def _kendall(pred: Sequence[float], y: Sequence[float]) -> float | None:
    from scipy.stats import kendalltau

    if len(y) < 2:
        return None
    tau = float(kendalltau(pred, y).statistic)
    return None if math.isnan(tau) else tau


def _score(pred: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    p, t = np.asarray(pred, float), np.asarray(y, float)
    return {"n": len(t), "rmse_pt": float(100 * np.sqrt(np.mean((p - t) ** 2))), "kendall_tau": _kendall(p, t)}


def cross_validate(space: SearchSpace, records: Sequence[Record], *, folds: int, hidden: Sequence[int], epochs: int,
                   seed: int = 0) -> dict[str, Any]:
    """k-fold CV over the architectures measured at both precisions (split seeded by ``seed``; fold f's predictors
    use seed f). Returns per predictor and precision the pooled out-of-fold score (``n``, ``rmse_pt``,
    ``kendall_tau``) and the per-fold RMSE, plus the fold sizes and seconds."""
    from nas.predictor import fit_bitwidth_predictor, fit_predictor

    by: dict[str, dict[str, Record]] = {}
    for r in records:
        by.setdefault(str(r[0]), {})[r[1]] = r
    both = sorted(k for k, v in by.items() if all(p in v for p in PRECISIONS))
    if len(both) < folds:
        raise ValueError(f"cross_validate: {len(both)} architectures at both precisions, fewer than {folds} folds")
    split = np.array_split(np.random.default_rng(seed).permutation(len(both)), folds)
    if len(both) - len(split[0]) < 4:
        raise ValueError(f"cross_validate: {len(both)} architectures at both precisions leave "
                         f"{len(both) - len(split[0])} int8 training records per fold with {folds} folds; need >= 4")
    pooled: dict[str, dict[str, tuple[list[float], list[float]]]] = {
        m: {p: ([], []) for p in PRECISIONS} for m in PREDICTORS}
    per_fold: dict[str, dict[str, list[float]]] = {m: {p: [] for p in PRECISIONS} for m in PREDICTORS}
    t0 = time.perf_counter()
    kw = {"hidden": tuple(hidden), "epochs": epochs, "test_fraction": 0}
    for f, idx in enumerate(split):
        held = {both[i] for i in idx}
        train = [r for r in records if str(r[0]) not in held]
        test = [by[k][p] for k in sorted(held) for p in PRECISIONS]
        apq = fit_bitwidth_predictor(space, train, seed=f, **kw)
        aware = fit_predictor(space, [a for a, _, _ in train], [y for *_, y in train],
                              precisions=[p for _, p, _ in train], seed=f, **kw)
        i8 = [(a, y) for a, p, y in train if p == "int8"]
        scratch8 = fit_predictor(space, [a for a, _ in i8], [y for _, y in i8], seed=f, **kw)
        f32 = [(a, y) for a, p, y in train if p == "fp32"]
        base = fit_predictor(space, [a for a, _ in f32], [y for _, y in f32], seed=f, **kw)
        f32_by = {str(a): y for a, y in f32}
        diff = float(np.mean([y - f32_by[str(a)] for a, y in i8 if str(a) in f32_by])) if i8 else 0.0
        preds = {m: {p: ([], []) for p in PRECISIONS} for m in PREDICTORS}
        for a, p, y in test:
            b = float(base.predict([a])[0])
            out = {"apq": float(apq.predict([a], precision=p)[0]),
                   "scratch-aware": float(aware.predict([a], precision=p)[0]),
                   "scratch-int8": float(scratch8.predict([a])[0]) if p == "int8" else None,
                   "fp32-as-is": b, "fp32+mean-diff": b + (diff if p == "int8" else 0.0)}
            for m, v in out.items():
                if v is not None:
                    preds[m][p][0].append(v)
                    preds[m][p][1].append(y)
        for m in PREDICTORS:
            for p in PRECISIONS:
                pr, ys = preds[m][p]
                pooled[m][p][0].extend(pr)
                pooled[m][p][1].extend(ys)
                if ys:
                    per_fold[m][p].append(_score(pr, ys)["rmse_pt"])
        log.info("fold %d/%d: %d held-out architectures, %.0f s", f + 1, folds, len(held), time.perf_counter() - t0)
    scores = {m: {p: (_score(*pooled[m][p]) | {"rmse_pt_per_fold": per_fold[m][p]}) if pooled[m][p][1] else None
                  for p in PRECISIONS} for m in PREDICTORS}
    return {"folds": folds, "fold_sizes": [len(i) for i in split], "architectures_cv": len(both),
            "architectures_fp32_only": len(by) - len(both), "records": len(records), "scores": scores,
            "hidden": list(hidden), "epochs": epochs, "seconds": time.perf_counter() - t0}


def describe_data(records: Sequence[Record], *, n_val: int) -> dict[str, Any]:
    """The measured accuracies, the int8 - fp32 difference per architecture (points), how well the *measured*
    fp32 top-1 stands in for int8, and the validation split's sampling error (``n_val`` images)."""
    by: dict[str, dict[str, float]] = {}
    for a, p, y in records:
        by.setdefault(str(a), {})[p] = y
    f32 = np.asarray([v["fp32"] for v in by.values() if "fp32" in v])
    pairs = [(v["fp32"], v["int8"]) for v in by.values() if "fp32" in v and "int8" in v]
    x, y = (np.asarray(c) for c in zip(*pairs, strict=True)) if pairs else (np.zeros(0), np.zeros(0))
    d = 100 * (y - x)
    p_mean = float(f32.mean()) if len(f32) else float("nan")

    def stats(v: np.ndarray) -> dict[str, float]:
        return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                "min": float(v.min()), "max": float(v.max())} if len(v) else {}

    return {
        "fp32_top1_pct": stats(100 * f32), "int8_top1_pct": stats(100 * y), "int8_minus_fp32_pts": stats(d),
        "int8_minus_fp32_abs_le_one_image": float(np.mean(np.abs(d) <= 100 / n_val + 1e-9)) if len(d) else None,
        "measured_fp32_as_int8": {"n": len(d), "rmse_pt": float(np.sqrt(np.mean(d ** 2))) if len(d) else None,
                                  "kendall_tau": _kendall(x, y)},
        "val_images": n_val, "one_image_pts": 100 / n_val,
        "binomial_se_pts_at_mean_fp32": float(100 * math.sqrt(p_mean * (1 - p_mean) / n_val)),
    }


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def render_markdown(results: dict[str, Any]) -> str:
    cv, dd, p = results["cv"], results["data"], results["params"]
    wall = results["wall_time_s"]
    lines = [
        f"# Accuracy predictor per bit-width ({results['size']})", "",
        (f"Supernet: {results['supernet']['source']} (sha256 {results['supernet']['sha256'][:16]}). "
        f"**N = {cv['architectures_cv']} subnets measured at fp32 and int8 + {cv['architectures_fp32_only']} at fp32 "
        f"only** ({cv['records']} records), sampled uniformly from the search space (seed {results['sample_seed']}); "
        f"top-1 on the {dd['val_images']} validation images after BN recalibration on {p['bn_images']} training "
        f"images. int8: `{results['recipe']}` ({p['calib_images']} calibration images), as deployed on "
        f"onnxruntime; fp32 in torch. Cache context `{results['context']}`."), "",
        (f"{cv['folds']}-fold cross-validation over the {cv['architectures_cv']} fp32+int8 architectures (all records "
        f"of a held-out architecture held out; the fp32-only ones always train); MLP {cv['hidden']}, {cv['epochs']} "
        "epochs; scores pooled over the out-of-fold predictions. Wall time "
        f"{wall['total'] / 60:.1f} min (supernet training {wall['supernet_training'] / 60:.1f}, measuring "
        f"{wall['measuring'] / 60:.1f}, cross-validation {wall['cross_validation'] / 60:.1f}) on "
        f"{results['machine']['cpu_model']} ({results['machine']['cpu_count']} logical CPUs, shared and loaded VM), "
        "1 torch thread."), "",
        "| predictor | fp32 RMSE (pts) | fp32 Kendall tau | int8 RMSE (pts) | int8 Kendall tau | int8 RMSE per fold |",
        "|---|---|---|---|---|---|",
    ]
    for m, per in cv["scores"].items():
        f, i = per["fp32"], per["int8"]
        lines.append(
            f"| {m} | {_fmt(f and f['rmse_pt'], '.2f')} | {_fmt(f and f['kendall_tau'], '.3f')} | "
            f"{_fmt(i and i['rmse_pt'], '.2f')} | {_fmt(i and i['kendall_tau'], '.3f')} | "
            + (", ".join(f"{v:.2f}" for v in i["rmse_pt_per_fold"]) if i else "–") + " |")
    mf = dd["measured_fp32_as_int8"]
    lines.append(f"| *measured fp32 as int8 (no predictor)* | – | – | {_fmt(mf['rmse_pt'], '.2f')} | "
                 f"{_fmt(mf['kendall_tau'], '.3f')} | – |")
    d, f32, i8 = dd["int8_minus_fp32_pts"], dd["fp32_top1_pct"], dd["int8_top1_pct"]
    lines += [
        "", "To judge these numbers:", "",
        (f"- Measured top-1: fp32 {f32['mean']:.2f} % (sd {f32['sd']:.2f}, {f32['min']:.1f}–{f32['max']:.1f}) over "
        f"all architectures; int8 {i8['mean']:.2f} % (sd {i8['sd']:.2f})."),
        (f"- int8 − fp32 per architecture: mean {d['mean']:+.2f} pts, sd {d['sd']:.2f} "
        f"(min {d['min']:+.2f}, max {d['max']:+.2f}); {100 * dd['int8_minus_fp32_abs_le_one_image']:.0f} % of the "
        "architectures move by at most one image."),
        (f"- Sampling error of the validation split: one image = {dd['one_image_pts']:.2f} pts; the binomial standard "
        f"error at the mean fp32 top-1 is {dd['binomial_se_pts_at_mean_fp32']:.2f} pts, so an RMSE near it is "
        "mostly measurement noise, and Kendall tau is limited by the same noise (accuracies within a few images "
        "of each other are ranked by chance)."),
        ("- *measured fp32 as int8*: the fp32 accuracy actually measured used as the int8 prediction: what "
        "any predictor that knows fp32 perfectly and ignores quantization would score."), "",
    ]
    if results.get("import"):
        lines += [f"Imported cache: {results['import']}", ""]
    return "\n".join(lines)


def _names(out: Path, size_name: str) -> tuple[Path, Path]:
    stem = "precision" if size_name == "full" else f"precision.{size_name}"
    return out / f"{stem}.json", out / f"{stem}.md"


def run(size: Size, *, size_name: str, work: Path, out: Path, run_dir: Path | None,
        import_from: Path | None = None) -> dict[str, Any]:
    from hwnas.pipeline import (
        accuracy_context,
        load_supernet_and_data,
        measure_accuracy_pairs,
        quant_recipe_tag,
    )
    from nas.cache import AccuracyCache
    from supernet.io import sha256_file
    from supernet.quantize import QuantConfig, machine_state

    torch.set_num_threads(1)
    work = work / size_name
    work.mkdir(parents=True, exist_ok=True)
    t_call = time.perf_counter()
    state_start = machine_state()
    sn_path, sn_info = supernet_for_benchmark(size.train, work=work, run_dir=run_dir)
    net, data = load_supernet_and_data(sn_path)
    quant = QuantConfig(precision="int8", calib_images=size.calib_images, seed=0)
    recipe = quant_recipe_tag("onnxruntime", quant)
    context = accuracy_context(supernet_path=sn_path, bn_images=size.bn_images, seed=0,
                               calib_images=size.calib_images, recipe=recipe)
    cache_path = work / "accuracy.sqlite"
    imported = import_cache(import_from, cache_path, space=net.space, context=context) if import_from else None

    archs = sample_archs(net.space, size.n_both + size.n_fp32)
    with AccuracyCache(cache_path, space=net.space, context=context) as c:
        before = len(c.records())
    counter = {"n": 0}
    t_meas = time.perf_counter()

    def progress(a: ArchConfig, p: str, acc: float) -> None:
        counter["n"] += 1
        if counter["n"] % 10 == 0:
            log.info("%d records (%.0f s)", counter["n"], time.perf_counter() - t_meas)

    common = {"bn_images": size.bn_images, "seed": 0, "cache_path": cache_path, "context": context,
              "calib_images": size.calib_images, "on_measured": progress, "backend": "onnxruntime", "quant": quant}
    records = measure_accuracy_pairs(net, data, archs[: size.n_both], precisions=PRECISIONS, **common)
    records += measure_accuracy_pairs(net, data, archs[size.n_both:], precisions=("fp32",), **common)
    with AccuracyCache(cache_path, space=net.space, context=context) as c:
        measured_now = len(c.records()) - before
    seconds_file = work / "measure_seconds.json"
    meas = read_json(seconds_file) if seconds_file.is_file() else {"seconds": 0.0, "records": 0}
    if measured_now:
        meas = {"seconds": meas["seconds"] + time.perf_counter() - t_meas, "records": meas["records"] + measured_now}
        atomic_write_json(seconds_file, meas)
    log.info("%d records (%d measured in this call)", len(records), measured_now)

    cv = cross_validate(net.space, records, folds=size.folds, hidden=size.hidden, epochs=size.epochs)
    train_s = float(sn_info.get("train_seconds") or 0.0)
    results: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "size": size_name,
        "params": {k: v for k, v in asdict(size).items() if k != "train"},
        "supernet": {**sn_info, "path": str(sn_path), "sha256": sha256_file(sn_path)},
        "dataset": data.describe() if hasattr(data, "describe") else data.name,
        "recipe": recipe, "quant_config": asdict(quant), "context": context, "sample_seed": SAMPLE_SEED,
        "import": imported, "data": describe_data(records, n_val=len(data.val)), "cv": cv,
        "measuring": {"records_measured_in_this_call": measured_now, **meas},
        "machine": state_start, "machine_end": machine_state(),
        "wall_time_s": {"supernet_training": train_s, "measuring": meas["seconds"], "cross_validation": cv["seconds"],
                        "total": train_s + meas["seconds"] + cv["seconds"],
                        "this_call": time.perf_counter() - t_call},
    }
    results = portable_paths(results, work=work, results=out)
    json_path, md_path = _names(out, size_name)
    atomic_write_json(json_path, results)
    atomic_write_text(md_path, render_markdown(results))
    return results


def rerender(out: Path, size_name: str) -> None:
    json_path, md_path = _names(out, size_name)
    atomic_write_text(md_path, render_markdown(read_json(json_path, what="precision results")))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny supernet, a few subnets, 2 folds: checks the script")
    ap.add_argument("--run", type=Path, default=None, help="an 'hwnas demo' output folder to take the supernet from")
    ap.add_argument("--n-both", type=int, default=None, help="subnets measured at fp32 and int8 (default: the size's)")
    ap.add_argument("--n-fp32", type=int, default=None, help="further subnets measured at fp32 only")
    ap.add_argument("--folds", type=int, default=None, help="cross-validation folds")
    ap.add_argument("--import-cache", type=Path, default=None,
                    help="an accuracy cache (sqlite) whose rows of this run's context are copied in first")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / ".precision-work")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--render-only", action="store_true", help="rewrite the Markdown from the JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    # not "root": getLogger("root") is the root logger and would mute ours; one export log line per int8 subnet
    for noisy in ("absl", "jax", "supernet.quantize", "onnxruntime"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    size_name = "quick" if args.quick else "full"
    if args.render_only:
        rerender(args.out, size_name)
        return
    size = SIZES[size_name]
    over = {k: v for k, v in (("n_both", args.n_both), ("n_fp32", args.n_fp32), ("folds", args.folds))
            if v is not None}
    if any(v < 0 for v in over.values()) or over.get("folds", 2) < 2:
        ap.error("--n-both / --n-fp32 must be >= 0 and --folds >= 2")
    run(replace(size, **over), size_name=size_name, work=args.work, out=args.out, run_dir=args.run,
        import_from=args.import_cache)


if __name__ == "__main__":
    main()
