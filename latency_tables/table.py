"""Per-layer latency lookup tables: data (CSV) plus a manifest (``<csv>.meta.json``), never code.

A table has one row per distinct `supernet.layers.LayerSpec` of a search space (over all its resolutions), keyed
by ``LayerSpec.key``, measured on a one-layer model built by `supernet.layers.build_layer` — the same builder the
static subnet uses, so a row and the layer it times cannot drift apart. The manifest holds the schema version,
the machine and backend, the protocol, the search space and backbone (so a table can check that an architecture
belongs to it) and the CSV's sha256.

CSV columns (schema 2, units in names): ``key, op, in_hw, in_ch, out_ch, kernel, stride, expand, mid_ch, se, act,
macs, median_ms, best_ms, p90_ms, p99_ms, mean_ms, ratio, round_p50_ms, round_iqr_ms, runs``. Each ``<statistic>_ms``
column is one named statistic of the layer's latency per inference (`latency_tables.protocol.STATISTICS`; empty when
not measured, e.g. an imported table has only what it was given); ``meta.statistic`` names the table's default,
``meta.statistics`` the ones it has. ``ratio`` is the default statistic over the reference probe's;
``round_p50_ms`` / ``round_iqr_ms`` are the median and spread of the raw round medians.

A loaded table answers in one statistic (``LatencyTable.statistic``, default the manifest's); `LatencyTable.with_statistic`
gives the same table answering in another. Predictors and validations record the statistic of their table, and
mixing two (a p99 correction on a median table, a median query of a p99 predictor) raises `StatisticMismatchError`.
Schema 1 tables (one ``latency_ms`` column) held the protocol's low percentile (p10 of round-corrected runs): they
load as tables of the ``best`` statistic only.

Precision is a dimension of a table, not a column: a table is measured at one precision (``meta.precision``: the
backend exported and quantized every one-layer model to it, see `latency_tables.backends`), and everything that
uses a table at a stated precision checks it (`LatencyTable.check_precision`, `PrecisionMismatchError`). An int8
table is measured on int8 layers; nothing derives it from an fp32 one.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import functools
import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.backends import Backend, Measurement, create_backend
from latency_tables.environment import machine_environment
from latency_tables.model_cache import ModelCache, content_of_layer, content_of_subnet, open_cache
from latency_tables.protocol import (
    REFERENCE_KEY,
    REFERENCE_SPEC_JSON,
    STATISTIC_TEXT,
    STATISTICS,
    Agreement,
    ChunkResult,
    MeasureItem,
    MeasurementProtocol,
    StatisticError,
    WorkerPool,
    check_statistic,
    chunked,
    fit_chunk,
    process_agreement,
    reference_ms_of,
    summarise,
)
from supernet.errors import InputError
from supernet.io import atomic_open, atomic_write_json, read_json, sha256_file
from supernet.layers import Backbone, LayerSpec, build_layer, build_static_model, layer_specs
from supernet.progress import ProgressArg, Tasks
from supernet.runtime import delegation_summary
from supernet.space import PRECISIONS, ArchConfig, InvalidArchError, SearchSpace

__all__ = [
    "CSV_COLUMNS",
    "TABLE_SCHEMA_VERSION",
    "ArchOutsideTableError",
    "LatencyTable",
    "LatencyTableError",
    "MissingLayerError",
    "PrecisionMismatchError",
    "StatisticMismatchError",
    "TableHashError",
    "TableMeta",
    "TableRow",
    "TableSchemaError",
    "build_table",
    "enumerate_layers",
    "measure_models",
    "meta_path_for",
    "space_with_resolutions",
    "table_backend_kwargs",
]

log = logging.getLogger(__name__)

TABLE_SCHEMA_VERSION = 2
SPEC_COLUMNS = ("op", "in_hw", "in_ch", "out_ch", "kernel", "stride", "expand", "mid_ch", "se", "act")
STAT_COLUMNS = tuple(f"{s}_ms" for s in STATISTICS)
CSV_COLUMNS = ("key", *SPEC_COLUMNS, "macs", *STAT_COLUMNS, "ratio", "round_p50_ms", "round_iqr_ms", "runs")
CSV_COLUMNS_V1 = ("key", *SPEC_COLUMNS, "macs", "latency_ms", "ratio", "p50_ms", "iqr_ms", "runs")


# --------------------------------------------------------------------------- errors
class LatencyTableError(InputError):
    """A latency table cannot be used; the message says what is wrong and in which file."""


class TableSchemaError(LatencyTableError):
    """Unknown or malformed schema (manifest fields, CSV header, row values)."""


class TableHashError(LatencyTableError):
    """The CSV does not match the sha256 recorded in its manifest (edited or truncated after it was written)."""


class MissingLayerError(LatencyTableError, LookupError):
    """An architecture needs a layer the table has no row for."""


class ArchOutsideTableError(LatencyTableError):
    """An architecture is not in the search space the table was built for."""


class PrecisionMismatchError(LatencyTableError):
    """A precision was asked of a table (or predictor) measured at another one; latencies of different precisions
    never mix."""


class StatisticMismatchError(LatencyTableError, StatisticError):
    """A statistic was asked of a table (or predictor, validation) that does not have it or holds another one;
    latencies of different statistics (median, best case, p99, ...) never mix."""


def table_backend_kwargs(meta: TableMeta) -> dict[str, Any]:
    """The backend settings a table was built with besides threads and precision (e.g. int8 calibration), so
    end-to-end measurements that fit or check its predictor lower their subnets the same way. Empty for tables
    that did not record them (built before they were recorded, or imported)."""
    recorded = meta.environment.get("backend_kwargs") or {}
    return {k: v for k, v in recorded.items() if k not in ("threads", "precision")}


def meta_path_for(csv_path: str | Path) -> Path:
    p = Path(csv_path)
    return p.with_name(p.name + ".meta.json")


# --------------------------------------------------------------------------- values
@dataclass(frozen=True)
class TableRow:
    """One measured layer. ``latency_ms`` is what lookups return: the table's statistic (`LatencyTable.statistic`);
    ``stats`` holds every statistic the row has, by name (ms)."""

    spec: LayerSpec
    latency_ms: float
    ratio: float
    p50_ms: float
    iqr_ms: float
    runs: int
    stats: Mapping[str, float] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return self.spec.key


@dataclass(frozen=True, kw_only=True)
class TableMeta:
    """The manifest of a table (``<csv>.meta.json``). Times in ms, frequencies in MHz."""

    schema_version: int = TABLE_SCHEMA_VERSION
    device: str
    cpu_model: str
    backend: str
    backend_version: str
    precision: str
    threads: int
    batch_size: int = 1
    warmups: int
    runs: int
    rounds: int
    processes: int
    estimator: str
    reference: dict[str, Any]
    measured_at: str
    space: dict[str, Any]
    backbone: dict[str, Any]
    n_rows: int
    csv_sha256: str
    environment: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    test_retest: dict[str, Any] | None = None
    build_seconds: float | None = None
    source: str = "measured"
    statistic: str = "median"
    statistics: list[str] = field(default_factory=lambda: ["median", "best", "p90", "p99"])

    def __post_init__(self) -> None:
        check_statistic(self.statistic, what="table manifest 'statistic'")
        for st in self.statistics:
            check_statistic(st, what="table manifest 'statistics'")
        if self.statistic not in self.statistics:
            raise TableSchemaError(f"table manifest: default statistic {self.statistic!r} is not among its "
                                   f"statistics {self.statistics}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any], *, path: str = "<meta>") -> TableMeta:
        if not isinstance(d, Mapping):
            raise TableSchemaError(f"{path}: expected a JSON object, got {type(d).__name__}")
        version = d.get("schema_version")
        if version is None:
            raise TableSchemaError(f"{path}: missing 'schema_version' (this hwnas reads version {TABLE_SCHEMA_VERSION})")
        if version not in _MIGRATIONS and version != TABLE_SCHEMA_VERSION:
            raise TableSchemaError(
                f"{path}: schema_version {version!r} is not supported; this hwnas reads versions "
                f"{sorted({*_MIGRATIONS, TABLE_SCHEMA_VERSION})} (a newer hwnas may have written this table)"
            )
        d = dict(d)
        while d["schema_version"] != TABLE_SCHEMA_VERSION:
            d = _MIGRATIONS[d["schema_version"]](d)
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - set(d))
        if missing:
            raise TableSchemaError(f"{path}: missing field(s) {missing}")
        unknown = sorted(set(d) - names)
        if unknown:
            raise TableSchemaError(f"{path}: unknown field(s) {unknown}; expected {sorted(names)}")
        try:
            return cls(**d)
        except (StatisticError, TableSchemaError) as e:
            raise TableSchemaError(f"{path}: {e}") from None


def _v1_to_v2(d: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 -> 2: statistics got names. A measured v1 table's ``latency_ms`` was the protocol's low percentile
    (p10 of round-corrected runs): the "best" case; a kit's benchmark_model import was the mean per inference; an
    imported CSV is labelled as the median (what phone tools usually report). The CSV keeps its v1 header; the
    loader reads it as that one statistic, and `LatencyTable.save` writes schema 2."""
    source = str(d.get("source", "measured"))
    stat = "best" if source == "measured" else "mean" if source.endswith("logs") else "median"
    return {**d, "schema_version": 2, "statistic": stat, "statistics": [stat],
            "estimator": f"{d.get('estimator', '')} (schema 1 table, labelled {stat!r} when migrated)"}


