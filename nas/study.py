"""Searches that live in Optuna storage: resumable after a kill, shareable between worker processes.

Storage URLs (`open_storage`):

* ``None`` — in memory (nothing survives the process);
* ``sqlite:///path/to/study.db`` (or any SQLAlchemy URL; a bare ``*.db`` / ``*.sqlite`` path is taken as SQLite) —
  the default for a single machine;
* ``journal:///path/to/study.log`` (or a bare ``*.log`` / ``*.journal`` path) — Optuna's append-only journal file,
  the robust choice for many worker processes on one file system.

Every evaluated architecture is one trial whose user attributes hold ``arch`` (``str(ArchConfig)``),
``accuracy`` and ``latency_ms``; the study's user attributes hold the strategy, space and reward it was created
with, and reopening it with different ones is refused (a search would otherwise silently mix objectives).
Trials marked ``duplicate`` re-proposed an architecture already in the study (told the stored value, not
re-measured, not counted); ``surplus`` trials were asked after the budget was claimed by other workers (pruned).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nas.objective import Evaluation
from supernet.io import OutputError
from supernet.space import SearchSpace

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = [
    "STUDY_SCHEMA_VERSION",
    "evaluations_from_study",
    "load_or_create_study",
    "open_storage",
    "param_distributions",
    "storage_errors",
]

log = logging.getLogger(__name__)

STUDY_SCHEMA_VERSION = 1


def open_storage(url: str | os.PathLike[str] | None) -> optuna.storages.BaseStorage | None:
    """Optuna storage for a URL or path (see module docstring); None means in-memory."""
    import optuna

    if url is None:
        return None
    text = os.fspath(url)
    if text.startswith("journal://"):
        path = text[len("journal://"):]
        return _journal(path)
    if "://" in text:
        return optuna.storages.RDBStorage(text, engine_kwargs={"connect_args": {"timeout": 60}}
                                          if text.startswith("sqlite") else None)
    suffix = Path(text).suffix.lower()
    if suffix in (".db", ".sqlite", ".sqlite3"):
        Path(text).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(f"sqlite:///{Path(text).resolve()}",
                                          engine_kwargs={"connect_args": {"timeout": 60}})
    if suffix in (".log", ".journal", ".jsonl"):
        return _journal(text)
    raise ValueError(
        f"storage {text!r}: expected a URL ('sqlite:///study.db', 'journal:///study.log', any SQLAlchemy URL) or "
        "a path ending in .db/.sqlite (SQLite) or .log/.journal (journal file)"
    )


_DISK_FULL_SIGNS = ("database or disk is full", "no space left on device", "disk i/o error", "disk quota exceeded")


@contextlib.contextmanager
def storage_errors(storage: str | os.PathLike[str] | None) -> Iterator[None]:
    """Turn a failed write to the Optuna storage into `OutputError` naming the storage and the real cause.

    Optuna wraps every failed RDB commit in ``StorageInternalError("... e.g. exceeding max length")``, which on a
    full disk sends the user looking for a too-long value; the cause (SQLite's "database or disk is full", an
    ENOSPC) is in the exception chain. Trials already told are in the storage: rerunning resumes from them.
    """
    import optuna

    try:
        yield
    except (optuna.exceptions.StorageInternalError, OSError) as e:
        chain: list[BaseException] = []
        cur: BaseException | None = e
        while cur is not None and len(chain) < 10:
            chain.append(cur)
            cur = cur.__cause__ or cur.__context__
        text = " | ".join(str(c) for c in chain).lower()
        errnos = {getattr(c, "errno", None) for c in chain}
        full = any(sign in text for sign in _DISK_FULL_SIGNS) or bool(errnos & {errno.ENOSPC, errno.EDQUOT})
        if not full and not isinstance(e, optuna.exceptions.StorageInternalError):
            raise
        where = os.fspath(storage) if storage is not None else "the in-memory study"
        cause = next((str(c) for c in reversed(chain) if str(c)), str(e)).splitlines()[0]
        if full:
            raise OutputError(f"cannot write to the study storage {where!r}: no space left on the device ({cause}); "
                              "free some space and re-run the same command: the trials finished so far are stored "
                              "and the search resumes from them") from e
        raise OutputError(f"cannot write to the study storage {where!r}: {cause}") from e


def _journal(path: str) -> optuna.storages.BaseStorage:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    # the open(O_EXCL) lock works on every file system, unlike symlinks
    return JournalStorage(JournalFileBackend(str(p), lock_obj=JournalFileOpenLock(str(p))))


def param_distributions(space: SearchSpace) -> dict[str, optuna.distributions.BaseDistribution]:
    """The distributions `SearchSpace.suggest` uses (one ordered integer per decision)."""
    from optuna.distributions import IntDistribution

    return {name: IntDistribution(lo, hi) for name, (lo, hi) in space.param_ranges().items()}


Direction = Literal["maximize", "minimize"]  # an objective's direction, in Optuna's words


def load_or_create_study(
    *,
    storage: str | os.PathLike[str] | None,
    study_name: str | None,
    directions: Sequence[Direction],
    sampler: optuna.samplers.BaseSampler | None,
    meta: Mapping[str, Any],
) -> optuna.Study:
    """Open ``study_name`` in ``storage`` (creating it if new) and check it was made for the same search.

    ``meta`` (JSON-serialisable: strategy, space, reward, ...) is stored on creation; on reopening every key of
    ``meta`` must match, except ``seed`` and ``budget`` which may change between runs.
    """
    import optuna

    st = open_storage(storage)
    study = optuna.create_study(storage=st, study_name=study_name, directions=directions, sampler=sampler,
                                load_if_exists=True)
    existing = study.user_attrs
    if not existing:
        study.set_user_attr("hwnas_study_schema", STUDY_SCHEMA_VERSION)
        for k, v in meta.items():
            study.set_user_attr(k, v)
        return study
    if existing.get("hwnas_study_schema") != STUDY_SCHEMA_VERSION:
        raise ValueError(f"study {study.study_name!r}: hwnas_study_schema {existing.get('hwnas_study_schema')!r} "
                         f"is not supported (expected {STUDY_SCHEMA_VERSION})")
    for k, v in meta.items():
        if k in ("seed", "budget"):
            continue
        if k in existing and existing[k] != v:
            raise ValueError(
                f"study {study.study_name!r} was created with {k}={_short(existing[k])}, but this search has "
                f"{k}={_short(v)}; use another --study-name (or another --out) or the original settings instead of "
                "mixing two searches in one study"
            )
    if [d.name.lower() for d in study.directions] != [d.lower() for d in directions]:
        raise ValueError(f"study {study.study_name!r} has directions {study.directions}, expected {directions}")
    return study


def _short(v: Any, limit: int = 200) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "...'"


def evaluations_from_study(study: optuna.Study, space: SearchSpace) -> list[Evaluation]:
    """Completed, counted evaluations (not duplicate, not surplus) in trial-number order.

    The reward is taken from the trial's ``reward`` attribute; callers re-score with their own objective
    (`Objective.remember`).
    """
    from optuna.trial import TrialState

    out = []
    for t in sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.number):
        ua = t.user_attrs
        if ua.get("duplicate") or ua.get("surplus") or "arch" not in ua:
            continue
        out.append(Evaluation(space.parse(ua["arch"]), float(ua["accuracy"]), float(ua["latency_ms"]),
                              float(ua.get("reward", float("nan")))))
    return out


def evaluation_attrs(ev: Evaluation) -> dict[str, Any]:
    return {"arch": str(ev.arch), "accuracy": ev.accuracy, "latency_ms": ev.latency_ms, "reward": ev.reward}
