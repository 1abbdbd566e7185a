"""The compare table of compressed variants and the filter that keeps only variants that pay in a bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from supernet.compression_compare import (
    CompressionVariant,
    SimulatedCompression,
    bundle_name,
    compare_compression,
    offered_variants,
    variants_file_entries,
)
from supernet.layers import StaticSubnet


def _row(method: str, top1: float, ms: float, size: int, backend: str = "onnxruntime") -> dict[str, Any]:
    return {"method": method, "backend": backend, "top1": top1, "latency_p50_ms": ms, "size_bytes": size,
            "simulated": False}


def test_a_pruned_variant_must_be_faster_or_smaller_than_equally_accurate_ones() -> None:
    rows = [
        _row("fp32", 0.90, 1.00, 1000), _row("int8", 0.90, 2.00, 300),
        _row("pruned", 0.899, 0.80, 700),          # faster than everything as accurate: offered
        _row("pruned-slow", 0.90, 1.01, 1000),     # as fast as fp32 (within 3 %) and no smaller: dropped
        _row("pruned+int8", 0.90, 1.90, 250),      # smaller than int8: offered
        _row("pruned-bad", 0.80, 0.50, 100),       # much less accurate than everything: nothing dominates it
        _row("sparse-50", 0.90, 1.00, 1000, backend="tflite"),  # no fp32 on tflite here: offered
        {**_row("binary (simulated)", 0.5, 0.0, 0), "simulated": True},
    ]
    offered, dropped = offered_variants(rows)
    names = {(r["method"], r["backend"]) for r in offered}
    assert names == {("fp32", "onnxruntime"), ("int8", "onnxruntime"), ("pruned", "onnxruntime"),
                     ("pruned+int8", "onnxruntime"), ("pruned-bad", "onnxruntime"), ("sparse-50", "tflite")}
    assert [(d["method"], d["dominated_by"]) for d in dropped] == [("pruned-slow", "fp32")]
    assert "no larger" in dropped[0]["reason"]


def test_near_equal_compressed_variants_do_not_drop_each_other() -> None:
    rows = [_row("fp32", 0.90, 1.0, 1000), _row("a", 0.95, 0.50, 500), _row("b", 0.949, 0.505, 500)]
    offered, dropped = offered_variants(rows)
    assert {r["method"] for r in offered} == {"fp32", "a"} and [d["method"] for d in dropped] == ["b"]
    with pytest.raises(ValueError, match="tolerances"):
        offered_variants(rows, acc_tol_pts=-1)


def test_bundle_names_follow_the_agents_convention() -> None:
    assert bundle_name("r24-x", "int8", "int8") == "r24-x@int8"
    assert bundle_name("r24-x~m8.16", "int8", "pruned+int8") == "r24-x~m8.16@int8+pruned+int8"


def test_compare_measures_every_variant_side_by_side(tiny_trained: tuple[StaticSubnet, object], tmp_path: Path) -> None:
    from supernet.compress import DeepCompressionConfig, deep_compress, write_compressed
    from supernet.prune import PruneConfig, prune_subnet
    from supernet.qat import FakeQuantSpec, simulate_quantized

    model, data = tiny_trained
    pr = prune_subnet(model, None, config=PruneConfig(ratio=0.5, finetune=None))
    dc = deep_compress(model, None, config=DeepCompressionConfig(sparsity=0.8, bits=4, finetune=None,
                                                                  centroid_finetune=None))
    art = write_compressed(dc, tmp_path / "m.hwdc")
    variants = [
        CompressionVariant(method="fp32", model=model, arch=str(model.arch)),
        CompressionVariant(method="int8", model=model, arch=str(model.arch), precision="int8"),
        CompressionVariant(method="pruned", model=pr.model, arch=str(pr.pruned_arch)),
        CompressionVariant(method="deep-compression", model=dc.model, arch=str(model.arch), artifact=art),
    ]
    sim = SimulatedCompression(method="binary-w1", model=simulate_quantized(model, spec=FakeQuantSpec(
        weight_bits=1, act_bits=None)))
    res = compare_compression(variants, data, backends=("onnxruntime",), out_dir=tmp_path / "cmp",  # type: ignore[arg-type]
                              resolution=model.arch.resolution, max_eval_images=64, warmup=1, runs=5,
                              simulated=[sim])
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"fp32", "int8", "pruned", "deep-compression", "binary-w1 (simulated)"}
    assert rows["fp32"]["speed_vs_baseline"]["median"] == pytest.approx(1.0)
    assert rows["pruned"]["file_bytes"] < rows["fp32"]["file_bytes"]
    assert rows["int8"]["file_bytes"] < rows["fp32"]["file_bytes"]
    assert rows["deep-compression"]["size_bytes"] == art.stat().st_size < rows["deep-compression"]["file_bytes"]
    b = rows["binary-w1 (simulated)"]
    assert b["simulated"] and b["latency_p50_ms"] is None and b["size_bytes"] is None
    assert rows["fp32"]["top1_agreement_baseline"] == 1.0
    assert res["eval_images"] == 64 and res["protocol"]["runs"] == 5
    offered, _ = offered_variants(res["rows"])
    entries = variants_file_entries(offered, backend="onnxruntime")
    (tmp_path / "variants.json").write_text(json.dumps(entries))
    from device_agents.variants import load_variants  # the agents' reader takes the file as it is

    loaded = load_variants(tmp_path / "variants.json")
    assert {v.name for v in loaded} == {r["name"] for r in offered if r["backend"] == "onnxruntime"}
    assert all(Path(v.model_path).is_file() and v.predicted_latency_ms > 0 for v in loaded)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate methods"):
        compare_compression([variants[0], variants[0]], data, out_dir=tmp_path, resolution=24)  # type: ignore[arg-type]
