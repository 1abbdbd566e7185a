"""Issue 14 part of the bit-width benchmark: do the int8 lowerings pay? (called by ``bitwidth.py --lowering``).

Speed (random weights are fine for speed): ``ofa-mbv3`` w1.0 static subnets, uniform depth-4 expand-6 k3 / k5 /
k7 at 224 px, the smallest at 160 px and 5 random ones at 160-224 px (seeded). Per backend, 1 thread, batch 1,
every variant of a subnet timed in the same interleaved rounds (order shuffled per round, seeded), speed =
median over rounds of (fp32 round median / variant round median):

* onnxruntime: ``fp32``, ``int8-qdq`` (the earlier recipe: QDQ, int8 activations, graph as exported) and
  ``int8`` (the fast lowering: `supernet.onnx_lowering` rewrite, uint8 activations, QOperator, folded muls);
* LiteRT XNNPACK (``tflite``) and built-in kernels (``tflite-builtin``), same files: ``fp32``, ``int8-plain``
  (AEQ full-integer on the model as converted, HARD_SWISH) and ``int8`` (AEQ on `int8_friendly_module`).

Accuracy: the 5 MNIST subnets of ``bitwidth.py`` (trained demo supernet): onnxruntime fp32 / int8 / mixed
(`supernet.mixed.choose_mixed`, budget 0.5 points on val, chosen without tables) and LiteRT fp32 / int8 top-1
on the test split, with interleaved speed on both.

Profiles: onnxruntime's profiler per op type (convs split by depthwise / pointwise and kernel) for the largest
speed subnet, fp32 / int8-qdq / int8; LiteRT: the delegation report (partitions, undelegated ops) per file.

Resumable: each finished subnet is a JSON file under ``--work`` (reused when present); models are cached there.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from supernet.io import atomic_write_json, read_json

log = logging.getLogger("bench.bitwidth.lowering")
SPEED_SEED = 14
MIXED_BUDGET_PTS = 0.5
ORT_VARIANTS = ("fp32", "int8-qdq", "int8")
TFL_VARIANTS = ("fp32", "int8-plain", "int8")


def speed_subnets(n_random: int = 5) -> dict[str, Any]:
    from supernet.space import get_space

    space = get_space("ofa-mbv3")
    picks = {f"k{k}-d4-e6@224": space.uniform(depth=4, kernel=k, expand=6, resolution=224) for k in (3, 5, 7)}
    picks["smallest@160"] = space.smallest(160)
    rng = np.random.default_rng(SPEED_SEED)
    for i in range(n_random):
        res = int(rng.choice([r for r in space.resolutions if r >= 160]))
        picks[f"random{i}@{res}"] = space.canonical(space.sample(rng, resolution=res))
    return picks


def random_weight_subnet(cfg: Any, *, seed: int = 0) -> Any:
    """The static subnet with seeded random weights and non-trivial BN statistics (so folding is realistic)."""
    from supernet.layers import Backbone, build_static_model

    torch.manual_seed(seed)
    m = build_static_model(Backbone(), cfg).eval()
    g = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            mod.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            mod.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return m


def interleaved(sessions: dict[str, Any], x: np.ndarray, *, rounds: int, runs: int, warmup: int,
                seed: int = 0) -> dict[str, dict[str, float]]:
    """Per variant: median ms over rounds and the median per-round ratio fp32 / variant (first key = fp32)."""
    rng = random.Random(seed)
    names = list(sessions)
    for s in sessions.values():
        s.bind(x)
        s.time_runs(max(1, warmup))
    per: dict[str, list[float]] = {k: [] for k in names}
    for _ in range(rounds):
        order = names[:]
        rng.shuffle(order)
        for k in order:
            per[k].append(float(np.median(sessions[k].time_runs(runs))) * 1e3)
    ref = per[names[0]]
    return {k: {"p50_ms": float(np.median(v)), "iqr_ms": float(np.subtract(*np.percentile(v, [75, 25]))),
                "speed_vs_fp32": float(np.median([a / b for a, b in zip(ref, v)]))} for k, v in per.items()}


def _ort_files(model: Any, folder: Path, calib: list[np.ndarray]) -> dict[str, Path]:
    from supernet.quantize import OnnxRuntimeTarget, QuantConfig, quantize_onnx

    folder.mkdir(parents=True, exist_ok=True)
    fp32 = folder / "fp32.onnx"
    if not fp32.is_file():
        OnnxRuntimeTarget().export_fp32(model, fp32)
    out = {"fp32": fp32}
    for label, cfg in (("int8-qdq", QuantConfig(ort_format="qdq")), ("int8", QuantConfig())):
        p = folder / f"{label}.onnx"
        if not p.is_file():
            quantize_onnx(fp32, p, config=cfg, calib_batches=calib)
        out[label] = p
    return out


def _tfl_files(model: Any, folder: Path, calib: list[np.ndarray]) -> dict[str, Path]:
    from supernet.quantize import QuantConfig
    from supernet.quantize_tflite import TFLiteTarget, quantize_tflite

    folder.mkdir(parents=True, exist_ok=True)
    t = TFLiteTarget()
    out: dict[str, Path] = {}
    for form, label in (("plain", "int8-plain"), ("int8-friendly", "int8")):
        f32 = folder / f"fp32-{form}.tflite"
        if not f32.is_file():
            t.export_fp32(model, f32, form=form)
        if form == "plain":
            out["fp32"] = f32
        p = folder / f"{label}.tflite"
        if not p.is_file():
            quantize_tflite(f32, p, config=QuantConfig(), calib_batches=calib)
        out[label] = p
    return out


def _measure(files: dict[str, Path], backends: tuple[str, ...], x: np.ndarray, *, rounds: int, runs: int,
             warmup: int) -> dict[str, Any]:
    from supernet.quantize import machine_state
    from supernet.runtime import open_session

    res: dict[str, Any] = {}
    for be in backends:
        sessions = {k: open_session(p, backend=be, threads=1) for k, p in files.items()}
        ref = sessions["fp32"].run(x)
        start = machine_state()["loadavg_1_5_15"]
        timing = interleaved(sessions, x, rounds=rounds, runs=runs, warmup=warmup)
        res[be] = {k: {**timing[k], "size_bytes": files[k].stat().st_size,
                       "max_abs_diff_vs_fp32": float(np.abs(s.run(x) - ref).max()),
                       "delegation": (s.delegation().to_json() if s.delegation() is not None else None)}
                   for k, s in sessions.items()}
        res[be]["_load"] = {"start": start, "end": machine_state()["loadavg_1_5_15"]}
    return res


def speed_entry(name: str, cfg: Any, *, work: Path, group: str, rounds: int, runs: int, warmup: int
                ) -> dict[str, Any]:
    """Timings of one subnet for ``group`` ``onnxruntime`` or ``tflite`` (XNNPACK and built-in), cached per group."""
    from supernet.layers import Backbone, count_macs

    cache = work / "speed" / f"{name}.{group}.json"
    if cache.is_file() and read_json(cache).get("arch") == str(cfg):
        log.info("%s (%s): done in an earlier call", name, group)
        return read_json(cache)
    t0 = time.perf_counter()
    model = random_weight_subnet(cfg)
    rng = np.random.default_rng(0)
    # speed only: a few calibration inputs (AEQ's calibration of a 224 px subnet is slow)
    calib = [rng.standard_normal(model.input_shape).astype(np.float32) for _ in range(16 if group == "onnxruntime" else 4)]
    x = calib[0]
    entry: dict[str, Any] = {"name": name, "arch": str(cfg), "macs": count_macs(Backbone(), cfg),
                             "resolution": cfg.resolution}
    if group == "onnxruntime":
        entry["backends"] = _measure(_ort_files(model, work / "models" / name, calib), ("onnxruntime",), x,
                                     rounds=rounds, runs=runs, warmup=warmup)
    else:
        entry["backends"] = _measure(_tfl_files(model, work / "models" / name, calib), ("tflite", "tflite-builtin"),
                                     x, rounds=rounds, runs=runs, warmup=warmup)
    entry["wall_s"] = time.perf_counter() - t0
    atomic_write_json(cache, entry)
    return entry


def ort_profile(path: Path, x: np.ndarray, *, runs: int = 30) -> dict[str, float]:
    """ms per run by op type (convs as ``<op>[dw|pw|full]k<k>``) from onnxruntime's profiler, 1 thread."""
    import onnx
    import onnxruntime as ort

    tmp = path.with_suffix(".opt.onnx")
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.log_severity_level = 3
    o.optimized_model_filepath = str(tmp)
    ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])
    m = onnx.load(str(tmp))
    inits = {i.name: i for i in m.graph.initializer}
    kind: dict[str, str] = {}
    for n in m.graph.node:
        key = n.op_type
        if "Conv" in n.op_type:
            a = {at.name: onnx.helper.get_attribute_value(at) for at in n.attribute}
            w = inits.get(n.input[3 if n.op_type == "QLinearConv" else 1])
            k = int(w.dims[-1]) if w is not None else 0
            shape = "dw" if a.get("group", 1) > 1 else ("pw" if k == 1 else "full")
            key = f"{n.op_type}[{shape}k{k}]"
        kind[n.name] = key
    tmp.unlink(missing_ok=True)
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    o.log_severity_level = 3
    o.enable_profiling = True
    o.profile_file_prefix = str(path.with_suffix(""))
    s = ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: x}
    for _ in range(runs):
        s.run(None, feed)
    prof = Path(s.end_profiling())
    total: Counter[str] = Counter()
    for e in json.loads(prof.read_text()):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[kind.get(e["name"][: -len("_kernel_time")], e["args"].get("op_name", "?"))] += e["dur"]
    prof.unlink(missing_ok=True)
    return {k: round(v / runs / 1e3, 3) for k, v in total.most_common()}


