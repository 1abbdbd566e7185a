"""A small sqlite database of measured accuracies, keyed by architecture and precision, so nothing is measured twice.

Rows are keyed by ``(context, arch, precision)``: ``arch`` is ``str(canonical ArchConfig)``, ``precision`` the
numeric precision the subnet was evaluated at (``"fp32"``; ``"int8"`` = the BN-recalibrated subnet exported and
lowered with `supernet.quantize` the way the context's recipe says; see `hwnas.pipeline.quantized_accuracy`) and
``context`` names what the accuracy was measured *of* (e.g. ``"<supernet checkpoint sha256>/mnist-val/bn-recal-2000"``),
so accuracies of different supernets, validation sets or precisions never mix. Several processes may share one file
(WAL journal, busy timeout); a row, once written, is never overwritten (first measurement wins).

Schema history (``meta.schema_version``): 1 keyed rows by ``(context, arch)`` (fp32 only); 2 adds ``precision``.
Opening a version-1 file migrates it in place, in one transaction, with every old row as ``fp32``; a file of a
newer version is refused with a message (and hwnas versions that read only version 1 refuse version 2 files).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Self

import numpy as np

from nas.objective import ArchFn
from supernet.io import missing_file_message
from supernet.space import PRECISIONS, ArchConfig, SearchSpace

__all__ = ["ACCURACY_CACHE_SCHEMA_VERSION", "DEFAULT_PRECISION", "KNOWN_PRECISIONS", "AccuracyCache", "list_contexts"]

log = logging.getLogger(__name__)

ACCURACY_CACHE_SCHEMA_VERSION = 2
DEFAULT_PRECISION = "fp32"
KNOWN_PRECISIONS: tuple[str, ...] = PRECISIONS  # supernet.space's vocabulary

_CREATE_V2 = (
    "CREATE TABLE {name} (context TEXT NOT NULL, arch TEXT NOT NULL, precision TEXT NOT NULL DEFAULT 'fp32',"
    " accuracy REAL NOT NULL, measured_at TEXT NOT NULL, PRIMARY KEY (context, arch, precision))"
)


def _migrate_1_to_2(db: sqlite3.Connection) -> None:
    """Version 1 rows were fp32 measurements: copy them into the version-2 table as ``precision='fp32'``."""
    db.execute(_CREATE_V2.format(name="accuracy_v2"))
    db.execute("INSERT INTO accuracy_v2 (context, arch, precision, accuracy, measured_at) "
               "SELECT context, arch, 'fp32', accuracy, measured_at FROM accuracy")
    db.execute("DROP TABLE accuracy")
    db.execute("ALTER TABLE accuracy_v2 RENAME TO accuracy")


_MIGRATIONS = {1: _migrate_1_to_2}


def list_contexts(path: str | os.PathLike[str]) -> list[str]:
    """The contexts stored in a cache file (any schema version), sorted; read-only, no migration."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(missing_file_message("accuracy cache", p))
    db = sqlite3.connect(f"file:{p.resolve()}?mode=ro", uri=True, timeout=60.0)
    try:
        return [r[0] for r in db.execute("SELECT DISTINCT context FROM accuracy ORDER BY context")]
    except sqlite3.DatabaseError as e:
        raise ValueError(f"accuracy cache {os.fspath(path)!r} is not readable: {e}") from None
    finally:
        db.close()


