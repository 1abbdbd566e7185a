from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nas.cache import AccuracyCache
from nas.predictor import AccuracyPredictor, fit_predictor
from nas.synthetic import make_synthetic_objective
from supernet.io import atomic_open
from supernet.space import get_space


@pytest.fixture(scope="module")
def predictor() -> AccuracyPredictor:
    obj = make_synthetic_objective("mnist", seed=0)
    rng = np.random.default_rng(0)
    archs = [obj.space.sample(rng) for _ in range(240)]
    return fit_predictor(obj.space, archs, obj.accuracy_fn(archs), hidden=(64, 64, 64), epochs=60, seed=0)


def test_predictor_learns_the_ranking(predictor: AccuracyPredictor) -> None:
    m = predictor.metrics
    assert m is not None and m.n_test == 48 and m.n_train == 192
    assert m.kendall_tau > 0.4 and m.rmse < 0.02


def test_fit_is_deterministic_and_leaves_torch_rng_alone() -> None:
    import torch

    obj = make_synthetic_objective("mnist", seed=0)
    rng = np.random.default_rng(1)
    archs = [obj.space.sample(rng) for _ in range(40)]
    y = obj.accuracy_fn(archs)
    state = torch.random.get_rng_state()
    a = fit_predictor(obj.space, archs, y, hidden=(16,), epochs=5, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    b = fit_predictor(obj.space, archs, y, hidden=(16,), epochs=5, seed=3)
    np.testing.assert_array_equal(a.predict(archs), b.predict(archs))


def test_artifact_roundtrip(predictor: AccuracyPredictor, tmp_path: Path) -> None:
    path = tmp_path / "pred.npz"
    predictor.save(path)
    loaded = AccuracyPredictor.load(path, space=get_space("mnist"))
    archs = [loaded.space.sample(np.random.default_rng(5)) for _ in range(20)]
    np.testing.assert_allclose(loaded.predict(archs), predictor.predict(archs), rtol=0, atol=1e-7)
    assert loaded.hidden == (64, 64, 64) and loaded.metrics == predictor.metrics
    with np.load(path, allow_pickle=False) as z:  # no pickled objects inside
        assert json.loads(z["manifest"].tobytes())["schema_version"] == 1


def _rewrite_manifest(src: Path, dst: Path, **changes: object) -> None:
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    m = json.loads(arrays["manifest"].tobytes())
    m.update(changes)
    arrays["manifest"] = np.frombuffer(json.dumps(m).encode(), dtype=np.uint8)
    with atomic_open(dst, "wb") as fh:
        np.savez(fh, **arrays)


def test_loader_refuses_wrong_schema_format_or_space(predictor: AccuracyPredictor, tmp_path: Path) -> None:
    good = tmp_path / "pred.npz"
    predictor.save(good)
    _rewrite_manifest(good, tmp_path / "v99.npz", schema_version=99)
    with pytest.raises(ValueError, match="schema_version 99 is not supported"):
        AccuracyPredictor.load(tmp_path / "v99.npz")
    _rewrite_manifest(good, tmp_path / "fmt.npz", format="something-else")
    with pytest.raises(ValueError, match="format"):
        AccuracyPredictor.load(tmp_path / "fmt.npz")
    with pytest.raises(ValueError, match="trained for space"):
        AccuracyPredictor.load(good, space=get_space("ofa-mbv3"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        AccuracyPredictor.load(tmp_path / "junk.npz")


def test_accuracy_cache_measures_once_and_persists(tmp_path: Path) -> None:
    obj = make_synthetic_objective("mnist")
    space = obj.space
    calls: list[int] = []

    def measure(cfgs):  # noqa: ANN001, ANN202
        calls.append(len(cfgs))
        return obj.accuracy_fn(cfgs)

    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(6)]
    db = tmp_path / "acc.sqlite"
    with AccuracyCache(db, space=space, context="supernet-abc/val") as cache:
        fn = cache.wrap(measure)
        first = fn(archs[:4] + archs[:2])
        second = fn(archs)
        assert calls == [4, 2] and len(cache) == 6
        np.testing.assert_array_equal(first[:4], second[:4])
    with AccuracyCache(db, space=space, context="supernet-abc/val") as cache:
        assert len(cache) == 6 and cache.wrap(measure)(archs).shape == (6,) and calls == [4, 2]
        assert {str(a) for a, _ in cache.items()} == {str(a) for a in archs}
    with AccuracyCache(db, space=space, context="other-supernet/val") as other:
        assert len(other) == 0 and other.get(archs[0]) is None
