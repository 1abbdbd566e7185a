"""Search -> bundle ladder: front and ladder picking, dominated variants dropped, held-out accuracy, the manifest's
own hash, and the agent beating every static variant on a constructed scenario."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from device_agents import Variant
from device_agents.adaptation import ladder_setting, run_adaptation
from device_agents.bundle import MEASURED_TABLE, BundleHashError, build_bundle, load_bundle
from device_agents.ladder import (
    Candidate,
    LadderConfig,
    LadderVariant,
    build_ladder,
    drop_dominated,
    pareto,
    pick_ladder,
)
from supernet.data import ImageDataset, load_dataset
from supernet.layers import Backbone
from supernet.model import OFASupernet
from supernet.space import SearchSpace
from supernet.train import save_supernet

SPACE = SearchSpace(name="ladder-test", resolutions=(16, 24), depth_choices=(1, 2), kernel_choices=(3, 5),
                    expand_choices=(3, 6))


def _lv(name: str, median: float, val: float, test: float = 0.5) -> LadderVariant:
    return LadderVariant(name=name, arch=name, precision="fp32", predicted_latency_ms=median, val_top1=val,
                         heldout_top1=test, heldout_images=10, val_images=10, median_ms=median, p99_ms=2 * median,
                         quantiles_ms=(median, 2 * median), requests=2, model_path="x.onnx", size_bytes=1)


def test_pareto_and_ladder_pick_the_front_from_fastest_to_most_accurate() -> None:
    cands = [Candidate("a", 0.80, 1.0), Candidate("b", 0.85, 2.0), Candidate("c", 0.84, 3.0),  # c dominated by b
             Candidate("d", 0.90, 4.0), Candidate("e", 0.92, 8.0), Candidate("f", 0.93, 16.0),
             Candidate("g", 0.79, 0.5)]
    front = pareto(cands)
    assert [c.arch for c in front] == ["g", "a", "b", "d", "e", "f"]
    picked = pick_ladder(front, 3)
    assert [c.arch for c in picked] == ["g", "d", "f"]  # both ends, the middle nearest log-midpoint (2.83 ms)
    assert [c.arch for c in pick_ladder(front, 10)] == [c.arch for c in front]
    assert [c.arch for c in pick_ladder(front, 1)] == ["f"]


def test_dominated_variants_are_dropped_by_measurement() -> None:
    # int8 measured slower than fp32 of the same subnet and no more accurate: dropped; a faster, less accurate
    # variant and a slower, more accurate one both stay.
    vs = drop_dominated([_lv("s@fp32", 1.0, 0.90), _lv("s@int8", 1.5, 0.90), _lv("l@fp32", 2.0, 0.95),
                         _lv("l@int8", 2.6, 0.949)])
    kept = {v.name: v.kept for v in vs}
    assert kept == {"s@fp32": True, "s@int8": False, "l@fp32": True, "l@int8": False}
    assert "s@fp32" in (vs[1].dropped_because or "")
    # if int8 paid (faster at equal accuracy), fp32 would go instead
    vs = drop_dominated([_lv("s@fp32", 1.0, 0.90), _lv("s@int8", 0.6, 0.90)])
    assert [v.kept for v in vs] == [False, True]


@pytest.fixture(scope="module")
def ladder_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A tiny untrained supernet on the 8x8 digits set, a search folder with a few evaluated subnets, and a test
    split whose labels no model can hit (every label -1 -> 10): held-out top-1 is exactly 0 while val is not."""
    root = tmp_path_factory.mktemp("ladder")
    torch.manual_seed(0)
    net = OFASupernet(space=SPACE, backbone=Backbone(in_channels=1, num_classes=10, width_mult=0.25))
    sn = save_supernet(net, root / "supernet.pt", extra={"train_config": {"dataset": "digits", "seed": 0}})
    data = load_dataset("digits", seed=0, val_fraction=0.3)
    data = dataclasses.replace(data, test=ImageDataset(images=data.test.images,
                                                       labels=torch.full_like(data.test.labels, 10)))
    rng = np.random.default_rng(0)
    archs = [SPACE.smallest(), SPACE.largest()] + [SPACE.sample(rng) for _ in range(6)]
    evals = [{"arch": str(a), "accuracy": 0.5 + 0.05 * i, "latency_ms": 1.0 + i, "reward": 0.0}
             for i, a in enumerate(archs)]
    search = root / "search"
    search.mkdir()
    (search / "evaluations.json").write_text(json.dumps(evals))
    (search / "search_config.json").write_text(json.dumps({"supernet_path": str(sn), "bn_images": 32,
                                                           "targets_ms": [4.5]}))
    cfg = LadderConfig(n_subnets=2, precisions=("fp32",), bn_images=32, rounds=2, requests_per_round=3,
                       warmup_requests=1)
    res = build_ladder(search, root / "bundle", config=cfg, net=net, data=data)
    return {"res": res, "root": root, "data": data}