def profiles(name: str, *, work: Path) -> dict[str, Any]:
    cache = work / "profiles.json"
    if cache.is_file():
        return read_json(cache)
    folder = work / "models" / name
    x = np.random.default_rng(0).standard_normal(
        tuple(int(d.dim_value) for d in __import__("onnx").load(str(folder / "fp32.onnx")).graph.input[0]
              .type.tensor_type.shape.dim)).astype(np.float32)
    out = {"subnet": name, "backend": "onnxruntime", "threads": 1, "unit": "ms per run (profiler, sum by op type)",
           "variants": {v: ort_profile(folder / f"{v}.onnx", x) for v in ORT_VARIANTS}}
    atomic_write_json(cache, out)
    return out


def accuracy_entry(name: str, cfg: Any, *, net: Any, data: Any, work: Path, bn_images: int, calib_images: int,
                   rounds: int, runs: int, warmup: int, tflite: bool) -> dict[str, Any]:
    from supernet.evaluate import recalibrated_subnet
    from supernet.mixed import choose_mixed
    from supernet.quantize import QuantConfig, export_variant, runner_top1, split_arrays
    from supernet.runtime import open_session

    cache = work / "accuracy" / f"{name}.json"
    if cache.is_file() and read_json(cache).get("arch") == str(cfg):
        return read_json(cache)
    t0 = time.perf_counter()
    sub = recalibrated_subnet(net, cfg, data, bn_images=bn_images, seed=0)
    folder = work / "mnist-models" / name
    folder.mkdir(parents=True, exist_ok=True)
    base = QuantConfig(calib_images=calib_images)
    policy = choose_mixed(sub, data, config=base, budget_pts=MIXED_BUDGET_PTS, split="val")
    files = {"onnxruntime": {
        "fp32": export_variant(sub, folder / "fp32.onnx", backend="onnxruntime", config=base.replace(precision="fp32"),
                               data=data),
        "int8": export_variant(sub, folder / "int8.onnx", backend="onnxruntime", config=base, data=data),
        "mixed": export_variant(sub, folder / "mixed.onnx", backend="onnxruntime",
                                config=base.replace(fp32_layers=policy.fp32_layers), data=data)}}
    if tflite:
        files["tflite"] = {
            "fp32": export_variant(sub, folder / "fp32.tflite", backend="tflite", config=base.replace(precision="fp32"),
                                   data=data),
            "int8": export_variant(sub, folder / "int8.tflite", backend="tflite", config=base, data=data)}
    xs, ys = split_arrays(data, split="test", resolution=cfg.resolution, max_images=None)
    entry: dict[str, Any] = {"name": name, "arch": str(cfg), "mixed_policy": policy.to_json(), "backends": {}}
    for fmt, fl in files.items():
        backends = ("onnxruntime",) if fmt == "onnxruntime" else ("tflite", "tflite-builtin")
        for be in backends:
            sessions = {k: open_session(p, backend=be, threads=1) for k, p in fl.items()}
            top1 = {k: runner_top1(s, xs, ys) for k, s in sessions.items()}
            preds = {k: s.run(xs).argmax(1) for k, s in sessions.items()}
            timing = interleaved(sessions, xs[:1], rounds=rounds, runs=runs, warmup=warmup)
            entry["backends"][be] = {k: {"top1": top1[k], "vs_fp32_pts": 100 * (top1[k] - top1["fp32"]),
                                         "agreement_fp32": float((preds[k] == preds["fp32"]).mean()), **timing[k]}
                                     for k in sessions}
    entry["test_images"] = len(ys)
    entry["wall_s"] = time.perf_counter() - t0
    atomic_write_json(cache, entry)
    return entry


