"""Issue 16.3: a search resumed after SIGKILL continues exactly; ``budget`` is the total; a study keeps its inputs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from study_helpers import counted_trials

from nas.search import search
from nas.study import open_storage
from nas.synthetic import make_synthetic_objective

# a worker that SIGKILLs itself while the 6th architecture is being evaluated (the trial is RUNNING then)
_KILLED_WORKER = textwrap.dedent(
    """
    import os, signal, sys
    from nas.search import search
    from nas.synthetic import make_synthetic_objective
    storage, strategy, budget = sys.argv[1], sys.argv[2], int(sys.argv[3])
    obj = make_synthetic_objective("mnist")
    real, calls = obj.evaluate, [0]
    def evaluate(cfgs):
        calls[0] += 1
        if calls[0] == 6:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(cfgs)
    obj.evaluate = evaluate
    kw = {"n_startup_trials": 3} if strategy == "optuna-tpe" else {}
    search(obj.space, obj, strategy=strategy, budget=budget, seed=0, storage=storage, study_name="k", **kw)
    """
)


@pytest.mark.parametrize("strategy", ["optuna-tpe", "nsga2"])
def test_sigkill_mid_trial_then_resume_completes_exactly_the_budget(tmp_path: Path, strategy: str) -> None:
    storage = str(tmp_path / "study.db")
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, "-c", _KILLED_WORKER, storage, strategy, "9"], cwd=root,
                       capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == -9, p.stderr
    study = optuna.load_study(study_name="k", storage=open_storage(storage))
    (running,) = study.get_trials(states=(TrialState.RUNNING,))
    killed_arch = running.user_attrs["arch"]
    assert len(counted_trials(study)) == 5

    obj = make_synthetic_objective("mnist")
    kw = {"n_startup_trials": 3} if strategy == "optuna-tpe" else {}
    res = search(obj.space, obj, strategy=strategy, budget=9, seed=0, storage=storage, study_name="k", **kw)
    study = optuna.load_study(study_name="k", storage=open_storage(storage))
    assert not study.get_trials(states=(TrialState.RUNNING,)), "the killed trial must not stay RUNNING"
    assert [t.number for t in study.get_trials(states=(TrialState.FAIL,))] == [running.number]
    assert len(res.history) == 9 == len(counted_trials(study)), "exactly the budget, not budget - 1"
    assert obj.n_measured == 4
    assert str(res.history[5].arch) == killed_arch, "the interrupted architecture is asked again first"


@pytest.mark.parametrize("strategy", ["gp", "evolution", "nsga2"])
def test_raising_the_budget_of_a_finished_study_adds_only_the_difference(tmp_path: Path, strategy: str) -> None:
    # budgets where the plan differs (GP initial design 16 vs 20, populations 8 vs 10), so a replay planned with
    # the new budget would diverge from the stored run
    kw = ({"n_pool": 100, "n_rounds": 1, "local_steps": 1, "initial_fraction": 0.5, "min_initial": 2}
          if strategy == "gp" else {})
    storage = str(tmp_path / "study.db")
    obj = make_synthetic_objective("mnist")
    first = search(obj.space, obj, strategy=strategy, budget=32, seed=1, storage=storage, study_name="b", **kw)
    obj2 = make_synthetic_objective("mnist")
    more = search(obj2.space, obj2, strategy=strategy, budget=40, seed=1, storage=storage, study_name="b", **kw)
    assert obj2.n_measured == 8, f"{obj2.n_measured} new evaluations for a budget raised by 8"
    assert len(more.history) == 40
    assert [e.arch for e in more.history[:32]] == [e.arch for e in first.history]


@pytest.mark.parametrize("strategy", ["gp", "optuna-tpe"])
def test_a_study_refuses_another_table(tmp_path: Path, strategy: str) -> None:
    kw = {"n_pool": 200, "n_rounds": 1, "local_steps": 1} if strategy == "gp" else {}
    storage = str(tmp_path / "study.db")
    obj = make_synthetic_objective("mnist")
    search(obj.space, obj, strategy=strategy, budget=3, seed=0, storage=storage, study_name="t",
           study_meta={"latency_table_sha256": "aaaa"}, **kw)
    obj2 = make_synthetic_objective("mnist")
    with pytest.raises(ValueError, match=r"latency_table_sha256='aaaa'.*'bbbb'.*--study-name"):
        search(obj2.space, obj2, strategy=strategy, budget=3, seed=0, storage=storage, study_name="t",
               study_meta={"latency_table_sha256": "bbbb"}, **kw)
    assert obj2.n_measured == 0
