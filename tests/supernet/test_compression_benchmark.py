"""``benchmarks/compression.py --quick`` in a temporary folder (slow: ~10 min on the shared VM): every method per
backend, simulated rows without latency, the size report per stage, a partial report after every subnet and a
rerun that resumes from the stored subnets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench_scripts import load_benchmark


@pytest.mark.slow
def test_quick_benchmark_end_to_end(tmp_path: Path) -> None:
    bench = load_benchmark("compression")
    out, work = tmp_path / "out", tmp_path / "work"
    bench.main(["--quick", "--out", str(out), "--work", str(work)])
    res = json.loads((out / "compression.quick.json").read_text())
    assert res["complete"] and list(res["subnets"]) == ["smallest", "largest"]
    for sub in res["subnets"].values():
        rows = sub["comparison"]["rows"]
        methods = {(r["backend"], r["method"]) for r in rows if not r["simulated"]}
        assert {("onnxruntime", m) for m in ("fp32", "int8", "pruned-50", "pruned-50+int8", "sparse-50", "dc-50",
                                             "sparse-90", "dc-90")} <= methods
        assert {("tflite", m) for m in ("fp32", "int8", "pruned-50", "sparse-90")} <= methods
        sims = [r for r in rows if r["simulated"]]
        assert len(sims) == 2 and all(r["latency_p50_ms"] is None and "(simulated)" in r["method"] for r in sims)
        for u in sub["unstructured"].values():
            s = u["size_report"]
            assert s["dense_fp32_bytes"] > s["pruned_bytes"] > s["shared_bytes"] >= s["huffman_bytes"]
            assert Path(u["artifact"]).stat().st_size == s["file_bytes"]
    md = (out / "compression.quick.md").read_text()
    assert "## Targets" in md and "Offered to a bundle" in md and "(simulated)" in md
    before = (work / "quick" / "compression" / "smallest.json").stat().st_mtime_ns
    bench.main(["--quick", "--out", str(out), "--work", str(work)])  # resumes: nothing recomputed
    assert (work / "quick" / "compression" / "smallest.json").stat().st_mtime_ns == before
