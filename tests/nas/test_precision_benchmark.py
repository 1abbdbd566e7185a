"""`benchmarks/precision.py`: the accuracy-predictor-per-bit-width benchmark.

Fast: the cross-validation, data summary and Markdown on synthetic records, and ``--import-cache`` refusing rows
of another context. Slow: the real ``--quick`` mode (tiny supernet trained, onnxruntime int8) in a tmp dir, run
twice to check that the second call measures nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_scripts import load_benchmark

from nas.cache import AccuracyCache
from supernet.space import ArchConfig, get_space

bench = load_benchmark("precision")


def _synthetic_records(n_both: int, n_fp32: int) -> list[tuple[ArchConfig, str, float]]:
    """fp32 top-1 rising with depth, int8 = fp32 minus a small arch-dependent drop, on the validation grid of 500."""
    space = get_space("mnist")
    archs = bench.sample_archs(space, n_both + n_fp32, seed=0)
    out = []
    for i, a in enumerate(archs):
        fp32 = round(500 * (0.9 + 0.01 * sum(a.depths) / len(a.depths))) / 500
        out.append((a, "fp32", fp32))
        if i < n_both:
            out.append((a, "int8", fp32 - (i % 3) / 500))
    return out


def _fake_results(records: list[tuple[ArchConfig, str, float]], cv: dict[str, Any]) -> dict[str, Any]:
    return {"size": "synthetic", "params": {"bn_images": 64, "calib_images": 16},
            "supernet": {"source": "synthetic", "sha256": "0" * 64}, "recipe": "onnxruntime:pc-minmax:rr0",
            "context": "ctx", "sample_seed": 0, "import": None, "data": bench.describe_data(records, n_val=500),
            "cv": cv, "machine": {"cpu_model": "test CPU", "cpu_count": 2},
            "wall_time_s": {"total": 60.0, "supernet_training": 0.0, "measuring": 50.0, "cross_validation": 10.0}}


def test_sample_archs_is_a_prefix_stream() -> None:
    space = get_space("mnist")
    short, long = bench.sample_archs(space, 5), bench.sample_archs(space, 12)
    assert long[:5] == short
    assert len({str(a) for a in long}) == 12
    assert all(space.canonical(a) == a for a in long)


def test_describe_data_on_synthetic_records() -> None:
    recs = _synthetic_records(9, 3)
    d = bench.describe_data(recs, n_val=500)
    diffs = [(i % 3) * 100 / 500 for i in range(9)]
    assert d["int8_minus_fp32_pts"]["mean"] == pytest.approx(-np.mean(diffs))
    assert d["int8_minus_fp32_pts"]["sd"] == pytest.approx(np.std(diffs, ddof=1))
    assert d["one_image_pts"] == pytest.approx(0.2)
    assert d["int8_minus_fp32_abs_le_one_image"] == pytest.approx(6 / 9)
    assert d["measured_fp32_as_int8"]["n"] == 9
    assert d["measured_fp32_as_int8"]["rmse_pt"] == pytest.approx(math.sqrt(np.mean(np.square(diffs))))
    f32 = np.asarray([y for _, p, y in recs if p == "fp32"])
    assert d["binomial_se_pts_at_mean_fp32"] == pytest.approx(100 * math.sqrt(f32.mean() * (1 - f32.mean()) / 500))


def test_cross_validation_and_markdown_on_synthetic_records() -> None:
    recs = _synthetic_records(8, 4)
    cv = bench.cross_validate(get_space("mnist"), recs, folds=2, hidden=(8,), epochs=3)
    assert cv["architectures_cv"] == 8 and cv["architectures_fp32_only"] == 4 and cv["fold_sizes"] == [4, 4]
    assert set(cv["scores"]) == set(bench.PREDICTORS)
    for m, per in cv["scores"].items():
        assert per["int8"]["n"] == 8 and len(per["int8"]["rmse_pt_per_fold"]) == 2
        assert per["int8"]["rmse_pt"] >= 0
        if m == "scratch-int8":
            assert per["fp32"] is None  # an int8-only model has no fp32 prediction
        else:
            assert per["fp32"]["n"] == 8
    # fp32-as-is predicts the same number at both precisions
    md = bench.render_markdown(_fake_results(recs, cv))
    assert "N = 8 subnets measured at fp32 and int8 + 4 at fp32 only" in md
    for m in bench.PREDICTORS:
        assert f"| {m} |" in md
    assert "| scratch-int8 | – | – |" in md
    assert "one image = 0.20 pts" in md
    json.dumps(_fake_results(recs, cv))  # the results are plain JSON


def test_cross_validation_needs_enough_architectures() -> None:
    with pytest.raises(ValueError, match="fewer than 5 folds"):
        bench.cross_validate(get_space("mnist"), _synthetic_records(3, 2), folds=5, hidden=(4,), epochs=1)
    with pytest.raises(ValueError, match="need >= 4"):
        bench.cross_validate(get_space("mnist"), _synthetic_records(6, 2), folds=2, hidden=(4,), epochs=1)


def test_import_cache_copies_only_the_same_context(tmp_path: Path) -> None:
    space = get_space("mnist")
    recs = _synthetic_records(3, 1)
    src = tmp_path / "src.sqlite"
    for ctx in ("mine", "other"):
        with AccuracyCache(src, space=space, context=ctx) as c:
            for p in ("fp32", "int8"):
                c.put_many([(a, y) for a, q, y in recs if q == p], precision=p)
    dst = tmp_path / "dst.sqlite"
    done = bench.import_cache(src, dst, space=space, context="mine")
    assert done["imported"] == len(recs)
    with AccuracyCache(dst, space=space, context="mine") as c:
        assert sorted((str(a), p, y) for a, p, y in c.records()) == sorted((str(a), p, y) for a, p, y in recs)
    refused = bench.import_cache(src, tmp_path / "dst2.sqlite", space=space, context="new-recipe")
    assert refused["imported"] == 0 and sorted(refused["contexts_found"]) == ["mine", "other"]


@pytest.mark.slow
def test_quick_mode_end_to_end_and_resumes(tmp_path: Path) -> None:
    work, out = tmp_path / "work", tmp_path / "out"
    bench.main(["--quick", "--work", str(work), "--out", str(out)])
    res = json.loads((out / "precision.quick.json").read_text())
    size = bench.SIZES["quick"]
    assert res["cv"]["architectures_cv"] == size.n_both and res["cv"]["architectures_fp32_only"] == size.n_fp32
    assert res["cv"]["records"] == 2 * size.n_both + size.n_fp32
    assert res["measuring"]["records_measured_in_this_call"] == 2 * size.n_both + size.n_fp32
    assert res["context"].endswith(res["recipe"]) and res["recipe"].startswith("onnxruntime:pc-minmax")
    assert 0 <= res["data"]["fp32_top1_pct"]["mean"] <= 100
    assert f"N = {size.n_both} subnets" in (out / "precision.quick.md").read_text()
    bench.main(["--quick", "--work", str(work), "--out", str(out)])  # resumed: everything cached
    again = json.loads((out / "precision.quick.json").read_text())
    assert again["measuring"]["records_measured_in_this_call"] == 0
    assert again["data"] == res["data"]
