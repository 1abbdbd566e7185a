"""Side-by-side measurement of compressed variants of one subnet, and which of them pay their way in a bundle.

`compare_compression` exports every variant (fp32, int8, structurally pruned, pruned + int8, magnitude-pruned,
Deep Compression...) for every backend with the backends of `supernet.quantize` (one place opens and runs a model
per backend), then measures accuracy on held-out images and batch-1 latency in interleaved rounds: every round runs
every (variant, backend) once in a seeded shuffled order, so load drift on a shared machine hits all of them alike.
``speed_vs_baseline`` is the median over rounds of (baseline time / variant time) in the same round, the baseline
being the unpruned fp32 variant on the same backend (> 1 = faster).

Every model is exported with BN folded into its convs (exact in eval mode), so no variant gains or loses speed by
how a converter treats BN. Sizes: ``file_bytes`` is the runtime file (ONNX / TFLite) that was timed; ``size_bytes`` is what the variant costs
to store or ship: the runtime file, or for Deep Compression the compressed artifact (which `supernet.compress.
load_compressed` turns back into the runtime model; the runtimes here execute its weights dense).

Simulated variants (binarized weights) have top-1 only: no runtime here executes them, so latency and sizes are
None and their labels end in ``(simulated)``.

`offered_variants` keeps a compressed variant for the agent's bundle only if no other variant of the same backend
with equal accuracy (within ``acc_tol_pts``) is at least as fast (within ``latency_tol``) *and* no larger: a pruned
variant that is neither faster nor smaller than an equally accurate one is dropped, with the reason recorded
(Pareto dominance on accuracy, latency and size; a variant that is faster but larger than an equally accurate
one is kept, since the agent picks by latency).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from supernet.data import DataSplits
    from supernet.quantize import QuantConfig

__all__ = [
    "BASELINE_METHODS",
    "CompressionVariant",
    "SimulatedCompression",
    "bundle_name",
    "compare_compression",
    "offered_variants",
    "variants_file_entries",
]

log = logging.getLogger(__name__)
BASELINE_METHODS = ("fp32", "int8")  # the precision variants a bundle has without compression: always offered


@dataclass(frozen=True, kw_only=True)
class CompressionVariant:
    """One deployable variant of a subnet.

    Attributes:
        method: label (``fp32``, ``int8``, ``pruned``, ``pruned+int8``, ``sparse-70``, ``deep-compression``...).
        model: the torch network the runtime file is exported from (eval mode; BN-folded or not).
        arch: ``str`` of its architecture (`ArchConfig`, or `supernet.prune.PrunedArch` when pruned).
        precision: ``fp32`` or ``int8`` (int8: PTQ with ``int8_config`` at export).
        artifact: a file whose size is the variant's stored size instead of the runtime file's (Deep Compression).
        backends: measure on these of the comparison's backends only (None: all of them).
    """

    method: str
    model: nn.Module
    arch: str
    precision: str = "fp32"
    artifact: Path | None = None
    int8_config: QuantConfig | None = None
    backends: tuple[str, ...] | None = None
    notes: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "int8"):
            raise ValueError(f"CompressionVariant {self.method!r}: precision {self.precision!r} is not fp32 or int8")


@dataclass(frozen=True, kw_only=True)
class SimulatedCompression:
    """A torch-only variant (e.g. binarized weights): accuracy only, labelled simulated."""

    method: str
    model: nn.Module
    notes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.method if self.method.endswith("(simulated)") else f"{self.method} (simulated)"


def bundle_name(arch: str, precision: str, method: str) -> str:
    """Variant name in a bundle: device_agents' ``f"{arch}@{precision}"``, with ``+<method>`` for compressed ones."""
    return f"{arch}@{precision}" if method in BASELINE_METHODS else f"{arch}@{precision}+{method}"


def _folded(model: nn.Module) -> nn.Module:
    from supernet.qat import fold_batchnorm

    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return fold_batchnorm(model) if has_bn else model.eval()


def _quartiles(values: np.ndarray) -> tuple[float, float, float]:
    q25, q50, q75 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return float(q25), float(q50), float(q75)


