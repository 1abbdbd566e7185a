"""A small sqlite database of measured accuracies, keyed by architecture, so nothing is measured twice.

Rows are keyed by ``(context, arch)``: ``arch`` is ``str(canonical ArchConfig)`` and ``context`` names what the
accuracy was measured *of* (e.g. ``"<supernet checkpoint sha256>/mnist-val/bn-recal-2000"``), so accuracies of
different supernets or validation sets never mix. Several processes may share one file (WAL journal, busy
timeout); a row, once written, is never overwritten (first measurement wins).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from nas.objective import ArchFn
from supernet.space import ArchConfig, SearchSpace

__all__ = ["ACCURACY_CACHE_SCHEMA_VERSION", "AccuracyCache"]

log = logging.getLogger(__name__)

ACCURACY_CACHE_SCHEMA_VERSION = 1


class AccuracyCache:
    """Measured accuracy per (context, canonical architecture) in a sqlite file (or ``":memory:"``).

    Args:
        path: database file; created with its parent folder if missing.
        space: canonicalises architectures before they become keys.
        context: what the accuracies are of (see module docstring); required, non-empty.
    """

    def __init__(self, path: str | os.PathLike[str], *, space: SearchSpace, context: str) -> None:
        if not context:
            raise ValueError("AccuracyCache: context must name what was measured (supernet, dataset, split)")
        self.path = os.fspath(path)
        self.space = space
        self.context = context
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS accuracy (context TEXT NOT NULL, arch TEXT NOT NULL, accuracy REAL NOT NULL,"
            " measured_at TEXT NOT NULL, PRIMARY KEY (context, arch))"
        )
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                         (str(ACCURACY_CACHE_SCHEMA_VERSION),))
        (version,) = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if int(version) != ACCURACY_CACHE_SCHEMA_VERSION:
            raise ValueError(f"accuracy cache {self.path!r}: schema_version {version} is not supported "
                             f"(expected {ACCURACY_CACHE_SCHEMA_VERSION})")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> AccuracyCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _key(self, cfg: ArchConfig) -> str:
        return str(self.space.canonical(cfg))

    def __len__(self) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM accuracy WHERE context=?", (self.context,)).fetchone()
        return int(n)

    def get(self, cfg: ArchConfig) -> float | None:
        row = self._db.execute("SELECT accuracy FROM accuracy WHERE context=? AND arch=?",
                               (self.context, self._key(cfg))).fetchone()
        return None if row is None else float(row[0])

    def get_many(self, cfgs: Sequence[ArchConfig]) -> dict[str, float]:
        """Stored accuracies of ``cfgs`` by architecture string (missing ones are absent)."""
        keys = sorted({self._key(c) for c in cfgs})
        out: dict[str, float] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = f"SELECT arch, accuracy FROM accuracy WHERE context=? AND arch IN ({','.join('?' * len(chunk))})"
            out.update({a: float(v) for a, v in self._db.execute(q, (self.context, *chunk))})
        return out

    def put_many(self, pairs: Iterable[tuple[ArchConfig, float]]) -> int:
        """Store measurements (first one wins); return how many rows were new."""
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        rows = [(self.context, self._key(c), float(a), now) for c, a in pairs]
        for _, arch, acc, _ in rows:
            if not (0.0 <= acc <= 1.0):
                raise ValueError(f"accuracy of {arch} must be in [0, 1], got {acc}")
        before = self._db.total_changes
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR IGNORE INTO accuracy VALUES (?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return self._db.total_changes - before

    def items(self) -> list[tuple[ArchConfig, float]]:
        """Every (architecture, accuracy) of this context, e.g. to train `nas.predictor.AccuracyPredictor`."""
        rows = self._db.execute("SELECT arch, accuracy FROM accuracy WHERE context=? ORDER BY arch",
                                (self.context,)).fetchall()
        return [(self.space.parse(a), float(v)) for a, v in rows]

    def wrap(self, accuracy_fn: ArchFn) -> ArchFn:
        """A batched accuracy function that measures only architectures missing from the cache, then stores them."""

        def cached(cfgs: Sequence[ArchConfig]) -> np.ndarray:
            keys = [self._key(c) for c in cfgs]
            known = self.get_many(cfgs)
            missing: dict[str, ArchConfig] = {}
            for k, c in zip(keys, cfgs, strict=True):
                if k not in known and k not in missing:
                    missing[k] = self.space.canonical(c)
            if missing:
                measured = np.asarray(accuracy_fn(list(missing.values())), dtype=np.float64).reshape(-1)
                if measured.shape != (len(missing),):
                    raise ValueError(f"accuracy_fn returned {measured.size} values for {len(missing)} architectures")
                self.put_many(zip(missing.values(), measured.tolist(), strict=True))
                known.update(dict(zip(missing, measured.tolist(), strict=True)))
                log.debug("accuracy cache: measured %d, reused %d", len(missing), len(set(keys)) - len(missing))
            return np.asarray([known[k] for k in keys], dtype=np.float64)

        return cached
