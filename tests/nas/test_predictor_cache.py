from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from nas.cache import ACCURACY_CACHE_SCHEMA_VERSION, AccuracyCache
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
        assert json.loads(z["manifest"].tobytes())["schema_version"] == 2


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

    def measure(cfgs):
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


# --------------------------------------------------------------------------- bit-width aware (APQ-style)
FIXTURES = Path(__file__).parent / "fixtures"


def _int8_accuracy(fp32: np.ndarray, archs: list) -> np.ndarray:  # type: ignore[type-arg]
    """SYNTHETIC int8 accuracy: fp32 minus a drop that grows for small-expand networks (as per-channel PTQ of
    thin layers does), so the drop is architecture dependent and always positive."""
    thin = np.asarray([np.mean([e for e in a.expand_ratios if e]) for a in archs])
    return fp32 - 0.02 - 0.01 * (6 - thin)


@pytest.fixture(scope="module")
def pairs() -> tuple[list, list[str], np.ndarray]:  # type: ignore[type-arg]
    obj = make_synthetic_objective("mnist", seed=0)
    rng = np.random.default_rng(11)
    archs = list({obj.space.sample(rng) for _ in range(160)})
    fp32 = obj.accuracy_fn(archs)
    int8 = _int8_accuracy(fp32, archs)
    return archs + archs, ["fp32"] * len(archs) + ["int8"] * len(archs), np.concatenate([fp32, int8])


@pytest.fixture(scope="module")
def aware(pairs: tuple[list, list[str], np.ndarray]) -> AccuracyPredictor:  # type: ignore[type-arg]
    archs, precs, y = pairs
    return fit_predictor(get_space("mnist"), archs, y, precisions=precs, hidden=(64, 64, 64), epochs=80, seed=0)


def test_encoding_appends_a_precision_one_hot(aware: AccuracyPredictor) -> None:
    space = aware.space
    a, b = space.smallest(), space.largest()
    x = aware.inputs([a, b], ["fp32", "int8"])
    n = space.encoding_size("onehot")
    assert aware.precisions == ("fp32", "int8") and x.shape == (2, n + 2)
    np.testing.assert_array_equal(x[:, :n], space.encode_many([a, b], "onehot"))
    np.testing.assert_array_equal(x[:, n:], [[1, 0], [0, 1]])
    with pytest.raises(ValueError, match=r"precision\(s\) \['fp16'\].*no measurements at that precision"):
        aware.predict([a], precision="fp16")
    with pytest.raises(ValueError, match="2 precisions for 1 architectures"):
        aware.predict([a], precision=["fp32", "int8"])


def test_aware_predictor_learns_that_int8_is_below_fp32(aware: AccuracyPredictor, pairs: tuple) -> None:  # type: ignore[type-arg]
    archs, _, _ = pairs
    obj = make_synthetic_objective("mnist", seed=0)
    rng = np.random.default_rng(99)
    unseen = [a for a in (obj.space.sample(rng) for _ in range(80)) if a not in set(archs)]
    p32, p8 = aware.predict(unseen, precision="fp32"), aware.at("int8")(unseen)
    true_gap = obj.accuracy_fn(unseen) - _int8_accuracy(obj.accuracy_fn(unseen), unseen)
    assert np.mean(p8 < p32) >= 0.95
    assert np.mean(p32 - p8) == pytest.approx(np.mean(true_gap), abs=0.01)
    m = aware.metrics_by_precision
    assert set(m) == {"fp32", "int8"} and m["int8"].n_test == m["fp32"].n_test > 10  # split by architecture
    assert m["int8"].kendall_tau > 0.4 and m["int8"].rmse < 0.03
    assert aware.training["split"] == "by architecture"


def test_aware_artifact_roundtrip(aware: AccuracyPredictor, tmp_path: Path) -> None:
    aware.save(tmp_path / "apq.npz")
    loaded = AccuracyPredictor.load(tmp_path / "apq.npz", space=get_space("mnist"))
    archs = [loaded.space.sample(np.random.default_rng(5)) for _ in range(10)]
    for p in ("fp32", "int8"):
        np.testing.assert_allclose(loaded.predict(archs, precision=p), aware.predict(archs, precision=p), atol=1e-7)
    assert loaded.precisions == ("fp32", "int8") and loaded.metrics_by_precision == aware.metrics_by_precision
    with np.load(tmp_path / "apq.npz", allow_pickle=False) as z:
        assert json.loads(z["manifest"].tobytes())["precisions"] == ["fp32", "int8"]


def test_version1_artifact_still_loads_as_fp32_only() -> None:
    old = AccuracyPredictor.load(FIXTURES / "accuracy-predictor-v1.npz", space=get_space("mnist"))
    want = json.loads((FIXTURES / "accuracy-predictor-v1.expected.json").read_text())
    archs = [old.space.parse(a) for a in want]
    np.testing.assert_allclose(old.predict(archs), list(want.values()), atol=1e-6)
    np.testing.assert_allclose(old.at("fp32")(archs), old(archs))
    assert not old.precision_aware and old.supported_precisions == ("fp32",)
    with pytest.raises(ValueError, match="trained on fp32 accuracies only"):
        old.at("int8")


