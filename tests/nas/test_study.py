"""Optuna-storage searches: resume after a kill, and several workers on one study."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.search import search
from nas.study import open_storage
from nas.synthetic import make_synthetic_objective


class Killed(Exception):
    pass


def _kill_after(n: int):  # noqa: ANN202
    def cb(ev, k):  # noqa: ANN001, ANN202
        if k >= n:
            raise Killed

    return cb


def _counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(states=(TrialState.COMPLETE,))
            if not (t.user_attrs.get("duplicate") or t.user_attrs.get("surplus"))]


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
    assert len(_counted(study)) == 9
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


_WORKER = textwrap.dedent(
    """
    import sys
    from nas.search import search
    from nas.synthetic import make_synthetic_objective
    storage, seed, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    obj = make_synthetic_objective("mnist")
    search(obj.space, obj, strategy="optuna-tpe", budget=budget, seed=seed, storage=storage, study_name="shared",
           n_startup_trials=4)
    print(obj.n_measured)
    """
)


@pytest.mark.parametrize("suffix", ["log", "db"])
def test_two_workers_share_one_study(tmp_path: Path, suffix: str) -> None:
    storage = str(tmp_path / f"shared.{suffix}")
    budget = 16
    # create the study first so the two workers do not race on its creation
    obj = make_synthetic_objective("mnist")
    search(obj.space, obj, strategy="optuna-tpe", budget=1, seed=99, storage=storage, study_name="shared")
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, storage, str(seed), str(budget)], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    measured = [int(out.strip().splitlines()[-1]) for out, _ in outs]
    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    counted = _counted(study)
    numbers = [t.number for t in study.get_trials()]
    assert len(numbers) == len(set(numbers))
    assert not study.get_trials(states=(TrialState.RUNNING,)), "no trial may be left running"
    assert len(counted) == budget, "exactly the budget: nothing lost, nothing extra"
    archs = [t.user_attrs["arch"] for t in counted]
    assert len(set(archs)) == budget, "no architecture evaluated twice"
    assert sum(measured) == budget - 1, "each counted trial measured by exactly one worker"
