"""Search-strategy benchmark on a real objective: how many evaluations each strategy needs per latency target.

    python benchmarks/search.py                      # full: trains the demo's supernet (or --run DIR reuses one)
    python benchmarks/search.py --run hwnas-runs/demo
    python benchmarks/search.py --quick              # every stage tiny (a few minutes) -> search.quick.*

Objective (cheap, so many runs): accuracy = an MLP accuracy predictor (`nas.predictor`) fitted on the measured,
BN-recalibrated validation accuracy of sampled subnets of the supernet; latency = this CPU's LUT (onnxruntime fp32,
1 thread) plus its fitted correction (`latency_tables`); reward = MnasNet hard preset (alpha = 0, beta = -1; the soft
preset makes every target's optimum the same network). Stages, each cached under ``--work`` so a killed run
continues where it stopped (finished stages are skipped; measured accuracies live in a sqlite cache; every finished
search run is one line of ``runs.jsonl``):

  supernet   the demo's supernet (trained with `supernet.train.train_supernet` and the demo's config, or ``--run``)
  accuracy   N sampled subnets measured (`hwnas.pipeline.accuracy_evaluator`), predictor fitted, held-out RMSE / tau
  latency    LUT on this CPU (`latency_tables.build_table`) and its correction (`latency_tables.validate`)
  objective  3 targets (`hwnas.pipeline.targets_between`); the latency predictor compiled to an exact lookup table
             (`nas.bench.compile_additive`) so strategies can query thousands of candidates per step
  reference  per target: long evolution runs plus a hill-climb (single-decision moves) from their best
  runs       strategies x targets x seeds; every run's best-so-far improvements
  final      hill-climb from the best runs too: the reference is the best reward anyone found (gaps >= 0)
  winners    the GP runs' best subnets measured end to end on this CPU and their measured validation accuracy

Writes ``search.json`` (every run, the environment and conditions), ``search.md`` and ``search-convergence.png`` to
``--out`` (default ``benchmarks/results``). All logic is in `nas`, `hwnas.pipeline` and `latency_tables`; this script
sequences it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Self

import numpy as np

# Run as a script, this folder is sys.path[0] and benchmarks/supernet.py would shadow the supernet package:
# the repository root takes its place (helpers here are imported as ``benchmarks.<module>``). Same lines in
# every script.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path
                             if Path(p or ".").resolve() not in (ROOT, ROOT / "benchmarks")]

from benchmarks.load_sampler import LoadSampler
from benchmarks.portable_paths import portable_paths
from nas.bench import (
    AdditiveArchFn,
    BestSoFar,
    NotAdditiveError,
    bootstrap_median_ci,
    censored_median,
    compile_additive,
    hill_climb,
)
from supernet.io import atomic_write_json, atomic_write_text, read_json, sha256_file
from supernet.space import ArchConfig, SearchSpace

log = logging.getLogger("bench.search")

RESULT_SCHEMA_VERSION = 1
TARGET_GP_VS_EVOLUTION = 1.0 / 3.0  # GP's median evaluations to 0.1 % must be <= this x evolution's
TARGET_WINNERS_MEET = 0.95  # share of winners whose measured latency meets the target
LUT_NAME = "onnxruntime-fp32-t1.csv"  # the demo's table file name


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """Everything that decides the numbers (stored in the JSON; a changed field re-runs the stages it feeds)."""

    quick: bool = False
    seed: int = 0
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig JSON (the demo's)
    backend: str = "onnxruntime"  # LUT / end-to-end backend ("fake" only in tests)
    n_subnets: int = 250  # measured for the accuracy predictor
    bn_images: int = 500  # as the demo's search
    predictor_hidden: tuple[int, ...] = (400, 400, 400)
    predictor_epochs: int = 200
    predictor_test_fraction: float = 0.2
    lut_protocol: dict[str, Any] = field(default_factory=dict)
    latency_fit: int = 40
    latency_check: int = 30
    target_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    margin_quantile: float = 0.95  # search constraint T / q(measured / predicted) on the latency validation
    strategies: tuple[str, ...] = ("gp", "evolution", "random", "optuna-tpe", "rl")
    budgets: dict[str, int] = field(default_factory=dict)
    strategy_kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_seeds: int = 20
    # extra labelled variants run on fewer seeds, e.g. ablations of the GP: label -> {strategy, kwargs, n_seeds}
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference_runs: int = 3
    reference_budget: int = 15000
    reference_top_k: int = 5
    thresholds_pct: tuple[float, ...] = (0.1, 0.5)
    gap_at: tuple[int, ...] = (100, 300)
    n_boot: int = 2000
    optuna_gp_probe_trials: int = 40  # optuna-gp: one timed run to state its per-trial cost (0 = skip)
    winners_protocol: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def preset(cls, *, quick: bool) -> Settings:
        from hwnas.demo import DemoConfig
        from latency_tables.protocol import MeasurementProtocol

        demo = DemoConfig.preset(quick=quick)
        if not quick:
            return cls(
                train=demo.train.to_json(),
                lut_protocol=MeasurementProtocol.preset(
                    demo.lut_protocol, processes=demo.lut_processes, seed=0
                ).to_json(),
                winners_protocol=MeasurementProtocol.preset(
                    demo.lut_protocol, processes=demo.lut_processes, seed=2
                ).to_json(),
                budgets={"gp": 300, "optuna-tpe": 300, "evolution": 6000, "random": 2000, "rl": 4000},
                variants={"gp-ordinal": {"strategy": "gp", "kwargs": {"encoding": "ordinal"}, "n_seeds": 5}},
            )
        tiny = MeasurementProtocol(
            rounds=1, runs_per_round=3, warmups=1, load_warmups=1, processes=1, chunk_size=256
        )
        train = replace(demo.train, epochs=1, max_train_images=256, eval_bn_images=64, checkpoint_every_steps=1000)
        return cls(
            quick=True, train=train.to_json(), n_subnets=24, bn_images=64, predictor_epochs=40,
            lut_protocol=tiny.to_json(), winners_protocol=replace(tiny, seed=2).to_json(), latency_fit=6,
            latency_check=4, budgets={"gp": 14, "optuna-tpe": 14, "evolution": 60, "random": 60, "rl": 60},
            strategy_kwargs={"gp": {"n_pool": 200, "n_rounds": 2, "local_steps": 1}}, n_seeds=2,
            variants={"gp-ordinal": {"strategy": "gp", "kwargs": {"encoding": "ordinal", "n_pool": 200, "n_rounds": 2,
                                                                  "local_steps": 1}, "n_seeds": 1}},
            reference_runs=1, reference_budget=150, reference_top_k=2, gap_at=(5, 10), n_boot=200,
            optuna_gp_probe_trials=12,
        )

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- resumable stages
class Stages:
    """Finished stages by name in ``state.json``: a stage whose settings changed runs again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.steps: dict[str, Any] = read_json(path) if path.is_file() else {}

    def run(self, name: str, settings: Any, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        key = fingerprint(settings)
        done = self.steps.get(name)
        if done is not None and done.get("key") == key:
            log.info("stage %s: done in an earlier run, skipped", name)
            return done["result"]
        log.info("stage %s: running", name)
        load0, t0 = os.getloadavg(), time.time()
        result = fn()
        self.steps[name] = {"key": key, "result": result, "wall_s": round(time.time() - t0, 1),
                            "load_1_5_15_start": list(load0), "load_1_5_15_end": list(os.getloadavg()),
                            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_json(self.path, self.steps)
        return result

    def timing(self) -> dict[str, Any]:
        return {k: {kk: v[kk] for kk in ("wall_s", "load_1_5_15_start", "load_1_5_15_end", "finished_at")}
                for k, v in self.steps.items()}


def _fin(x: float | None) -> float | None:
    """JSON has no inf/nan: censored or undefined numbers are written as null."""
    return None if x is None or not math.isfinite(x) else float(x)


# --------------------------------------------------------------------------- stage: supernet
def stage_supernet(st: Settings, work: Path, run_dir: Path | None) -> dict[str, Any]:
    if run_dir is not None:
        path = run_dir / "supernet" / "supernet.pt"
        if not path.is_file():
            raise FileNotFoundError(f"--run {run_dir}: no supernet at {path} (expected a 'hwnas demo' output folder)")
        return {"source": f"--run {run_dir}", "path": str(path.resolve()), "sha256": sha256_file(path)}
    from supernet.data import load_dataset
    from supernet.train import TrainConfig, train_supernet

    tc = TrainConfig.from_json(st.train)
    data = load_dataset(tc.dataset, root=tc.data_root, seed=tc.seed, max_train=tc.max_train_images,
                        val_fraction=tc.val_fraction, test_fraction=tc.test_fraction)
    res = train_supernet(tc, out_dir=work / "supernet", data=data, progress=sys.stderr.isatty())
    path = work / "supernet" / "supernet.pt"
    return {"source": "trained with the demo's config", "path": str(path.resolve()), "sha256": sha256_file(path),
            "train": {k: v for k, v in res.to_json().items() if k in ("phases", "wall_time_s", "steps")}}


def _net_and_data(sn: dict[str, Any]) -> tuple[Any, Any]:
    from supernet.train import load_supernet_and_data

    return load_supernet_and_data(sn["path"])


# --------------------------------------------------------------------------- stage: accuracy predictor
def _accuracy_fn(st: Settings, sn: dict[str, Any], net: Any, data: Any, work: Path) -> tuple[Any, Any]:
    from hwnas.pipeline import accuracy_evaluator

    context = f"val-top1:bn{st.bn_images}:seed{st.seed}:{sn['sha256'][:16]}"  # as hwnas.pipeline.search_device
    return accuracy_evaluator(net, data, bn_images=st.bn_images, seed=st.seed, cache_path=work / "accuracy.sqlite",
                              context=context)


def stage_accuracy(st: Settings, sn: dict[str, Any], work: Path) -> dict[str, Any]:
    from nas.predictor import fit_predictor

    net, data = _net_and_data(sn)
    space = net.space
    rng = np.random.default_rng([st.seed, 1])
    archs: list[ArchConfig] = []
    seen: set[ArchConfig] = set()
    while len(archs) < st.n_subnets:
        a = space.canonical(space.sample(rng))
        if a not in seen:
            seen.add(a)
            archs.append(a)
    acc_fn, cache = _accuracy_fn(st, sn, net, data, work)
    t0, n_before = time.perf_counter(), len(cache)
    try:
        accs: list[float] = []
        for i in range(0, len(archs), 10):  # chunks: each is stored before the next starts (a kill loses <= 10)
            accs += acc_fn(archs[i : i + 10]).tolist()
            log.info("accuracy: %d / %d subnets", min(i + 10, len(archs)), len(archs))
        n_new = len(cache) - n_before
    finally:
        cache.close()
    seconds = time.perf_counter() - t0
    pred = fit_predictor(space, archs, accs, hidden=st.predictor_hidden, epochs=st.predictor_epochs,
                         test_fraction=st.predictor_test_fraction, seed=st.seed)
    pred.save(work / "accuracy_predictor.npz")
    m = pred.metrics
    y = np.asarray(accs)
    return {
        "path": str(work / "accuracy_predictor.npz"), "n_measured": len(archs), "n_new_measurements": n_new,
        "seconds_per_new_subnet": seconds / n_new if n_new else None,
        "metric": f"val top-1 after BN recalibration on {st.bn_images} train images ({len(data.val)} val images)",
        "measured_top1": {"min": float(y.min()), "median": float(np.median(y)), "max": float(y.max()),
                          "std": float(y.std())},
        "rmse": m.rmse if m else None, "kendall_tau": m.kendall_tau if m else None,
        "n_train": m.n_train if m else len(archs), "n_test": m.n_test if m else 0,
        "hidden": list(st.predictor_hidden), "epochs": st.predictor_epochs, "encoding": pred.encoding,
    }


# --------------------------------------------------------------------------- stage: latency table + correction
def stage_latency(st: Settings, sn: dict[str, Any], work: Path, run_dir: Path | None) -> dict[str, Any]:
    from latency_tables import MeasurementProtocol, build_table, validate
    from latency_tables.environment import is_this_machine
    from latency_tables.table import LatencyTable

    lut_dir = None if run_dir is None else run_dir / "lut"
    if lut_dir is not None and (lut_dir / LUT_NAME).is_file() and (lut_dir / "predictor.json").is_file():
        table = LatencyTable.load(lut_dir / LUT_NAME)
        report_path = lut_dir / "validation.json"
        if is_this_machine(table.meta) and report_path.is_file() and table.meta.backend == st.backend:
            rep = read_json(report_path)
            return _latency_result(table, lut_dir / "predictor.json", rep, source=f"--run {run_dir}")
        log.info("--run %s: its table is not from this machine (or has no validation); building one here", run_dir)
    net, _ = _net_and_data(sn)
    path = work / "lut" / LUT_NAME
    pr = MeasurementProtocol.from_json(st.lut_protocol)
    table = build_table(net.space, net.backbone, out=path, backend=st.backend, threads=1, precision="fp32",
                        protocol=pr, resume=True, progress=sys.stderr.isatty())
    rep = validate(path, n_fit=st.latency_fit, n_test=st.latency_check, seed=st.seed,
                   protocol=replace(pr, seed=pr.seed + 1), predictor_out=work / "lut" / "predictor.json",
                   report_out=work / "lut" / "validation.json", progress=sys.stderr.isatty(),
                   workdir=work / "lut" / "validation-models")
    return _latency_result(table, work / "lut" / "predictor.json", rep.to_json(), source="built here")


def _latency_result(table: Any, predictor_path: Path, rep: dict[str, Any], *, source: str) -> dict[str, Any]:
    meta = table.meta
    ratio = np.asarray([r["measured_ms"] / r["predicted_corrected_ms"] for r in rep["rows"]])
    measured = np.asarray([r["measured_ms"] for r in rep["rows"]])
    return {
        "source": source, "table": str(table.path), "predictor": str(predictor_path),
        "device": meta.device, "cpu_model": meta.cpu_model, "backend": meta.backend,
        "backend_version": meta.backend_version, "precision": meta.precision, "threads": meta.threads,
        "batch_size": meta.batch_size, "warmups": meta.warmups, "runs": meta.runs, "rounds": meta.rounds,
        "processes": meta.processes, "estimator": meta.estimator, "rows": meta.n_rows,
        "build_seconds": meta.build_seconds, "measured_at": meta.measured_at,
        "validation": {
            "n_fit": rep["n_fit"], "n_test": rep["n_test"], "plain_sum": rep["plain_sum"],
            "corrected": rep["corrected"], "protocol": rep["measurement"]["protocol"],
            "measured_ms": {"median": float(np.median(measured)), "min": float(measured.min()),
                            "max": float(measured.max())},
            "measured_over_corrected": {"median": float(np.median(ratio)), "min": float(ratio.min()),
                                        "max": float(ratio.max())},
        },
        "ratio_samples": ratio.tolist(),
    }


# --------------------------------------------------------------------------- the objective
class ObjectiveFactory:
    """Builds fresh `Objective`s (own evaluation cache and count) on the benchmark's predictors.

    Cheap to construct from its JSON spec in each worker process: the accuracy predictor is a numpy MLP, the
    latency predictor and the MACs proxy are lookup tables (`nas.bench.AdditiveArchFn`) loaded from an ``.npz``.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        from nas.predictor import AccuracyPredictor

        self.spec = spec
        self.space = SearchSpace.from_json(spec["space"])
        self.predictor = AccuracyPredictor.load(spec["predictor"], space=self.space)
        with np.load(spec["tables"], allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        self.latency = AdditiveArchFn(space=self.space, base=arrays["lat_base"], table=arrays["lat_table"],
                                      max_abs_error=float(arrays["lat_err"]), n_probe=0, n_check=0)
        self.macs = AdditiveArchFn(space=self.space, base=arrays["macs_base"], table=arrays["macs_table"],
                                   max_abs_error=float(arrays["macs_err"]), n_probe=0, n_check=0)

    def accuracy(self, cfgs: Sequence[ArchConfig]) -> np.ndarray:
        return self.predictor.predict(list(cfgs))

    def objective(self, target_index: int) -> Any:
        from nas.objective import Objective
        from nas.reward import Reward

        t = self.spec["targets"][target_index]
        return Objective(space=self.space, accuracy_fn=self.accuracy, latency_fn=self.latency,
                         reward=Reward.hard(t["search_target_ms"]), features={"macs_m": self.macs})


def stage_objective(st: Settings, sn: dict[str, Any], acc: dict[str, Any], lat: dict[str, Any],
                    work: Path) -> dict[str, Any]:
    from hwnas.pipeline import latency_evaluator, targets_between
    from latency_tables.table import LatencyTable
    from supernet.layers import count_macs

    table = LatencyTable.load(lat["table"])
    space = table.space
    latency_fn = latency_evaluator(lat["table"], lat["predictor"])
    compiled: dict[str, AdditiveArchFn] = {}
    for name, fn in (("lat", latency_fn),
                     ("macs", lambda cs: np.asarray([count_macs(table.backbone, c) / 1e6 for c in cs]))):
        try:
            compiled[name] = compile_additive(fn, space, seed=st.seed, rtol=1e-9, atol=1e-9)
        except NotAdditiveError as e:
            raise RuntimeError(f"{name}: {e}; the benchmark needs the lookup-table form for speed") from None
    np.savez(work / "objective_tables.npz", lat_base=compiled["lat"].base, lat_table=compiled["lat"].table,
             lat_err=compiled["lat"].max_abs_error, macs_base=compiled["macs"].base,
             macs_table=compiled["macs"].table, macs_err=compiled["macs"].max_abs_error)
    targets, lo, hi = targets_between(space, latency_fn, st.target_fractions, seed=st.seed)
    ratios = np.asarray(lat["ratio_samples"])
    q = float(np.quantile(ratios, st.margin_quantile))
    factor = max(1.0, q)
    return {
        "space": space.to_json(), "predictor": acc["path"], "tables": str(work / "objective_tables.npz"),
        "latency_range_ms": [lo, hi], "target_fractions": list(st.target_fractions),
        "margin": {"quantile": st.margin_quantile, "measured_over_predicted_at_quantile": q, "divide_by": factor,
                   "why": "winners sit on the constraint, so the search uses T / q (q = this quantile of measured / "
                          "predicted latency on the validation subnets) for measured latency to meet T"},
        "targets": [{"target_ms": t, "search_target_ms": t / factor} for t in targets],
        "reward": "MnasNet hard preset: ACC * (LAT/T)^w, w = 0 if LAT <= T else -1 (T = search target)",
        "compiled": {k: v.summary() for k, v in compiled.items()},
    }


# --------------------------------------------------------------------------- search runs (worker processes)
_FACTORY: dict[str, ObjectiveFactory] = {}


def _init_worker(spec: dict[str, Any]) -> None:
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    logging.basicConfig(level=logging.WARNING)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _FACTORY["f"] = ObjectiveFactory(spec)


def _search_task(task: dict[str, Any]) -> dict[str, Any]:
    """One search run (strategy, target, seed, budget, kwargs) -> its JSON row."""
    from nas.strategies import create_strategy

    f = _FACTORY["f"]
    obj = f.objective(task["target_index"])
    t0 = time.perf_counter()
    res = create_strategy(task["strategy"], **task["kwargs"]).search(obj, budget=task["budget"], seed=task["seed"])
    wall = time.perf_counter() - t0
    trace = BestSoFar.from_rewards([e.reward for e in res.history])
    b = res.best
    return {**task, "wall_time_s": wall, "n_evaluations": len(res.history), "trace": trace.to_json(),
            "best": {"arch": str(b.arch), "reward": b.reward, "predicted_accuracy": b.accuracy,
                     "predicted_latency_ms": b.latency_ms}}


def _climb_task(task: dict[str, Any]) -> dict[str, Any]:
    f = _FACTORY["f"]
    obj = f.objective(task["target_index"])
    start = f.space.parse(task["arch"])
    top = hill_climb(obj, start)
    return {**task, "climbed": str(top.arch), "reward": top.reward, "evaluations": obj.n_measured}


def _reference_task(task: dict[str, Any]) -> dict[str, Any]:
    row = _search_task(task)
    climbed = _climb_task({"target_index": task["target_index"], "arch": row["best"]["arch"]})
    return {"seed": task["seed"], "target_index": task["target_index"], "evolution_best": row["best"],
            "evolution_wall_s": row["wall_time_s"], "climbed_arch": climbed["climbed"],
            "climbed_reward": climbed["reward"], "climb_evaluations": climbed["evaluations"]}


class Pool:
    """A process pool whose workers hold an `ObjectiveFactory` (or the calling process when ``workers == 1``)."""

    def __init__(self, spec: dict[str, Any], workers: int) -> None:
        self.workers = workers
        self.spec = spec
        self._pool: Any = None

    def __enter__(self) -> Self:
        if self.workers > 1:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ.setdefault(var, "1")
            self._pool = mp.get_context("spawn").Pool(self.workers, initializer=_init_worker, initargs=(self.spec,))
        else:
            _init_worker(self.spec)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate() if exc[0] is not None else self._pool.close()
            self._pool.join()

    def imap(self, fn: Callable[[dict[str, Any]], dict[str, Any]], tasks: Sequence[dict[str, Any]]) -> Any:
        if self._pool is None:
            return map(fn, tasks)
        return self._pool.imap_unordered(fn, tasks)


def stage_reference(st: Settings, obj_spec: dict[str, Any], pool: Pool) -> dict[str, Any]:
    tasks = [{"strategy": "evolution", "target_index": ti, "seed": 10_000 + i, "budget": st.reference_budget,
              "kwargs": {}} for ti in range(len(obj_spec["targets"])) for i in range(st.reference_runs)]
    rows = list(pool.imap(_reference_task, tasks))
    out = []
    for ti, t in enumerate(obj_spec["targets"]):
        mine = sorted((r for r in rows if r["target_index"] == ti), key=lambda r: r["seed"])
        best = max(mine, key=lambda r: r["climbed_reward"])
        out.append({"target_ms": t["target_ms"], "runs": mine, "reward": best["climbed_reward"],
                    "arch": best["climbed_arch"]})
    return {"per_target": out, "evolution_budget": st.reference_budget, "n_runs": st.reference_runs}


def run_tasks(st: Settings, obj_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """(label, strategy, target, seed, budget, kwargs) of every run: the strategies, then the labelled variants."""
    grid = [(name, name, st.strategy_kwargs.get(name, {}), st.n_seeds) for name in st.strategies]
    grid += [(label, v["strategy"], v.get("kwargs", {}), int(v.get("n_seeds", st.n_seeds)))
             for label, v in st.variants.items()]
    tasks = []
    for label, name, kwargs, n_seeds in grid:
        for ti in range(len(obj_spec["targets"])):
            for seed in range(n_seeds):
                tasks.append({"label": label, "strategy": name, "target_index": ti, "seed": seed,
                              "budget": st.budgets[name], "kwargs": kwargs})
    return tasks


def labels(st: Settings) -> list[str]:
    return [*st.strategies, *st.variants]


def _task_key(task: dict[str, Any], obj_key: str) -> str:
    return fingerprint(obj_key, task["strategy"], task["target_index"], task["seed"], task["budget"], task["kwargs"])


def stage_runs(st: Settings, obj_spec: dict[str, Any], work: Path, pool: Pool) -> list[dict[str, Any]]:
    """Every search run, one JSON line each in ``runs.jsonl`` (appended as runs finish; reused when resumed)."""
    path = work / "runs.jsonl"
    obj_key = fingerprint(obj_spec)
    done: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill
                continue
            done[row["key"]] = row
    tasks = run_tasks(st, obj_spec)
    for t in tasks:
        t["key"] = _task_key(t, obj_key)
    todo = [t for t in tasks if t["key"] not in done]
    # slow strategies first so the pool's last minutes are not one long run
    order = {"optuna-tpe": 0, "gp": 1, "optuna-gp": 1}
    todo.sort(key=lambda t: (order.get(t["strategy"], 2), t["seed"], t["target_index"]))
    log.info("runs: %d done earlier, %d to run", len(tasks) - len(todo), len(todo))
    t0 = t_all = time.time()
    with path.open("a") as fh:
        for i, row in enumerate(pool.imap(_search_task, todo), start=1):
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            done[row["key"]] = row
            if i % 10 == 0 or i == len(todo):
                log.info("runs: %d / %d (%.0f s); last %s T%d seed %d: %.1f s", i, len(todo), time.time() - t_all,
                         row["strategy"], row["target_index"], row["seed"], row["wall_time_s"])
            _add_runs_wall(work, time.time() - t0)
            t0 = time.time()
    return [done[t["key"]] for t in tasks]


def _add_runs_wall(work: Path, seconds: float) -> None:
    """Wall time spent in the runs stage, summed over invocations (a resumed run adds to it)."""
    p = work / "runs_wall.json"
    prev = float(read_json(p)["seconds"]) if p.is_file() else 0.0
    atomic_write_json(p, {"seconds": prev + seconds})


def stage_optuna_gp_probe(st: Settings, obj_spec: dict[str, Any]) -> dict[str, Any]:
    """Time Optuna's GPSampler on one target and seed: is it affordable at this benchmark's size?"""
    if st.optuna_gp_probe_trials <= 0:
        return {"performed": False}
    _init_worker(obj_spec)
    row = _search_task({"strategy": "optuna-gp", "target_index": len(obj_spec["targets"]) // 2, "seed": 0,
                        "budget": st.optuna_gp_probe_trials, "kwargs": {}})
    per_trial = row["wall_time_s"] / row["n_evaluations"]
    needed = per_trial * st.budgets.get("gp", 300) * st.n_seeds * len(obj_spec["targets"])
    return {"performed": True, "trials": row["n_evaluations"], "wall_time_s": row["wall_time_s"],
            "seconds_per_trial": per_trial, "best_reward": row["best"]["reward"],
            "estimated_seconds_for_full_grid": needed, "trace": row["trace"]}


def stage_final_reference(st: Settings, ref: dict[str, Any], runs: list[dict[str, Any]],
                          pool: Pool) -> dict[str, Any]:
    """Hill-climb from the ``reference_top_k`` best distinct run results per target; keep the best of everything."""
    tasks = []
    for ti in range(len(ref["per_target"])):
        rows = sorted((r for r in runs if r["target_index"] == ti), key=lambda r: -r["best"]["reward"])
        seen: list[str] = []
        for r in rows:
            if r["best"]["arch"] not in seen:
                seen.append(r["best"]["arch"])
            if len(seen) >= st.reference_top_k:
                break
        tasks += [{"target_index": ti, "arch": a} for a in seen]
    climbs = list(pool.imap(_climb_task, tasks))
    out = []
    for ti, pre in enumerate(ref["per_target"]):
        mine = [c for c in climbs if c["target_index"] == ti]
        best_run = max((r["best"]["reward"] for r in runs if r["target_index"] == ti), default=-math.inf)
        cands = [(pre["reward"], pre["arch"], "long evolution + hill-climb")]
        cands += [(c["reward"], c["climbed"], "hill-climb from a benchmark run's best") for c in mine]
        reward, arch, source = max(cands, key=lambda c: c[0])
        n_beat = sum(r["best"]["reward"] > pre["reward"] + 1e-12 for r in runs if r["target_index"] == ti)
        out.append({"target_ms": pre["target_ms"], "reward": reward, "arch": arch, "source": source,
                    "pre_run_reward": pre["reward"], "best_run_reward": best_run,
                    "runs_beating_pre_run_reference": n_beat,
                    "pre_run_gap_to_final_pct": 100 * (reward - pre["reward"]) / abs(reward)})
    return {"per_target": out}


# --------------------------------------------------------------------------- analysis
def analyse(st: Settings, runs: list[dict[str, Any]], final: dict[str, Any],
            obj_spec: dict[str, Any]) -> dict[str, Any]:
    refs = [t["reward"] for t in final["per_target"]]
    rows, summary = [], []
    for r in runs:
        tr = BestSoFar.from_json(r["trace"])
        ref = refs[r["target_index"]]
        rows.append({
            "label": r.get("label", r["strategy"]), "strategy": r["strategy"], "kwargs": r["kwargs"],
            "target_index": r["target_index"],
            "target_ms": obj_spec["targets"][r["target_index"]]["target_ms"], "seed": r["seed"], "budget": r["budget"],
            "best_reward": r["best"]["reward"], "best_arch": r["best"]["arch"],
            "best_predicted_accuracy": r["best"]["predicted_accuracy"],
            "best_predicted_latency_ms": r["best"]["predicted_latency_ms"],
            "final_gap_pct": 100 * (ref - r["best"]["reward"]) / abs(ref),
            "evals_to_gap": {f"{p:g}": _fin(tr.evals_to_gap(ref, p)) for p in st.thresholds_pct},
            "gap_pct_after": {str(n): tr.gap_pct_after(n, ref) for n in st.gap_at},
            "wall_time_s": r["wall_time_s"], "n_evaluations": r["n_evaluations"],
        })
    for name in labels(st):
        for ti in range(len(obj_spec["targets"])):
            mine = [x for x in rows if x["label"] == name and x["target_index"] == ti]
            if not mine:
                continue
            cell: dict[str, Any] = {"strategy": name, "target_index": ti,
                                    "target_ms": obj_spec["targets"][ti]["target_ms"], "n_runs": len(mine),
                                    "budget": mine[0]["budget"]}
            for p in st.thresholds_pct:
                v = [math.inf if x["evals_to_gap"][f"{p:g}"] is None else x["evals_to_gap"][f"{p:g}"] for x in mine]
                lo, hi = bootstrap_median_ci(v, n_boot=st.n_boot, seed=st.seed)
                cell[f"evals_to_{p:g}pct"] = {"median": _fin(censored_median(v)), "ci95": [_fin(lo), _fin(hi)],
                                              "share_reached": float(np.mean(np.isfinite(v))),
                                              "censored_at_budget": int(np.sum(~np.isfinite(v)))}
            for n in st.gap_at:
                g = [x["gap_pct_after"][str(n)] for x in mine if x["gap_pct_after"][str(n)] is not None]
                cell[f"gap_pct_after_{n}"] = None if not g else {
                    "median": float(np.median(g)), "q25": float(np.percentile(g, 25)),
                    "q75": float(np.percentile(g, 75)), "n": len(g)}
            w = [x["wall_time_s"] for x in mine]
            cell["wall_time_s"] = {"median": float(np.median(w)), "min": float(min(w)), "max": float(max(w))}
            cell["final_gap_pct_median"] = float(np.median([x["final_gap_pct"] for x in mine]))
            summary.append(cell)
    return {"runs": rows, "summary": summary, "verdict": verdict(st, summary, len(obj_spec["targets"]))}


def verdict(st: Settings, summary: list[dict[str, Any]], n_targets: int) -> dict[str, Any]:
    """GP vs evolution on the tighter threshold. A censored evolution median (``> B``) counts as ``B``, so the
    target is met then only if GP's median is at most the target ratio times evolution's budget."""
    key = f"evals_to_{min(st.thresholds_pct):g}pct"
    per = []
    for ti in range(n_targets):
        cells = {c["strategy"]: c for c in summary if c["target_index"] == ti}
        if "gp" not in cells or "evolution" not in cells:
            continue
        g, e = cells["gp"][key]["median"], cells["evolution"][key]["median"]
        e_bound = float(cells["evolution"]["budget"]) if e is None else e
        ratio = None if g is None else g / e_bound
        per.append({"target_index": ti, "target_ms": cells["gp"]["target_ms"], "gp_median": g,
                    "gp_ci95": cells["gp"][key]["ci95"], "evolution_median": e,
                    "evolution_ci95": cells["evolution"][key]["ci95"],
                    "evolution_censored": e is None, "ratio": ratio,
                    "ratio_is_upper_bound": e is None and ratio is not None,
                    "met": ratio is not None and ratio <= TARGET_GP_VS_EVOLUTION})
    return {"criterion": f"GP's median evaluations to within {min(st.thresholds_pct):g} % <= "
                         f"{TARGET_GP_VS_EVOLUTION:.3g} x evolution's", "per_target": per,
            "met_all_targets": bool(per) and all(p["met"] for p in per)}


# --------------------------------------------------------------------------- stage: winners
def stage_winners(st: Settings, sn: dict[str, Any], lat: dict[str, Any], obj_spec: dict[str, Any],
                  analysed: dict[str, Any], work: Path) -> dict[str, Any]:
    from hwnas.pipeline import measure_on_table
    from latency_tables import MeasurementProtocol
    from latency_tables.table import LatencyTable

    net, data = _net_and_data(sn)
    space = net.space
    gp_rows = [r for r in analysed["runs"] if r["label"] == "gp"]
    archs: list[str] = list(dict.fromkeys(r["best_arch"] for r in gp_rows))
    cfgs = [space.parse(a) for a in archs]
    table = LatencyTable.load(lat["table"])
    pr = MeasurementProtocol.from_json(st.winners_protocol)
    ms = measure_on_table(cfgs, table, net.backbone, protocol=pr)
    acc_fn, cache = _accuracy_fn(st, sn, net, data, work)
    try:
        measured_acc = acc_fn(cfgs)
    finally:
        cache.close()
    by_arch = {a: (m, float(acc)) for a, m, acc in zip(archs, ms, measured_acc, strict=True)}
    per_target = []
    for ti, t in enumerate(obj_spec["targets"]):
        mine = [r for r in gp_rows if r["target_index"] == ti]
        uniq = list(dict.fromkeys(r["best_arch"] for r in mine))
        rows = []
        for a in uniq:
            m, acc = by_arch[a]
            r0 = next(r for r in mine if r["best_arch"] == a)
            rows.append({"arch": a, "runs": sum(r["best_arch"] == a for r in mine),
                         "predicted_latency_ms": r0["best_predicted_latency_ms"],
                         "measured_latency_ms": m.latency_ms, "measured_p50_ms": m.p50_ms,
                         "measured_iqr_ms": m.iqr_ms, "measured_runs": m.runs,
                         "meets_target_measured": m.latency_ms <= t["target_ms"],
                         "predicted_accuracy": r0["best_predicted_accuracy"], "measured_accuracy": acc})
        w = np.asarray([r["runs"] for r in rows], dtype=np.float64)
        meets = np.asarray([r["meets_target_measured"] for r in rows], dtype=np.float64)
        pa = np.asarray([r["predicted_accuracy"] for r in rows])
        ma = np.asarray([r["measured_accuracy"] for r in rows])
        lat_m = np.asarray([r["measured_latency_ms"] for r in rows])
        per_target.append({
            "target_ms": t["target_ms"], "search_target_ms": t["search_target_ms"], "n_runs": len(mine),
            "n_distinct": len(rows), "share_runs_meeting_target": float((w * meets).sum() / w.sum()),
            "share_distinct_meeting_target": float(meets.mean()),
            "measured_latency_ms": {"median": float(np.median(lat_m)), "min": float(lat_m.min()),
                                    "max": float(lat_m.max())},
            "predicted_accuracy_mean": float(pa.mean()), "measured_accuracy_mean": float(ma.mean()),
            "accuracy_error_mean": float((ma - pa).mean()),
            "accuracy_rmse": float(np.sqrt(((ma - pa) ** 2).mean())), "winners": rows,
        })
    env = dict(ms[0].environment) if ms else {}
    share = float(np.mean([r["meets_target_measured"] for t in per_target for r in t["winners"]
                           for _ in range(r["runs"])]))
    return {"per_target": per_target, "share_runs_meeting_target": share,
            "goal": TARGET_WINNERS_MEET, "goal_met": share >= TARGET_WINNERS_MEET,
            "measurement": {"environment": env, "protocol": pr.to_json(),
                            "scale": "ratio to the reference probe timed in the same rounds x the probe's latency "
                                     "in the table (hwnas.pipeline.measure_on_table)"},
            "accuracy_metric": f"val top-1 after BN recalibration on {st.bn_images} train images"}


# --------------------------------------------------------------------------- report
def environment() -> dict[str, Any]:
    import optuna
    import scipy
    import torch

    from latency_tables.environment import machine_environment

    env = machine_environment()
    env.update({"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
                "torch": torch.__version__, "optuna": optuna.__version__, "load_1_5_15_now": list(os.getloadavg())})
    return env


def _fmt_n(x: float | None, budget: int) -> str:
    """An evaluation count: ``>B`` when censored, one decimal only for a median between two runs."""
    if x is None:
        return f">{budget:,}"
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def _fmt_evals(c: dict[str, Any], budget: int) -> str:
    med, (lo, hi) = c["median"], c["ci95"]
    return f"{_fmt_n(med, budget)} [{_fmt_n(lo, budget)}–{_fmt_n(hi, budget)}] ({c['share_reached']:.0%})"


def markdown(res: dict[str, Any]) -> str:
    st = res["settings"]
    lat = res["latency"]
    acc = res["accuracy_predictor"]
    obj = res["objective"]
    env = res["environment"]
    ths = st["thresholds_pct"]
    cond = res["conditions"]
    load = cond["load"]
    edges = [x for v in load.get("load1_at_stage_start_end", {}).values() for x in v]
    load_text = (f"1-min load average {load['load1_min']:.1f}–{load['load1_max']:.1f} (median "
                 f"{load['load1_median']:.1f}, {load['samples']} samples)" if load.get("samples", 0) >= 4
                 else f"1-min load average {min(edges):.1f}–{max(edges):.1f} at the stages' starts and ends"
                 if edges else "load not sampled")
    stage_min = {k: v["wall_s"] / 60 for k, v in cond["stages"].items()}
    stage_min["runs"] = cond["runs_wall_s"] / 60
    lines = [
        f"# Search benchmark{' (quick)' if st['quick'] else ''}",
        "",
        f"Machine: {env.get('cpu_model')} ({env.get('cpu_cores_logical')} logical cores, shared with other jobs; "
        f"{load_text}), Python {env.get('python')}, numpy {env.get('numpy')}, optuna {env.get('optuna')}. "
        f"Total wall time {cond['total_wall_s'] / 60:.1f} min with {cond['workers']} worker process(es) for the "
        "search runs, 1 torch / BLAS thread each; per stage (min): "
        + ", ".join(f"{k} {v:.1f}" for k, v in stage_min.items()) + ".",
        *[f"\nNote: {n}" for n in res.get("notes", [])],
        "",
        (f"**Objective.** Accuracy = MLP predictor ({'×'.join(map(str, acc['hidden']))}, {acc['encoding']}) fitted on "
        f"{acc['n_train']} of {acc['n_measured']} measured subnets ({acc['metric']}; measured range "
        f"{acc['measured_top1']['min']:.3f}–{acc['measured_top1']['max']:.3f}); held-out ({acc['n_test']}): RMSE "
        f"{acc['rmse']:.4f}, Kendall τ {acc['kendall_tau']:.3f}. Latency = LUT + fitted correction on "
        f"{lat['cpu_model']} ({lat['backend']} {lat['backend_version']}, {lat['precision']}, {lat['threads']} thread, "
        f"batch {lat['batch_size']}, {lat['warmups']} warm-ups, {lat['runs']} timed runs per layer); corrected "
        f"prediction within ±10 % of the end-to-end measurement for "
        f"{lat['validation']['corrected']['within_10pct']:.0%} of {lat['validation']['n_test']} held-out subnets. "
        f"Reward: {obj['reward']}. Targets at {', '.join(f'{f:.0%}' for f in obj['target_fractions'])} of the "
        f"predicted latency range {obj['latency_range_ms'][0]:.3f}–{obj['latency_range_ms'][1]:.3f} ms; the search "
        f"constraint is T / {obj['margin']['divide_by']:.3f} (the {obj['margin']['quantile']:.0%} quantile of "
        f"measured / predicted latency on the validation subnets) so that winners meet T when measured."),
        "",
        (f"**Reference** per target: the best reward of {st['reference_runs']} evolution runs of "
        f"{st['reference_budget']:,} evaluations, hill-climbed (single-decision moves until no neighbour improves), "
        f"and of hill-climbs from the {st['reference_top_k']} best distinct results of the runs below."),
        "",
        "| target ms | search constraint ms | reference reward | source | runs beating the pre-run reference |",
        "|---|---|---|---|---|",
    ]
    for t, ft in zip(obj["targets"], res["reference"]["per_target"], strict=True):
        lines.append(f"| {t['target_ms']:.4f} | {t['search_target_ms']:.4f} | {ft['reward']:.5f} | {ft['source']} | "
                     f"{ft['runs_beating_pre_run_reference']} |")
    lines += [
        "",
        (f"**Evaluations to come within {ths[0]:g} % / {ths[1]:g} % of the reference**: median over "
        f"{st['n_seeds']} seeds [bootstrap 95 % interval] (share of runs that got there within the budget). Runs that "
        "never got there are censored at the budget and count as larger than every observed value, so the median is "
        "exact while more than half reached it, and `>B` otherwise. Gaps in % of the reference reward (median over "
        "seeds); wall time per run."),
        "",
        f"| strategy | target ms | runs | budget | evals to {ths[0]:g} % | evals to {ths[1]:g} % | "
        + " | ".join(f"gap after {n}" for n in st["gap_at"]) + " | s / run |",
        "|---|---|---|---|---|---|" + "---|" * len(st["gap_at"]) + "---|",
    ]
    for c in res["summary"]:
        gaps = " | ".join("–" if c[f"gap_pct_after_{n}"] is None else f"{c[f'gap_pct_after_{n}']['median']:.3f} %"
                          for n in st["gap_at"])
        lines.append(f"| {c['strategy']} | {c['target_ms']:.4f} | {c['n_runs']} | {c['budget']:,} | "
                     f"{_fmt_evals(c[f'evals_to_{ths[0]:g}pct'], c['budget'])} | "
                     f"{_fmt_evals(c[f'evals_to_{ths[1]:g}pct'], c['budget'])} | {gaps} | "
                     f"{c['wall_time_s']['median']:.1f} |")
    for label, var in st["variants"].items():
        lines.append(f"\n`{label}`: `{var['strategy']}` with {var.get('kwargs', {})} (an ablation, fewer seeds).")
    v = res["verdict"]
    lines += ["", f"**Target** ({v['criterion']}): " + ("met" if v["met_all_targets"] else "MISSED") + "."]
    evo_budget = st["budgets"]["evolution"]
    for p in v["per_target"]:
        ratio = "n/a" if p["ratio"] is None else f"{'<' if p['ratio_is_upper_bound'] else ''}{p['ratio']:.3f}"
        g = _fmt_n(p["gp_median"], st["budgets"]["gp"])
        e = _fmt_n(p["evolution_median"], evo_budget)
        lines.append(f"- T = {p['target_ms']:.4f} ms: GP {g} vs evolution {e} evaluations (ratio {ratio}) — "
                     f"{'met' if p['met'] else 'missed'}")
    probe = res.get("optuna_gp_probe", {})
    if probe.get("performed"):
        lines += ["", (f"`optuna-gp` (Optuna's GPSampler) is not in the grid: {probe['seconds_per_trial']:.2f} s per "
                      f"trial over its first {probe['trials']} trials (one run, best reward "
                      f"{probe['best_reward']:.5f}; the cost per trial grows with the number of trials), "
                      f"i.e. about {probe['estimated_seconds_for_full_grid'] / 3600:.1f} h of one core for "
                      f"{st['n_seeds']} seeds × {len(res['objective']['targets'])} targets × {st['budgets']['gp']} "
                      "trials.")]
    w = res.get("winners")
    if w:
        env_w = w["measurement"]["environment"]
        proto = w["measurement"]["protocol"]
        lines += [
            "", ("**Winners** (best of each GP run) measured end to end on "
            f"{env_w.get('cpu_model', '?')}, {env_w.get('backend', '?')} {env_w.get('backend_version', '')}, "
            f"{env_w.get('precision', 'fp32')}, {env_w.get('threads', 1)} thread, batch 1; protocol "
            f"{proto['processes']} processes × {proto['rounds']} rounds × {proto['runs_per_round']} runs "
            f"({proto['warmups']} warm-ups per round, {proto['load_warmups']} on load); estimate on the table's scale "
            "(reference probe). Predicted and measured numbers are in separate columns."),
            "",
            ("| target ms | distinct winners | measured ms median (min–max) | runs meeting T (measured) | "
            "predicted acc (mean) | measured val acc (mean) | measured − predicted (RMSE) |"),
            "|---|---|---|---|---|---|---|",
        ]
        for t in w["per_target"]:
            m = t["measured_latency_ms"]
            lines.append(f"| {t['target_ms']:.4f} | {t['n_distinct']} | {m['median']:.4f} ({m['min']:.4f}–"
                         f"{m['max']:.4f}) | {t['share_runs_meeting_target']:.0%} | "
                         f"{t['predicted_accuracy_mean']:.4f} | {t['measured_accuracy_mean']:.4f} | "
                         f"{t['accuracy_error_mean']:+.4f} ({t['accuracy_rmse']:.4f}) |")
        lines += ["", (f"Share of GP runs whose winner meets its target when measured: "
                      f"{w['share_runs_meeting_target']:.1%} (goal {w['goal']:.0%}: "
                      f"{'met' if w['goal_met'] else 'MISSED'}).")]
    lines += ["", f"![convergence]({res['plot']})", ""]
    return "\n".join(lines)


def plot(res: dict[str, Any], runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from nas.plots import save_figure

    targets = res["objective"]["targets"]
    refs = [t["reward"] for t in res["reference"]["per_target"]]
    fig, axes = plt.subplots(1, len(targets), figsize=(4.6 * len(targets), 3.8), squeeze=False)
    for ti, ax in enumerate(axes[0]):
        for name in [*res["settings"]["strategies"], *res["settings"]["variants"]]:
            mine = [BestSoFar.from_json(r["trace"]) for r in runs
                    if r.get("label", r["strategy"]) == name and r["target_index"] == ti]
            if not mine:
                continue
            budget = min(t.budget for t in mine)
            ns = np.unique(np.geomspace(1, budget, 200).astype(int))
            gaps = np.asarray([[t.gap_pct_after(int(n), refs[ti]) for n in ns] for t in mine], dtype=np.float64)
            ax.plot(ns, np.maximum(np.median(gaps, axis=0), 1e-3), label=f"{name} ({len(mine)})")
        for th in res["settings"]["thresholds_pct"]:
            ax.axhline(th, color="grey", lw=0.7, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("evaluations")
        ax.set_title(f"T = {targets[ti]['target_ms']:.3f} ms")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("median gap to reference (%), floor 1e-3")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle("predicted-accuracy objective, hard MnasNet reward")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------- main
def run(st: Settings, *, work: Path, out: Path, stem: str, run_dir: Path | None = None, workers: int = 2,
        notes: Sequence[str] = ()) -> dict[str, Any]:
    """All stages; returns the result written to ``out/<stem>.json``."""
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    with LoadSampler(work / "load.jsonl", period_s=15.0) as sampler:
        res = _run(st, work=work, out=out, stem=stem, run_dir=run_dir, workers=workers, notes=notes)
    res["conditions"]["load"] = {**sampler.summary(), **res["conditions"]["load"]}
    res = portable_paths(res, work=work, results=out)
    atomic_write_json(out / f"{stem}.json", res)
    atomic_write_text(out / f"{stem}.md", markdown(res))
    return res


def _run(st: Settings, *, work: Path, out: Path, stem: str, run_dir: Path | None, workers: int,
         notes: Sequence[str]) -> dict[str, Any]:
    t_start = time.time()
    stages = Stages(work / "state.json")
    sn = stages.run("supernet", {"train": st.train, "run": str(run_dir)}, lambda: stage_supernet(st, work, run_dir))
    acc = stages.run("accuracy", {"sn": sn["sha256"], "n": st.n_subnets, "bn": st.bn_images, "seed": st.seed,
                                  "hidden": st.predictor_hidden, "epochs": st.predictor_epochs,
                                  "test": st.predictor_test_fraction}, lambda: stage_accuracy(st, sn, work))
    lat = stages.run("latency", {"sn": sn["sha256"], "backend": st.backend, "protocol": st.lut_protocol,
                                 "fit": st.latency_fit, "check": st.latency_check, "run": str(run_dir)},
                     lambda: stage_latency(st, sn, work, run_dir))
    obj_spec = stages.run("objective", {"acc": acc, "lat": lat, "fractions": st.target_fractions,
                                        "q": st.margin_quantile, "v": 1},
                          lambda: stage_objective(st, sn, acc, lat, work))
    with Pool(obj_spec, workers) as pool:
        ref = stages.run("reference", {"obj": obj_spec, "n": st.reference_runs, "b": st.reference_budget},
                         lambda: stage_reference(st, obj_spec, pool))
        runs = stage_runs(st, obj_spec, work, pool)
        final = stages.run("final_reference", {"ref": ref, "runs": fingerprint([r["key"] for r in runs]),
                                               "k": st.reference_top_k},
                           lambda: stage_final_reference(st, ref, runs, pool))
    probe = stages.run("optuna_gp_probe", {"obj": obj_spec, "trials": st.optuna_gp_probe_trials,
                                           "budget": st.budgets.get("gp"), "seeds": st.n_seeds},
                       lambda: stage_optuna_gp_probe(st, obj_spec))
    analysed = analyse(st, runs, final, obj_spec)
    winners = stages.run("winners", {"final": final, "gp": [r["best_arch"] for r in analysed["runs"]
                                                              if r["label"] == "gp"],
                                     "protocol": st.winners_protocol},
                         lambda: stage_winners(st, sn, lat, obj_spec, analysed, work))
    lat_pub = {k: v for k, v in lat.items() if k != "ratio_samples"}
    res: dict[str, Any] = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "settings": st.to_json(),
        "environment": environment(),
        "conditions": {
            "workers": workers, "torch_threads": 1, "blas_threads": 1, "nice": os.nice(0),
            "total_wall_s": sum(s["wall_s"] for s in stages.steps.values()) + _runs_wall(work),
            "runs_wall_s": _runs_wall(work),
            "this_invocation_wall_s": round(time.time() - t_start, 1),
            "load": {"load1_at_stage_start_end": {k: [round(v["load_1_5_15_start"][0], 2),
                                                       round(v["load_1_5_15_end"][0], 2)]
                                                   for k, v in stages.steps.items()}},
            "stages": stages.timing(),
            "note": "shared 2-core VM: other engineers' jobs ran during the benchmark; wall times include that load",
        },
        "supernet": sn, "accuracy_predictor": acc, "latency": lat_pub,
        "objective": {k: v for k, v in obj_spec.items() if k not in ("space",)},
        "reference": final, "reference_runs": ref, "optuna_gp_probe": {k: v for k, v in probe.items() if k != "trace"},
        **analysed,
        "winners": winners,
        "plot": f"{stem}-convergence.png",
        "notes": list(notes),
    }
    plot(res, runs, out / f"{stem}-convergence.png")
    return res


def _runs_wall(work: Path) -> float:
    p = work / "runs_wall.json"
    return float(read_json(p)["seconds"]) if p.is_file() else 0.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="every stage tiny (writes <out>/search.quick.*)")
    ap.add_argument("--run", type=Path, default=None, help="a 'hwnas demo' output folder: reuse its supernet "
                                                            "(and its LUT when it was measured on this machine)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, default=None,
                    help="scratch folder (default <out>/.search-work[-quick]; gitignored)")
    ap.add_argument("--workers", type=int, default=2, help="processes for the search runs (default 2)")
    ap.add_argument("--seeds", type=int, default=None, help="override the number of seeds")
    ap.add_argument("--backend", default=None, help="LUT backend (default onnxruntime; 'fake' for tests)")
    ap.add_argument("--note", action="append", default=[],
                    help="a remark to print with the results (repeatable), e.g. the machine's load during the run")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    st = Settings.preset(quick=a.quick)
    if a.seeds is not None:
        st = replace(st, n_seeds=a.seeds)
    if a.backend is not None:
        st = replace(st, backend=a.backend)
    stem = "search.quick" if a.quick else "search"
    work = a.work or a.out / (".search-work-quick" if a.quick else ".search-work")
    res = run(st, work=work, out=a.out, stem=stem, run_dir=a.run, workers=max(1, a.workers), notes=a.note)
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