def run_lowering(*, work: Path, out: Path, supernet_path: Path | None, tflite_subnets: int, rounds: int, runs: int,
                 warmup: int, accuracy: bool, n_random: int = 5) -> dict[str, Any]:
    from supernet.quantize import machine_state
    from supernet.runtime import backend_version

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results: dict[str, Any] = {
        "schema_version": 1, "machine_start": machine_state(),
        "versions": {b: backend_version(b) for b in ("onnxruntime", "tflite")},
        "protocol": {"threads": 1, "batch": 1, "rounds": rounds, "runs_per_round": runs, "warmup": warmup,
                     "statistic": "median over rounds of per-round (fp32 median / variant median); p50 = median of "
                                  "round medians", "weights": "random (seeded) for speed"},
        "speed": {}, "accuracy": {}}
    picks = speed_subnets(n_random)
    names = list(picks)

    def speed(batch: list[str], group: str) -> None:
        for name in batch:
            log.info("speed %s (%s): %s", name, group, picks[name])
            e = speed_entry(name, picks[name], work=work, group=group, rounds=rounds, runs=runs, warmup=warmup)
            prev = results["speed"].get(name, {**e, "backends": {}})
            prev["backends"].update(e["backends"])
            results["speed"][name] = prev
            atomic_write_json(out / "bitwidth-lowering.partial.json", results)

    # order = what the targets need first, so a partial run still answers them: onnxruntime on every subnet,
    # its profile, the MNIST accuracy, then LiteRT on the first `tflite_subnets` (k3, k5, k7, smallest)
    speed(names, "onnxruntime")
    results["profiles"] = profiles("k7-d4-e6@224", work=work)
    atomic_write_json(out / "bitwidth-lowering.partial.json", results)
    if accuracy and supernet_path is not None:
        from benchmarks.bitwidth import pick_subnets
        from hwnas.pipeline import load_supernet_and_data

        net, data = load_supernet_and_data(supernet_path)
        for name, cfg in pick_subnets(net.space, net.backbone, 5).items():
            log.info("accuracy %s: %s", name, cfg)
            results["accuracy"][name] = accuracy_entry(name, cfg, net=net, data=data, work=work, bn_images=500,
                                                       calib_images=256, rounds=rounds, runs=runs, warmup=warmup,
                                                       tflite=True)
            atomic_write_json(out / "bitwidth-lowering.partial.json", results)
    speed(names[:tflite_subnets], "tflite")
    results["machine_end"] = machine_state()
    results["summary"] = summarise(results)
    atomic_write_json(out / "bitwidth-lowering.json", results)
    (out / "bitwidth-lowering.partial.json").unlink(missing_ok=True)
    from supernet.io import atomic_write_text

    atomic_write_text(out / "bitwidth-lowering.md", render(results))
    return results


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Targets of issue 14 from the measured numbers."""
    s: dict[str, Any] = {"speed": {}, "targets": {}}
    k3 = [n for n in results["speed"] if n.startswith("k3")]
    for be in ("onnxruntime", "tflite", "tflite-builtin"):
        rows = {n: e["backends"][be] for n, e in results["speed"].items() if be in e["backends"]}
        if not rows:
            continue
        best = {n: max(r[v]["speed_vs_fp32"] for v in r if v not in ("fp32", "_load") and v != "int8-qdq"
                       and v != "int8-plain") for n, r in rows.items()}
        s["speed"][be] = best
        k3_best = [best[n] for n in k3 if n in best]
        s["targets"][f"{be}: best int8 >= 1.3x fp32 on k3"] = {
            "met": bool(k3_best) and min(k3_best) >= 1.3, "values": {n: best[n] for n in k3 if n in best}}
        # "never slower": the deployable best of {fp32, int8} per subnet; int8 slower -> fp32 is kept
        slower = {n: v for n, v in best.items() if v < 1.0}
        s["targets"][f"{be}: int8 never slower than fp32"] = {"met": not slower, "slower": slower}
    acc = results.get("accuracy") or {}
    if acc:
        for be in ("onnxruntime", "tflite", "tflite-builtin"):
            rows = {n: e["backends"][be] for n, e in acc.items() if be in e["backends"]}
            if not rows:
                continue
            int8 = {n: r["int8"]["vs_fp32_pts"] for n, r in rows.items()}
            s["targets"][f"{be}: int8 within 1 point of fp32 (MNIST)"] = {
                "met": min(int8.values()) >= -1.0, "values": int8}
            if all("mixed" in r for r in rows.values()):
                mixed = {n: r["mixed"]["vs_fp32_pts"] for n, r in rows.items()}
                s["targets"][f"{be}: mixed within 0.5 of fp32 (MNIST)"] = {
                    "met": min(mixed.values()) >= -0.5, "values": mixed}
    return s


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def render_partial(out: Path) -> None:
    """bitwidth-lowering.md from the partial JSON of an unfinished run (marked partial)."""
    from supernet.io import atomic_write_text
    from supernet.quantize import machine_state

    results = read_json(out / "bitwidth-lowering.partial.json")
    results.setdefault("machine_end", machine_state())
    results["summary"] = summarise(results)
    results["partial"] = True
    atomic_write_json(out / "bitwidth-lowering.json", results)
    atomic_write_text(out / "bitwidth-lowering.md", render(results))


def render(results: dict[str, Any]) -> str:
    ms, me = results["machine_start"], results.get("machine_end", {})
    p = results["protocol"]
    lines = ["# Bit-widths that pay (issue 14): int8 lowerings vs fp32", "",
             *([("**Partial run**: the deadline came before every subnet / backend was measured; what is listed "
                 "was measured, the rest is missing (not zero)."), ""] if results.get("partial") else []),
             (f"Device {ms['device']}, CPU {ms['cpu_model']} ({ms['cpu_count']} vCPUs, VNNI {ms['cpu_vnni']}), "
              f"onnxruntime {results['versions']['onnxruntime']}, LiteRT {results['versions']['tflite']}; "
              f"{p['threads']} thread, batch {p['batch']}, {p['rounds']} interleaved rounds × {p['runs_per_round']} "
              f"runs (warm-up {p['warmup']}); statistic: {p['statistic']}. Load average (1/5/15 min, shared VM) at "
              f"start {ms['loadavg_1_5_15']}, end {me.get('loadavg_1_5_15')}."), "",
             "## Speed, `ofa-mbv3` w1.0 random-weight subnets (× fp32, > 1 = faster)", "",
             ("| subnet | MACs | ORT int8-qdq (before) | ORT int8 (fast) | XNNPACK int8-plain (before) | XNNPACK int8 "
              "| built-in int8-plain | built-in int8 | ORT fp32 ms | XNNPACK fp32 ms |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for n, e in results["speed"].items():
        b = e["backends"]
        o, t, tb = b.get("onnxruntime", {}), b.get("tflite", {}), b.get("tflite-builtin", {})

        def g(d: dict[str, Any], v: str) -> float | None:
            return d[v]["speed_vs_fp32"] if v in d else None

        lines.append(f"| {n} | {e['macs'] / 1e6:.0f} M | {_x(g(o, 'int8-qdq'))} | {_x(g(o, 'int8'))} | "
                     f"{_x(g(t, 'int8-plain'))} | {_x(g(t, 'int8'))} | {_x(g(tb, 'int8-plain'))} | {_x(g(tb, 'int8'))} "
                     f"| {o['fp32']['p50_ms']:.2f} | " + (f"{t['fp32']['p50_ms']:.2f} |" if t else "— |"))
    lines += ["", "XNNPACK delegation of the int8 files (partitions; ops left to built-in kernels):", ""]
    for n, e in results["speed"].items():
        t = e["backends"].get("tflite")
        if t:
            d0, d1 = t["int8-plain"]["delegation"], t["int8"]["delegation"]
            lines.append(f"- {n}: int8-plain {d0['partitions']} partitions ({d0['undelegated_ops'] or 'none'}), "
                         f"int8 {d1['partitions']} ({d1['undelegated_ops'] or 'none'})")
    prof = results.get("profiles")
    if prof:
        lines += ["", f"## onnxruntime per-op profile, {prof['subnet']} ({prof['unit']})", "",
                  "| op | " + " | ".join(prof["variants"]) + " |", "|---|" + "---|" * len(prof["variants"])]
        ops = sorted({k for v in prof["variants"].values() for k in v},
                     key=lambda k: -max(v.get(k, 0) for v in prof["variants"].values()))
        for op in ops:
            lines.append(f"| {op} | " + " | ".join(f"{v.get(op, 0):.2f}" for v in prof["variants"].values()) + " |")
        lines.append("| total | " + " | ".join(f"{sum(v.values()):.2f}" for v in prof["variants"].values()) + " |")
    acc = results.get("accuracy") or {}
    if acc:
        lines += ["", "## Accuracy, the 5 MNIST subnets (test split; top-1 %, points vs fp32, speed × fp32)", "",
                  "| subnet | ORT fp32 | ORT int8 | ORT mixed (fp32 layers) | XNNPACK int8 | built-in int8 |",
                  "|---|---|---|---|---|---|"]
        for n, e in acc.items():
            b = e["backends"]

            def c(be: str, v: str, b: dict[str, Any] = b) -> str:
                r = b.get(be, {}).get(v)
                return "—" if r is None else f"{100 * r['top1']:.1f} ({r['vs_fp32_pts']:+.1f}, {r['speed_vs_fp32']:.2f}×)"

            lines.append(f"| {n} | {100 * b['onnxruntime']['fp32']['top1']:.1f} | {c('onnxruntime', 'int8')} | "
                         f"{c('onnxruntime', 'mixed')} {e['mixed_policy']['fp32_layers']} | {c('tflite', 'int8')} | "
                         f"{c('tflite-builtin', 'int8')} |")
    lines += ["", "## Targets", ""]
    for k, v in results["summary"]["targets"].items():
        vals = v.get("values", v.get("slower"))
        lines.append(f"- {k}: **{'met' if v['met'] else 'missed'}** "
                     + ", ".join(f"{n} {x:.2f}" for n, x in (vals or {}).items()))
    return "\n".join(lines) + "\n"
