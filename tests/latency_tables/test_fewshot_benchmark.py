"""benchmarks/fewshot.py end to end on synthetic devices (per-layer cost models), small sizes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from bench_scripts import load_benchmark  # type: ignore[import-not-found]

from supernet.layers import Backbone, layer_specs
from supernet.space import get_space


def _fake_measurements(path: Path, n: int = 70) -> None:
    space, bb = get_space("ofa-mbv3"), Backbone(width_mult=1.0)
    rng = np.random.default_rng(0)
    archs = [space.canonical(space.sample(rng)) for _ in range(n)]
    # three "devices": different costs per MAC, per layer and for 7x7 depthwise kernels, plus 2 % noise
    costs = {"dev-a": (0.020, 0.02, 0.00), "dev-b": (0.012, 0.05, 0.01), "dev-c": (0.030, 0.01, 0.03)}
    devices = {}
    for name, (per_mmac, per_layer, k7) in costs.items():
        subs = {}
        for i, a in enumerate(archs):
            t = sum(per_mmac * s.macs() / 1e6 + per_layer + (k7 if s.kernel == 7 and s.op == "mbconv" else 0)
                    for s in layer_specs(bb, a))
            procs = [float(t * np.exp(rng.normal(0, 0.02))) for _ in range(3)]
            if name == "dev-c" and i % 2:  # one device's first process runs 30 % slow on every other subnet
                procs[0] *= 1.3
            subs[f"s{i:04d}"] = {"median_ms": float(np.median(procs)), "process_medians_ms": procs}
        devices[name] = {"subnets": subs}
    path.write_text(json.dumps({"archs": {f"s{i:04d}": a.to_json() for i, a in enumerate(archs)},
                                "backbone": bb.to_json(), "method": "synthetic", "machine": {},
                                "devices": devices}))


def test_benchmark_scores_every_target_and_method(tmp_path: Path) -> None:
    bench = load_benchmark("fewshot")
    meas = tmp_path / "ofa-subnets.json"
    _fake_measurements(meas)
    out = tmp_path / "fewshot.json"
    assert bench.main(["--measurements", str(meas), "--out", str(out), "--pool", "25", "--min-test", "20",
                       "--ks", "5,10", "--seeds", "1"]) == 0
    res = json.loads(out.read_text())
    assert res["devices"] == ["dev-a", "dev-b", "dev-c"] and res["n_test"] == 45
    s = res["summary"]
    for t in res["devices"]:
        for m in ("adapted", "affine-best-source", "best-single-source", "gp-no-source", "macs"):
            assert f"{t}|chosen|10|{m}" in s and f"{t}|random|5|{m}" in s
        assert f"{t}|chosen|10|ops-no-source" in s and f"{t}|chosen|5|ops-no-source" not in s  # ops needs K >= 10
        # the devices are near-affine in each other: with sources, 10 measurements predict within +-10 %
        assert s[f"{t}|chosen|10|adapted"]["within10"] >= 0.9
    md = out.with_suffix(".md").read_text()
    assert "| dev-a | 10 |" in md and ">= 200 held-out subnets: MISSED (45 held out)" in md
    # the yardstick: 2 % noise reproduces within 10 %; dev-c's slow first process on half the subnets does not
    y = res["yardstick"]
    assert y["dev-a"]["within10"] == 1.0 and 0.4 <= y["dev-c"]["within10"] <= 0.6
    assert "| dev-c | batched | 70 |" in md
