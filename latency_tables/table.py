"""Per-layer latency lookup tables: data (CSV) plus a manifest (``<csv>.meta.json``), never code.

A table has one row per distinct `supernet.layers.LayerSpec` of a search space (over all its resolutions), keyed
by ``LayerSpec.key``, measured on a one-layer model built by `supernet.layers.build_layer` — the same builder the
static subnet uses, so a row and the layer it times cannot drift apart. The manifest holds the schema version,
the machine and backend, the protocol, the search space and backbone (so a table can check that an architecture
belongs to it) and the CSV's sha256.

CSV columns (units in names): ``key, op, in_hw, in_ch, out_ch, kernel, stride, expand, mid_ch, se, act, macs,
latency_ms, ratio, p50_ms, iqr_ms, runs``. ``latency_ms`` is the protocol's estimate (see
`latency_tables.protocol`); ``p50_ms`` / ``iqr_ms`` are the median and spread of the raw round medians.

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
from latency_tables.protocol import (
    REFERENCE_KEY,
    REFERENCE_SPEC_JSON,
    Agreement,
    ChunkResult,
    MeasureItem,
    MeasurementProtocol,
    WorkerPool,
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
    "TableHashError",
    "TableMeta",
    "TableRow",
    "TableSchemaError",
    "build_table",
    "enumerate_layers",
    "measure_models",
    "meta_path_for",
    "table_backend_kwargs",
]

log = logging.getLogger(__name__)

TABLE_SCHEMA_VERSION = 1
SPEC_COLUMNS = ("op", "in_hw", "in_ch", "out_ch", "kernel", "stride", "expand", "mid_ch", "se", "act")
CSV_COLUMNS = ("key", *SPEC_COLUMNS, "macs", "latency_ms", "ratio", "p50_ms", "iqr_ms", "runs")


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
    """One measured layer. ``latency_ms`` is what lookups return."""

    spec: LayerSpec
    latency_ms: float
    ratio: float
    p50_ms: float
    iqr_ms: float
    runs: int

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
        return cls(**d)


# Schema migrations: version -> function turning a manifest of that version into the next one. None yet.
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


# --------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class LatencyTable:
    """A loaded or freshly built table. Look layers up by `LayerSpec`; sum a whole architecture with `sum_ms`."""

    rows: Mapping[str, TableRow]
    meta: TableMeta
    path: Path | None = None

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
        for key in sorted(self.rows):
            r = self.rows[key]
            s = r.spec
            w.writerow([
                key, s.op, s.in_hw, s.in_ch, s.out_ch, s.kernel, s.stride, s.expand, s.mid_ch, int(s.se), s.act,
                s.macs(), f"{r.latency_ms:.6f}", f"{r.ratio:.6f}", f"{r.p50_ms:.6f}", f"{r.iqr_ms:.6f}", r.runs,
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
        return LatencyTable(rows=_parse_csv(text, where=str(target)), meta=meta, path=target)

    @classmethod
    def load(cls, csv_path: str | Path, *, check_hash: bool = True) -> LatencyTable:
        """Read a table; checks manifest schema, CSV hash, header, row values and keys, with messages naming the file."""
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
        rows = _parse_csv(path.read_text(encoding="utf-8"), where=str(path))
        if len(rows) != meta.n_rows:
            raise TableSchemaError(f"latency table {path}: manifest says {meta.n_rows} rows, CSV has {len(rows)}")
        return cls(rows=rows, meta=meta, path=path)


def _make_readable(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _parse_csv(text: str, *, where: str) -> dict[str, TableRow]:
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise TableSchemaError(f"latency table {where}: the CSV is empty (expected header {list(CSV_COLUMNS)})") from None
    if tuple(header) != CSV_COLUMNS:
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
        if len(rec) != len(CSV_COLUMNS):
            raise TableSchemaError(f"latency table {where}, line {lineno}: {len(rec)} fields, expected {len(CSV_COLUMNS)}")
        d = dict(zip(CSV_COLUMNS, rec, strict=True))
        try:
            spec = LayerSpec(
                op=d["op"], in_hw=int(d["in_hw"]), in_ch=int(d["in_ch"]), out_ch=int(d["out_ch"]),
                kernel=int(d["kernel"]), stride=int(d["stride"]), expand=int(d["expand"]), mid_ch=int(d["mid_ch"]),
                se=bool(int(d["se"])), act=d["act"],
            )
            row = TableRow(
                spec=spec, latency_ms=float(d["latency_ms"]), ratio=float(d["ratio"]), p50_ms=float(d["p50_ms"]),
                iqr_ms=float(d["iqr_ms"]), runs=int(d["runs"]),
            )
        except ValueError as e:
            raise TableSchemaError(f"latency table {where}, line {lineno}: bad value ({e})") from None
        if spec.key != d["key"]:
            raise TableSchemaError(
                f"latency table {where}, line {lineno}: key {d['key']!r} does not match its columns ({spec.key!r})"
            )
        if not (np.isfinite(row.latency_ms) and row.latency_ms > 0):
            raise TableSchemaError(f"latency table {where}, line {lineno}: latency_ms must be > 0, got {d['latency_ms']}")
        if spec.key in rows:
            raise TableSchemaError(f"latency table {where}, line {lineno}: duplicate row for {spec.key}")
        rows[spec.key] = row
    return rows


# --------------------------------------------------------------------------- enumeration
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


def prepare_items(
    entries: Sequence[tuple[str, Callable[[], Any], tuple[int, ...]]],
    backend: Backend,
    workdir: Path,
    *,
    on_export: Callable[[], None] | None = None,
    tag: str = "",
    jobs: int = 1,
    backend_spec: tuple[str, Mapping[str, Any]] | None = None,
) -> list[MeasureItem]:
    """Export every entry for ``backend`` into ``workdir`` (reusing files already there: resumable).

    ``tag`` (`artifact_tag` of the backend settings) goes into the file names. ``jobs`` > 1 converts the missing
    files in that many spawned processes (``backend_spec`` = (name, kwargs) recreates the backend there): TFLite
    conversion takes seconds per model and uses one core, and exports are not timed, so they parallelise freely.
    Every file is written atomically, so a killed parallel export leaves only whole models behind."""
    if jobs < 1:
        raise ValueError(f"export jobs must be >= 1, got {jobs}")
    suffix = backend.artifact_suffix
    targets = [] if suffix is None else [(k, f, sh, workdir / _artifact_name(k, suffix, tag)) for k, f, sh in entries]
    missing = [t for t in targets if not t[3].exists()]
    reported: set[str] = set()
    if jobs > 1 and len(missing) > 1:
        if backend_spec is None:
            raise ValueError("parallel export needs backend_spec=(backend name, backend kwargs)")
        _export_parallel([m[1:] for m in missing], backend_spec, jobs, on_export)
        reported = {m[0] for m in missing}
    with torch_single_thread():
        return _prepare_items_inner(entries, backend, workdir, on_export, tag, reported=reported)


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
    entries: Sequence[tuple[str, Callable[[], Any], tuple[int, ...]]],
    backend: Backend,
    workdir: Path,
    on_export: Callable[[], None] | None,
    tag: str,
    reported: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[MeasureItem]:
    """Items for ``entries``, exporting the files not already in ``workdir``; ``on_export`` is called once per
    entry whose key is not in ``reported`` (a parallel export already advanced the progress for those)."""
    items = []
    for key, factory, shape in entries:
        if backend.artifact_suffix is None:
            items.append(MeasureItem(key=key, input_shape=shape, factory=factory))
        else:
            path = workdir / _artifact_name(key, backend.artifact_suffix, tag)
            if not path.exists():
                backend.export(seeded_build(factory, 0), shape, path)
            items.append(MeasureItem(key=key, input_shape=shape, artifact=str(path)))
        if on_export is not None and key not in reported:
            on_export()
    return items


def layer_entry(spec: LayerSpec) -> tuple[str, Callable[[], Any], tuple[int, ...]]:
    """(key, module factory, input shape) of one table layer: what `prepare_items` exports."""
    return spec.key, functools.partial(build_layer, spec), (1, spec.in_ch, spec.in_hw, spec.in_hw)


def reference_entry() -> tuple[str, Callable[[], Any], tuple[int, ...]]:
    """The reference probe as a `prepare_items` entry (timed in every chunk, see `latency_tables.protocol`)."""
    spec = LayerSpec(**REFERENCE_SPEC_JSON)
    return REFERENCE_KEY, functools.partial(build_layer, spec), (1, spec.in_ch, spec.in_hw, spec.in_hw)


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
    export_jobs: int = 1,
) -> LatencyTable:
    """Measure every distinct layer of ``space`` (all resolutions) and write ``out`` (CSV) + ``out.meta.json``.

    Resumable: after each chunk the measured rows are appended (fsynced) to ``<out>.partial.jsonl``, and exported
    one-layer models are kept in ``.<out>.work/``; a build started again with the same settings measures only the
    missing rows. ``on_chunk`` is called after each checkpoint (tests use it to simulate a kill). ``export_jobs``
    processes convert the one-layer models in parallel before anything is timed (TFLite: seconds per model).

    ``precision``: every one-layer model (and the reference probe) is exported at this precision by the backend —
    for onnxruntime int8, QDQ-quantized with per-channel weights (``backend_kwargs`` sets the quantization, see
    `latency_tables.backends.ort.OrtBackend`) — and measured as such. A backend that does not run the precision
    raises `latency_tables.backends.UnsupportedPrecisionError` before anything is measured.
    """
    pr = protocol or MeasurementProtocol()
    out = Path(out)
    t_start = time.perf_counter()
    bkw = _backend_kwargs(threads, precision, backend_kwargs)
    be = create_backend(backend, **bkw)
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
        ref_item = prepare_items([reference_entry()], be, workdir, on_export=advance, tag=tag)[0]
        items = prepare_items([layer_entry(s) for s in todo], be, workdir, on_export=advance, tag=tag,
                               jobs=export_jobs, backend_spec=(backend, bkw))
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

    env = {**machine_environment(device=device), **be.environment(), "backend_kwargs": bkw}
    delegation = delegation_summary(d for c in chunks for d in (c.delegations or []))
    if delegation is not None:
        env["delegation"] = delegation
    fits = [fit_chunk(c, pr.estimator_pct) for c in chunks]
    reference_ms = reference_ms_of(fits, pr.estimator_pct)
    measured: dict[str, Measurement] = {}
    for f in fits:
        for i, k in enumerate(f.keys):
            measured[k] = summarise(f, i, reference_ms=reference_ms, protocol=pr)
    rows: dict[str, TableRow] = {}
    for s in specs:
        m = measured[s.key]
        rows[s.key] = TableRow(spec=s, latency_ms=m.latency_ms, ratio=m.ratio, p50_ms=m.p50_ms, iqr_ms=m.iqr_ms,
                               runs=m.runs)
    retest = process_agreement(np.asarray([measured[s.key].per_process_ms for s in specs]),
                               source="pairs of measuring processes, per layer")
    meta = TableMeta(
        device=env["device"], cpu_model=env["cpu_model"], backend=backend, backend_version=be.version,
        precision=precision, threads=threads, batch_size=1, warmups=pr.warmups, runs=pr.runs_per_round,
        rounds=pr.rounds, processes=pr.processes,
        estimator=f"p{pr.estimator_pct:g} of all round-effect-corrected timed runs (rounds x processes)",
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
    export_jobs: int = 1,
) -> list[Measurement]:
    """Measure whole subnets end to end with the same protocol (and reference probe) as table rows.

    ``reference_ms``: express results on another measurement's scale, ``ratio * reference_ms`` (pass
    ``table.meta.reference['latency_ms']`` to remove the machine's drift between the table's session and this one);
    default None: each model's own estimate in ms. When the models need more than one chunk, ``anchors`` models
    are measured in every chunk and each chunk's estimates are scaled so the anchors agree (the machine's level
    changes over minutes; chunks run minutes apart); the rest are shuffled across chunks. ``export_jobs`` processes
    export the models in parallel before anything is timed.
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
        entries.append((str(c), functools.partial(build_static_model, backbone, c), model_shape))
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
        all_items = prepare_items([reference_entry(), *unique[:n_anchor], *rest], be, wd, on_export=advance,
                                   tag=tag, jobs=export_jobs, backend_spec=(backend, bkw))
        ref_item, anchor_items, rest_items = all_items[0], all_items[1:1 + n_anchor], all_items[1 + n_anchor:]
        per_chunk = max(1, pr.chunk_size - n_anchor)
        chunk_items = [anchor_items + list(c) for c in chunked(rest_items, per_chunk)] or [anchor_items]
        advance_m = bars.task("measure subnets", sum(len(c) for c in chunk_items) * pr.rounds * pr.processes)
        results: list[ChunkResult] = []
        with WorkerPool(backend, bkw, pr) as pool:
            for ci, chunk in enumerate(chunk_items):
                results.append(pool.measure_chunk(chunk, ref_item, chunk_index=ci, on_round=advance_m))
    fits = [fit_chunk(r, pr.estimator_pct) for r in results]
    scale = _chunk_alignment(fits, n_anchor)
    own_ref = reference_ms_of(fits, pr.estimator_pct)
    ref = None if reference_ms is None else float(reference_ms)
    env = {**machine_environment(device=device), **be.environment(), "protocol": pr.to_json(),
           "own_reference_ms": own_ref, "anchors": n_anchor, "chunk_scale": [float(x) for x in scale],
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

    return _replace(fit, estimate_ms=fit.estimate_ms * factor, per_process_ms=fit.per_process_ms * factor)


def measurement_agreement(ms: Sequence[Measurement]) -> Agreement | None:
    """Pairwise agreement between the measuring processes' own estimates of the same models."""
    if not ms:
        return None
    return process_agreement(np.asarray([m.per_process_ms for m in ms]), source="pairs of measuring processes, per model")