def compare_compression(
    variants: Sequence[CompressionVariant],
    data: DataSplits,
    *,
    backends: Sequence[str] = ("onnxruntime",),
    out_dir: str | os.PathLike[str],
    resolution: int,
    split: str = "test",
    max_eval_images: int | None = None,
    warmup: int = 10,
    runs: int = 50,
    threads: int = 1,
    simulated: Sequence[SimulatedCompression] = (),
    baseline: str = "fp32",
    seed: int = 0,
) -> dict[str, Any]:
    """Export and measure ``variants`` on ``backends`` (module docstring); rows plus protocol and environment.

    Files go to ``out_dir/<method>.<precision><suffix>``; ``baseline`` names the variant speeds are relative to.
    """
    from supernet.evaluate import calibration_batches
    from supernet.quantize import QuantConfig, get_target, machine_state, split_arrays
    from supernet.runtime import time_shuffled_runs

    methods = [v.method for v in variants]
    if len(set(methods)) != len(methods):
        raise ValueError(f"compare_compression: duplicate methods {methods}")
    if baseline not in methods:
        raise ValueError(f"compare_compression: the baseline {baseline!r} is not among the variants {methods}")
    if warmup < 0 or runs < 1:
        raise ValueError(f"latency protocol: expected warmup >= 0 and runs >= 1, got {warmup} and {runs}")
    targets = {b: get_target(b) for b in backends}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    env_start = machine_state()
    calib: list[np.ndarray] | None = None
    paths: dict[tuple[str, str], Path] = {}
    # every variant is exported BN-folded: Deep Compression and magnitude pruning work on folded networks, and a
    # converter that keeps BN as ops (LiteRT's does, partly) would otherwise make folding look like a speed-up
    folded = {v.method: _folded(v.model) for v in variants}
    with tempfile.TemporaryDirectory(prefix="hwnas-compress-compare-") as tmp:
        for v in variants:
            done: dict[str, Path] = {}  # suffix -> file (tflite and tflite-builtin run the same file)
            for b, t in targets.items():
                if v.backends is not None and b not in v.backends:
                    continue
                if t.suffix in done:
                    paths[(v.method, b)] = done[t.suffix]
                    continue
                safe = v.method.replace("+", "-plus-").replace("/", "-")
                fp32 = t.export_fp32(folded[v.method], Path(tmp) / f"{safe}-{b}{t.suffix}")
                cfg = (v.int8_config or QuantConfig(precision="int8")).replace(precision=v.precision)
                if v.precision == "int8" and calib is None:
                    calib = [x.numpy() for x in calibration_batches(data, n_images=cfg.calib_images,
                                                                     resolution=resolution, seed=cfg.seed)]
                path = t.lower(fp32, out / f"{safe}.{v.precision}{t.suffix}", config=cfg,
                               calib_batches=calib if v.precision == "int8" else None)
                done[t.suffix] = paths[(v.method, b)] = path

    xs, ys = split_arrays(data, split=split, resolution=resolution, max_images=max_eval_images)
    keys = [(v, b) for v in variants for b in backends if (v.method, b) in paths]
    runners = [targets[b].runner(paths[(v.method, b)], threads=threads) for v, b in keys]
    logits = [r(xs) for r in runners]
    feeds = [r.prepare(xs[:1]) for r in runners]
    times_ns = time_shuffled_runs(runners, feeds, runs=runs, warmup=warmup, seed=seed)
    times_ms = times_ns / 1e6
    base_idx = {b: keys.index(next(k for k in keys if k[0].method == baseline and k[1] == b)) for b in backends}

    rows: list[dict[str, Any]] = []
    for i, (v, b) in enumerate(keys):
        ref = logits[base_idx[b]]
        q25, q50, q75 = _quartiles(times_ms[i])
        s25, s50, s75 = _quartiles(times_ms[base_idx[b]] / times_ms[i])
        p = paths[(v.method, b)]
        rows.append({
            "method": v.method, "backend": b, "precision": v.precision, "arch": v.arch, "simulated": False,
            "name": bundle_name(v.arch, v.precision, v.method), "path": str(p),
            "top1": float((logits[i].argmax(1) == ys).mean()),
            "top1_agreement_baseline": float((logits[i].argmax(1) == ref.argmax(1)).mean()),
            "file_bytes": p.stat().st_size,
            "size_bytes": v.artifact.stat().st_size if v.artifact is not None else p.stat().st_size,
            "artifact": str(v.artifact) if v.artifact is not None else None,
            "latency_p50_ms": q50, "latency_iqr_ms": q75 - q25,
            "speed_vs_baseline": {"median": s50, "q25": s25, "q75": s75},
            "notes": dict(v.notes),
        })
    with torch.no_grad():
        base_model = next(v.model for v in variants if v.method == baseline).eval()
        torch_ref = torch.cat([base_model(torch.from_numpy(xs[i : i + 256])) for i in range(0, len(xs), 256)])
        for sv in simulated:
            sv.model.eval()
            lg = torch.cat([sv.model(torch.from_numpy(xs[i : i + 256])) for i in range(0, len(xs), 256)]).numpy()
            rows.append({
                "method": sv.label, "backend": "torch (simulated)", "precision": "simulated", "arch": None,
                "simulated": True, "name": None, "path": None, "top1": float((lg.argmax(1) == ys).mean()),
                "top1_agreement_baseline": float((lg.argmax(1) == torch_ref.numpy().argmax(1)).mean()),
                "file_bytes": None, "size_bytes": None, "artifact": None, "latency_p50_ms": None,
                "latency_iqr_ms": None, "speed_vs_baseline": None, "notes": dict(sv.notes),
            })
    return {
        "dataset": data.name, "split": split, "eval_images": int(xs.shape[0]), "baseline": baseline,
        "protocol": {
            "threads": threads, "batch_size": 1, "warmup": warmup, "runs": runs,
            "order": "interleaved: each round runs every (variant, backend) once, order shuffled per round (seeded)",
            "timer": "time.perf_counter_ns around one invoke of an already prepared input",
            "statistic": "median and IQR of the per-run times; speed = median per-round ratio to the baseline",
            "backends": {name: t.environment() for name, t in targets.items()},
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "environment_start": env_start,
        "environment_end": machine_state(),
        "rows": rows,
    }


def offered_variants(
    rows: Sequence[Mapping[str, Any]], *, acc_tol_pts: float = 0.5, latency_tol: float = 0.03,
) -> tuple[list[Mapping[str, Any]], list[dict[str, Any]]]:
    """Split measured rows into (offered, dropped) for a bundle, per backend (module docstring).

    Baseline methods (`BASELINE_METHODS`) are always offered; simulated rows never are. A compressed row P is
    dropped when a baseline or an already offered row Q of its backend (candidates in order of accuracy, latency,
    size) has ``top1_Q >= top1_P - acc_tol_pts/100``, ``latency_Q <=
    latency_P * (1 + latency_tol)`` and ``size_Q <= size_P``; ``dropped`` entries name P, Q and the numbers.
    """
    if acc_tol_pts < 0 or latency_tol < 0:
        raise ValueError(f"offered_variants: tolerances must be >= 0, got {acc_tol_pts} and {latency_tol}")
    real = [r for r in rows if not r.get("simulated")]
    offered: list[Mapping[str, Any]] = [r for r in real if r["method"] in BASELINE_METHODS]
    dropped: list[dict[str, Any]] = []
    # most accurate, then fastest, then smallest first; a row is judged against the baselines and the rows
    # already offered, so two near-equal compressed rows never drop each other
    candidates = sorted((r for r in real if r["method"] not in BASELINE_METHODS),
                        key=lambda r: (-r["top1"], r["latency_p50_ms"], r["size_bytes"]))
    for p in candidates:
        by = next((q for q in offered if q["backend"] == p["backend"]
                   and q["top1"] >= p["top1"] - acc_tol_pts / 100.0
                   and q["latency_p50_ms"] <= p["latency_p50_ms"] * (1.0 + latency_tol)
                   and q["size_bytes"] <= p["size_bytes"]), None)
        if by is None:
            offered.append(p)
        else:
            dropped.append({
                "method": p["method"], "backend": p["backend"], "dominated_by": by["method"],
                "reason": (f"{by['method']} is as accurate ({100 * by['top1']:.1f} % vs {100 * p['top1']:.1f} %), "
                           f"as fast ({by['latency_p50_ms']:.3f} vs {p['latency_p50_ms']:.3f} ms) and no larger "
                           f"({by['size_bytes']:,} vs {p['size_bytes']:,} bytes)"),
            })
    return offered, dropped


def variants_file_entries(rows: Sequence[Mapping[str, Any]], *, backend: str) -> list[dict[str, Any]]:
    """``rows`` of one backend (e.g. the offered ones) as entries of a variants file for ``hwnas bundle
    --variants`` (`device_agents.variants.Variant` JSON): name by `bundle_name`, the measured median as
    ``predicted_latency_ms``, the runtime file as ``model_path`` and its size (what a bundle ships)."""
    out = []
    for r in rows:
        if r.get("simulated") or r["backend"] != backend:
            continue
        out.append({"schema_version": 1, "name": r["name"], "arch": r["arch"], "precision": r["precision"],
                    "predicted_latency_ms": float(r["latency_p50_ms"]), "accuracy": float(r["top1"]),
                    "size_bytes": int(r["file_bytes"]), "model_path": r["path"]})
    return out