def test_transfer_from_the_fp32_predictor(pairs: tuple) -> None:  # type: ignore[type-arg]
    """APQ: start from the fp32 predictor. Before any training the int8 prediction is the fp32 one shifted by the
    measured mean difference; fine-tuned on int8 pairs of only 30 architectures it ranks and predicts unseen
    architectures at int8 better than a predictor trained from scratch on the same pairs."""
    archs, _, y = pairs
    space = get_space("mnist")
    n = len(archs) // 2
    fp32, int8 = y[:n], y[n:]
    fp32_pred = fit_predictor(space, archs[:120], fp32[:120], hidden=(64, 64, 64), epochs=80, seed=0, test_fraction=0)
    few = 30
    kw = {"precisions": ["fp32"] * few + ["int8"] * few, "test_fraction": 0, "seed": 0}
    x, t = archs[:few] * 2, np.concatenate([fp32[:few], int8[:few]])
    start = fit_predictor(space, x, t, init_from=fp32_pred, epochs=0, **kw)
    probe = archs[120:130]
    np.testing.assert_allclose(start.predict(probe), fp32_pred.predict(probe), atol=1e-6)
    shift = start.predict(probe, precision="int8") - fp32_pred.predict(probe)
    assert start.y_offsets["int8"] < -0.02 and np.allclose(shift, start.y_offsets["int8"], atol=1e-6)
    assert start.hidden == (64, 64, 64) and start.training["init_from"]["precisions"] == ["fp32"]
    tuned = fit_predictor(space, x, t, init_from=fp32_pred, epochs=80, **kw)
    scratch = fit_predictor(space, x, t, hidden=(64, 64, 64), epochs=80, **kw)
    unseen, want = archs[120:n], int8[120:]
    m_tuned = tuned.evaluate(unseen, want, precision="int8")
    m_scratch = scratch.evaluate(unseen, want, precision="int8")
    assert m_tuned.rmse < 0.8 * m_scratch.rmse and m_tuned.kendall_tau > m_scratch.kendall_tau + 0.1


def test_old_cache_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    shutil.copyfile(FIXTURES / "accuracy-cache-v1.sqlite", db)
    space = get_space("mnist")
    with sqlite3.connect(db) as con:
        before = con.execute("SELECT context, arch, accuracy, measured_at FROM accuracy ORDER BY context, arch").fetchall()
    assert len(before) == 8
    with AccuracyCache(db, space=space, context="fixture-supernet/val") as cache:
        assert len(cache) == 6 and cache.precisions() == ["fp32"]
        assert {(str(a), v) for a, v in cache.items()} == {(a, v) for c, a, v, _ in before if c == "fixture-supernet/val"}
        arch = cache.items()[0][0]
        assert cache.get(arch) == cache.get(arch, precision="fp32") is not None and cache.get(arch, precision="int8") is None
        assert cache.put_many([(arch, 0.5)], precision="int8") == 1
        assert cache.get(arch, precision="int8") == 0.5 and cache.get(arch) != 0.5
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT value FROM meta").fetchone() == (str(ACCURACY_CACHE_SCHEMA_VERSION),)
        after = con.execute("SELECT context, arch, accuracy, measured_at FROM accuracy WHERE precision='fp32' "
                            "ORDER BY context, arch").fetchall()
    assert after == before
    with AccuracyCache(db, space=space, context="fixture-supernet/val", precision="int8") as again:  # reopen: v2 as is
        assert len(again) == 1 and sorted(p for _, p, _ in again.records()) == ["fp32"] * 6 + ["int8"]
        assert len(again.records(precisions=["int8"])) == 1
    with AccuracyCache(db, space=space, context="other/val") as other:
        assert len(other) == 2


def test_cache_refuses_a_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "new.sqlite"
    AccuracyCache(db, space=get_space("mnist"), context="c").close()
    with sqlite3.connect(db) as con:
        con.execute("UPDATE meta SET value='9' WHERE key='schema_version'")
    with pytest.raises(ValueError, match="schema_version 9 is not supported"):
        AccuracyCache(db, space=get_space("mnist"), context="c")


