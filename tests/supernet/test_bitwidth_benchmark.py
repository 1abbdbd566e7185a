"""``benchmarks/bitwidth.py --quick`` in a temporary folder: the results have the promised structure (every
backend x variant row, simulated rows without latency, targets and misses), the Markdown renders, and a rerun
resumes from the stored subnets instead of measuring again."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import load_benchmark


def _check(results: dict, backends: tuple[str, ...], bench: ModuleType) -> None:
    assert results["size"] == "quick" and results["backends"] == list(backends)
    assert list(results["subnets"]) == ["smallest", "largest"]
    for sub in results["subnets"].values():
        rows = sub["comparison"]["rows"]
        real = [r for r in rows if not r["simulated"]]
        assert [(r["backend"], r["variant"]) for r in real] == [(b, v) for b in backends for v in bench.VARIANT_ORDER]
        for r in real:
            assert 0 <= r["top1"] <= 1 and r["size_bytes"] > 0 and r["latency_p50_ms"] > 0
            assert r["latency_iqr_ms"] >= 0 and r["speed_vs_fp32"]["median"] > 0
            assert r["weight_dtypes"] and Path(r["path"]).is_file()
            if r["precision"] == "int8":
                assert set(r["weight_dtypes"]) == {"int8"}
        sims = [r for r in rows if r["simulated"]]
        assert len(sims) == 5 and all("(simulated)" in r["variant"] and r["latency_p50_ms"] is None
                                      and r["size_bytes"] is None for r in sims)
        assert sub["qat"]["steps"] >= 1 and isinstance(sub["qat_rule"]["would_run"], bool)
        assert 0 <= sub["fp32_finetuned"]["top1"] <= 1
        proto = sub["comparison"]["protocol"]
        assert proto["threads"] == 1 and proto["warmup"] == 2 and proto["runs"] == 10
        assert set(proto["backends"]) == set(backends)
        assert sub["comparison"]["environment_start"]["cpu_model"]
    s = results["summary"]
    assert set(s["gap_vs_fp32_pts"]["smallest"]) == set(backends)
    assert all(isinstance(m, str) and "points below fp32" in m for m in s["misses"])
    assert results["wall_time_s"] > 0


def _row(backend: str, variant: str, top1: float, speed: float) -> dict:
    return {"backend": backend, "variant": variant, "simulated": False, "precision": variant.split("-")[0],
            "top1": top1, "top1_agreement_fp32": 0.99, "size_bytes": 1000, "weight_dtypes": {"int8": 10},
            "latency_p50_ms": 1.0 / speed, "latency_iqr_ms": 0.1, "speed_vs_fp32": {"median": speed}}


def _fake_results(bench: ModuleType) -> dict:
    """Two subnets, one backend: the per-channel variant of 'b' misses its target by 1.5 points."""
    subnets = {}
    for name, pc in (("a", 0.900), ("b", 0.885)):
        rows = [_row("onnxruntime", v, t, s) for v, t, s in (
            ("fp32", 0.900, 1.0), ("fp16", 0.900, 1.1), ("int8-pt-minmax", 0.880, 0.5), ("int8-pc-minmax", pc, 0.4),
            ("int8-qat-pc-minmax", 0.898, 0.4))]
        rows.append({"backend": "torch (simulated)", "variant": "w4a8-pc (simulated)", "simulated": True,
                     "top1": 0.85, "top1_agreement_fp32": 0.9, "size_bytes": None, "latency_p50_ms": None,
                     "speed_vs_fp32": None})
        env = {"device": "host", "cpu_model": "Some CPU", "cpu_count": 2, "cpu_vnni": True, "loadavg_1_5_15": [1, 1, 1]}
        proto = {"threads": 1, "warmup": 2, "runs": 10,
                 "backends": {"onnxruntime": {"backend": "onnxruntime", "backend_version": "1.0", "provider": "CPU"}}}
        subnets[name] = {
            "arch": f"r24-{name}", "macs": 1e6, "quant_config": {"calib_images": 16, "reduce_range": False},
            "qat": {"steps": 2, "images": 64, "seconds": 1.0, "loss_first": 1.0, "loss_last": 0.9},
            "qat_rule": {"ptq_drop_pts": 1.5 if name == "b" else 0.0, "would_run": name == "b"},
            "fp32_finetuned": {"top1": 0.905, "steps": 2, "seconds": 1.0},
            "comparison": {"rows": rows, "protocol": proto, "environment_start": env, "environment_end": env,
                           "dataset": "mnist",
                           "eval_images": 64, "split": "test", "torch_fp32_top1": 0.9},
            "wall_s": 10.0,
        }
    return {"size": "quick", "backends": ["onnxruntime"], "subnets": subnets, "params": {"bn_images": 64},
            "supernet": {"source": "test"}, "machine_start": {"loadavg_1_5_15": [1, 1, 1]},
            "machine_end": {"loadavg_1_5_15": [1, 1, 1]}, "wall_time_s": 20.0}


def test_summary_and_markdown_report_misses_with_their_numbers() -> None:
    bench = load_benchmark("bitwidth")
    results = _fake_results(bench)
    s = bench.summarise(results)
    results["summary"] = s
    assert s["misses"] == ["b onnxruntime int8-pc-minmax: 1.5 points below fp32 (target 1.0)"]
    assert s["gap_vs_fp32_pts"]["a"]["onnxruntime"]["int8-qat-pc-minmax"] == pytest.approx(0.2)
    assert s["geomean_speed_vs_fp32"]["onnxruntime"]["fp16"] == pytest.approx(1.1)
    assert s["qat_rule_would_run"] == {"a": False, "b": True}
    assert s["qat_gap_vs_fp32_finetuned_pts"]["a"]["onnxruntime"] == pytest.approx(0.7)
    md = bench.render_markdown(results)
    assert "**missed**: b onnxruntime int8-pc-minmax: 1.5 points below fp32" in md
    assert "| onnxruntime | int8-pc-minmax | 88.5 | -1.5 |" in md
    assert "| w4a8-pc (simulated) | 85.0 | -5.0 |" in md and "no latency" in md
    assert "| a | 1.00 M | 90.0 | +0.0 | -2.0 | -0.2 | -0.7 | 0.40× | 1.10× |" in md
    assert "fine-tuned with the QAT recipe: top-1 90.5 %" in md
    assert "CPU Some CPU" in md and "2 warm-up rounds + 10 timed rounds" in md and "1 thread" in md


def test_pick_subnets_spreads_between_smallest_and_largest() -> None:
    from supernet.layers import Backbone, count_macs
    from supernet.space import get_space

    bench = load_benchmark("bitwidth")
    space, backbone = get_space("mnist"), Backbone(in_channels=1, num_classes=10, width_mult=0.35)
    picks = bench.pick_subnets(space, backbone, 5)
    assert list(picks) == ["smallest", "p25", "p50", "p75", "largest"]
    macs = [count_macs(backbone, c) for c in picks.values()]
    assert macs == sorted(macs) and len({str(c) for c in picks.values()}) == 5


@pytest.mark.slow  # ~40 s alone, 2 min on the loaded shared VM (trains a tiny supernet)
def test_quick_benchmark_onnxruntime_structure_and_resume(tmp_path: Path) -> None:
    """onnxruntime only (TFLite conversion takes ~15 s per model; the test below covers it)."""
    bench = load_benchmark("bitwidth")
    work, out = tmp_path / "work", tmp_path / "out"
    results = bench.run("quick", work=work, out=out, run_dir=None, backends=("onnxruntime",))
    _check(results, ("onnxruntime",), bench)
    saved = json.loads((out / "bitwidth.quick.json").read_text())
    assert saved["summary"] == json.loads(json.dumps(results["summary"]))
    md = (out / "bitwidth.quick.md").read_text()
    for text in ("# Bit-width benchmark (quick)", "## Targets", "| onnxruntime | int8-qat-pc-minmax |",
                 "(simulated)", "no latency", "warm-up rounds", "CPU "):
        assert text in md
    assert not list(out.glob(".*.tmp"))

    again = bench.run("quick", work=work, out=out, run_dir=None, backends=("onnxruntime",))  # resumes
    assert again["subnets"] == json.loads(json.dumps(results["subnets"]))
    assert again["wall_time_this_call_s"] < results["wall_time_this_call_s"]
    md = (out / "bitwidth.quick.md").read_text()
    bench.rerender(out, "quick")
    assert (out / "bitwidth.quick.md").read_text() == md


def test_run_dir_without_a_supernet_is_refused(tmp_path: Path) -> None:
    bench = load_benchmark("bitwidth")
    with pytest.raises(FileNotFoundError, match="no supernet/supernet.pt"):
        bench.run("quick", work=tmp_path, out=tmp_path, run_dir=tmp_path / "nothing", backends=("onnxruntime",))


@pytest.mark.slow
@pytest.mark.tflite
def test_quick_benchmark_all_backends(tmp_path: Path) -> None:
    """``python benchmarks/bitwidth.py --quick`` with every backend (about 2.5 min on the shared VM)."""
    pytest.importorskip("litert_torch")
    bench = load_benchmark("bitwidth")
    bench.main(["--quick", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out")])
    results = json.loads((tmp_path / "out" / "bitwidth.quick.json").read_text())
    _check(results, bench.BACKENDS, bench)
    rows = results["subnets"]["smallest"]["comparison"]["rows"]
    by = {(r["backend"], r["variant"]): r for r in rows}
    assert by[("tflite", "int8-pc-minmax")]["path"] == by[("tflite-builtin", "int8-pc-minmax")]["path"]
    assert "| tflite-builtin | int8-pc-minmax |" in (tmp_path / "out" / "bitwidth.quick.md").read_text()


def test_resume_reuses_results_only_of_the_same_supernet_size_and_config(tmp_path: Path) -> None:
    """smallest/largest have the same architecture on every supernet: cached results and QAT weights are reused
    only when the supernet file's sha256, the size and the quant config match."""
    from supernet.io import atomic_write_json
    from supernet.quantize import QuantConfig

    bench = load_benchmark("bitwidth")
    size = bench.SIZES["quick"]
    want = bench.fingerprint(supernet_sha256="a" * 64, size=size, base=QuantConfig(), backends=("onnxruntime",))
    path = tmp_path / "smallest.json"
    atomic_write_json(path, {"arch": "x", "fingerprint": want})
    assert bench._reusable(path, want, what="smallest") == {"arch": "x", "fingerprint": want}
    for other in (bench.fingerprint(supernet_sha256="b" * 64, size=size, base=QuantConfig(), backends=("onnxruntime",)),
                  bench.fingerprint(supernet_sha256="a" * 64, size=bench.SIZES["full"], base=QuantConfig(),
                                    backends=("onnxruntime",)),
                  bench.fingerprint(supernet_sha256="a" * 64, size=size, base=QuantConfig(reduce_range=True,
                                                                                          calib_images=7),
                                    backends=("onnxruntime",))):
        assert bench._reusable(path, other, what="smallest") is None
    atomic_write_json(path, {"arch": "x"})  # written before fingerprints existed: recomputed
    assert bench._reusable(path, want, what="smallest") is None
