"""Compression benchmark: structured pruning, magnitude pruning and Deep Compression of the bit-width subnets.

For the 5 subnets of ``benchmarks/bitwidth.py`` (same supernet: the demo's, and the same picks: smallest, largest
and the sampled subnets closest to 25/50/75 % of log-MACs between them), on this machine:

* ``fp32``, ``int8`` (PTQ per channel, min-max): the unpruned subnet;
* ``pruned-<r>``: structured pruning of a share r of every block's expanded channels (L1 criterion, one-shot,
  KD fine-tuning from the unpruned subnet), and ``pruned-<r>+int8`` for the first ratio;
* ``sparse-<s>``: magnitude pruning to sparsity s (gradual, KD fine-tuning; BN folded), run dense;
* ``dc-<s>``: Deep Compression of ``sparse-<s>`` (k-means sharing at ``bits`` bits with trained centroids, Huffman
  coded): its size is the compressed artifact, its latency the restored dense model's;
* ``binary`` (simulated): 1-bit weights (sign x per-channel mean |w|) except the stem and head, post-training and
  after a short binary QAT: accuracy only.

Accuracy is top-1 on the test split; latency the median of interleaved, shuffled rounds on onnxruntime and LiteRT
(XNNPACK), 1 thread, batch 1; speed is the median per-round ratio to the unpruned fp32 file on the same backend.
Dense-run sparse models are timed on LiteRT at the highest sparsity only (the same dense graph at every sparsity;
onnxruntime has all three); Deep Compression's restored models (the same dense graph again, other weight values)
on onnxruntime only: their size is the artifact's, whatever the runtime.

Usage::

    flock /work/coord/bench.lock python benchmarks/compression.py        # full (trains the demo supernet once)
    python benchmarks/compression.py --run hwnas-runs/demo               # a finished demo run's supernet
    python benchmarks/compression.py --quick --out /tmp/cmp             # tiny: checks the script
    python benchmarks/compression.py --render-only                      # Markdown from the JSON

Resumable: the supernet checkpoints under ``--work`` (shared with bitwidth.py's layout), and every finished
subnet's results are stored in ``--work/<size>/compression/<name>.json`` with a fingerprint (supernet sha256,
size settings) and reused while it matches. Writes ``compression.json`` and ``compression.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "benchmarks"))  # for bitwidth.py (appended: benchmarks/supernet.py must not shadow the package)

from supernet.finetune import FinetuneConfig
from supernet.io import atomic_write_json, atomic_write_text, read_json
from supernet.train import TrainConfig

log = logging.getLogger("bench.compression")
SCHEMA_VERSION = 1
BACKENDS = ("onnxruntime", "tflite")
TARGETS = {"dc_min_ratio": 10.0, "dc_max_loss_pts": 1.0, "pruned_max_loss_pts": 0.5, "pruned_min_speed": 1.2}


@dataclass(frozen=True)
class Size:
    train: TrainConfig | None  # None: the demo's full supernet
    n_subnets: int
    bn_images: int
    calib_images: int
    eval_images: int | None
    warmup: int
    runs: int
    ft_images: int | None       # fine-tuning images per pruning run (one pass)
    centroid_images: int
    binary_qat_images: int
    prune_ratios: tuple[float, ...]
    sparsities: tuple[float, ...]
    bits: int


SIZES = {
    "quick": Size(train=TrainConfig(epochs=1, width_mult=0.25, max_train_images=160, batch_size=32, eval_bn_images=32,
                                    warmup_steps=1, checkpoint_every_steps=1000, seed=0),
                  n_subnets=2, bn_images=64, calib_images=16, eval_images=64, warmup=2, runs=10, ft_images=96,
                  centroid_images=32, binary_qat_images=32, prune_ratios=(0.5,), sparsities=(0.5, 0.9), bits=5),
    # sized for <= ~25 min of CPU on the shared 2-core VM: one pass over 1,000 training images per fine-tuning
    "full": Size(train=None, n_subnets=5, bn_images=500, calib_images=256, eval_images=None, warmup=10, runs=100,
                 ft_images=1000, centroid_images=500, binary_qat_images=500, prune_ratios=(0.5,),
                 sparsities=(0.5, 0.7, 0.9), bits=5),
}


def _ft(images: int | None, *, lr: float = 5e-4, augment: bool = True, bn_images: int = 500) -> FinetuneConfig:
    return FinetuneConfig(epochs=1.0, lr=lr, max_train_images=images, augment=augment, bn_images=bn_images, seed=0)


def _pct(x: float) -> str:
    return f"{round(100 * x)}"


def run_subnet(name: str, cfg: Any, *, net: Any, data: Any, size: Size, work: Path, sn_sha: str) -> dict[str, Any]:
    """Everything measured for one subnet, cached in ``work/compression/<name>.json`` (fingerprint-checked)."""
    from supernet.compress import DeepCompressionConfig, deep_compress, magnitude_prune, write_compressed
    from supernet.compression_compare import CompressionVariant, SimulatedCompression, compare_compression
    from supernet.evaluate import recalibrated_subnet
    from supernet.layers import count_macs
    from supernet.prune import PruneConfig, prune_subnet
    from supernet.qat import FakeQuantSpec, QATConfig, qat_finetune, simulate_quantized
    from supernet.quantize import QuantConfig, default_reduce_range

    want = json.loads(json.dumps({"supernet_sha256": sn_sha, "size": asdict(size), "arch": str(cfg),
                                  "schema_version": SCHEMA_VERSION}, default=str))
    cache = work / "compression" / f"{name}.json"
    if cache.is_file():
        done = read_json(cache)
        if done.get("fingerprint") == want:
            log.info("%s: done in an earlier call (%s)", name, cache)
            return done
        log.info("%s: cached results were made with other settings; recomputing", name)
    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    sub = recalibrated_subnet(net, cfg, data, bn_images=size.bn_images, seed=0)
    res = cfg.resolution
    int8 = QuantConfig(precision="int8", per_channel=True, calibration="minmax", reduce_range=default_reduce_range(),
                       calib_images=size.calib_images, seed=0)
    out = work / "compression" / name
    variants = [CompressionVariant(method="fp32", model=sub, arch=str(cfg)),
                CompressionVariant(method="int8", model=sub, arch=str(cfg), precision="int8", int8_config=int8)]
    info: dict[str, Any] = {"structured": {}, "unstructured": {}}
    for i, ratio in enumerate(size.prune_ratios):
        t = time.perf_counter()
        pr = prune_subnet(sub, data, config=PruneConfig(ratio=ratio, criterion="l1", steps=1,
                                                          finetune=_ft(size.ft_images, bn_images=size.bn_images)))
        seconds[f"prune-{_pct(ratio)}"] = time.perf_counter() - t
        info["structured"][_pct(ratio)] = pr.to_json()
        m = f"pruned-{_pct(ratio)}"
        variants.append(CompressionVariant(method=m, model=pr.model, arch=str(pr.pruned_arch),
                                           notes={"macs": pr.macs_after}))
        if i == 0:
            variants.append(CompressionVariant(method=f"{m}+int8", model=pr.model, arch=str(pr.pruned_arch),
                                               precision="int8", int8_config=int8, notes={"macs": pr.macs_after}))
    top_s = max(size.sparsities)
    for s in size.sparsities:
        t = time.perf_counter()
        mp = magnitude_prune(sub, data, sparsity=s, finetune=_ft(size.ft_images, bn_images=0))
        dcfg = DeepCompressionConfig(sparsity=s, bits=size.bits, finetune=None,
                                     centroid_finetune=_ft(size.centroid_images, lr=1e-4, augment=False, bn_images=0))
        dc = deep_compress(sub, data, config=dcfg, pruned=mp)
        art = write_compressed(dc, out / f"dc-{_pct(s)}.hwdc")
        seconds[f"sparse-{_pct(s)}+dc"] = time.perf_counter() - t
        info["unstructured"][_pct(s)] = {"magnitude_finetune": mp.finetune, "deep_compression": dc.finetune,
                                         "size_report": dc.size.to_json(), "artifact": str(art)}
        only = None if s == top_s else ("onnxruntime",)
        variants.append(CompressionVariant(method=f"sparse-{_pct(s)}", model=mp.model, arch=str(cfg), backends=only))
        variants.append(CompressionVariant(method=f"dc-{_pct(s)}", model=dc.model, arch=str(cfg), artifact=art,
                                           backends=("onnxruntime",), notes={"size_report": dc.size.to_json()}))
    t = time.perf_counter()
    keep_8 = {"stem": 8, "head": 8}  # first and last layer stay 8-bit, as in XNOR-Net / BinaryConnect studies
    spec = FakeQuantSpec(weight_bits=1, act_bits=None)
    sims = [SimulatedCompression(method="binary-w1 post-training", model=simulate_quantized(sub, spec=spec,
                                                                                           stage_weight_bits=keep_8))]
    from supernet.qat import stage_of_layers

    layer_bits = {i: keep_8[n] for i, n in enumerate(stage_of_layers(sub)) if n in keep_8}
    qspec = FakeQuantSpec(weight_bits=1, act_bits=None, layer_weight_bits=layer_bits)
    q = qat_finetune(sub, data, config=QATConfig(epochs=1.0, lr=1e-3, max_train_images=size.binary_qat_images,
                                                 seed=0), spec=qspec, calib_images=size.calib_images)
    sims.append(SimulatedCompression(method=f"binary-w1 QAT ({q.images} images)", model=q.model))
    seconds["binary"] = time.perf_counter() - t
    t = time.perf_counter()
    cmp = compare_compression(variants, data, backends=BACKENDS, out_dir=out, resolution=res,
                              max_eval_images=size.eval_images, warmup=size.warmup, runs=size.runs, simulated=sims)
    seconds["export_and_measure"] = time.perf_counter() - t
    entry = {"name": name, "arch": str(cfg), "macs": count_macs(net.backbone, cfg), "comparison": cmp, **info,
             "int8_config": asdict(int8), "fingerprint": want, "seconds": seconds,
             "wall_s": time.perf_counter() - t0}
    atomic_write_json(cache, entry)
    return entry


def _rows(sub: dict[str, Any], backend: str) -> dict[str, dict[str, Any]]:
    return {r["method"]: r for r in sub["comparison"]["rows"] if r["backend"] == backend}


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per subnet: losses vs fp32 (points), speeds, size ratios; the targets met or missed; the bundle filter.

    Besides speed vs the unpruned fp32 file, every row gets ``speed_vs_dense_control``: the ratio of medians to the
    magnitude-pruned model at the lowest sparsity measured on that backend, which runs the unpruned dense graph
    (zeros are multiplied like any weight), fine-tuned the same way as the pruned ones, in the same rounds.
    """
    from supernet.compression_compare import offered_variants

    out: dict[str, Any] = {"subnets": {}, "targets": TARGETS}
    dc_ok: dict[str, list[str]] = {}
    pr_ok: dict[str, list[str]] = {}
    pr_strict: dict[str, list[str]] = {}
    for name, sub in results["subnets"].items():
        per: dict[str, Any] = {}
        for b in results["backends"]:
            rows = _rows(sub, b)
            fp32 = rows["fp32"]
            sparse = sorted((m for m in rows if m.startswith("sparse-")), key=lambda m: int(m.split("-")[1]))
            ctl = rows[sparse[0]] if sparse else None
            per[b] = {m: {"loss_pts": 100 * (fp32["top1"] - r["top1"]), "speed": r["speed_vs_baseline"]["median"],
                          "size_ratio": fp32["size_bytes"] / r["size_bytes"],
                          "speed_vs_dense_control": (ctl["latency_p50_ms"] / r["latency_p50_ms"] if ctl else None)}
                      for m, r in rows.items()}
            per[f"{b}:dense_control"] = sparse[0] if sparse else None
        per["simulated"] = {r["method"]: 100 * (sub["comparison"]["rows"][0]["top1"] - r["top1"])
                            for r in sub["comparison"]["rows"] if r["simulated"]}
        dc_ok[name] = [f"{m} ({v['size_ratio']:.1f}×, {_p(-v['loss_pts'])} pts)"
                       for m, v in per["onnxruntime"].items()
                       if m.startswith("dc-") and v["size_ratio"] >= TARGETS["dc_min_ratio"]
                       and v["loss_pts"] <= TARGETS["dc_max_loss_pts"] + 1e-9]
        pr_ok[name], pr_strict[name] = [], []
        for b in results["backends"]:
            for m, v in per[b].items():
                if not (m.startswith("pruned-") and "+" not in m and v["loss_pts"] <= TARGETS["pruned_max_loss_pts"] + 1e-9):
                    continue
                label = (f"{m} ({b}: {v['speed']:.2f}× vs fp32, "
                         + (f"{v['speed_vs_dense_control']:.2f}× vs the dense control, "
                            if v["speed_vs_dense_control"] else "") + f"{_p(-v['loss_pts'])} pts)")
                if v["speed"] >= TARGETS["pruned_min_speed"]:
                    pr_ok[name].append(label)
                if (v["speed_vs_dense_control"] or 0) >= TARGETS["pruned_min_speed"]:
                    pr_strict[name].append(label)
        offered, dropped = offered_variants(list(sub["comparison"]["rows"]))
        per["bundle"] = {"offered": [f"{r['method']} ({r['backend']})" for r in offered], "dropped": dropped}
        out["subnets"][name] = per
    out["dc_target_met_by"] = dc_ok
    out["pruned_target_met_by"] = pr_ok
    out["pruned_target_met_vs_dense_control_by"] = pr_strict
    return out