class AccuracyCache:
    """Measured accuracy per (context, canonical architecture, precision) in a sqlite file (or ``":memory:"``).

    Args:
        path: database file; created with its parent folder if missing; an older schema is migrated in place.
        space: canonicalises architectures before they become keys.
        context: what the accuracies are of (see module docstring); required, non-empty.
        precision: the precision `get`, `get_many`, `put_many`, `items`, `wrap` and ``len`` use when not told
            otherwise (default ``"fp32"``, what every version-1 row was).
    """

    def __init__(self, path: str | os.PathLike[str], *, space: SearchSpace, context: str,
                 precision: str = DEFAULT_PRECISION) -> None:
        if not context:
            raise ValueError("AccuracyCache: context must name what was measured (supernet, dataset, split)")
        self.path = os.fspath(path)
        self.space = space
        self.context = context
        self.precision = self._check_precision(precision)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
            self._open_schema()
        except BaseException:
            self._db.close()
            raise

    def _open_schema(self) -> None:
        """Create, check or migrate the schema in one write transaction (safe with concurrent openers)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                version = self._probe_version()
                if version == ACCURACY_CACHE_SCHEMA_VERSION:
                    db.execute(_CREATE_V2.format(name="IF NOT EXISTS accuracy"))
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
            else:
                try:
                    version = int(row[0])
                except ValueError:
                    raise ValueError(f"accuracy cache {self.path!r}: schema_version {row[0]!r} is not a number") from None
            if version > ACCURACY_CACHE_SCHEMA_VERSION or (version != ACCURACY_CACHE_SCHEMA_VERSION
                                                          and version not in _MIGRATIONS):
                raise ValueError(f"accuracy cache {self.path!r}: schema_version {version} is not supported (this hwnas "
                                 f"reads versions {sorted({*_MIGRATIONS, ACCURACY_CACHE_SCHEMA_VERSION})}; a newer "
                                 "hwnas may have written it)")
            start = version
            while version != ACCURACY_CACHE_SCHEMA_VERSION:
                _MIGRATIONS[version](db)
                version += 1
            if version != start:
                db.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
                log.info("accuracy cache %s: migrated schema %d -> %d (old rows are fp32)", self.path, start, version)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _probe_version(self) -> int:
        """The schema of a file whose ``meta`` has no version row (new, or written by an interrupted or foreign
        opener): none or an empty ``accuracy`` table -> current; the columns tell version 1 from 2; anything else
        is refused as corrupt."""
        cols = [r[1] for r in self._db.execute("PRAGMA table_info(accuracy)")]
        if not cols:
            return ACCURACY_CACHE_SCHEMA_VERSION
        if set(cols) == {"context", "arch", "precision", "accuracy", "measured_at"}:
            return 2
        if set(cols) == {"context", "arch", "accuracy", "measured_at"}:
            return 1
        raise ValueError(f"accuracy cache {self.path!r} is corrupt or not an hwnas accuracy cache: its 'meta' table "
                         f"has no schema_version and its 'accuracy' table has columns {cols} (expected context, arch, "
                         "precision, accuracy, measured_at); move it away or pass another path")

    @staticmethod
    def _check_precision(precision: str) -> str:
        if not isinstance(precision, str) or precision not in KNOWN_PRECISIONS:
            raise ValueError(f"AccuracyCache: precision {precision!r}: expected one of {', '.join(KNOWN_PRECISIONS)} "
                             "(lower case)")
        return precision

    def _p(self, precision: str | None) -> str:
        return self.precision if precision is None else self._check_precision(precision)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _key(self, cfg: ArchConfig) -> str:
        return str(self.space.canonical(cfg))

    def __len__(self) -> int:
        """Rows of this context at the cache's default precision."""
        (n,) = self._db.execute("SELECT COUNT(*) FROM accuracy WHERE context=? AND precision=?",
                                (self.context, self.precision)).fetchone()
        return int(n)

    def precisions(self) -> list[str]:
        """The precisions this context has measurements at, sorted."""
        rows = self._db.execute("SELECT DISTINCT precision FROM accuracy WHERE context=? ORDER BY precision",
                                (self.context,)).fetchall()
        return [r[0] for r in rows]

    def get(self, cfg: ArchConfig, *, precision: str | None = None) -> float | None:
        row = self._db.execute("SELECT accuracy FROM accuracy WHERE context=? AND arch=? AND precision=?",
                               (self.context, self._key(cfg), self._p(precision))).fetchone()
        return None if row is None else float(row[0])

    def get_many(self, cfgs: Sequence[ArchConfig], *, precision: str | None = None) -> dict[str, float]:
        """Stored accuracies of ``cfgs`` at ``precision`` by architecture string (missing ones are absent)."""
        p = self._p(precision)
        keys = sorted({self._key(c) for c in cfgs})
        out: dict[str, float] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            q = (f"SELECT arch, accuracy FROM accuracy WHERE context=? AND precision=? "
                 f"AND arch IN ({','.join('?' * len(chunk))})")
            out.update({a: float(v) for a, v in self._db.execute(q, (self.context, p, *chunk))})
        return out

    def put_many(self, pairs: Iterable[tuple[ArchConfig, float]], *, precision: str | None = None) -> int:
        """Store measurements at ``precision`` (first one wins); return how many rows were new."""
        p = self._p(precision)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        rows = [(self.context, self._key(c), p, float(a), now) for c, a in pairs]
        for _, arch, _, acc, _ in rows:
            if not (0.0 <= acc <= 1.0):
                raise ValueError(f"accuracy of {arch} must be in [0, 1], got {acc}")
        before = self._db.total_changes
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO accuracy (context, arch, precision, accuracy, measured_at) VALUES (?, ?, ?, ?, ?)",
                rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return self._db.total_changes - before

    def items(self, *, precision: str | None = None) -> list[tuple[ArchConfig, float]]:
        """Every (architecture, accuracy) of this context at ``precision``, e.g. to train an fp32
        `nas.predictor.AccuracyPredictor`."""
        rows = self._db.execute("SELECT arch, accuracy FROM accuracy WHERE context=? AND precision=? ORDER BY arch",
                                (self.context, self._p(precision))).fetchall()
        return [(self.space.parse(a), float(v)) for a, v in rows]

    def records(self, *, precisions: Sequence[str] | None = None) -> list[tuple[ArchConfig, str, float]]:
        """Every (architecture, precision, accuracy) of this context (optionally only ``precisions``): the
        measured pairs a bit-width-aware predictor (`nas.predictor.fit_predictor` with ``precisions=``) trains on."""
        rows = self._db.execute("SELECT arch, precision, accuracy FROM accuracy WHERE context=? "
                                "ORDER BY arch, precision", (self.context,)).fetchall()
        keep = None if precisions is None else set(precisions)
        return [(self.space.parse(a), p, float(v)) for a, p, v in rows if keep is None or p in keep]

    def wrap(self, accuracy_fn: ArchFn, *, precision: str | None = None) -> ArchFn:
        """A batched accuracy function (measuring at ``precision``) that measures only architectures missing from
        the cache at that precision, then stores them."""
        p = self._p(precision)

        def cached(cfgs: Sequence[ArchConfig]) -> np.ndarray:
            keys = [self._key(c) for c in cfgs]
            known = self.get_many(cfgs, precision=p)
            missing: dict[str, ArchConfig] = {}
            for k, c in zip(keys, cfgs, strict=True):
                if k not in known and k not in missing:
                    missing[k] = self.space.canonical(c)
            if missing:
                measured = np.asarray(accuracy_fn(list(missing.values())), dtype=np.float64).reshape(-1)
                if measured.shape != (len(missing),):
                    raise ValueError(f"accuracy_fn returned {measured.size} values for {len(missing)} architectures")
                self.put_many(zip(missing.values(), measured.tolist(), strict=True), precision=p)
                known.update(dict(zip(missing, measured.tolist(), strict=True)))
                log.debug("accuracy cache (%s): measured %d, reused %d", p, len(missing), len(set(keys)) - len(missing))
            return np.asarray([known[k] for k in keys], dtype=np.float64)

        return cached
