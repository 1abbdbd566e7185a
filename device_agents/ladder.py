"""Search -> bundle: a measured ladder of variants along a search's accuracy/latency front (`build_ladder`).

What the agent adapts over must be real: subnets and bit-widths this device runs, with accuracies that hold on
unseen data. The step, in order:

1. candidates: every subnet the search evaluated (``evaluations.json`` of ``hwnas search`` / the demo), with its
   search-time val top-1 and predicted latency; affordable = predicted latency <= ``max_latency_ms`` (default:
   the search's largest target);
2. front: the affordable candidates on the (predicted latency, val top-1) Pareto front are re-scored on the whole
   val split (the search may have scored trials on a prefix: `hwnas.pipeline.SearchJob.search_val_images`), the
   front is recomputed on those numbers, and ``n_subnets`` rungs are picked along it (`pick_ladder`): the
   fastest, the most accurate, and between them the front points nearest to log-evenly spaced latencies;
3. variants: every rung x ``precisions`` is exported (BN recalibrated; int8 calibrated on training images) and
   each file is timed here per request (`measure_requests`: the latency-table backend's timing loop, interleaved
   shuffled rounds, median and p99 per request) and scored on val (selection) and on the held-out split
   (``accuracy_split``, default test) by running the exported file itself;
4. dominance: a variant slower (measured median) and no more accurate (val) than another is dropped
   (`drop_dominated`) — measured, never assumed, so a precision that does not pay here falls out;
5. the kept variants go into a hash-checked bundle whose ``accuracy`` is the held-out top-1 and whose default
   latency column ``measured`` is the median measured here, with the per-request quantiles that drive the
   simulator (`Bundle.latency_quantiles`).

Nothing is selected on the held-out split: it is scored last and only reported (and served as the accuracy).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from supernet.io import atomic_write_json, read_json

from .bundle import MEASURED_TABLE, Bundle, build_bundle
from .variants import PRECISIONS, Variant

__all__ = [
    "Candidate",
    "LadderConfig",
    "LadderResult",
    "LadderVariant",
    "binomial_se",
    "build_ladder",
    "drop_dominated",
    "load_candidates",
    "measure_requests",
    "pareto",
    "pick_ladder",
]

Progress = Callable[[str], None]
N_QUANTILES = 101  # per-request latency quantiles kept per variant (0, 1, ..., 100 %)


def binomial_se(p: float, n: int) -> float:
    """Standard error of a top-1 estimated on ``n`` images: sqrt(p (1 - p) / n)."""
    return math.sqrt(max(p * (1.0 - p), 0.0) / n) if n > 0 else math.inf


@dataclass(frozen=True)
class Candidate:
    """A subnet the search evaluated: ``accuracy`` on the selection split, ``latency_ms`` predicted."""

    arch: str
    accuracy: float
    latency_ms: float


@dataclass(frozen=True, kw_only=True)
class LadderConfig:
    """How many rungs, which precisions, and the measurement protocol of `build_ladder`.

    ``images_per_request``: one request is this many images run one after the other through the batch-1 model
    (a burst of frames); per-request latency is their sum. ``rounds`` x ``requests_per_round`` requests are timed
    per variant, after ``warmup_requests`` untimed ones per round, variants in a fresh shuffled order each round.
    """

    n_subnets: int = 4
    precisions: tuple[str, ...] = ("fp32", "int8")
    max_latency_ms: float | None = None
    accuracy_split: str = "test"
    bn_images: int | None = None  # default: the search's
    seed: int = 0
    calib_images: int = 256
    images_per_request: int = 1
    rounds: int = 12
    requests_per_round: int = 25
    warmup_requests: int = 3
    threads: int = 1
    backend: str = "onnxruntime"

    def __post_init__(self) -> None:
        if self.n_subnets < 1:
            raise ValueError(f"n_subnets (--variants): expected >= 1, got {self.n_subnets}")
        if not self.precisions:
            raise ValueError("precisions: expected at least one of " + ", ".join(PRECISIONS))
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise ValueError(f"precisions {bad}: expected a subset of {list(PRECISIONS)}")
        if self.accuracy_split not in ("test",):
            raise ValueError(f"accuracy_split {self.accuracy_split!r}: the held-out split must be 'test' (val is the "
                             "search's selection split)")
        for name in ("images_per_request", "rounds", "requests_per_round", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.warmup_requests < 0:
            raise ValueError(f"warmup_requests: expected >= 0, got {self.warmup_requests}")


@dataclass(frozen=True, kw_only=True)
class LadderVariant:
    """One measured variant: held-out and selection accuracy, per-request latency (ms), and whether it was kept."""

    name: str
    arch: str
    precision: str
    predicted_latency_ms: float
    val_top1: float
    heldout_top1: float
    heldout_images: int
    val_images: int
    median_ms: float
    p99_ms: float
    quantiles_ms: tuple[float, ...]
    requests: int
    model_path: str
    size_bytes: int
    kept: bool = True
    dropped_because: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["quantiles_ms"] = list(self.quantiles_ms)
        return d


@dataclass(frozen=True)
class LadderResult:
    """What `build_ladder` did: the rungs, every variant measured (kept or dropped), the measurement and the
    bundle folder. ``to_json`` is written as ``ladder.json`` beside the bundle."""

    bundle_dir: Path
    rungs: tuple[Candidate, ...]
    front: tuple[Candidate, ...]
    variants: tuple[LadderVariant, ...]
    measurement: Mapping[str, Any]
    selection: Mapping[str, Any] = field(default_factory=dict)

    @property
    def kept(self) -> tuple[LadderVariant, ...]:
        return tuple(v for v in self.variants if v.kept)

    def to_json(self) -> dict[str, Any]:
        return {"bundle": str(self.bundle_dir), "rungs": [c.__dict__ for c in self.rungs],
                "front": [c.__dict__ for c in self.front], "variants": [v.to_json() for v in self.variants],
                "measurement": dict(self.measurement), "selection": dict(self.selection)}


# --------------------------------------------------------------------------- pure selection
def pareto(cands: Sequence[Candidate]) -> list[Candidate]:
    """Non-dominated candidates (lower latency, higher accuracy), by latency ascending; ties keep the first."""
    order = sorted(range(len(cands)), key=lambda i: (cands[i].latency_ms, -cands[i].accuracy, i))
    out: list[Candidate] = []
    best = -math.inf
    for i in order:
        if cands[i].accuracy > best:
            out.append(cands[i])
            best = cands[i].accuracy
    return out


def pick_ladder(front: Sequence[Candidate], n: int) -> list[Candidate]:
    """``n`` points of a front (sorted by latency) from the fastest to the most accurate: both ends, and between
    them the unused points nearest (in log latency) to log-evenly spaced targets. Fewer if the front is shorter."""
    pts = sorted(front, key=lambda c: c.latency_ms)
    if len(pts) <= n:
        return list(pts)
    if n == 1:
        return [pts[-1]]
    chosen = {0, len(pts) - 1}
    lo, hi = math.log(pts[0].latency_ms), math.log(pts[-1].latency_ms)
    for k in range(1, n - 1):
        target = lo + (hi - lo) * k / (n - 1)
        free = [i for i in range(len(pts)) if i not in chosen]
        chosen.add(min(free, key=lambda i: (abs(math.log(pts[i].latency_ms) - target), i)))
    return [pts[i] for i in sorted(chosen)]


def drop_dominated(variants: Sequence[LadderVariant], *, tolerance: float = 0.0) -> list[LadderVariant]:
    """Mark every variant that another beats on measured median latency (strictly faster) with at least its val
    (selection) accuracy minus ``tolerance`` as not kept, naming the one that beats it. Order is preserved.

    ``tolerance`` (a fraction, e.g. the val split's binomial standard error): a slower variant must be more
    accurate by more than the val noise to stay; `build_ladder` passes one standard error, so an int8 file that
    is 6x slower and 2 val images "more accurate" than its fp32 twin is dropped."""
    out = []
    for v in variants:
        beaters = [u for u in variants
                   if u is not v and u.median_ms < v.median_ms and u.val_top1 >= v.val_top1 - tolerance]
        if beaters:
            u = min(beaters, key=lambda b: b.median_ms)
            why = (f"slower ({v.median_ms:.4f} vs {u.median_ms:.4f} ms median) and no more accurate on val "
                   f"({v.val_top1:.4f} vs {u.val_top1:.4f}, tolerance {tolerance:.4f}) than {u.name}")
            out.append(_replace(v, kept=False, dropped_because=why))
        else:
            out.append(v)
    return out


def _replace(v: LadderVariant, **kw: Any) -> LadderVariant:
    import dataclasses

    return dataclasses.replace(v, **kw)


# --------------------------------------------------------------------------- inputs
def load_candidates(search_dir: str | os.PathLike[str]) -> tuple[list[Candidate], dict[str, Any]]:
    """Every distinct subnet in ``search_dir/evaluations.json`` (best search-time accuracy of repeats) and the
    search's ``search_config.json``."""
    d = Path(search_dir)
    for name in ("evaluations.json", "search_config.json"):
        if not (d / name).is_file():
            raise FileNotFoundError(f"search folder {str(d)!r}: no {name} (not the output of hwnas search, or the "
                                    "search did not finish)")
    rows = read_json(d / "evaluations.json", what="search evaluations")
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{d / 'evaluations.json'}: expected a non-empty list of evaluations")
    best: dict[str, Candidate] = {}
    for i, r in enumerate(rows):
        try:
            c = Candidate(arch=str(r["arch"]), accuracy=float(r["accuracy"]), latency_ms=float(r["latency_ms"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{d / 'evaluations.json'}, entry {i}: {e!r}; expected arch, accuracy, latency_ms") from None
        if math.isfinite(c.accuracy) and c.latency_ms > 0 and (c.arch not in best or c.accuracy > best[c.arch].accuracy):
            best[c.arch] = c
    return list(best.values()), dict(read_json(d / "search_config.json", what="search config"))


# --------------------------------------------------------------------------- measurement
def measure_requests(paths: Mapping[str, str | os.PathLike[str]], *, precisions: Mapping[str, str],
                     images_per_request: int = 1, rounds: int = 12, requests_per_round: int = 25,
                     warmup_requests: int = 3, threads: int = 1, backend: str = "onnxruntime", seed: int = 0,
                     progress: Progress | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per-request latencies (ms) of each model file, timed by the latency-table backend (`Backend.load` /
    `Backend.time_runs`, the loop the tables are measured with) in ``rounds`` interleaved rounds (a fresh
    shuffled order of the files each round, ``warmup_requests`` untimed requests per file and round).

    A request is ``images_per_request`` consecutive batch-1 runs; its latency is their sum. Returns
    name -> latencies and the protocol plus environment (backend, version, threads, CPU, load before and after).
    """
    from latency_tables.backends import create_backend
    from latency_tables.environment import machine_environment

    names = list(paths)
    backends = {p: create_backend(backend, threads=threads, precision=p) for p in set(precisions.values())}
    prepared = {}
    for n in names:
        be = backends[precisions[n]]
        shape = _input_shape(paths[n])
        prepared[n] = (be, be.load(Path(paths[n]), shape, key=n))
    rng = np.random.default_rng([seed, 0x1A7])
    times: dict[str, list[float]] = {n: [] for n in names}
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    k = images_per_request
    t_start = time.perf_counter()
    for r in range(rounds):
        for j in rng.permutation(len(names)):
            n = names[int(j)]
            be, prep = prepared[n]
            if warmup_requests:
                be.time_runs(prep, warmup_requests * k)
            runs_s = be.time_runs(prep, requests_per_round * k)
            times[n].extend((runs_s.reshape(requests_per_round, k).sum(axis=1) * 1e3).tolist())
        if progress:
            progress(f"latency round {r + 1}/{rounds}")
    env = machine_environment()
    info = {
        "statistic": "median and p99 over all timed requests",
        "protocol": (f"{rounds} interleaved rounds (shuffled order) x {requests_per_round} timed requests per variant "
                     f"after {warmup_requests} untimed, one request = {k} consecutive batch-1 runs, back to back, "
                     "in this process"),
        "rounds": rounds, "requests_per_round": requests_per_round, "warmup_requests": warmup_requests,
        "images_per_request": k, "threads": threads, "backend": backend,
        "backend_version": getattr(next(iter(backends.values())), "version", None),
        "device": env.get("device"), "cpu_model": env.get("cpu_model"),
        "loadavg_before": load_before,
        "loadavg_after": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "wall_s": time.perf_counter() - t_start,
    }
    return {n: np.asarray(t) for n, t in times.items()}, info


def _input_shape(path: str | os.PathLike[str]) -> tuple[int, ...]:
    from .bundle import model_input_shape

    return tuple(max(int(d), 1) for d in model_input_shape(path))


# --------------------------------------------------------------------------- the step
def build_ladder(search_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                 config: LadderConfig | None = None, net: Any = None, data: Any = None,
                 supernet_path: str | os.PathLike[str] | None = None, overwrite: bool = True,
                 progress: Progress | None = None) -> LadderResult:
    """Build the measured, hash-checked variant bundle of a search (see the module docstring).

    ``net`` / ``data``: the supernet and its splits (default: loaded from the search's ``supernet_path`` with the
    split it was trained with). Writes ``out_dir`` (the bundle), ``out_dir/../<name>-work/`` (exported files) and
    ``ladder.json`` inside the bundle folder's parent as ``<bundle name>.ladder.json``.
    """
    from supernet.evaluate import evaluate, recalibrated_subnet
    from supernet.quantize import QuantConfig, export_variant, get_target, runner_top1, split_arrays
    from supernet.space import ArchConfig

    cfg = config or LadderConfig()
    say = progress or (lambda m: None)
    cands, search_cfg = load_candidates(search_dir)
    if net is None or data is None:
        from supernet.train import load_supernet_and_data

        net, data = load_supernet_and_data(Path(supernet_path or search_cfg["supernet_path"]))
    space = net.space
    bn_images = int(cfg.bn_images if cfg.bn_images is not None else search_cfg.get("bn_images", 500))
    limit = cfg.max_latency_ms if cfg.max_latency_ms is not None else max(search_cfg.get("targets_ms") or [math.inf])
    affordable = [c for c in cands if c.latency_ms <= limit]
    if not affordable:
        raise ValueError(f"no evaluated subnet of {search_dir} is affordable (predicted latency <= {limit} ms)")

    # Re-score the search-time front on all of val, then take the front again on those numbers.
    first_front = pareto(affordable)
    say(f"re-scoring {len(first_front)} front subnets on all {len(data.val)} val images")
    rescored = [Candidate(arch=c.arch, latency_ms=c.latency_ms,
                          accuracy=evaluate(net, space.parse(c.arch), data, split="val", bn_images=bn_images,
                                            seed=cfg.seed).top1) for c in first_front]
    front = pareto(rescored)
    rungs = pick_ladder(front, cfg.n_subnets)

    out = Path(out_dir)
    work = out.parent / f"{out.name}-work"
    target = get_target(cfg.backend)
    rows: list[dict[str, Any]] = []
    for c in rungs:
        arch = space.parse(c.arch)
        assert isinstance(arch, ArchConfig)
        sub = recalibrated_subnet(net, arch, data, bn_images=bn_images, seed=cfg.seed)
        xv, yv = split_arrays(data, split="val", resolution=arch.resolution, max_images=None)
        xt, yt = split_arrays(data, split=cfg.accuracy_split, resolution=arch.resolution, max_images=None)
        for p in cfg.precisions:
            name = f"{arch}@{p}"
            say(f"export and score {name}")
            q = QuantConfig(precision=p, calib_images=cfg.calib_images, seed=cfg.seed)
            path = export_variant(sub, work / f"r{len(rows)}-{p}{target.suffix}", backend=cfg.backend, config=q,
                                  data=data)
            run = target.runner(path, threads=cfg.threads)
            rows.append({"name": name, "arch": str(arch), "precision": p, "path": str(path),
                         "predicted_latency_ms": c.latency_ms, "val_top1": runner_top1(run, xv, yv),
                         "heldout_top1": runner_top1(run, xt, yt), "val_images": len(yv), "heldout_images": len(yt),
                         "size_bytes": Path(path).stat().st_size})

    say(f"measuring {len(rows)} variants per request on this CPU")
    lat, measurement = measure_requests({r["name"]: r["path"] for r in rows},
                                        precisions={r["name"]: r["precision"] for r in rows},
                                        images_per_request=cfg.images_per_request, rounds=cfg.rounds,
                                        requests_per_round=cfg.requests_per_round,
                                        warmup_requests=cfg.warmup_requests, threads=cfg.threads,
                                        backend=cfg.backend, seed=cfg.seed, progress=say)
    qs = np.linspace(0, 100, N_QUANTILES)
    best_val = max(r["val_top1"] for r in rows)
    tolerance = binomial_se(best_val, len(data.val))
    variants = drop_dominated([
        LadderVariant(name=r["name"], arch=r["arch"], precision=r["precision"],
                      predicted_latency_ms=r["predicted_latency_ms"], val_top1=r["val_top1"],
                      heldout_top1=r["heldout_top1"], heldout_images=r["heldout_images"], val_images=r["val_images"],
                      median_ms=float(np.median(lat[r["name"]])), p99_ms=float(np.percentile(lat[r["name"]], 99)),
                      quantiles_ms=tuple(float(x) for x in np.percentile(lat[r["name"]], qs)),
                      requests=len(lat[r["name"]]), model_path=r["path"], size_bytes=r["size_bytes"])
        for r in rows
    ], tolerance=tolerance)
    kept = [v for v in variants if v.kept]
    bundle = build_bundle(
        [Variant(name=v.name, arch=v.arch, precision=v.precision, predicted_latency_ms=v.predicted_latency_ms,
                 accuracy=v.heldout_top1, size_bytes=v.size_bytes, model_path=v.model_path) for v in kept],
        out, overwrite=overwrite,
        measured={v.name: {"median_ms": v.median_ms, "p99_ms": v.p99_ms, "quantiles_ms": list(v.quantiles_ms),
                           "requests": v.requests} for v in kept},
        measurement=measurement,
        accuracy_info={v.name: {"split": cfg.accuracy_split, "images": v.heldout_images,
                                "selection_split": "val", "selection_top1": v.val_top1,
                                "selection_images": v.val_images} for v in kept},
        default_table=MEASURED_TABLE,
    )
    val_n = len(data.val)
    top = max(v.val_top1 for v in variants)
    selection = {"dominance_tolerance": tolerance, "val_images": val_n, "heldout_images": len(data.test), "search_candidates": len(cands),
                 "affordable": len(affordable), "max_latency_ms": limit,
                 "val_binomial_se_at_best": binomial_se(top, val_n),
                 "heldout_binomial_se_at_best": binomial_se(max(v.heldout_top1 for v in variants), len(data.test))}
    result = LadderResult(bundle_dir=bundle.root, rungs=tuple(rungs), front=tuple(front), variants=tuple(variants),
                          measurement=measurement, selection=selection)
    atomic_write_json(out.parent / f"{out.name}.ladder.json", result.to_json())
    return result


def load_ladder_bundle(bundle_dir: str | os.PathLike[str]) -> Bundle:
    """`load_bundle` for a bundle written by `build_ladder` (it has the ``measured`` latency column)."""
    from .bundle import BundleError, load_bundle

    b = load_bundle(bundle_dir)
    if MEASURED_TABLE not in b.tables:
        raise BundleError(f"bundle {bundle_dir}: no {MEASURED_TABLE!r} latency column; build it with "
                          "hwnas bundle --from-search")
    return b
