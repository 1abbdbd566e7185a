"""Strategies driven by an Optuna sampler: GP (Optuna's GPSampler), TPE and NSGA-II.

Each evaluated architecture is one trial (`nas.study`), so with a ``storage`` a killed search re-run with the same
``study_name`` continues where it stopped, and several worker processes can share one study. The budget is the
number of distinct architectures in the *study*: a worker stops once that many are completed or claimed by
running trials of lower number, so two workers with budget N complete exactly N evaluations between them.
Give workers different seeds, or their samplers propose the same architectures.

Trials left RUNNING by a killed process: every trial records its worker (host, pid, process start time); on the
next start a RUNNING trial of a worker of this host that no longer runs is failed at once and its architecture is
asked again first (so a killed search resumed completes exactly its budget); RUNNING trials of other hosts are failed
once older than ``stale_after_s``; a RUNNING trial that no worker claimed (the process died between asking and
claiming) holds no budget and is failed after `UNCLAIMED_AFTER_S`. The budget is the total over all runs of the study, and the sampler is sized by
the budget the study was created with, so raising ``budget`` on a finished study adds only the difference.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from nas.objective import Evaluation, Objective, reward_json
from nas.strategies.base import Callback, SearchResult, SearchStrategy
from nas.study import (
    Direction,
    evaluation_attrs,
    evaluations_from_study,
    load_or_create_study,
    param_distributions,
)

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["NSGA2Search", "OptunaGPSearch", "OptunaSearch", "OptunaTPESearch"]

log = logging.getLogger(__name__)


class OptunaSearch(SearchStrategy):
    """Base of the Optuna-driven strategies (see module docstring for storage semantics).

    Args:
        storage: Optuna storage URL or path (`nas.study.open_storage`); None = in memory.
        study_name: name of the study in ``storage``; default ``"hwnas-<strategy>"``.
        study_meta: more facts the study must keep (e.g. the latency table's sha256): stored on creation,
            compared on reopening (`nas.study.load_or_create_study`).
        stale_after_s: RUNNING trials older than this are failed at start (None: never).
        max_duplicates: consecutive re-proposals of known architectures before a random unseen one is enqueued.
        sampler_kwargs: extra keyword arguments for the Optuna sampler.
    """

    directions: ClassVar[list[Direction]] = ["maximize"]

    def __init__(
        self,
        *,
        storage: str | os.PathLike[str] | None = None,
        study_name: str | None = None,
        stale_after_s: float | None = 6 * 3600.0,
        max_duplicates: int = 10,
        study_meta: dict[str, Any] | None = None,
        **sampler_kwargs: Any,
    ) -> None:
        self.storage = None if storage is None else os.fspath(storage)
        self.study_meta = dict(study_meta or {})
        self.study_name = study_name
        self.stale_after_s = stale_after_s
        self.max_duplicates = max_duplicates
        self.sampler_kwargs = sampler_kwargs

    def make_sampler(self, *, seed: int, budget: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def trial_values(self, ev: Evaluation) -> float | list[float]:
        return ev.reward

    # ----------------------------------------------------------------- search
    def search(
        self, objective: Objective, *, budget: int, seed: int, callback: Callback | None = None,
        plan_budget: int | None = None,
    ) -> SearchResult:
        from optuna.trial import TrialState

        t0 = time.perf_counter()
        if budget < 1:
            raise ValueError(f"budget must be >= 1 evaluation, got {budget}")
        space = objective.space
        rng = np.random.default_rng(seed)
        meta = {"strategy": self.name, "space": space.to_json(), "reward": reward_json(objective),
                "seed": seed, "budget": budget, **self.study_meta}
        study = load_or_create_study(storage=self.storage, study_name=self.study_name or f"hwnas-{self.name}",
                                     directions=list(self.directions),
                                     sampler=self.make_sampler(seed=seed, budget=plan_budget or budget), meta=meta)
        created_budget = int(study.user_attrs.get("budget", budget))
        if plan_budget is None and created_budget != budget:
            study.sampler = self.make_sampler(seed=seed, budget=created_budget)
        self._fail_stale(study)
        prior = evaluations_from_study(study, space)
        objective.remember(prior)
        n_prior = len(prior)
        if n_prior:
            log.info("study %r: resuming with %d evaluations already stored", study.study_name, n_prior)
        dists = param_distributions(space)
        n_new, dup_run, n_dup = 0, 0, 0
        guard = 20 * budget + 100
        for _ in range(guard):
            trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
            counted = [t for t in trials if _owns_budget(t)]
            if len(counted) >= budget:
                break
            known = {t.user_attrs["arch"] for t in counted if "arch" in t.user_attrs}
            if dup_run >= self.max_duplicates:
                fresh = next((c for c in (space.sample(rng) for _ in range(1000)) if str(c) not in known), None)
                if fresh is not None:
                    study.enqueue_trial(space.to_params(fresh))
                dup_run = 0
            trial = study.ask(dists)
            cfg = space.suggest(trial)
            key = str(cfg)
            if key in known:
                cached = objective.lookup(cfg)
                if cached is None:  # measured by another worker and not yet completed there: evaluate locally
                    cached = next(iter(objective.evaluate([cfg])))
                trial.set_user_attr("duplicate", True)
                for k, v in evaluation_attrs(cached).items():
                    trial.set_user_attr(k, v)
                study.tell(trial, self.trial_values(cached))
                dup_run += 1
                n_dup += 1
                continue
            dup_run = 0
            trial.set_user_attr("arch", key)
            trial.set_user_attr("worker", _WORKER)
            # claim check: trials of lower number (completed or running) own the budget before this one
            lower = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
                     if t.number < trial.number and _owns_budget(t)]
            if len(lower) >= budget:
                trial.set_user_attr("surplus", True)
                study.tell(trial, state=TrialState.PRUNED)
                break
            try:
                ev = objective.evaluate([cfg])[0]
            except BaseException:  # interrupted or failed: the next run asks this architecture again
                study.tell(trial, state=TrialState.FAIL)
                study.enqueue_trial(dict(trial.params), skip_if_exists=False)
                raise
            for k, v in evaluation_attrs(ev).items():
                trial.set_user_attr(k, v)
            study.tell(trial, self.trial_values(ev))
            n_new += 1
            if callback is not None:
                callback(ev, n_prior + n_new)
        else:
            log.warning("study %r: stopped after %d asks without reaching the budget", study.study_name, guard)
        history = evaluations_from_study(study, space)
        objective.remember(history)  # re-score stored rewards with this objective's reward
        history = [objective.lookup(e.arch) or e for e in history]
        return SearchResult.from_history(
            history, strategy=self.name, seed=seed, wall_time_s=time.perf_counter() - t0,
            info={"study_name": study.study_name, "storage": self.storage, "n_resumed": n_prior,
                  "n_new": n_new, "n_duplicate_trials": n_dup},
        )

    def _fail_stale(self, study: optuna.Study) -> None:
        """Fail RUNNING trials whose worker is gone (see module docstring) and ask their architectures again."""
        from optuna.trial import TrialState

        now = dt.datetime.now()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = t.user_attrs.get("worker")
            if worker is None and not _owns_budget(t):  # asked, never claimed, and long enough ago: nobody has it
                log.warning("study %r: trial %d was asked but never claimed by a worker: marking it FAIL",
                            study.study_name, t.number)
                study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
                continue
            if worker is not None and _worker_on_this_host(worker):
                if _worker_alive(worker):
                    continue
                why = f"its worker {worker} is no longer running"
            elif self.stale_after_s is not None and t.datetime_start is not None \
                    and (now - t.datetime_start).total_seconds() >= self.stale_after_s:
                why = f"it has been RUNNING since {t.datetime_start}"
            else:
                continue
            log.warning("study %r: trial %d left RUNNING (%s): marking it FAIL and asking it again",
                        study.study_name, t.number, why)
            # Optuna has no public "fail this trial" outside heartbeats; this is what fail_stale_trials does
            study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            if t.params:
                study.enqueue_trial(dict(t.params), skip_if_exists=False)


UNCLAIMED_AFTER_S = 60.0  # a worker claims a trial (user attr "arch") milliseconds after asking for it


def _owns_budget(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a COMPLETE or RUNNING trial counts towards the budget: not a duplicate or surplus ask, and, if
    RUNNING, claimed by a worker or asked less than `UNCLAIMED_AFTER_S` ago. A process that died between asking and
    claiming (a kill, a full disk) leaves a RUNNING trial with no architecture and no worker; it must not hold a
    slot of the budget until it is 6 hours old."""
    from optuna.trial import TrialState

    if t.user_attrs.get("duplicate") or t.user_attrs.get("surplus"):
        return False
    if t.state == TrialState.RUNNING and "arch" not in t.user_attrs:
        started = t.datetime_start
        return started is not None and (dt.datetime.now() - started).total_seconds() < UNCLAIMED_AFTER_S
    return True


def _process_start(pid: int) -> str:
    """Start time of process ``pid`` in clock ticks since boot (Linux), so a reused pid is not taken for alive."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


_WORKER = f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def _worker_on_this_host(worker: str) -> bool:
    return worker.rsplit(":", 2)[0] == socket.gethostname()


def _worker_alive(worker: str) -> bool:
    _, pid_s, start = worker.rsplit(":", 2)
    pid = int(pid_s)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that pid
        pass
    return start == "?" or _process_start(pid) == start


class OptunaGPSearch(OptunaSearch):
    """Optuna's `GPSampler` with its defaults on one ordered integer per decision (the baseline to beat)."""

    name = "optuna-gp"

    def make_sampler(self, *, seed: int, budget: int) -> optuna.samplers.BaseSampler:
        import optuna

        kwargs = {"n_startup_trials": 10, **self.sampler_kwargs}
        return optuna.samplers.GPSampler(seed=seed, **kwargs)


class OptunaTPESearch(OptunaSearch):
    """Optuna's `TPESampler` (multivariate) on one ordered integer per decision."""

    name = "optuna-tpe"

    def make_sampler(self, *, seed: int, budget: int) -> optuna.samplers.BaseSampler:
        import optuna

        kwargs = {"multivariate": True, "n_startup_trials": 10, **self.sampler_kwargs}
        return optuna.samplers.TPESampler(seed=seed, **kwargs)


class NSGA2Search(OptunaSearch):
    """NSGA-II on (accuracy up, latency down): a Pareto front in one run (`nas.pareto.pareto_front` of the
    history); ``best`` is still the evaluation with the best scalar reward.

    The population is ``min(population_size, max(8, budget // 4))`` so that small budgets still evolve.
    """

    name = "nsga2"
    directions: ClassVar[list[Direction]] = ["maximize", "minimize"]

    def __init__(self, *, population_size: int = 50, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.population_size = population_size

    def make_sampler(self, *, seed: int, budget: int) -> optuna.samplers.BaseSampler:
        import optuna

        pop = min(self.population_size, max(8, budget // 4))
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=pop, **self.sampler_kwargs)

    def trial_values(self, ev: Evaluation) -> list[float]:
        return [ev.accuracy, ev.latency_ms]

