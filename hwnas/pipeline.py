"""Cross-package pipelines: the one place that composes supernet + latency tables + search.

`search_device` is what ``hwnas search`` and the demo's search stage run: for each latency target it builds an
`nas.objective.Objective` whose accuracy is the supernet subnet's BN-recalibrated validation top-1 (cached in
sqlite, so nothing is measured twice) and whose latency is the device's LUT predictor, runs a registered
strategy on resumable Optuna storage, and writes the winner's architecture JSON. When the table was measured on
this machine it also measures the winners end to end with the same backend and protocol, so predicted and
measured latency can be compared (in separate columns).

Precision: a search targets one precision, the latency table's (``SearchJob.precision`` is checked against it).
Latency comes from that table; accuracy is measured at that precision — fp32 with torch, int8/fp16 by exporting
the BN-recalibrated subnet for the table's backend, lowering it with `supernet.quantize` the way the table's
manifest records (`accuracy_quant_recipe`: per-channel or per-tensor, calibration, reduce_range; calibrated on
training images) and running the validation split (`quantized_accuracy`) — or, with
``accuracy="predicted"``, taken from a bit-width-aware `nas.predictor.AccuracyPredictor` at that precision.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.environment import is_this_machine
from supernet.io import atomic_write_json
from supernet.space import ArchConfig
from supernet.train import load_supernet_and_data  # re-exported: callers of hwnas.pipeline keep working

__all__ = [
    "SearchJob",
    "accuracy_context",
    "accuracy_evaluator",
    "accuracy_quant_recipe",
    "latency_evaluator",
    "load_supernet_and_data",
    "measure_accuracy_pairs",
    "measure_on_table",
    "quant_recipe_tag",
    "quantized_accuracy",
    "search_device",
    "targets_between",
]

log = logging.getLogger(__name__)
ArchFn = Callable[[Sequence[ArchConfig]], np.ndarray]


@dataclass(frozen=True, kw_only=True)
class SearchJob:
    """One per-device search: inputs, targets and budget (written as ``search_config.json``)."""

    supernet_path: str
    table_path: str
    predictor_path: str | None = None  # fitted LUT correction; None = plain LUT sum
    targets_ms: tuple[float, ...]
    strategy: str = "gp"
    budget: int = 50
    reward: str = "hard"  # "hard" (alpha=0, beta=-1) or "soft" (alpha=beta=-0.07)
    seed: int = 0
    bn_images: int = 500
    storage: str | None = None  # Optuna storage URL; default: sqlite file in the output folder
    study_prefix: str = "search"
    measure_winners: bool = True
    dataset: str | None = None  # default: the dataset the supernet was trained on
    data_root: str | None = None
    precision: str | None = None  # None: the table's; else checked against it
    accuracy: str = "measured"  # "measured" at the precision, or "predicted" by accuracy_predictor_path
    accuracy_predictor_path: str | None = None  # nas.predictor artifact; prior of the search (GP), or the accuracy
    calib_images: int = 256  # int8 accuracy: training images calibrating the activation ranges (see accuracy_context)
    statistic: str | None = None  # latency statistic constrained (median, p99, ...); None: the table's default
    # Winner's curse: trials are scored on the first `search_val_images` val images (None = all of val); per target
    # the `rescore_top_k` best candidates meeting it (over every strategy's trials) are re-scored on all of val
    # and the best re-scored one wins. The test split is never used for selection.
    search_val_images: int | None = None
    rescore_top_k: int = 5
    # with an adapted (few-shot) predictor: constrain on its "median" prediction or on the "upper" end of its 90 %
    # interval (latency_tables.fewshot), so an uncertain prediction does not pass for a fast one
    latency_bound: str = "median"

    def __post_init__(self) -> None:
        if self.latency_bound not in ("median", "upper"):
            raise ValueError(f"latency_bound {self.latency_bound!r}: expected 'median' or 'upper'")
        if not self.targets_ms or any(not (t > 0) for t in self.targets_ms):
            raise ValueError(f"targets_ms: expected positive latency targets in ms, got {list(self.targets_ms)}")
        if self.budget < 1:
            raise ValueError(f"budget: expected >= 1 evaluations, got {self.budget}")
        if self.reward not in ("hard", "soft"):
            raise ValueError(f"reward {self.reward!r}: expected 'hard' or 'soft'")
        if self.accuracy not in ("measured", "predicted"):
            raise ValueError(f"accuracy {self.accuracy!r}: expected 'measured' or 'predicted'")
        if self.search_val_images is not None and self.search_val_images < 1:
            raise ValueError(f"search_val_images: expected >= 1 or None, got {self.search_val_images}")
        if self.rescore_top_k < 0:
            raise ValueError(f"rescore_top_k: expected >= 0, got {self.rescore_top_k}")
        if self.accuracy == "predicted" and self.accuracy_predictor_path is None:
            raise ValueError("accuracy='predicted' needs accuracy_predictor_path (a bit-width-aware predictor)")


DEFAULT_CALIB_IMAGES = 256


def accuracy_context(*, supernet_path: str | Path, bn_images: int, seed: int,
                     calib_images: int = DEFAULT_CALIB_IMAGES, recipe: str | None = None) -> str:
    """What cached accuracies are *of*: the supernet file's sha256, BN recalibration and seed (and a non-default
    int8 calibration size), plus ``recipe`` (`quant_recipe_tag`: backend, per-channel or per-tensor, calibration
    method, reduce_range) when reduced-precision rows are measured, so rows of another lowering are never
    reused. One context holds every precision measured with that recipe, so (subnet, precision) pairs of one
    supernet can train a bit-width-aware predictor together."""
    from supernet.io import sha256_file

    ctx = f"val-top1:bn{bn_images}:seed{seed}:{sha256_file(supernet_path)[:16]}"
    ctx = ctx if calib_images == DEFAULT_CALIB_IMAGES else f"{ctx}:calib{calib_images}"
    return ctx if recipe is None else f"{ctx}:{recipe}"


def quant_recipe_tag(backend: str, config: Any) -> str:
    """``onnxruntime:pc-minmax:rr0``, ``tflite:pt-minmax``: how a reduced-precision accuracy was lowered (for
    `accuracy_context`). reduce_range only matters to onnxruntime."""
    label = config.label.replace("int8-", "", 1) if config.precision == "int8" else config.label
    rr = f":rr{int(bool(config.reduce_range))}" if backend == "onnxruntime" else ""
    # the fast QOperator lowering (issue 14) computes other int8 numbers than the earlier QDQ one: its own tag
    fmt = ":qop" if backend == "onnxruntime" and config.precision == "int8" and config.ort_format == "qoperator" else ""
    return f"{backend}:{label}{rr}{fmt}"


def accuracy_quant_recipe(meta: Any, *, calib_images: int = DEFAULT_CALIB_IMAGES, seed: int = 0) -> tuple[str, Any]:
    """The backend (`supernet.quantize.BACKENDS`) and `supernet.quantize.QuantConfig` with which search-time
    accuracy lowers subnets for a latency table with manifest ``meta``: the table's backend and precision and the
    recorded int8 settings (`latency_tables.table.table_backend_kwargs`, the manifest's ``quantization``:
    per-channel, calibration method, reduce_range), so accuracy and latency describe the same file. Tables of
    backends without an exporter here (pytorch, fake) and unrecorded settings fall back to onnxruntime and
    `QuantConfig`'s defaults. Calibration uses ``calib_images`` training images (the table's random inputs
    only set layer scales for timing)."""
    from latency_tables.table import table_backend_kwargs
    from supernet.quantize import BACKENDS, CALIBRATION_METHODS, QuantConfig

    backend = meta.backend if meta.backend in BACKENDS else "onnxruntime"
    kw = table_backend_kwargs(meta)
    q = meta.environment.get("quantization") or {}
    per_channel = kw.get("per_channel")
    if per_channel is None:
        per_channel = "per-tensor" not in str(q.get("weights", ""))
    calibration = kw.get("calibration") or q.get("calibration") or "minmax"
    if calibration not in CALIBRATION_METHODS:
        calibration = "minmax"
    rr = kw.get("reduce_range")
    if rr is None:
        rr = q.get("reduce_range")
    config = QuantConfig(precision=meta.precision, per_channel=bool(per_channel), calibration=calibration,
                         calib_images=calib_images, seed=seed)
    if rr is not None:
        config = config.replace(reduce_range=bool(rr))
    return backend, config


def quantized_accuracy(net: Any, cfg: ArchConfig, data: Any, *, precision: str, bn_images: int, seed: int,
                       split: str = "val", calib_images: int = DEFAULT_CALIB_IMAGES, threads: int = 1,
                       backend: str = "onnxruntime", quant: Any = None, max_images: int | None = None) -> float:
    """Top-1 of subnet ``cfg`` at ``precision`` on ``data.<split>``, as deployed on ``backend``.

    The subnet is BN-recalibrated on ``bn_images`` training images, exported and lowered by
    `supernet.quantize.export_variant` with ``quant`` (a `supernet.quantize.QuantConfig`; its precision is
    replaced by ``precision``; default ``QuantConfig(calib_images=calib_images, seed=seed)``: int8 per-channel
    QDQ with min-max activation ranges and the CPU's default reduce_range) and run by the backend's runner with
    ``threads`` threads. ``precision="fp32"`` runs the fp32 export the same way (use
    `supernet.evaluate.evaluate` for torch's fp32 number). `accuracy_quant_recipe` gives backend and ``quant``
    matching a latency table.
    """
    import tempfile

    from supernet.evaluate import recalibrated_subnet
    from supernet.quantize import QuantConfig, export_variant, get_target, runner_top1, split_arrays

    if split not in ("train", "val", "test"):
        raise ValueError(f"split {split!r}: expected 'train', 'val' or 'test'")
    config = (quant if quant is not None else QuantConfig(calib_images=calib_images, seed=seed)).replace(
        precision=precision)
    target = get_target(backend)
    xs, ys = split_arrays(data, split=split, resolution=cfg.resolution, max_images=max_images)
    sub = recalibrated_subnet(net, cfg, data, bn_images=bn_images, seed=seed)
    with tempfile.TemporaryDirectory(prefix="hwnas-qacc-") as tmp:
        path = export_variant(sub, Path(tmp) / f"{config.label}{target.suffix}", backend=backend, config=config,
                              data=data)
        return runner_top1(target.runner(path, threads=threads), xs, ys)


def accuracy_evaluator(net: Any, data: Any, *, bn_images: int, seed: int, cache_path: Path,
                       context: str, precision: str = "fp32",
                       calib_images: int = DEFAULT_CALIB_IMAGES, backend: str = "onnxruntime",
                       quant: Any = None, max_images: int | None = None) -> tuple[ArchFn, Any]:
    """Validation top-1 at ``precision`` after BN recalibration, cached per (context, architecture, precision).

    fp32 is measured in torch (`supernet.evaluate.evaluate`); other precisions with `quantized_accuracy` on
    ``backend`` with ``quant``; ``context`` must then name that recipe (`accuracy_context` with
    ``recipe=quant_recipe_tag(backend, quant)``). The returned cache's default precision is ``precision``.
    ``max_images``: score the first ``max_images`` val images only (the context then says so); None = all.
    """
    from nas.cache import AccuracyCache
    from supernet.evaluate import evaluate

    if max_images is not None and max_images < len(data.val):
        context = f"{context}:val{max_images}"
    else:
        max_images = None
    cache = AccuracyCache(cache_path, space=net.space, context=context, precision=precision)

    def accuracy_fn(cfgs: Sequence[ArchConfig]) -> np.ndarray:
        if precision == "fp32":
            return np.asarray([evaluate(net, c, data, split="val", bn_images=bn_images, seed=seed,
                                        max_images=max_images).top1 for c in cfgs])
        return np.asarray([quantized_accuracy(net, c, data, precision=precision, bn_images=bn_images, seed=seed,
                                              calib_images=calib_images, backend=backend, quant=quant,
                                              max_images=max_images)
                           for c in cfgs])

    return cache.wrap(accuracy_fn), cache


def measure_accuracy_pairs(net: Any, data: Any, archs: Sequence[ArchConfig], *, precisions: Sequence[str],
                           bn_images: int, seed: int, cache_path: Path, context: str,
                           calib_images: int = DEFAULT_CALIB_IMAGES,
                           on_measured: Callable[[ArchConfig, str, float], None] | None = None,
                           backend: str = "onnxruntime", quant: Any = None,
                           ) -> list[tuple[ArchConfig, str, float]]:
    """Validation accuracy of every (architecture, precision), measured once each and cached (resumable: a killed
    run continues where it stopped) — the training pairs of a bit-width-aware accuracy predictor. Reduced
    precisions are lowered on ``backend`` with ``quant`` (see `accuracy_evaluator`; ``context`` names the recipe).

    Returns (canonical arch, precision, top-1) in the order of ``archs`` then ``precisions``.
    """
    out: list[tuple[ArchConfig, str, float]] = []
    fns = {}
    caches = []
    try:
        for p in precisions:
            fns[p], cache = accuracy_evaluator(net, data, bn_images=bn_images, seed=seed, cache_path=cache_path,
                                               context=context, precision=p, calib_images=calib_images,
                                               backend=backend, quant=quant)
            caches.append(cache)
        for a in archs:
            c = net.space.canonical(a)
            for p in precisions:
                (acc,) = fns[p]([c])
                out.append((c, p, float(acc)))
                if on_measured is not None:
                    on_measured(c, p, float(acc))
    finally:
        for cache in caches:
            cache.close()
    return out


def latency_evaluator(table_path: str | Path, predictor_path: str | Path | None, *,
                      precision: str | None = None, latency_bound: str = "median",
                      statistic: str | None = None) -> ArchFn:
    """Predicted latency in ms from a LUT (plus its fitted correction when given), at the table's precision;
    ``precision`` (optional) is checked against it (`latency_tables.table.PrecisionMismatchError`). ``statistic``
    (median, p99, ...; default the predictor's, else the table's) must be the predictor's
    (`latency_tables.table.StatisticMismatchError`: statistics never mix).

    ``predictor_path`` may also be an adapted predictor of another device (`latency_tables.fewshot`, written by
    ``hwnas lut adapt``): then latency is its prediction (``latency_bound="upper"``: the upper end of its 90 %
    interval), and the table only has to be of the same space."""
    from latency_tables.fewshot import AdaptedLatencyPredictor, FewShotError, is_adapted_predictor
    from latency_tables.predictor import LatencyPredictor
    from latency_tables.table import LatencyTable

    if predictor_path is not None and is_adapted_predictor(predictor_path):
        adapted = AdaptedLatencyPredictor.load(predictor_path)
        tab = LatencyTable.load(table_path)
        if adapted.space != tab.space:
            raise FewShotError(f"--predictor {predictor_path} is for space {adapted.space.name!r}, --table "
                               f"{table_path} for {tab.space.name!r}")
        if precision is not None and adapted.precision is not None and precision != adapted.precision:
            raise FewShotError(f"--predictor {predictor_path} predicts {adapted.precision}, the search is at {precision}")
        fn = adapted.predict_upper if latency_bound == "upper" else adapted.predict
        return lambda cfgs: np.asarray(fn(list(cfgs)), dtype=np.float64)
    if latency_bound != "median":
        raise FewShotError("--latency-bound upper needs an adapted --predictor (hwnas lut adapt): a LUT predictor "
                           "has no interval")

    if predictor_path is not None:
        predictor = LatencyPredictor.load(predictor_path, table=table_path)
        predictor.table.check_statistic(statistic, what="the search's latency")
    else:
        predictor = LatencyPredictor.from_table(LatencyTable.load(table_path, statistic=statistic))
    predictor.table.check_precision(precision)
    return lambda cfgs: np.asarray(predictor.predict(list(cfgs)), dtype=np.float64)


def targets_between(space: Any, latency_fn: ArchFn, fractions: Sequence[float], *, seed: int,
                    n_probe: int = 256) -> tuple[list[float], float, float]:
    """Targets at ``fractions`` of the predicted latency range of the space (a sample plus both extremes).

    With a fitted correction the smallest network is not necessarily the fastest, hence the sample.
    """
    rng = np.random.default_rng(seed)
    probe = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(n_probe)]
    ms = latency_fn(probe)
    lo, hi = float(np.min(ms)), float(np.max(ms))
    return [round(lo + f * (hi - lo), 4) for f in fractions], lo, hi


def measure_on_table(archs: Sequence[ArchConfig], table: Any, backbone: Any, *, protocol: Any = None) -> list[Any]:
    """Measure subnets end to end with the table's backend, threads and precision, on the table's scale.

    The estimate is the ratio to the reference probe timed in the same rounds times the probe's latency in the
    table, so a machine-wide slowdown between the table build and this measurement cancels out.
    """
    from hwnas.progress import rich_progress
    from latency_tables import measure_models
    from latency_tables.table import table_backend_kwargs

    meta = table.meta
    ref = (meta.reference or {}).get("latency_ms")
    with rich_progress() as bars:
        return measure_models(list(archs), backbone, backend=meta.backend, threads=meta.threads,
                              precision=meta.precision, protocol=protocol, space=table.space, progress=bars,
                              reference_ms=None if ref is None else float(ref),
                              backend_kwargs=table_backend_kwargs(meta))


def _select_winner(per: dict[str, Any], strategies: Sequence[str], target_ms: float, *, job: SearchJob,
                   full_val_fn: ArchFn, search_images: int, val_images: int) -> tuple[Any, dict[str, Any]]:
    """The winner of one target: the best of the ``job.rescore_top_k`` candidates meeting ``target_ms`` (over every
    strategy's trials, ranked by the search's accuracy) re-scored on all ``val_images`` val images.

    Without re-scoring (k = 0, or trials already scored on all of val with a measured objective) it is the first
    strategy's best. Returns the evaluation and a record of the selection (candidates with both accuracies).
    """
    first = per[strategies[0]].best
    rescore = job.rescore_top_k > 0 and (search_images < val_images or job.accuracy == "predicted")
    if not rescore:
        val_top1 = first.accuracy if job.accuracy == "measured" else float(full_val_fn([first.arch])[0])
        return first, {"rescored": False, "val_top1": val_top1, "search_val_images": search_images,
                       "val_images": val_images, "candidates": []}
    seen: dict[str, Any] = {}
    for st in strategies:
        for ev in per[st].history:
            if ev.latency_ms <= target_ms and math.isfinite(ev.accuracy):
                k = str(ev.arch)
                if k not in seen or ev.accuracy > seen[k].accuracy:
                    seen[k] = ev
    ranked = sorted(seen.values(), key=lambda e: (-e.accuracy, e.latency_ms))[: job.rescore_top_k]
    if not ranked:  # nothing met the target: keep the search's answer
        ranked = [first]
    full = [float(a) for a in full_val_fn([e.arch for e in ranked])]
    i = max(range(len(ranked)), key=lambda j: (full[j], -ranked[j].latency_ms))
    return ranked[i], {
        "rescored": True, "val_top1": full[i], "search_val_images": search_images, "val_images": val_images,
        "candidates": [{"arch": str(e.arch), "search_val_top1": e.accuracy, "val_top1": f,
                        "predicted_latency_ms": e.latency_ms} for e, f in zip(ranked, full, strict=True)],
    }


def search_device(job: SearchJob, *, out_dir: str | Path, console: Any = None, net: Any = None,
                  data: Any = None, strategies: Sequence[str] | None = None) -> dict[str, Any]:
    """Run ``job`` (one search per target and strategy) and write results under ``out_dir``.

    Writes ``arch_T<target>.json`` (winner of the first strategy), ``search_results.json``,
    ``evaluations.json`` (every evaluated architecture), ``pareto.png`` and ``search_convergence.png``.
    Re-running with the same storage and study names continues the studies.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from latency_tables.table import LatencyTable
    from nas.objective import Objective
    from nas.pareto import pareto_front
    from nas.plots import plot_convergence, plot_pareto
    from nas.reward import Reward
    from nas.search import search

    console = console or Console()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "search_config.json", asdict(job))
    strategies = list(strategies or [job.strategy])
    if net is None or data is None:
        net, data = load_supernet_and_data(job.supernet_path, dataset=job.dataset, data_root=job.data_root)
    table = LatencyTable.load(job.table_path, statistic=job.statistic)
    if table.space != net.space:
        raise ValueError(
            f"latency table {job.table_path!r} is for space {table.space.name!r} but the supernet's space is "
            f"{net.space.name!r}; build a table for this supernet with 'hwnas lut build'"
        )
    precision = table.check_precision(job.precision, what="a search")
    latency_fn = latency_evaluator(job.table_path, job.predictor_path, precision=precision,
                                   latency_bound=job.latency_bound, statistic=table.statistic)
    from latency_tables.fewshot import is_adapted_predictor

    other_device = job.predictor_path is not None and is_adapted_predictor(job.predictor_path)
    q_backend, quant = accuracy_quant_recipe(table.meta, calib_images=job.calib_images, seed=job.seed)
    context = accuracy_context(supernet_path=job.supernet_path, bn_images=job.bn_images, seed=job.seed,
                               calib_images=job.calib_images,
                               recipe=None if precision == "fp32" else quant_recipe_tag(q_backend, quant))
    measured_fn, cache = accuracy_evaluator(net, data, bn_images=job.bn_images, seed=job.seed,
                                            cache_path=out / "accuracy.sqlite", context=context, precision=precision,
                                            calib_images=job.calib_images, backend=q_backend, quant=quant,
                                            max_images=job.search_val_images)
    full_val_fn, full_cache = accuracy_evaluator(net, data, bn_images=job.bn_images, seed=job.seed,
                                                 cache_path=out / "accuracy.sqlite", context=context,
                                                 precision=precision, calib_images=job.calib_images,
                                                 backend=q_backend, quant=quant)
    search_images = min(job.search_val_images or len(data.val), len(data.val))
    prior: ArchFn | None = None
    if job.accuracy_predictor_path is not None:
        from nas.predictor import AccuracyPredictor

        prior = AccuracyPredictor.load(job.accuracy_predictor_path, space=net.space).at(precision)
    accuracy_fn = measured_fn if job.accuracy == "measured" else prior
    assert accuracy_fn is not None  # SearchJob checks that "predicted" has a predictor
    study_suffix = ("" if precision == "fp32" else f"-{precision}") + ("-predicted" if job.accuracy == "predicted" else "")
    storage = job.storage or f"sqlite:///{(out / 'studies.db').resolve()}"
    results: dict[str, dict[str, Any]] = {}
    all_evals: list[Any] = []
    try:
        with Progress(TextColumn("[bold]search[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console) as bar:
            for target in job.targets_ms:
                key = f"{target:.4f}"
                results[key] = {}
                reward = Reward.hard(target) if job.reward == "hard" else Reward.soft(target)
                for strategy in strategies:
                    task = bar.add_task(f"{strategy:<9} T={target:.3f} ms", total=job.budget, info="")
                    objective = Objective(space=net.space, accuracy_fn=accuracy_fn, latency_fn=latency_fn,
                                          reward=reward, accuracy_prior=prior, precision=precision)

                    def cb(ev: Any, *_: Any, _task: Any = task) -> None:
                        bar.update(_task, advance=1, info=f"acc {ev.accuracy:.3f} lat {ev.latency_ms:.3f} ms")

                    res = search(net.space, objective, strategy=strategy, budget=job.budget, seed=job.seed,
                                 storage=storage, study_name=f"{job.study_prefix}-{strategy}-T{key}{study_suffix}",
                                 callback=cb)
                    results[key][strategy] = res
                    all_evals += res.history
                    bar.update(task, completed=job.budget,
                               info=f"best acc {res.best.accuracy:.4f} at {res.best.latency_ms:.3f} ms")
        main = strategies[0]
        winners = []
        for key, per in results.items():
            best, selection = _select_winner(per, strategies, float(key), job=job, full_val_fn=full_val_fn,
                                             search_images=search_images, val_images=len(data.val))
            val_top1 = selection["val_top1"]
            path = out / f"arch_T{key}.json"
            atomic_write_json(path, {"arch": best.arch.to_json(), "arch_str": str(best.arch), "target_ms": float(key),
                                     "val_top1": val_top1, "predicted_latency_ms": best.latency_ms,
                                     "precision": precision, "strategy": main})
            winners.append({
                "target_ms": float(key), "arch": str(best.arch), "arch_json": best.arch.to_json(),
                "arch_file": path.name, "precision": precision, "val_top1": val_top1,
                "search_val_top1": best.accuracy, "selection": selection,
                **({"predicted_val_top1": best.accuracy} if job.accuracy == "predicted" else {}),
                "predicted_latency_ms": best.latency_ms, "meets_target_predicted": best.latency_ms <= float(key),
                "reward": best.reward, "evaluations": len(per[main].history), "wall_time_s": per[main].wall_time_s,
            })
    finally:
        cache.close()
        full_cache.close()

    measured: dict[str, Any] = {"performed": False}
    if job.measure_winners and winners and other_device:
        measured = {"performed": False, "reason": f"latency from the adapted predictor {job.predictor_path} of "
                    "another device: measure the winners there (hwnas lut kit --subnets)"}
    elif job.measure_winners and winners:
        if is_this_machine(table.meta):
            from latency_tables import MeasurementProtocol

            archs = [ArchConfig.from_json(w["arch_json"]) for w in winners]
            proto = (
                MeasurementProtocol.from_json(table.meta.protocol)
                if getattr(table.meta, "protocol", None)
                else None
            )
            ms = measure_on_table(archs, table, net.backbone, protocol=proto)
            for w, m in zip(winners, ms, strict=True):
                w["measured_latency_ms"] = m.stat(table.statistic)
                w["measured_statistic"] = table.statistic
                w["measured_p50_ms"] = m.p50_ms
                w["measured_iqr_ms"] = m.iqr_ms
                w["measured_runs"] = m.runs
                w["meets_target_measured"] = w["measured_latency_ms"] <= w["target_ms"]
            measured = {"performed": True, "environment": dict(ms[0].environment) if ms else {},
                        "protocol": proto.to_json() if proto is not None else None}
        else:
            measured = {"performed": False,
                        "reason": f"table measured on {table.meta.device!r} ({table.meta.cpu_model}), not this machine"}

    front = pareto_front(all_evals)
    plot_pareto(all_evals, out / "pareto.png", front=front, title="val accuracy vs predicted latency")
    plot_convergence({f"{st} T={k} ms": r for k, per in results.items() for st, r in per.items()},
                     out / "search_convergence.png")
    atomic_write_json(out / "evaluations.json", [e.to_json() for e in all_evals])
    summary = {
        "strategies": strategies, "winner_strategy": main, "budget": job.budget, "reward": job.reward,
        "precision": precision, "accuracy": job.accuracy, "accuracy_predictor": job.accuracy_predictor_path,
        "targets_ms": list(job.targets_ms), "storage": storage, "table": job.table_path,
        "predictor": job.predictor_path, "latency_bound": job.latency_bound, "winners": winners,
        "winner_measurement": measured,
        "comparison": [
            {"target_ms": float(k), "strategy": st, "best_reward": r.best.reward, "best_val_top1": r.best.accuracy,
             "best_predicted_latency_ms": r.best.latency_ms, "evaluations": len(r.history),
             "wall_time_s": r.wall_time_s}
            for k, per in results.items() for st, r in per.items()
        ],
        "pareto": [e.to_json() for e in front],
        "plots": ["pareto.png", "search_convergence.png"],
    }
    atomic_write_json(out / "search_results.json", summary)
    return summary


def search_joint(jobs: Mapping[str, SearchJob], *, out_dir: str | Path, console: Any = None, net: Any = None,
                 data: Any = None) -> dict[str, Any]:
    """``hwnas search --precision auto``: search (architecture, precision) jointly for each latency target.

    ``jobs`` maps a precision to its `SearchJob` (that precision's latency table, the same targets): each one
    searches architectures with that precision's table and its quantization-aware accuracy (measured at the
    precision, cached per precision), under ``out_dir/<precision>/``. The joint winner of a target is the most
    accurate (validation top-1) of the per-precision winners whose predicted latency meets the target (ties:
    the faster). So an int8-friendly architecture that fp32 search never picks wins when its int8 latency lets a
    larger, more accurate network fit. Writes ``out_dir/joint_results.json``; returns it.
    """
    if not jobs:
        raise ValueError("search_joint: expected at least one precision")
    targets = {tuple(j.targets_ms) for j in jobs.values()}
    if len(targets) != 1:
        raise ValueError(f"search_joint: every precision must search the same targets, got {sorted(targets)}")
    out = Path(out_dir)
    per: dict[str, dict[str, Any]] = {}
    for precision, job in jobs.items():
        per[precision] = search_device(job, out_dir=out / precision, console=console, net=net, data=data)
    joint: list[dict[str, Any]] = []
    for target in next(iter(targets)):
        cands = [w for p in per.values() for w in p["winners"] if abs(w["target_ms"] - float(target)) < 1e-9]
        fit = [w for w in cands if w["meets_target_predicted"]]
        best = max(fit, key=lambda w: (w["val_top1"], -w["predicted_latency_ms"])) if fit else None
        fp32 = next((w for w in cands if w["precision"] == "fp32"), None)
        joint.append({"target_ms": float(target), "winner": best,
                      "by_precision": {w["precision"]: {k: w[k] for k in ("arch", "val_top1", "predicted_latency_ms",
                                                                        "meets_target_predicted")} for w in cands},
                      "gain_vs_fp32_pts": (None if best is None or fp32 is None
                                           else 100 * (best["val_top1"] - fp32["val_top1"]))})
    summary = {"precisions": list(jobs), "targets_ms": list(next(iter(targets))), "joint": joint,
               "per_precision": {p: str(out / p / "search_results.json") for p in per}}
    atomic_write_json(out / "joint_results.json", summary)
    return summary