def test_ladder_accuracy_is_the_heldout_split_not_val(ladder_run: dict[str, object]) -> None:
    res = ladder_run["res"]
    b = load_bundle(res.bundle_dir)  # type: ignore[attr-defined]
    assert b.default_table == MEASURED_TABLE and b.entries
    assert len(res.rungs) <= 2 and all(c.latency_ms <= 4.5 for c in res.rungs)  # type: ignore[attr-defined]
    for e in b.entries:
        v = next(x for x in res.variants if x.name == e.name)  # type: ignore[attr-defined]
        assert v.val_top1 > 0.0  # val is scorable ...
        assert e.accuracy == 0.0 == v.heldout_top1  # ... but the served accuracy is the (unhittable) test split's
        assert e.accuracy_info is not None and e.accuracy_info["split"] == "test"
        assert e.accuracy_info["selection_top1"] == v.val_top1
        m = e.measured_latency
        assert m is not None and m["requests"] == 6 and 0 < m["median_ms"] <= m["p99_ms"]
        assert e.predicted_latency_ms[MEASURED_TABLE] == m["median_ms"]
    assert set(b.latency_quantiles()) == {e.name for e in b.entries}
    assert b.measurement is not None and b.measurement["backend"] == "onnxruntime"
    assert (res.bundle_dir.parent / "bundle.ladder.json").is_file()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["variants"][0].update(accuracy=0.99),
        lambda m: m["variants"][0]["predicted_latency_ms"].update(measured=1e-6),
        lambda m: m["variants"][0]["measured_latency"].update(p99_ms=1e-6),
        lambda m: m.update(default_table="variants-file"),
    ],
)
def test_bundle_hash_covers_the_manifest_numbers(tmp_path: Path, tiny_variants: tuple[Variant, ...],
                                                 edit: object) -> None:
    measured = {v.name: {"median_ms": 1.0 + i, "p99_ms": 2.0 + i, "quantiles_ms": [0.5 + i, 1.0 + i, 3.0 + i],
                         "requests": 3} for i, v in enumerate(tiny_variants)}
    build_bundle(tiny_variants, tmp_path / "b", measured=measured, measurement={"backend": "x"},
                 default_table=MEASURED_TABLE)
    load_bundle(tmp_path / "b")
    path = tmp_path / "b" / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)  # type: ignore[operator]
    path.write_text(json.dumps(m, indent=2))
    with pytest.raises(BundleHashError, match="content_sha256"):
        load_bundle(tmp_path / "b")


def _constructed_ladder() -> tuple[tuple[Variant, ...], dict[str, list[float]]]:
    """Four fp32 rungs 1/1.4/2/2.8 ms (tight measured spread), accuracies 0.90/0.93/0.95/0.96."""
    vs, qs = [], {}
    for i, (ms, acc) in enumerate(((1.0, 0.90), (1.4, 0.93), (2.0, 0.95), (2.8, 0.96))):
        name = f"v{i}@fp32"
        vs.append(Variant(name=name, arch=f"a{i}", precision="fp32", predicted_latency_ms=ms, accuracy=acc))
        qs[name] = list(ms * np.linspace(0.97, 1.06, 11))
    return tuple(vs), qs


def test_agent_beats_every_static_variant_on_a_constructed_scenario() -> None:
    vs, qs = _constructed_ladder()
    st = ladder_setting(vs, qs)
    assert st.largest == "v3@fp32" and st.smallest == "v0@fp32"
    p99_small = float(np.interp(0.99, np.linspace(0, 1, 11), qs["v0@fp32"]))
    assert st.deadline_ms < 2.8 and st.max_slowdown * p99_small == pytest.approx(st.deadline_ms)
    assert st.largest_misses_at_full_speed and st.smallest_level == 0.99
    study = run_adaptation(vs, qs, scenarios=("thermal-throttling",), seeds=(0,), duration_s=200.0)
    pol = study["scenarios"]["thermal-throttling"]["policies"]
    statics = {k: v for k, v in pol.items() if k.startswith("static:")}
    assert len(statics) == 4
    assert pol["static:v3@fp32"]["miss_rate"] > 0.5  # the largest misses at full speed
    assert pol["static:v0@fp32"]["miss_rate"] == 0.0  # the smallest always meets
    best_static = max(m["effective_accuracy"] for m in statics.values())
    assert pol["agent"]["effective_accuracy"] > best_static
    assert pol["oracle"]["effective_accuracy"] >= pol["agent"]["effective_accuracy"]