# Schema migrations: version -> function turning a manifest of that version into the next one.
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2}


# --------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class LatencyTable:
    """A loaded or freshly built table. Look layers up by `LayerSpec`; sum a whole architecture with `sum_ms`."""

    rows: Mapping[str, TableRow]
    meta: TableMeta
    path: Path | None = None
    statistic: str = ""  # the statistic lookups answer in; "" = the manifest's default (set in __post_init__)

    def __post_init__(self) -> None:
        if not self.statistic:
            object.__setattr__(self, "statistic", self.meta.statistic)
        if self.statistic not in self.meta.statistics:
            raise StatisticMismatchError(self._no_statistic(self.statistic))

    def _no_statistic(self, statistic: str) -> str:
        hint = ("; schema 1 tables hold only the best case (the protocol's old low percentile): rebuild with "
                "'hwnas lut build' for the median and tail" if "v1" in self.meta.estimator or "schema 1" in
                self.meta.estimator else "")
        return (f"latency table {self._where()} has no {statistic!r} latencies (it has "
                f"{', '.join(self.meta.statistics)}; statistics never mix){hint}")

    def with_statistic(self, statistic: str | None) -> LatencyTable:
        """The same table answering in ``statistic`` (None: this one). `StatisticMismatchError` if it lacks it."""
        if statistic is None or statistic == self.statistic:
            return self
        check_statistic(statistic)
        if statistic not in self.meta.statistics:
            raise StatisticMismatchError(self._no_statistic(statistic))
        rows = {k: replace(r, latency_ms=float(r.stats[statistic])) for k, r in self.rows.items()}
        return LatencyTable(rows=rows, meta=self.meta, path=self.path, statistic=statistic)

    def check_statistic(self, statistic: str | None, *, what: str = "latency") -> str:
        """The statistic this table answers in; `StatisticMismatchError` when ``statistic`` is given and differs."""
        if statistic is not None and statistic != self.statistic:
            check_statistic(statistic, what=what)
            raise StatisticMismatchError(
                f"{what} as statistic {statistic!r} was asked of latency table {self._where()}, which answers in "
                f"{self.statistic!r} ({STATISTIC_TEXT[self.statistic]}); select it with with_statistic / "
                f"--statistic {statistic} (statistics never mix)"
            )
        return self.statistic

    # ---- derived views
    @functools.cached_property
    def space(self) -> SearchSpace:
        return SearchSpace.from_json(self.meta.space)

    @functools.cached_property
    def backbone(self) -> Backbone:
        return Backbone.from_json(self.meta.backbone)

    def __len__(self) -> int:
        return len(self.rows)

    def _where(self) -> str:
        return str(self.path) if self.path is not None else "<in-memory table>"

    @property
    def precision(self) -> str:
        """The precision every row was measured at (fp32, fp16, int8)."""
        return self.meta.precision

    def check_precision(self, precision: str | None, *, what: str = "latency") -> str:
        """The table's precision; `PrecisionMismatchError` when ``precision`` is given and differs from it, or is
        not a precision name at all (`supernet.space.PRECISIONS`)."""
        if precision is not None and precision not in PRECISIONS:
            raise PrecisionMismatchError(f"{what} at precision {precision!r}: unknown precision; expected one of "
                                         f"{', '.join(PRECISIONS)}")
        if precision is not None and precision != self.meta.precision:
            raise PrecisionMismatchError(
                f"{what} at precision {precision!r} was asked of latency table {self._where()}, which was measured at "
                f"{self.meta.precision!r} (backend {self.meta.backend}); use a table built with "
                f"'hwnas lut build --backend {self.meta.backend} --precision {precision}' (precisions never mix)"
            )
        return self.meta.precision

    # ---- queries
    def lookup(self, spec: LayerSpec) -> float:
        """Latency of one layer in ms; `MissingLayerError` names the layer and the table when it has no row."""
        row = self.rows.get(spec.key)
        if row is None:
            raise MissingLayerError(
                f"latency table {self._where()} has no row for layer {spec.key} "
                f"(table: {self.meta.n_rows} rows, backend {self.meta.backend}, space {self.meta.space.get('name')!r}); "
                "rebuild the table for this space/backbone or import the missing layer"
            )
        return row.latency_ms

    def specs(self, cfg: ArchConfig) -> list[LayerSpec]:
        """The layers of ``cfg`` after checking it belongs to the table's space (`ArchOutsideTableError`)."""
        if cfg.resolution not in self.space.resolutions:
            raise ArchOutsideTableError(
                f"architecture {cfg} is outside the space {self.space.name!r} of latency table {self._where()}: "
                f"resolution: {cfg.resolution} px is not one the table was built for (resolutions "
                f"{list(self.space.resolutions)}); build the table with it ('hwnas lut build --resolutions "
                f"{cfg.resolution},...') or import its {cfg.resolution}_lookup_table.yaml"
            )
        try:
            c = self.space.canonical(cfg)
        except InvalidArchError as e:
            raise ArchOutsideTableError(
                f"architecture {cfg} is outside the space {self.space.name!r} of latency table {self._where()}: {e}"
            ) from None
        return layer_specs(self.backbone, c)

    def sum_ms(self, cfg: ArchConfig) -> float:
        """Plain LUT prediction: the sum of the table's latencies of ``cfg``'s layers, in ms."""
        return float(sum(self.lookup(s) for s in self.specs(cfg)))

    def layer_ms(self, cfg: ArchConfig) -> list[tuple[LayerSpec, float]]:
        return [(s, self.lookup(s)) for s in self.specs(cfg)]

    # ---- persistence
    def to_csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        have = set(self.meta.statistics)
        for key in sorted(self.rows):
            r = self.rows[key]
            s = r.spec
            stats = {**r.stats, self.statistic: r.latency_ms}
            missing = sorted(have - set(stats))
            if missing:
                raise TableSchemaError(f"latency table {self._where()}: row {key} lacks statistic(s) {missing} its "
                                       f"manifest lists")
            w.writerow([
                key, s.op, s.in_hw, s.in_ch, s.out_ch, s.kernel, s.stride, s.expand, s.mid_ch, int(s.se), s.act,
                s.macs(), *(f"{stats[st]:.6f}" if st in have else "" for st in STATISTICS),
                f"{r.ratio:.6f}", f"{r.p50_ms:.6f}", f"{r.iqr_ms:.6f}", r.runs,
            ])
        return buf.getvalue()

    def save(self, csv_path: str | Path) -> LatencyTable:
        """Write the CSV then its manifest (with the CSV's sha256), each atomically; return the saved table."""
        target = Path(csv_path)
        text = self.to_csv_text()
        with atomic_open(target, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        meta = replace(self.meta, csv_sha256=sha256_file(target), n_rows=len(self.rows))
        atomic_write_json(meta_path_for(target), meta.to_json())
        for p in (target, meta_path_for(target)):  # atomic writes create 0600 files; tables are shared data
            _make_readable(p)
        # Return exactly what `load` will see (CSV precision), so a built table and a loaded one agree.
        rows = _parse_csv(text, where=str(target), meta=meta)
        return LatencyTable(rows=rows, meta=meta, path=target).with_statistic(self.statistic)

    @classmethod
    def load(cls, csv_path: str | Path, *, check_hash: bool = True, statistic: str | None = None) -> LatencyTable:
        """Read a table; checks manifest schema, CSV hash, header, row values and keys, with messages naming the file.
        ``statistic``: the one lookups answer in (default: the manifest's); `StatisticMismatchError` if it lacks it."""
        path = Path(csv_path)
        if not path.is_file():
            raise FileNotFoundError(f"latency table {str(path)!r} does not exist or is not a file")
        mpath = meta_path_for(path)
        if not mpath.is_file():
            raise LatencyTableError(
                f"latency table {path}: manifest {mpath.name!r} is missing next to it (a table is a CSV plus its "
                ".meta.json)"
            )
        try:
            raw_meta = read_json(mpath, what="latency table manifest")
        except ValueError as e:
            raise TableSchemaError(str(e)) from None
        meta = TableMeta.from_json(raw_meta, path=str(mpath))
        if check_hash:
            actual = sha256_file(path)
            if actual != meta.csv_sha256:
                raise TableHashError(
                    f"latency table {path}: sha256 of the CSV is {actual[:12]}... but the manifest {mpath.name} "
                    f"records {meta.csv_sha256[:12]}...; the CSV was changed after it was written (re-save it "
                    "with LatencyTable.save or rebuild it)"
                )
        rows = _parse_csv(path.read_text(encoding="utf-8"), where=str(path), meta=meta)
        if len(rows) != meta.n_rows:
            raise TableSchemaError(f"latency table {path}: manifest says {meta.n_rows} rows, CSV has {len(rows)}")
        return cls(rows=rows, meta=meta, path=path).with_statistic(statistic)


def _make_readable(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _parse_csv(text: str, *, where: str, meta: TableMeta) -> dict[str, TableRow]:
    """Rows of a schema 2 CSV (or a schema 1 one, whose ``latency_ms`` is the manifest's one statistic); each row's
    ``latency_ms`` is the manifest's default statistic."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise TableSchemaError(f"latency table {where}: the CSV is empty (expected header {list(CSV_COLUMNS)})") from None
    columns: tuple[str, ...]
    if tuple(header) == CSV_COLUMNS_V1:
        columns, v1 = CSV_COLUMNS_V1, True
        if len(meta.statistics) != 1:
            raise TableSchemaError(f"latency table {where}: a schema 1 CSV holds one statistic, the manifest lists "
                                   f"{meta.statistics}")
    elif tuple(header) == CSV_COLUMNS:
        columns, v1 = CSV_COLUMNS, False
    else:
        missing = [c for c in CSV_COLUMNS if c not in header]
        extra = [c for c in header if c not in CSV_COLUMNS]
        raise TableSchemaError(
            f"latency table {where}: CSV header does not match schema v{TABLE_SCHEMA_VERSION}; "
            f"missing columns {missing}, unexpected columns {extra}; expected {list(CSV_COLUMNS)}"
        )
    rows: dict[str, TableRow] = {}
    for lineno, rec in enumerate(reader, start=2):
        if not rec:
            continue
        if len(rec) != len(columns):
            raise TableSchemaError(f"latency table {where}, line {lineno}: {len(rec)} fields, expected {len(columns)}")
        d = dict(zip(columns, rec, strict=True))
        try:
            spec = LayerSpec(
                op=d["op"], in_hw=int(d["in_hw"]), in_ch=int(d["in_ch"]), out_ch=int(d["out_ch"]),
                kernel=int(d["kernel"]), stride=int(d["stride"]), expand=int(d["expand"]), mid_ch=int(d["mid_ch"]),
                se=bool(int(d["se"])), act=d["act"],
            )
            if v1:
                stats = {meta.statistics[0]: float(d["latency_ms"])}
                p50, iqr = float(d["p50_ms"]), float(d["iqr_ms"])
            else:
                stats = {st: float(d[f"{st}_ms"]) for st in meta.statistics}
                p50, iqr = float(d["round_p50_ms"]), float(d["round_iqr_ms"])
            row = TableRow(spec=spec, latency_ms=stats[meta.statistic], ratio=float(d["ratio"]), p50_ms=p50,
                           iqr_ms=iqr, runs=int(d["runs"]), stats=stats)
        except ValueError as e:
            raise TableSchemaError(f"latency table {where}, line {lineno}: bad value ({e})") from None
        if spec.key != d["key"]:
            raise TableSchemaError(
                f"latency table {where}, line {lineno}: key {d['key']!r} does not match its columns ({spec.key!r})"
            )
        for st, v in stats.items():
            if not (np.isfinite(v) and v > 0):
                raise TableSchemaError(f"latency table {where}, line {lineno}: {st}_ms must be > 0, got {v}")
        if spec.key in rows:
            raise TableSchemaError(f"latency table {where}, line {lineno}: duplicate row for {spec.key}")
        rows[spec.key] = row
    return rows


# --------------------------------------------------------------------------- enumeration
def space_with_resolutions(space: SearchSpace, resolutions: Sequence[int] | None) -> SearchSpace:
    """``space`` restricted to ``resolutions`` (None: unchanged); a resolution outside it is refused naming it."""
    if resolutions is None:
        return space
    res = sorted({int(r) for r in resolutions})
    outside = [r for r in res if r not in space.resolutions]
    if not res or outside:
        from supernet.errors import InputError

        raise InputError(
            f"--resolutions {','.join(str(r) for r in resolutions)}: "
            + (f"{outside} not in space {space.name!r}" if outside else "no resolution given")
            + f"; its resolutions are {list(space.resolutions)}"
        )
    return replace(space, resolutions=tuple(res))


def enumerate_layers(space: SearchSpace, backbone: Backbone) -> list[LayerSpec]:
    """Every distinct layer any architecture of ``space`` can contain, over all resolutions, sorted.

    Uses `supernet.layers.layer_specs` (the one network walk) on covering architectures: for each resolution, every
    uniform (depth, kernel, expand) choice. A layer's spec depends only on its stage, whether it is a stage's first
    block, its (kernel, expand) and the resolution, so these cover every block of every architecture; the tests
    check this on random samples.
    """
    seen: dict[str, LayerSpec] = {}
    for r in space.resolutions:
        for d in space.depth_choices:
            for k in space.kernel_choices:
                for e in space.expand_choices:
                    for s in layer_specs(backbone, space.uniform(depth=d, kernel=k, expand=e, resolution=r)):
                        seen.setdefault(s.key, s)
    return sorted(seen.values())


# --------------------------------------------------------------------------- model preparation
def seeded_build(factory: Callable[[], Any], seed: int) -> Any:
    """Build a module without touching the caller's global torch RNG (weights do not matter for latency)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


@contextlib.contextmanager
def torch_single_thread() -> Iterator[None]:
    """Export/trace with one torch thread: on a loaded, shared machine OpenMP spin-waits otherwise turn a
    millisecond forward into seconds. Restores the caller's setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def artifact_tag(backend_kwargs: Mapping[str, Any]) -> str:
    """Part of an exported model's file name that names how it was lowered: "" for plain fp32 (the names of
    earlier builds), else a hash of the backend settings other than threads — so a work folder shared by builds at
    different precisions or quantization settings never hands an fp32 model to an int8 measurement."""
    lowering = {k: v for k, v in sorted(backend_kwargs.items()) if k != "threads"}
    if lowering in ({}, {"precision": "fp32"}):
        return ""
    return "." + hashlib.sha1(json.dumps(lowering, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _artifact_name(key: str, suffix: str, tag: str = "") -> str:
    return hashlib.sha1(key.encode()).hexdigest()[:20] + tag + suffix


# key, module factory, input shape[, cache content]: entries without content are exported to the work folder only
Entry = tuple[str, Callable[[], Any], tuple[int, ...], str] | tuple[str, Callable[[], Any], tuple[int, ...]]


def default_export_jobs() -> int:
    """Exports run in parallel by default: one process per core this process may use (conversions are not timed)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _target_path(entry: Entry, suffix: str, workdir: Path, tag: str, cache: ModelCache | None,
                 backend_spec: tuple[str, Mapping[str, Any]] | None) -> Path:
    if cache is not None and backend_spec is not None and len(entry) > 3 and entry[3]:
        return cache.path(entry[3], backend=backend_spec[0], lowering=backend_spec[1], suffix=suffix)
    return workdir / _artifact_name(entry[0], suffix, tag)


def prepare_items(
    entries: Sequence[Entry],
    backend: Backend,
    workdir: Path,
    *,
    on_export: Callable[[], None] | None = None,
    tag: str = "",
    jobs: int | None = 1,
    backend_spec: tuple[str, Mapping[str, Any]] | None = None,
    cache: ModelCache | None = None,
) -> list[MeasureItem]:
    """Export every entry for ``backend`` (reusing files already there: resumable) into ``cache`` (content-addressed,
    shared by every build, validation and kit: `latency_tables.model_cache`) or, without one, into ``workdir``.

    ``tag`` (`artifact_tag` of the backend settings) goes into the work-folder file names. ``jobs`` > 1 (None:
    `default_export_jobs`) converts the missing files in that many spawned processes (``backend_spec`` = (name,
    kwargs) recreates the backend there; it also keys the cache): TFLite conversion takes seconds per model and uses
    one core, and exports are not timed, so they parallelise freely. Every file is written atomically, so a killed
    parallel export, or two processes converting the same model, leave only whole models behind."""
    jobs = default_export_jobs() if jobs is None else jobs
    if jobs < 1:
        raise ValueError(f"export jobs must be >= 1, got {jobs}")
    suffix = backend.artifact_suffix
    targets = [] if suffix is None else [
        (e[0], e[1], e[2], _target_path(e, suffix, workdir, tag, cache, backend_spec)) for e in entries]
    missing = list({t[3]: t for t in targets if not t[3].exists()}.values())  # one export per distinct file
    reported: set[str] = set()
    if jobs > 1 and len(missing) > 1:
        if backend_spec is None:
            raise ValueError("parallel export needs backend_spec=(backend name, backend kwargs)")
        _export_parallel([m[1:] for m in missing], backend_spec, jobs, on_export)
        reported = {m[0] for m in missing}
    with torch_single_thread():
        return _prepare_items_inner(entries, backend, targets, on_export, reported=reported)


def _export_one(backend_name: str, backend_kwargs: Mapping[str, Any], factory: Callable[[], Any],
                shape: tuple[int, ...], path: Path) -> str:
    """One export in a worker process of `_export_parallel` (module level: it is pickled by reference)."""
    import torch

    torch.set_num_threads(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    create_backend(backend_name, **dict(backend_kwargs)).export(seeded_build(factory, 0), shape, path)
    return str(path)


def _export_parallel(missing: Sequence[tuple[Callable[[], Any], tuple[int, ...], Path]],
                     backend_spec: tuple[str, Mapping[str, Any]], jobs: int,
                     on_export: Callable[[], None] | None) -> None:
    import concurrent.futures as cf
    import multiprocessing as mp

    name, kwargs = backend_spec
    with cf.ProcessPoolExecutor(max_workers=min(jobs, len(missing)), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_export_one, name, dict(kwargs), f, shape, path) for f, shape, path in missing]
        try:
            for fut in cf.as_completed(futures):
                fut.result()  # a worker's export error is raised here; files already written are whole
                if on_export is not None:
                    on_export()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _prepare_items_inner(
    entries: Sequence[Entry],
    backend: Backend,
    targets: Sequence[tuple[str, Callable[[], Any], tuple[int, ...], Path]],
    on_export: Callable[[], None] | None,
    reported: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[MeasureItem]:
    """Items for ``entries``, exporting the ``targets`` files that do not exist yet; ``on_export`` is called once
    per entry whose key is not in ``reported`` (a parallel export already advanced the progress for those)."""
    items = []
    for i, (key, factory, shape, *_) in enumerate(entries):
        if backend.artifact_suffix is None:
            items.append(MeasureItem(key=key, input_shape=shape, factory=factory))
        else:
            path = targets[i][3]
            if not path.exists():
                backend.export(seeded_build(factory, 0), shape, path)
            items.append(MeasureItem(key=key, input_shape=shape, artifact=str(path)))
        if on_export is not None and key not in reported:
            on_export()
    return items


def layer_entry(spec: LayerSpec) -> Entry:
    return (spec.key, functools.partial(build_layer, spec), (1, spec.in_ch, spec.in_hw, spec.in_hw),
            content_of_layer(spec.key))


def reference_entry() -> Entry:
    spec = LayerSpec(**REFERENCE_SPEC_JSON)
    return (REFERENCE_KEY, functools.partial(build_layer, spec), (1, spec.in_ch, spec.in_hw, spec.in_hw),
            content_of_layer(spec.key))


def _backend_kwargs(threads: int, precision: str, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    return {"threads": threads, "precision": precision, **dict(extra or {})}


# --------------------------------------------------------------------------- build (resumable)
@dataclass(frozen=True)
class ChunkDone:
    """Reported to ``on_chunk`` after a chunk is measured *and* checkpointed."""

    keys: tuple[str, ...]
    done: int
    total: int


def _partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def _workdir(out: Path) -> Path:
    return out.with_name("." + out.name + ".work")


def _read_partial(path: Path, fingerprint: dict[str, Any]) -> list[ChunkResult]:
    """Chunks already checkpointed by an earlier, interrupted build with the same settings."""
    chunks: list[ChunkResult] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        return chunks
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        raise LatencyTableError(f"{path}: unreadable checkpoint header; delete it or build with resume=False") from None
    if header.get("fingerprint") != fingerprint:
        old = header.get("fingerprint", {})
        diff = sorted(k for k in fingerprint if old.get(k) != fingerprint[k])
        raise LatencyTableError(
            f"{path}: an interrupted build with different settings (differs in {diff}) is checkpointed here; build "
            "with resume=False (CLI: --no-resume) to start over, or use the same settings to continue it"
        )
    for i, line in enumerate(lines[1:], start=2):
        try:
            chunks.append(ChunkResult.from_json(json.loads(line)))
        except (json.JSONDecodeError, KeyError, ValueError):
            if i == len(lines):  # torn last line of a killed write: that chunk is simply measured again
                log.warning("%s: ignoring a torn last checkpoint line", path)
                break
            raise LatencyTableError(f"{path}, line {i}: corrupt checkpoint line; delete the file to start over") from None
    return chunks


def _append_line(path: Path, obj: Any) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(obj) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def build_table(
    space: SearchSpace,
    backbone: Backbone,
    *,
    out: str | Path,
    backend: str = "onnxruntime",
    threads: int = 1,
    precision: str = "fp32",
    protocol: MeasurementProtocol | None = None,
    resume: bool = True,
    progress: ProgressArg = True,
    device: str | None = None,
    backend_kwargs: Mapping[str, Any] | None = None,
    keep_artifacts: bool = False,
    on_chunk: Callable[[ChunkDone], None] | None = None,
    export_jobs: int | None = None,
    resolutions: Sequence[int] | None = None,
    model_cache: str | os.PathLike[str] | None = None,
) -> LatencyTable:
    """Measure every distinct layer of ``space`` (all resolutions) and write ``out`` (CSV) + ``out.meta.json``.

    Resumable: after each chunk the measured rows are appended (fsynced) to ``<out>.partial.jsonl``, and exported
    one-layer models are kept in ``.<out>.work/``; a build started again with the same settings measures only the
    missing rows. ``on_chunk`` is called after each checkpoint (tests use it to simulate a kill). ``export_jobs``
    processes (default: one per core) convert the one-layer models in parallel before anything is timed (TFLite:
    seconds per model), into the shared model cache (`latency_tables.model_cache`; ``model_cache`` overrides
    ``$HWNAS_MODEL_CACHE``, "off" disables it), so another build, a validation or a kit reuses them.
    ``resolutions``: build for this subset of the space's resolutions only (the table's space then has just
    these; a subnet at another resolution is refused naming it).

    ``precision``: every one-layer model (and the reference probe) is exported at this precision by the backend —
    for onnxruntime int8, QDQ-quantized with per-channel weights (``backend_kwargs`` sets the quantization, see
    `latency_tables.backends.ort.OrtBackend`) — and measured as such. A backend that does not run the precision
    raises `latency_tables.backends.UnsupportedPrecisionError` before anything is measured.
    """
    pr = protocol or MeasurementProtocol()
    out = Path(out)
    t_start = time.perf_counter()
    space = space_with_resolutions(space, resolutions)
    bkw = _backend_kwargs(threads, precision, backend_kwargs)
    be = create_backend(backend, **bkw)
    cache = open_cache(model_cache)
    specs = enumerate_layers(space, backbone)
    fingerprint = {
        "space": space.to_json(), "backbone": backbone.to_json(), "backend": backend, "backend_kwargs": bkw,
        "protocol": pr.to_json(), "n_layers": len(specs),
    }
    partial = _partial_path(out)
    chunks: list[ChunkResult] = []
    if partial.exists() and resume:
        chunks = _read_partial(partial, fingerprint)
    else:
        partial.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(partial, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"fingerprint": fingerprint}) + "\n")
    done = {k for c in chunks for k in c.keys}
    if done:
        log.info("resuming %s: %d of %d layers already measured", out, len(done), len(specs))
    todo = [s for s in specs if s.key not in done]
    workdir = _workdir(out)
    workdir.mkdir(parents=True, exist_ok=True)
    tag = artifact_tag(bkw)

    with Tasks(progress, logger=log) as bars:
        advance = bars.task(f"export {backend} {precision} one-layer models", len(todo) + 1)
        t_export = time.perf_counter()
        ref_item = prepare_items([reference_entry()], be, workdir, on_export=advance, tag=tag,
                                  backend_spec=(backend, bkw), cache=cache)[0]
        items = prepare_items([layer_entry(s) for s in todo], be, workdir, on_export=advance, tag=tag,
                               jobs=export_jobs, backend_spec=(backend, bkw), cache=cache)
        export_seconds = time.perf_counter() - t_export
        if todo:
            advance_m = bars.task(
                f"measure ({pr.processes} proc x {pr.rounds} rounds x {pr.runs_per_round} runs)",
                len(todo) * pr.rounds * pr.processes,
            )
            with WorkerPool(backend, bkw, pr) as pool:
                for chunk in chunked(items, pr.chunk_size):
                    res = pool.measure_chunk(chunk, ref_item, chunk_index=len(chunks), on_round=advance_m)
                    _append_line(partial, res.to_json())
                    chunks.append(res)
                    done.update(res.keys)
                    if on_chunk is not None:
                        on_chunk(ChunkDone(tuple(res.keys), len(done), len(specs)))

    env = {**machine_environment(device=device), **be.environment(), "backend_kwargs": bkw,
           "export_seconds": round(export_seconds, 2), "export_jobs": export_jobs or default_export_jobs(),
           "model_cache": str(cache.root) if cache is not None else None}
    delegation = delegation_summary(d for c in chunks for d in (c.delegations or []))
    if delegation is not None:
        env["delegation"] = delegation
    fits = [fit_chunk(c, pr) for c in chunks]
    reference_ms = reference_ms_of(fits, pr.primary_pct)
    measured: dict[str, Measurement] = {}
    for f in fits:
        for i, k in enumerate(f.keys):
            measured[k] = summarise(f, i, reference_ms=reference_ms, protocol=pr)
    rows: dict[str, TableRow] = {}
    for s in specs:
        m = measured[s.key]
        rows[s.key] = TableRow(spec=s, latency_ms=m.latency_ms, ratio=m.ratio, p50_ms=m.p50_ms, iqr_ms=m.iqr_ms,
                               runs=m.runs, stats=dict(m.stats_ms))
    retest = process_agreement(np.asarray([measured[s.key].per_process_ms for s in specs]),
                               source="pairs of measuring processes, per layer")
    meta = TableMeta(
        device=env["device"], cpu_model=env["cpu_model"], backend=backend, backend_version=be.version,
        precision=precision, threads=threads, batch_size=1, warmups=pr.warmups, runs=pr.runs_per_round,
        rounds=pr.rounds, processes=pr.processes,
        estimator=pr.describe_statistic(), statistic=pr.statistic, statistics=list(pr.percentiles()),
        reference={"key": REFERENCE_KEY, "spec": REFERENCE_SPEC_JSON, "latency_ms": reference_ms},
        measured_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        space=space.to_json(), backbone=backbone.to_json(), n_rows=len(rows), csv_sha256="",
        environment=env, protocol=pr.to_json(), test_retest=retest.to_json() if retest else None,
        build_seconds=round(time.perf_counter() - t_start, 2),
    )
    table = LatencyTable(rows=rows, meta=meta).save(out)
    partial.unlink(missing_ok=True)
    if not keep_artifacts:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return table


# --------------------------------------------------------------------------- end-to-end measurement
def measure_models(
    archs: Sequence[ArchConfig],
    backbone: Backbone,
    *,
    backend: str = "onnxruntime",
    threads: int = 1,
    precision: str = "fp32",
    protocol: MeasurementProtocol | None = None,
    space: SearchSpace | None = None,
    reference_ms: float | None = None,
    workdir: str | Path | None = None,
    progress: ProgressArg = False,
    device: str | None = None,
    backend_kwargs: Mapping[str, Any] | None = None,
    anchors: int = 2,
    export_jobs: int | None = None,
    model_cache: str | os.PathLike[str] | None = None,
) -> list[Measurement]:
    """Measure whole subnets end to end with the same protocol (and reference probe) as table rows.

    ``reference_ms``: express results on another measurement's scale, ``ratio * reference_ms`` (pass
    ``table.meta.reference['latency_ms']`` to remove the machine's drift between the table's session and this one);
    default None: each model's own estimate in ms. When the models need more than one chunk, ``anchors`` models
    are measured in every chunk and each chunk's estimates are scaled so the anchors agree (the machine's level
    changes over minutes; chunks run minutes apart); the rest are shuffled across chunks. ``export_jobs`` processes
    (default: one per core) export the models in parallel before anything is timed, into the shared model cache
    (`latency_tables.model_cache`, ``model_cache`` overrides it) unless ``workdir`` is given.
    Returns one `Measurement` per architecture, in order; ``key`` is ``str(arch)``.

    ``precision``: each subnet is exported at it by the backend (quantized for int8, exactly as the table's layers
    were), so a table and the end-to-end measurements that fit and check its predictor are at the same precision.
    """
    import tempfile

    pr = protocol or MeasurementProtocol()
    bkw = _backend_kwargs(threads, precision, backend_kwargs)
    be = create_backend(backend, **bkw)
    cfgs = [space.canonical(a) if space is not None else a for a in archs]
    entries = []
    for c in cfgs:
        model_shape = (1, backbone.in_channels, c.resolution, c.resolution)
        entries.append((str(c), functools.partial(build_static_model, backbone, c), model_shape,
                        content_of_subnet(str(c), backbone.to_json())))
    unique = list({e[0]: e for e in entries}.values())
    # Chunks: the first `n_anchor` models (anchors) go into every chunk; the rest are shuffled (seeded) so that no
    # group of models shares one chunk's machine state. Each chunk's level is then aligned on the anchors.
    n_anchor = min(anchors, len(unique)) if len(unique) > pr.chunk_size else 0
    rest = unique[n_anchor:]
    order = np.random.default_rng([pr.seed, 7]).permutation(len(rest))
    rest = [rest[i] for i in order]
    with tempfile.TemporaryDirectory(prefix="hwnas-e2e-") as tmp, Tasks(progress, logger=log) as bars:
        wd = Path(workdir) if workdir is not None else Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        advance = bars.task(f"export {backend} {precision} subnets", len(unique) + 1)
        tag = artifact_tag(bkw)
        cache = open_cache(model_cache) if workdir is None else None
        t_export = time.perf_counter()
        all_items = prepare_items([reference_entry(), *unique[:n_anchor], *rest], be, wd, on_export=advance,
                                   tag=tag, jobs=export_jobs, backend_spec=(backend, bkw), cache=cache)
        export_seconds = time.perf_counter() - t_export
        ref_item, anchor_items, rest_items = all_items[0], all_items[1:1 + n_anchor], all_items[1 + n_anchor:]
        per_chunk = max(1, pr.chunk_size - n_anchor)
        chunk_items = [anchor_items + list(c) for c in chunked(rest_items, per_chunk)] or [anchor_items]
        advance_m = bars.task("measure subnets", sum(len(c) for c in chunk_items) * pr.rounds * pr.processes)
        results: list[ChunkResult] = []
        with WorkerPool(backend, bkw, pr) as pool:
            for ci, chunk in enumerate(chunk_items):
                results.append(pool.measure_chunk(chunk, ref_item, chunk_index=ci, on_round=advance_m))
    fits = [fit_chunk(r, pr) for r in results]
    scale = _chunk_alignment(fits, n_anchor)
    own_ref = reference_ms_of(fits, pr.primary_pct)
    ref = None if reference_ms is None else float(reference_ms)
    env = {**machine_environment(device=device), **be.environment(), "protocol": pr.to_json(),
           "own_reference_ms": own_ref, "anchors": n_anchor, "chunk_scale": [float(x) for x in scale],
           "export_seconds": round(export_seconds, 2),
           "scale": "own estimate" if ref is None else f"ratio x reference_ms {ref:.6g}"}
    delegation = delegation_summary(d for r in results for d in (r.delegations or []))
    if delegation is not None:
        env["delegation"] = delegation
    by_key: dict[str, Measurement] = {}
    for f, k_scale in zip(fits, scale, strict=True):
        f = _scaled(f, k_scale) if ref is None else f
        for i in range(len(f.keys)):
            if i < n_anchor and f.keys[i] in by_key:
                continue
            by_key[f.keys[i]] = summarise(f, i, reference_ms=ref, protocol=pr, environment=env)
    return [by_key[str(c)] for c in cfgs]


def _chunk_alignment(fits: Sequence[Any], n_anchor: int) -> np.ndarray:
    """Per-chunk factor that moves each chunk's anchors to the level of the typical model (1 without anchors).

    A chunk's level is the median over its anchors of their log estimate relative to the anchor's median over
    chunks; the common level is the median of the chunk levels weighted by how many models each chunk holds, so a
    short last chunk does not pull the whole measurement as much as a full one."""
    if n_anchor == 0 or len(fits) < 2:
        return np.ones(len(fits))
    logs = np.log(np.stack([f.estimate_ms[:n_anchor] for f in fits]))  # (chunks, anchors)
    level = np.median(logs - np.median(logs, axis=0, keepdims=True), axis=1)
    common = _weighted_median(level, np.asarray([len(f.keys) for f in fits], dtype=float))
    return np.exp(common - level)


def _weighted_median(x: np.ndarray, w: np.ndarray) -> float:
    """Smallest ``x`` whose cumulative weight reaches half the total (the mean of the two middle values on a tie)."""
    order = np.argsort(x)
    xs, cw = x[order], np.cumsum(w[order])
    half = cw[-1] / 2
    i = int(np.searchsorted(cw, half))
    if np.isclose(cw[i], half) and i + 1 < len(xs):
        return float((xs[i] + xs[i + 1]) / 2)
    return float(xs[i])


def _scaled(fit: Any, factor: float) -> Any:
    from dataclasses import replace as _replace

    return _replace(fit, estimate_ms=fit.estimate_ms * factor, per_process_ms=fit.per_process_ms * factor,
                    stats_ms={k: v * factor for k, v in fit.stats_ms.items()})


def measurement_agreement(ms: Sequence[Measurement]) -> Agreement | None:
    """Pairwise agreement between the measuring processes' own estimates of the same models."""
    if not ms:
        return None
    return process_agreement(np.asarray([m.per_process_ms for m in ms]), source="pairs of measuring processes, per model")
