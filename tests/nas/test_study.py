"""Optuna-storage searches: resume after a kill, and several workers on one study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from study_helpers import assert_two_workers_share_one_study, counted_trials

from nas.search import search
from nas.study import open_storage
from nas.synthetic import make_synthetic_objective


class Killed(Exception):
    pass


def _kill_after(n: int):
    def cb(ev, k):
        if k >= n:
            raise Killed

    return cb


@pytest.mark.parametrize("suffix", ["db", "log"])
def test_optuna_search_resumes_with_same_study_name(tmp_path: Path, suffix: str) -> None:
    storage = str(tmp_path / f"study.{suffix}")
    obj = make_synthetic_objective("mnist")
    with pytest.raises(Killed):
        search(obj.space, obj, strategy="optuna-tpe", budget=9, seed=0, storage=storage, study_name="s",
               callback=_kill_after(5))
    assert obj.n_measured == 5
    obj2 = make_synthetic_objective("mnist")  # a new process: nothing cached in memory
    res = search(obj2.space, obj2, strategy="optuna-tpe", budget=9, seed=0, storage=storage, study_name="s")
    assert res.info["n_resumed"] == 5 and res.info["n_new"] == 4
    assert obj2.n_measured == 4, "stored evaluations must not be measured again"
    assert len(res.history) == 9 and len({e.arch for e in res.history}) == 9
    study = optuna.load_study(study_name="s", storage=open_storage(storage))
    assert len(counted_trials(study)) == 9
    # re-running a finished study evaluates nothing; a larger budget continues it
    obj3 = make_synthetic_objective("mnist")
    assert len(search(obj3.space, obj3, strategy="optuna-tpe", budget=9, seed=0, storage=storage,
                      study_name="s").history) == 9
    assert obj3.n_measured == 0
    res4 = search(obj3.space, obj3, strategy="optuna-tpe", budget=11, seed=0, storage=storage, study_name="s")
    assert len(res4.history) == 11 and obj3.n_measured == 2


def test_study_refuses_a_different_objective(tmp_path: Path) -> None:
    storage = str(tmp_path / "study.db")
    obj = make_synthetic_objective("mnist")
    search(obj.space, obj, strategy="random", budget=3, seed=0, storage=storage, study_name="s")
    other = make_synthetic_objective("mnist", target_ms=3.0)
    with pytest.raises(ValueError, match="reward"):
        search(other.space, other, strategy="random", budget=3, seed=0, storage=storage, study_name="s")


@pytest.mark.parametrize("strategy", ["evolution", "gp"])
def test_replayed_strategy_resume_equals_uninterrupted_run(tmp_path: Path, strategy: str) -> None:
    kw = {"n_pool": 200, "n_rounds": 1, "local_steps": 1} if strategy == "gp" else {}
    storage = f"sqlite:///{tmp_path / 'replay.db'}"
    ref_obj = make_synthetic_objective("mnist")
    ref = search(ref_obj.space, ref_obj, strategy=strategy, budget=12, seed=3, **kw)
    obj = make_synthetic_objective("mnist")
    with pytest.raises(Killed):
        search(obj.space, obj, strategy=strategy, budget=12, seed=3, storage=storage, study_name="r",
               callback=_kill_after(7), **kw)
    obj2 = make_synthetic_objective("mnist")
    res = search(obj2.space, obj2, strategy=strategy, budget=12, seed=3, storage=storage, study_name="r", **kw)
    assert [e.arch for e in res.history] == [e.arch for e in ref.history]
    assert obj2.n_measured == 5 and res.info["n_resumed"] == 7
    with pytest.raises(ValueError, match="same seed"):
        search(obj2.space, obj2, strategy=strategy, budget=12, seed=4, storage=storage, study_name="r", **kw)


@pytest.mark.parametrize("suffix", ["log", "db"])
def test_two_workers_share_one_study(tmp_path: Path, suffix: str) -> None:
    assert_two_workers_share_one_study(str(tmp_path / f"shared.{suffix}"))


def test_a_full_disk_is_reported_as_such_and_the_search_resumes(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's page cap gives a real SQLITE_FULL ("database or disk is full") mid-search; Optuna reports it as
    "e.g. exceeding max length". The user must read "no space left", and the rerun must resume."""
    import sqlalchemy

    from supernet.io import OutputError

    storage = str(tmp_path / "study.db")
    obj = make_synthetic_objective("mnist")
    search(obj.space, obj, strategy="optuna-tpe", budget=3, seed=0, storage=storage, study_name="s")
    pages = sqlalchemy.create_engine(f"sqlite:///{storage}").connect().exec_driver_sql(
        "PRAGMA page_count").scalar()

    def cap(dbapi_conn, _record):  # every new connection may grow the file by a few pages only
        dbapi_conn.execute(f"PRAGMA max_page_count = {int(pages) + 2}")

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", cap)
    try:
        with pytest.raises(OutputError, match="no space left on the device") as ei:
            search(obj.space, make_synthetic_objective("mnist"), strategy="optuna-tpe", budget=400, seed=0,
                   storage=storage, study_name="s")
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "connect", cap)
    assert "study.db" in str(ei.value) and "exceeding max length" not in str(ei.value)
    stored = len(counted_trials(optuna.load_study(study_name="s", storage=open_storage(storage))))
    assert 3 <= stored < 400
    # the rerun is a new process: the trial the failed one left RUNNING belongs to a dead worker and is asked again
    from nas.strategies import optuna_search

    monkeypatch.setattr(optuna_search, "_worker_alive", lambda worker: False)
    monkeypatch.setattr(optuna_search, "UNCLAIMED_AFTER_S", 0.0)  # and a minute later: an unclaimed ask is dead
    obj2 = make_synthetic_objective("mnist")
    res = search(obj2.space, obj2, strategy="optuna-tpe", budget=stored + 2, seed=0, storage=storage, study_name="s")
    assert res.info["n_resumed"] == stored and obj2.n_measured == 2 and len(res.history) == stored + 2
