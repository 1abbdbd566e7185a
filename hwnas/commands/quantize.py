"""``hwnas quantize``: reduced-precision export of one subnet (the library is `supernet.quantize`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from supernet.io import atomic_write_json
from supernet.quantize import (
    BACKENDS,
    QATPolicy,
    QuantConfig,
    SimulatedVariant,
    check_backend_config,
    default_reduce_range,
    get_target,
    quantize_subnet,
)

__all__ = ["quantize_cmd"]


def quantize_cmd(
    arch: Annotated[str, typer.Option(help="largest | smallest | arch JSON file | inline JSON | r28-d2... string")],
    supernet: Annotated[Path, typer.Option(help="supernet.pt written by 'hwnas train'.")] = Path(
        "hwnas-runs/supernet/supernet.pt"
    ),
    precision: Annotated[str, typer.Option(
        help="fp32 | fp16 | int8 | int8-qat (= int8 --force-qat) | mixed (per-layer int8/fp32, onnxruntime)")
    ] = "int8",
    budget_pts: Annotated[float, typer.Option(
        help="mixed: top-1 points (validation split) the mixed file may lose against fp32.")] = 0.5,
    fp32_table: Annotated[Path | None, typer.Option(
        help="mixed: fp32 latency table (with --int8-table: per-layer int8 gain; layers int8 does not speed up stay fp32).")
    ] = None,
    int8_table: Annotated[Path | None, typer.Option(help="mixed: int8 latency table of the same device.")] = None,
    backend: Annotated[str, typer.Option(
        help="onnxruntime (QDQ .onnx) | tflite (LiteRT .tflite, XNNPACK) | tflite-builtin (same file, built-in kernels)")
    ] = "onnxruntime",
    per_channel: Annotated[
        bool, typer.Option("--per-channel/--per-tensor", help="int8 weight scales per output channel or per tensor.")
    ] = True,
    calibration: Annotated[str, typer.Option(
        help="int8 activation ranges: onnxruntime minmax | percentile | entropy; tflite minmax | moving-average")
    ] = "minmax",
    reduce_range: Annotated[bool | None, typer.Option(
        "--reduce-range/--full-range",
        help="onnxruntime: 7-bit int8 weights (x86 AVX2 without VNNI). Default: by this CPU's VNNI flag.")
    ] = None,
    calib_images: Annotated[int, typer.Option(help="Training images for int8 calibration.")] = 256,
    bn_images: Annotated[int, typer.Option(help="Training images for BN recalibration before export.")] = 1000,
    qat: Annotated[bool, typer.Option(
        "--qat", help="Quantization-aware fine-tuning if int8 PTQ loses more than --qat-threshold points (val).")
    ] = False,
    force_qat: Annotated[bool, typer.Option("--force-qat", help="QAT whatever the PTQ loss.")] = False,
    qat_threshold: Annotated[float, typer.Option(help="PTQ top-1 loss (points) above which --qat fine-tunes.")] = 1.0,
    qat_epochs: Annotated[float, typer.Option(help="QAT epochs over the training split.")] = 1.0,
    qat_lr: Annotated[float, typer.Option(help="QAT peak Adam learning rate.")] = 1e-4,
    qat_kd: Annotated[float, typer.Option(help="QAT distillation weight from the fp32 subnet (0..1).")] = 0.5,
    simulate_bits: Annotated[list[int] | None, typer.Option(
        "--simulate-bits", help="Add a simulated wNa8 per-channel row (torch fake-quant, accuracy only; repeatable).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: beside the supernet).")] = None,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Also compare fp32/fp16/int8: accuracy, size, latency.")
    ] = True,
    split: Annotated[str, typer.Option(help="Split for the report's accuracy: train | val | test.")] = "test",
    seed: Annotated[int, typer.Option(help="Seed of the calibration subset.")] = 0,
) -> None:
    """Export one subnet at reduced precision (onnxruntime QDQ or TFLite) and report accuracy, size and latency."""
    from supernet.evaluate import recalibrated_subnet
    from supernet.space import InvalidArchError, resolve_arch
    from supernet.train import load_supernet_and_data

    def fail(msg: str) -> None:
        typer.echo(f"error: {msg}", err=True)
        raise typer.Exit(2)

    if backend not in BACKENDS:
        fail(f"--backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if precision == "int8-qat":
        precision, force_qat = "int8", True
    mixed = precision == "mixed"
    if mixed:
        precision = "int8"
        if backend != "onnxruntime":
            fail(f"--precision mixed: per-layer mixed precision is implemented for onnxruntime, not {backend!r}")
        if (fp32_table is None) != (int8_table is None):
            fail("--fp32-table and --int8-table: give both (per-layer gain = fp32 row - int8 row) or neither")
    try:
        from supernet.qat import FakeQuantSpec, QATConfig

        cfg_q = QuantConfig(precision=precision, per_channel=per_channel, calibration=calibration,
                            reduce_range=default_reduce_range() if reduce_range is None else reduce_range,
                            calib_images=calib_images, seed=seed)
        policy = None
        if qat or force_qat:
            policy = QATPolicy(threshold_pts=qat_threshold, force=force_qat,
                               config=QATConfig(epochs=qat_epochs, lr=qat_lr, kd_ratio=qat_kd, seed=seed))
        sims = [SimulatedVariant(spec=FakeQuantSpec(weight_bits=b, per_channel=True, act_bits=8))
                for b in (simulate_bits or [])]
        check_backend_config(get_target(backend), cfg_q)
        net, data = load_supernet_and_data(supernet)
        cfg = resolve_arch(arch, net.space)
        if bn_images > 0:
            sub = recalibrated_subnet(net, cfg, data, bn_images=bn_images, seed=seed)
        else:
            sub = net.get_active_subnet(cfg).eval()
        folder = out or supernet.parent / "quantized"
        policy_json = None
        if mixed:
            from supernet.layers import layer_specs
            from supernet.mixed import choose_mixed, layer_gains_ms

            gains = None
            if fp32_table is not None and int8_table is not None:
                from latency_tables.table import LatencyTable

                rows = [{k: r.latency_ms for k, r in LatencyTable.load(t).rows.items()}
                        for t in (fp32_table, int8_table)]
                gains = layer_gains_ms([s.key for s in layer_specs(sub.backbone, sub.arch)], fp32_rows=rows[0],
                                       int8_rows=rows[1])
            chosen = choose_mixed(sub, data, config=cfg_q, budget_pts=budget_pts, gains_ms=gains, split="val",
                                  progress=lambda m: typer.echo(f"mixed: {m}"))
            policy_json = chosen.to_json()
            cfg_q = cfg_q.replace(fp32_layers=chosen.fp32_layers)
            typer.echo(f"mixed: fp32 layers {list(chosen.fp32_layers)}; val top-1 fp32 {chosen.fp32_top1:.4f}, "
                       f"int8 {chosen.int8_top1:.4f}, mixed {chosen.mixed_top1:.4f} (budget {budget_pts} points)")
        summary = quantize_subnet(sub, data, out_dir=folder, config=cfg_q, backend=backend, qat=policy,
                                  report=report, split=split, simulated=sims)
    except (InvalidArchError, ValueError, FileNotFoundError, ImportError) as e:
        fail(str(e))
        raise
    summary["supernet"], summary["bn_images"] = str(supernet), bn_images
    if policy_json is not None:
        summary["mixed_policy"] = policy_json
    atomic_write_json(folder / f"{cfg}.{cfg_q.label}.json", summary)
    path = Path(summary["path"])
    dtypes = summary["weight_dtypes"]
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e3:.1f} kB, weights stored as "
               f"{', '.join(f'{k} {v / max(1, sum(dtypes.values())):.0%}' for k, v in dtypes.items())})")
    if summary["qat"] is not None:
        d = summary["qat"]
        typer.echo(f"QAT: PTQ loses {d['ptq_drop_pts']:.2f} points on {d['split']} (threshold {d['threshold_pts']}"
                   f"{', forced' if d['forced'] else ''}): " + (
                       f"fine-tuned {d['steps']} steps, QAT loses {d['qat_drop_pts']:.2f} points" if d["ran"]
                       else "not run"))
    if report:
        typer.echo(f"{'variant':<30}{'backend':<19}{'top1':>7}{'agree':>7}{'size kB':>9}{'p50 ms':>8}{'iqr ms':>8}"
                   f"{'x fp32':>8}")
        for r in summary["report"]["rows"]:
            lat = ("  (simulated: no latency)" if r["simulated"] else
                   f"{r['size_bytes'] / 1e3:>9.1f}{r['latency_p50_ms']:>8.3f}{r['latency_iqr_ms']:>8.3f}"
                   f"{(r['speed_vs_fp32'] or {}).get('median', float('nan')):>8.2f}")
            typer.echo(f"{r['variant']:<30}{r['backend']:<19}{r['top1']:>7.4f}{r['top1_agreement_fp32']:>7.3f}{lat}")
        typer.echo(f"report: {summary['report']['path']}")
