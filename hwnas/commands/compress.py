"""``hwnas compress`` / ``hwnas decompress`` / ``hwnas prune``: Deep Compression and structured pruning of one
subnet (the libraries are `supernet.compress`, `supernet.prune` and `latency_tables.pruned`).

Bad settings (sparsity outside [0, 1), bits outside 1..8, a pruning ratio outside [0, 1)), a damaged compressed
file and a latency table that cannot price a pruned subnet all raise `supernet.errors.InputError`, which the CLI
reports as ``error: <message>`` with exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from supernet.io import atomic_write_json

__all__ = ["compress_cmd", "decompress_cmd", "prune_cmd"]

ARCH_HELP = "largest | smallest | arch JSON file | inline JSON | r28-d2... string"
DEFAULT_SUPERNET = Path("hwnas-runs/supernet/supernet.pt")


def _subnet(supernet: Path, arch: str, bn_images: int) -> tuple[Any, Any, Any]:
    from hwnas.pipeline import load_supernet_and_data
    from supernet.evaluate import recalibrated_subnet
    from supernet.space import resolve_arch

    net, data = load_supernet_and_data(supernet)
    cfg = resolve_arch(arch, net.space)
    sub = recalibrated_subnet(net, cfg, data, bn_images=bn_images) if bn_images > 0 else net.get_active_subnet(cfg)
    return sub.eval(), data, cfg


def compress_cmd(
    arch: Annotated[str, typer.Option(help=ARCH_HELP)],
    sparsity: Annotated[float, typer.Option(help="Share of weights set to zero in every prunable tensor, [0, 1).")] = 0.8,
    bits: Annotated[int, typer.Option(help="Index bits per weight, 1..8 (2^bits shared values per layer).")] = 5,
    supernet: Annotated[Path, typer.Option(help="supernet.pt written by 'hwnas train'.")] = DEFAULT_SUPERNET,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <supernet folder>/compressed).")] = None,
    epochs: Annotated[float, typer.Option(help="Fine-tuning epochs while pruning (KD from the unpruned subnet).")] = 1.0,
    centroid_epochs: Annotated[float, typer.Option(help="Epochs of training the shared centroids.")] = 0.5,
    train_images: Annotated[int | None, typer.Option(help="Training images per epoch (default: the whole split).")] = None,
    delta_bits: Annotated[int, typer.Option(help="Bits of a relative index before a filler entry is needed.")] = 5,
    bn_images: Annotated[int, typer.Option(help="Training images for BN recalibration before compressing.")] = 1000,
    split: Annotated[str, typer.Option(help="Held-out split for the accuracy check: val | test.")] = "test",
) -> None:
    """Deep Compression of one subnet: magnitude pruning to --sparsity with fine-tuning, k-means weight sharing
    at --bits with trained centroids, Huffman coding. Writes OUT/<arch>.hwdc and OUT/<arch>.hwdc.json (bytes per
    stage, compression ratio, sha256, accuracy of the restored model); 'hwnas decompress' restores it."""
    from supernet.compress import DeepCompressionConfig, check_bits, check_sparsity, compress_subnet
    from supernet.finetune import FinetuneConfig

    check_sparsity(sparsity, what="--sparsity")
    check_bits(bits, what="--bits")
    config = DeepCompressionConfig(
        sparsity=sparsity, bits=bits, delta_bits=delta_bits,
        finetune=FinetuneConfig(epochs=epochs, max_train_images=train_images, bn_images=0),
        centroid_finetune=FinetuneConfig(epochs=centroid_epochs, lr=1e-4, augment=False,
                                         max_train_images=train_images, bn_images=0))
    sub, data, cfg = _subnet(supernet, arch, bn_images)
    folder = out or supernet.parent / "compressed"
    s = compress_subnet(sub, data, config=config, out_dir=folder, name=str(cfg), split=split)
    z = s.size
    typer.echo(f"wrote {s.artifact} ({z.file_bytes:,} bytes, sha256 {s.artifact_sha256[:16]}...) and {s.report}")
    typer.echo(f"{'stage':<34}{'bytes':>12}")
    for name, v in (("dense fp32 parameters", z.dense_fp32_bytes), ("pruned (fp32 values + gaps)", z.pruned_bytes),
                    (f"shared ({bits}-bit indices + codebooks)", z.shared_bytes), ("Huffman coded", z.huffman_bytes),
                    ("file (with header)", z.file_bytes)):
        typer.echo(f"{name:<34}{v:>12,}")
    ref = f", {z.ratio_vs_reference:.1f}x vs the fp32 ONNX file" if z.ratio_vs_reference else ""
    typer.echo(f"compression {z.ratio_vs_dense:.1f}x vs dense parameters{ref}; top-1 on {s.eval_images} {s.split} "
               f"images: fp32 {100 * s.top1_fp32:.2f} %, restored {100 * s.top1_compressed:.2f} %")


def decompress_cmd(
    path: Annotated[Path, typer.Argument(help="A .hwdc file written by 'hwnas compress'.")],
    out: Annotated[Path | None, typer.Option(help="Runnable model file (default: beside it, .onnx/.tflite).")] = None,
    format: Annotated[str, typer.Option("--format", help="onnx | tflite")] = "onnx",
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 of the whole file (e.g. from a manifest).")] = None,
) -> None:
    """Restore a compressed subnet (hash and length checked) and export it as a runnable ONNX / TFLite model."""
    from supernet.compress import load_compressed
    from supernet.errors import InputError
    from supernet.export import export_onnx, export_tflite

    if format not in ("onnx", "tflite"):
        raise InputError(f"--format {format!r}: expected 'onnx' or 'tflite'")
    loaded = load_compressed(path, expected_sha256=sha256)
    target = out or path.with_suffix(f".{format}")
    exporter = export_onnx if format == "onnx" else export_tflite
    written = exporter(loaded.model, target, input_shape=loaded.model.input_shape)  # type: ignore[arg-type]
    typer.echo(f"restored {path} (sha256 {loaded.file_sha256[:16]}...) -> {written} "
               f"({written.stat().st_size:,} bytes, dense weights)")


def prune_cmd(
    arch: Annotated[str, typer.Option(help=ARCH_HELP)],
    ratio: Annotated[float, typer.Option(help="Share of every block's expanded channels removed, [0, 1).")] = 0.5,
    criterion: Annotated[str, typer.Option(help="l1 | sensitivity (first-order Taylor on training images)")] = "l1",
    steps: Annotated[int, typer.Option(help="1 = one-shot; n > 1 = iterative in n rounds.")] = 1,
    supernet: Annotated[Path, typer.Option(help="supernet.pt written by 'hwnas train'.")] = DEFAULT_SUPERNET,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <supernet folder>/pruned).")] = None,
    epochs: Annotated[float, typer.Option(help="Fine-tuning epochs in total (KD from the unpruned subnet).")] = 1.0,
    train_images: Annotated[int | None, typer.Option(help="Training images per epoch (default: all).")] = None,
    table: Annotated[Path | None, typer.Option(help="Latency table to price the pruned subnet with.")] = None,
    measure_missing: Annotated[bool, typer.Option(
        "--measure-missing", help="Measure layer shapes the table lacks (writes OUT/<table>.extended.csv).")] = False,
    bn_images: Annotated[int, typer.Option(help="Training images for BN recalibration.")] = 1000,
) -> None:
    """Structured pruning of one subnet's expanded MBConv channels, with KD fine-tuning; writes OUT/<pruned
    arch>.onnx and a JSON (widths, MACs, top-1 on the test split, latency priced by --table if given)."""
    from latency_tables.pruned import extend_table, price_pruned
    from latency_tables.table import LatencyTable
    from supernet.evaluate import accuracy
    from supernet.export import export_onnx
    from supernet.finetune import FinetuneConfig
    from supernet.prune import PruneConfig, planned_arch, prune_subnet

    config = PruneConfig(ratio=ratio, criterion=criterion, steps=steps,
                         finetune=FinetuneConfig(epochs=epochs, max_train_images=train_images))
    lut = LatencyTable.load(table) if table is not None else None
    sub, data, cfg = _subnet(supernet, arch, bn_images)
    folder = out or supernet.parent / "pruned"
    if lut is not None and not measure_missing:  # refuse before any training if the table cannot price the result
        price_pruned(lut, planned_arch(sub.backbone, cfg, config))
    res = prune_subnet(sub, data, config=config)
    info: dict[str, Any] = {"supernet": str(supernet), **res.to_json()}
    if lut is not None:
        if measure_missing:
            assert table is not None
            lut = extend_table(lut, res.pruned_arch.specs(lut.backbone), out=folder / f"{table.stem}.extended.csv")
        rows = price_pruned(lut, res.pruned_arch)  # UnpricedLayerError (an InputError) names the missing layers
        unpruned = lut.sum_ms(cfg)
        info["latency_table"] = {"path": str(lut.path), "pruned_ms": sum(ms for _, ms in rows), "unpruned_ms": unpruned}
    info["top1_test"] = {
        "unpruned": accuracy(sub, data.test, mean=data.mean, std=data.std, resolution=cfg.resolution),
        "pruned": accuracy(res.model, data.test, mean=data.mean, std=data.std, resolution=cfg.resolution)}
    name = str(res.pruned_arch)
    path = export_onnx(res.model, folder / f"{name}.onnx", input_shape=res.model.input_shape)
    info["model"] = str(path)
    atomic_write_json(folder / f"{name}.json", info)
    t = info["top1_test"]
    typer.echo(f"wrote {path} and {folder / (name + '.json')}; MACs {res.macs_before / 1e6:.2f} M -> "
               f"{res.macs_after / 1e6:.2f} M; top-1 {100 * t['unpruned']:.2f} % -> {100 * t['pruned']:.2f} %")
    if "latency_table" in info:
        lt = info["latency_table"]
        typer.echo(f"latency table {lt['path']}: {lt['unpruned_ms']:.3f} ms -> {lt['pruned_ms']:.3f} ms (plain sum)")