def test_cache_measures_each_precision_once(tmp_path: Path) -> None:
    obj = make_synthetic_objective("mnist")
    calls: list[tuple[str, int]] = []

    def measure_at(p: str):
        def fn(cfgs):
            calls.append((p, len(cfgs)))
            acc = obj.accuracy_fn(cfgs)
            return acc if p == "fp32" else _int8_accuracy(acc, list(cfgs))
        return fn

    rng = np.random.default_rng(3)
    archs = [obj.space.sample(rng) for _ in range(4)]
    with AccuracyCache(tmp_path / "c.sqlite", space=obj.space, context="s/val") as cache:
        f32 = cache.wrap(measure_at("fp32"))(archs)
        i8 = cache.wrap(measure_at("int8"), precision="int8")(archs)
        cache.wrap(measure_at("int8"), precision="int8")(archs[:2])
        assert calls == [("fp32", 4), ("int8", 4)] and np.all(i8 < f32)
        recs = cache.records()
        assert len(recs) == 8 and {p for _, p, _ in recs} == {"fp32", "int8"}
        with pytest.raises(ValueError, match="precision '': expected one of fp32, fp16, int8"):
            cache.get(archs[0], precision="")
        with pytest.raises(ValueError, match="precision 'INT8': expected one of fp32, fp16, int8"):
            cache.put_many([(archs[0], 0.5)], precision="INT8")
    with pytest.raises(ValueError, match="precision 'int4'"):
        AccuracyCache(tmp_path / "c.sqlite", space=obj.space, context="s/val", precision="int4")


def test_fit_predictor_command_trains_apq_from_a_cache(pairs: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    from typer.testing import CliRunner

    from hwnas.commands.nas import app

    archs, _precs, y = pairs
    n = len(archs) // 2
    with AccuracyCache(tmp_path / "acc.sqlite", space=get_space("mnist"), context="sn/val") as cache:
        cache.put_many(zip(archs[:n], y[:n]))  # every architecture at fp32 ...
        cache.put_many(zip(archs[n : n + 60], y[n : n + 60]), precision="int8")  # ... 60 of them at int8
    res = CliRunner().invoke(app, ["fit-predictor", "--cache", str(tmp_path / "acc.sqlite"), "--space", "mnist",
                                   "--out", str(tmp_path / "apq.npz"), "--hidden", "32,32", "--epochs", "40"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["precisions"] == ["fp32", "int8"] and out["records"] == n + 60
    assert set(out["held_out_by_precision"]) == {"fp32", "int8"}
    loaded = AccuracyPredictor.load(tmp_path / "apq.npz")
    assert loaded.training["recipe"].startswith("APQ") and "fp32_base" in loaded.training
    assert np.all(loaded.predict(archs[:5], precision="int8") < loaded.predict(archs[:5], precision="fp32"))
    bad = CliRunner().invoke(app, ["fit-predictor", "--cache", str(tmp_path / "acc.sqlite"), "--space", "mnist",
                                   "--out", str(tmp_path / "x.npz"), "--context", "nope"])
    assert bad.exit_code == 2 and "has no context 'nope'" in bad.output


def test_cache_without_a_schema_row_opens_or_says_it_is_corrupt(tmp_path: Path) -> None:
    """A ``meta`` table without its version row next to an ``accuracy`` table (an interrupted first open, or an
    old writer): the columns tell the version; a foreign ``accuracy`` table gets a clear error, not sqlite's."""
    space = get_space("mnist")
    arch = space.smallest()
    v2 = tmp_path / "v2.sqlite"
    with AccuracyCache(v2, space=space, context="c") as cache:
        cache.put_many([(arch, 0.7)], precision="int8")
    with sqlite3.connect(v2) as con:
        con.execute("DELETE FROM meta")
    with AccuracyCache(v2, space=space, context="c", precision="int8") as cache:
        assert cache.get(arch) == 0.7
    v1 = tmp_path / "v1.sqlite"
    shutil.copyfile(FIXTURES / "accuracy-cache-v1.sqlite", v1)
    with sqlite3.connect(v1) as con:
        con.execute("DELETE FROM meta")
    with AccuracyCache(v1, space=space, context="fixture-supernet/val") as cache:
        assert len(cache) == 6 and cache.precisions() == ["fp32"]
    with sqlite3.connect(v1) as con:
        assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("2",)
    bad = tmp_path / "bad.sqlite"
    with sqlite3.connect(bad) as con:
        con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        con.execute("CREATE TABLE accuracy (x INTEGER)")
    with pytest.raises(ValueError, match=r"corrupt or not an hwnas accuracy cache.*columns \['x'\]"):
        AccuracyCache(bad, space=space, context="c")


def test_fit_predictor_command_with_too_few_records_exits_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hwnas.commands.nas import app

    space = get_space("mnist")
    rng = np.random.default_rng(0)
    with AccuracyCache(tmp_path / "acc.sqlite", space=space, context="sn/val") as cache:
        cache.put_many([(space.sample(rng), 0.5 + 0.1 * i) for i in range(3)])
        cache.put_many([(space.smallest(), 0.4)], precision="int8")
    args = ["fit-predictor", "--cache", str(tmp_path / "acc.sqlite"), "--space", "mnist", "--out",
            str(tmp_path / "p.npz"), "--epochs", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and res.output.startswith("error: ") and "Traceback" not in res.output
    assert not (tmp_path / "p.npz").exists()
    res = CliRunner().invoke(app, [*args, "--precisions", "INT8"])
    assert res.exit_code == 2 and "expected names from fp32, fp16, int8" in res.output