def _p(x: float) -> str:
    return f"{round(x, 1) + 0.0:+.1f}"


def _ctl(s: dict[str, Any], name: str, r: dict[str, Any]) -> str:
    v = s["subnets"][name][r["backend"]].get(r["method"], {}).get("speed_vs_dense_control")
    return "–" if v is None else f"{v:.2f}×"


def _cells(cells: list[Any], key: str, f: Any) -> str:
    return " / ".join("–" if v is None else f(v[key]) for v in cells)


def render_markdown(results: dict[str, Any]) -> str:
    s = results["summary"]
    first = next(iter(results["subnets"].values()))
    c = first["comparison"]
    env = c["environment_start"]
    last = list(results["subnets"].values())[-1]["comparison"]["environment_end"]
    be = c["protocol"]["backends"]
    size = results["params"]
    lines = [
        f"# Compression benchmark ({results['size']})", "",
        *([] if results.get("complete", True) else
          [f"**Partial**: {len(results['subnets'])} of {len(results['subnet_archs'])} subnets measured so far.", ""]),
        (f"Supernet: {results['supernet']['source']}. Dataset {c['dataset']}: top-1 on {c['eval_images']} "
        f"{c['split']} images (held out). Fine-tuning (KD from the unpruned subnet, alpha 0.5, T 2, Adam, cosine): "
        f"{size['ft_images']} training images per pruning run; centroid training {size['centroid_images']} images; "
        f"Deep Compression at {size['bits']} bits, gaps coded with 5-bit relative indices, then Huffman. int8: PTQ "
        "per channel, min-max calibration. Precision of `pruned-*`, `sparse-*`, `dc-*` runtime files: fp32."), "",
        f"Latency: device `{env['device']}`, CPU {env['cpu_model']} ({env['cpu_count']} logical CPUs, shared VM), "
        f"batch 1, {c['protocol']['threads']} thread, {c['protocol']['warmup']} warm-up + {c['protocol']['runs']} "
        "timed rounds, every variant once per round in a shuffled order (interleaved); statistic: median of the "
        "per-run times, speed = median per-round ratio unpruned fp32 / variant (> 1 faster). Backends: "
        + "; ".join(f"`{k}` = {v['backend']} {v['backend_version']}" + (f" ({v['delegate']})" if "delegate" in v else
                                                                        f" ({v.get('provider', '')})")
                    for k, v in be.items())
        + f". Load average (1/5/15 min) at the first subnet's start {env['loadavg_1_5_15']}, at the last one's end "
        f"{last['loadavg_1_5_15']}. Wall time {results['wall_time_s'] / 60:.1f} min (of which supernet training "
        f"{(results['supernet'].get('train_seconds') or 0) / 60:.1f} min).", "",
        "## Summary per subnet (onnxruntime / LiteRT)", "",
        "| subnet | MACs | fp32 top-1 % | method | loss vs fp32, pts | speed vs fp32 | size vs fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, sub in results["subnets"].items():
        per = s["subnets"][name]
        fp = _rows(sub, "onnxruntime")["fp32"]
        for m in _rows(sub, "onnxruntime"):
            cells = [per[b].get(m) for b in results["backends"]]
            lines.append(f"| {name} | {sub['macs'] / 1e6:.2f} M | {100 * fp['top1']:.1f} | {m} | "
                         f"{_cells(cells, 'loss_pts', lambda x: _p(-x))} | "
                         f"{_cells(cells, 'speed', lambda x: f'{x:.2f}×')} | "
                         f"{_cells(cells, 'size_ratio', lambda x: f'1/{x:.1f}')} |")
    lines += ["", ("Loss: top-1 of the variant minus fp32's on the same backend (negative = worse); size: the stored "
              "file (for `dc-*` the compressed artifact) relative to the fp32 file of the same backend; `–`: not "
              "measured on that backend."), ""]
    lines += ["## Simulated binarized weights (accuracy only: no runtime here executes 1-bit weights)", "",
              "| subnet | variant | top-1 change vs fp32 (pts) |", "|---|---|---|"]
    for name, sub in results["subnets"].items():
        for r in sub["comparison"]["rows"]:
            if r["simulated"]:
                lines.append(f"| {name} | {r['method']} | {_p(-s['subnets'][name]['simulated'][r['method']])} |")
    lines += ["", "## Deep Compression size per pipeline stage (bytes)", "",
              ("| subnet | sparsity | dense fp32 params | pruned (fp32 + 5-bit gaps) | shared (bits + gaps + codebooks) "
              "| Huffman | header | file | vs fp32 ONNX file | loss ORT, pts |"), "|---|---|---|---|---|---|---|---|---|---|"]
    for name, sub in results["subnets"].items():
        ort = _rows(sub, "onnxruntime")
        for sp, u in sub["unstructured"].items():
            r = u["size_report"]
            lines.append(f"| {name} | {sp} % | {r['dense_fp32_bytes']:,} | {r['pruned_bytes']:,} | {r['shared_bytes']:,} | "
                         f"{r['huffman_bytes']:,} | {r['header_bytes']:,} | {r['file_bytes']:,} | "
                         f"{ort['fp32']['size_bytes'] / r['file_bytes']:.1f}× | "
                         f"{_p(100 * (ort[f'dc-{sp}']['top1'] - ort['fp32']['top1']))} |")
    lines += ["", "## Targets", ""]
    dc = s["dc_target_met_by"]
    pr = s["pruned_target_met_by"]
    lines.append(f"- Deep Compression >= {TARGETS['dc_min_ratio']:.0f}× smaller than the fp32 ONNX file at <= "
                 f"{TARGETS['dc_max_loss_pts']} point loss (onnxruntime): "
                 + ("; ".join(f"{n}: {', '.join(v) if v else '**missed**'}" for n, v in dc.items())))
    lines.append(f"- Structured pruning at <= {TARGETS['pruned_max_loss_pts']} point loss and >= "
                 f"{TARGETS['pruned_min_speed']}× faster than unpruned fp32, measured: "
                 + ("; ".join(f"{n}: {', '.join(v) if v else '**missed**'}" for n, v in pr.items())))
    lines.append("  Stricter reading, against the dense control (the magnitude-pruned model at the lowest sparsity of the "
                 "backend: the unpruned dense graph, fine-tuned like the pruned one, measured in the same rounds; the "
                 "`fp32` file ran slower than every same-shape fine-tuned control here, which no sparsity explains): "
                 + ("; ".join(f"{n}: {', '.join(v) if v else '**missed**'}"
                              for n, v in s.get("pruned_target_met_vs_dense_control_by", {}).items())))
    sp = []
    for n in results["subnets"]:
        for b in results["backends"]:
            per = s["subnets"][n][b]
            ss = sorted((m for m in per if m.startswith("sparse-")), key=lambda m: int(m.split("-")[1]))
            if len(ss) >= 2:
                sp.append(f"{n} {b}: {ss[-1]} runs at {per[ss[-1]]['speed_vs_dense_control']:.2f}× the speed of {ss[0]}")
            if ss:
                sp.append(f"{n} {b}: {ss[-1]} {per[ss[-1]]['speed']:.2f}× vs fp32")
    lines.append("- Unstructured sparsity gives no speed-up on these runtimes: `sparse-*` / `dc-*` run as dense graphs "
                 "whose zeros are multiplied like any weight (onnxruntime's CPU kernels and LiteRT/XNNPACK's default "
                 "path have no sparse convolution here); latency does not move with sparsity: "
                 + ("; ".join(sp) if sp else "not measured") + ".")
    lines += ["", "## Offered to a bundle", "",
              ("A compressed variant is dropped when a baseline or an already offered variant of the same backend is "
              "as accurate (within 0.5 points), as fast (within 3 %) and no larger "
              "(`supernet.compression_compare.offered_variants`)."), ""]
    for name in results["subnets"]:
        b = s["subnets"][name]["bundle"]
        lines.append(f"- {name}: offered {', '.join(b['offered'])}; dropped "
                     + ("; ".join(f"{d['method']} ({d['backend']}): {d['reason']}" for d in b["dropped"]) or "none"))
    lines.append("")
    for name, sub in results["subnets"].items():
        lines += [f"## {name}: `{sub['arch']}`", "", ("| backend | method | arch | top-1 % | size (bytes) | runtime file "
                  "(bytes) | p50 ms | IQR ms | × fp32 | × dense control |"), "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sub["comparison"]["rows"]:
            if r["simulated"]:
                continue
            arch = r["arch"].split("~")[1] if "~" in r["arch"] else ""
            lines.append(f"| {r['backend']} | {r['method']} | {arch} | {100 * r['top1']:.1f} | {r['size_bytes']:,} | "
                         f"{r['file_bytes']:,} | {r['latency_p50_ms']:.3f} | {r['latency_iqr_ms']:.3f} | "
                         f"{r['speed_vs_baseline']['median']:.2f}× | {_ctl(s, name, r)} |")
        lines.append("")
    return "\n".join(lines)


def _names(out: Path, size_name: str) -> tuple[Path, Path]:
    stem = "compression" if size_name == "full" else f"compression.{size_name}"
    return out / f"{stem}.json", out / f"{stem}.md"


def run(size_name: str, *, work: Path, out: Path, run_dir: Path | None, only: list[str] | None = None,
        supernet: Path | None = None) -> dict[str, Any]:
    from bitwidth import pick_subnets, supernet_for_benchmark

    from hwnas.pipeline import load_supernet_and_data
    from supernet.io import sha256_file
    from supernet.quantize import machine_state

    size = SIZES[size_name]
    torch.set_num_threads(1)
    work = work / size_name
    t0 = time.perf_counter()
    start = machine_state()
    if supernet is not None:  # a supernet trained elsewhere with the demo's config (e.g. by bitwidth.py)
        cfg_file = supernet.parent / "train_config.json"
        if not supernet.is_file():
            raise FileNotFoundError(f"--supernet {str(supernet)!r} does not exist")
        sn_path, sn_info = supernet, {"source": f"{supernet} (trained with {cfg_file.name if cfg_file.is_file() else '?'}"
                                                f" beside it)", "train_seconds": None,
                                      "train_config": read_json(cfg_file) if cfg_file.is_file() else None}
    else:
        sn_path, sn_info = supernet_for_benchmark(size.train, work=work, run_dir=run_dir)
    net, data = load_supernet_and_data(sn_path)
    sha = sha256_file(sn_path)
    subnets = pick_subnets(net.space, net.backbone, size.n_subnets)
    results: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "size": size_name, "params": asdict(size) | {"train": None},
                               "supernet": {**sn_info, "path": str(sn_path)}, "backends": list(BACKENDS),
                               "subnet_archs": {k: str(v) for k, v in subnets.items()}, "machine_start": start,
                               "subnets": {}}
    # extremes first: if the run is cut short, the partial report still spans the MACs range
    priority = sorted(subnets, key=lambda n: {"smallest": 0, "largest": 1, "p50": 2}.get(n, 3))
    for name in priority:
        if only and name not in only:
            continue
        cfg = subnets[name]
        log.info("subnet %s: %s", name, cfg)
        done = run_subnet(name, cfg, net=net, data=data, size=size, work=work, sn_sha=sha)
        results["subnets"] = {n: (done if n == name else results["subnets"][n]) for n in subnets
                              if n == name or n in results["subnets"]}
        if only is None and len(results["subnets"]) < len(subnets):  # a partial report after every subnet
            _write(results, out, size_name, sn_info, t0, complete=False)
    if only is None:
        _write(results, out, size_name, sn_info, t0, complete=True)
    return results


def _write(results: dict[str, Any], out: Path, size_name: str, sn_info: dict[str, Any], t0: float, *,
           complete: bool) -> None:
    from supernet.quantize import machine_state

    results["complete"] = complete
    results["machine_end"] = machine_state()
    results["wall_time_this_call_s"] = time.perf_counter() - t0
    results["wall_time_s"] = (sum(s["wall_s"] for s in results["subnets"].values())
                              + float(sn_info.get("train_seconds") or 0.0))
    results["summary"] = summarise(results)
    json_path, md_path = _names(out, size_name)
    atomic_write_json(json_path, results)
    atomic_write_text(md_path, render_markdown(results))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny supernet, 2 subnets, few images: checks the script")
    ap.add_argument("--run", type=Path, default=None, help="an 'hwnas demo' output folder to take the supernet from")
    ap.add_argument("--supernet", type=Path, default=None,
                    help="a supernet.pt trained with the demo's config (e.g. by bitwidth.py), train_config.json beside it")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / ".bitwidth-work")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--subnets", default=None, help="comma-separated names to (re)compute only these (no report)")
    ap.add_argument("--render-only", action="store_true", help="rewrite the Markdown from the JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    for noisy in ("absl", "jax"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    size_name = "quick" if args.quick else "full"
    if args.render_only:
        json_path, md_path = _names(args.out, size_name)
        results = read_json(json_path, what="compression results")
        results["summary"] = summarise(results)
        atomic_write_json(json_path, results)
        atomic_write_text(md_path, render_markdown(results))
        return
    only = [s.strip() for s in args.subnets.split(",")] if args.subnets else None
    run(size_name, work=args.work, out=args.out, run_dir=args.run, only=only, supernet=args.supernet)


if __name__ == "__main__":
    main()
