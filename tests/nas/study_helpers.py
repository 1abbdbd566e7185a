"""Shared check for the multi-worker storage tests (SQLite, journal file, PostgreSQL): one study, two processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
from optuna.trial import TrialState

from nas.search import search
from nas.study import open_storage
from nas.synthetic import make_synthetic_objective

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


def counted_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Completed trials that count against the budget (not marked duplicate or surplus by the strategy)."""
    return [t for t in study.get_trials(states=(TrialState.COMPLETE,))
            if not (t.user_attrs.get("duplicate") or t.user_attrs.get("surplus"))]


def assert_two_workers_share_one_study(storage: str, *, budget: int = 16) -> None:
    """Two worker processes run one study on ``storage`` (path or URL): nothing lost, duplicated or left running."""
    # create the study first so the two workers do not race on its creation
    obj = make_synthetic_objective("mnist")
    search(obj.space, obj, strategy="optuna-tpe", budget=1, seed=99, storage=storage, study_name="shared")
    root = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, storage, str(seed), str(budget)], cwd=root,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    measured = [int(out.strip().splitlines()[-1]) for out, _ in outs]
    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    numbers = [t.number for t in study.get_trials()]
    assert len(numbers) == len(set(numbers))
    assert not study.get_trials(states=(TrialState.RUNNING,)), "no trial may be left running"
    counted = counted_trials(study)
    assert len(counted) == budget, "exactly the budget: nothing lost, nothing extra"
    archs = [t.user_attrs["arch"] for t in counted]
    assert len(set(archs)) == budget, "no architecture evaluated twice"
    assert sum(measured) == budget - 1, "each counted trial measured by exactly one worker"
