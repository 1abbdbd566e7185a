"""A deployable family of variants on disk: model files plus a versioned ``manifest.json`` (`build_bundle`,
`load_bundle`).

Layout::

    BUNDLE/
      manifest.json            written last, atomically: a folder without it is not a bundle
      models/<variant>.onnx    one or more files per variant (e.g. .onnx and .tflite of the same network)

Manifest, schema version 2 (all latencies in ms, energies in mJ, sizes in bytes)::

    schema_version, kind = "hwnas-variant-bundle", created_at (UTC ISO 8601), hwnas_version,
    content_sha256          sha256 of the manifest itself without this field (canonical JSON: sorted keys, no
                            spaces), so an edited accuracy or latency is refused like an edited model file
    measurement             (optional) how the "measured" column was measured: protocol, statistic, backend and
                            version, threads, CPU, load (`device_agents.ladder.measure_requests`)
    default_table           the latency table whose predictions `Bundle.variants()` uses unless told otherwise
    tables: {name: {...}}   where each latency column comes from (path, csv_sha256, backend, device, precision,
                            threads of a latency table; or the variants file for "variants-file")
    power_model             the `EnergyModel` parameters and the formula of the energy estimate (below)
    variants: [{name, arch, precision, accuracy, size_bytes (sum of its files),
                files: [{path (relative to BUNDLE), format ("onnx" | "tflite"), sha256, size_bytes, input_shape}],
                predicted_latency_ms: {table: ms}, energy_estimate_mj: {table: mJ},
                measured_latency (optional): {median_ms, p99_ms, quantiles_ms (0..100 %), requests},
                accuracy_info (optional): {split, images, selection_split, selection_top1, selection_images}}]

Version 1 (no content hash) still loads, with a logged warning that its numbers are not verified.

Precision is a field of the variant (fp32 / fp16 / int8), so a subnet exported at several bit-widths is several
variants; ``files`` is a list so one variant can ship several formats of the same network.

Energy estimate (same notation as `device_agents.energy`): at nominal (= maximum) clock f = f_max the power model
gives P = P_static + P_dyn, so ``energy_mj = (static_power_w + dynamic_power_w) * latency_ms`` (1 W x 1 ms = 1 mJ),
one value per latency table. The default parameters are those of `EnergyModel` (assumed mobile-CPU figures, not
measured on this machine); they are written into the manifest so every number can be recomputed.

`load_bundle` checks the schema and every file's size and sha256 and raises `BundleError` subclasses whose
messages name the bundle, the variant and the field.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from supernet.errors import InputError
from supernet.io import atomic_write_json, missing_file_message, read_json, sha256_file
from supernet.registry import UnknownNameError

from .energy import EnergyModel
from .variants import PRECISIONS, InvalidVariantError, Variant, validate_bundle

__all__ = [
    "BUNDLE_KIND",
    "BUNDLE_SCHEMA_VERSION",
    "MANIFEST_NAME",
    "MEASURED_TABLE",
    "VARIANTS_FILE_TABLE",
    "Bundle",
    "BundleError",
    "BundleFile",
    "BundleHashError",
    "BundleSchemaError",
    "BundleVariant",
    "build_bundle",
    "load_bundle",
    "manifest_digest",
    "model_format",
    "model_input_shape",
]

BUNDLE_SCHEMA_VERSION = 2
_READABLE_VERSIONS = (1, 2)
BUNDLE_KIND = "hwnas-variant-bundle"
MANIFEST_NAME = "manifest.json"
VARIANTS_FILE_TABLE = "variants-file"
"""Name of the latency column holding each `Variant`'s own ``predicted_latency_ms`` (what the search predicted)."""
MEASURED_TABLE = "measured"
"""Name of the latency column holding the median per-request latency measured on this device (``measured``)."""

logger = logging.getLogger(__name__)

FORMATS: Mapping[str, str] = {".onnx": "onnx", ".tflite": "tflite"}

TableLike = Any  # LatencyTable | LatencyPredictor | str | os.PathLike | Callable[[str], float]


class BundleError(InputError):
    """A bundle cannot be built or loaded; the message names the bundle, the variant and the field."""


class BundleSchemaError(BundleError):
    """The manifest is missing, malformed, or of a schema version this hwnas does not read."""


class BundleHashError(BundleError):
    """A model file is missing or differs (size / sha256) from what the manifest records."""


@dataclass(frozen=True)
class BundleFile:
    """One model file of a variant. ``path`` is relative to the bundle folder, POSIX separators."""

    path: str
    format: str
    sha256: str
    size_bytes: int
    input_shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "sha256": self.sha256, "size_bytes": self.size_bytes,
                "input_shape": list(self.input_shape)}


@dataclass(frozen=True)
class BundleVariant:
    """A variant as recorded in a manifest: several latency predictions (one per table) and several files."""

    name: str
    arch: str
    precision: str
    accuracy: float
    size_bytes: int
    files: tuple[BundleFile, ...]
    predicted_latency_ms: Mapping[str, float]
    energy_estimate_mj: Mapping[str, float]
    measured_latency: Mapping[str, Any] | None = None
    accuracy_info: Mapping[str, Any] | None = None

    def file(self, fmt: str = "onnx") -> BundleFile:
        for f in self.files:
            if f.format == fmt:
                return f
        raise BundleError(f"variant {self.name!r} has no {fmt} file (it has {[f.format for f in self.files]})")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "arch": self.arch, "precision": self.precision, "accuracy": self.accuracy,
            "size_bytes": self.size_bytes, "files": [f.to_json() for f in self.files],
            "predicted_latency_ms": dict(self.predicted_latency_ms),
            "energy_estimate_mj": dict(self.energy_estimate_mj),
            **({"measured_latency": dict(self.measured_latency)} if self.measured_latency is not None else {}),
            **({"accuracy_info": dict(self.accuracy_info)} if self.accuracy_info is not None else {}),
        }


@dataclass(frozen=True)
class Bundle:
    """A loaded (verified) bundle. ``root`` is the folder; file paths in ``entries`` are relative to it."""

    root: Path
    schema_version: int
    created_at: str
    default_table: str
    tables: Mapping[str, Mapping[str, Any]]
    power_model: Mapping[str, Any]
    entries: tuple[BundleVariant, ...]
    measurement: Mapping[str, Any] | None = None
    verified_manifest: bool = True  # False for a version-1 manifest, which has no content hash

    def path_of(self, f: BundleFile) -> Path:
        return self.root / f.path

    def entry(self, name: str) -> BundleVariant:
        for e in self.entries:
            if e.name == name:
                return e
        names = tuple(e.name for e in self.entries)
        raise UnknownNameError(f"bundle {self.root}: no variant {name!r}; it has {list(names)}", kind="variant",
                               name=name, known=names)

    def variants(self, *, table: str | None = None, fmt: str = "onnx") -> tuple[Variant, ...]:
        """The variants as the agents see them: ``predicted_latency_ms`` from ``table`` (default: the bundle's
        default table), ``model_path`` the absolute path of the ``fmt`` file."""
        t = table or self.default_table
        if t not in self.tables:
            raise BundleError(f"bundle {self.root}: no latency table {t!r}; it has {list(self.tables)}")
        return validate_bundle([
            Variant(name=e.name, arch=e.arch, precision=e.precision, predicted_latency_ms=e.predicted_latency_ms[t],
                    accuracy=e.accuracy, size_bytes=e.size_bytes, model_path=str(self.path_of(e.file(fmt))))
            for e in self.entries
        ])

    def latency_quantiles(self) -> dict[str, tuple[float, ...]]:
        """Variant name -> measured per-request latency quantiles (ms, 0..100 %), for variants that have them."""
        return {e.name: tuple(float(q) for q in e.measured_latency["quantiles_ms"]) for e in self.entries
                if e.measured_latency is not None and e.measured_latency.get("quantiles_ms")}

    def to_json(self) -> dict[str, Any]:
        return _manifest(created_at=self.created_at, default_table=self.default_table, tables=self.tables,
                         power_model=self.power_model, entries=self.entries, measurement=self.measurement)


# --------------------------------------------------------------------------- model files
def model_format(path: str | os.PathLike[str]) -> str:
    """"onnx" or "tflite" from the file suffix; `BundleError` otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise BundleError(f"model file {os.fspath(path)!r}: unknown format {suffix!r}; expected one of {list(FORMATS)}")
    return FORMATS[suffix]


def model_input_shape(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """The first input's shape of an ONNX or TFLite model (symbolic dims become -1), via `supernet.runtime`."""
    from supernet.runtime import input_spec

    model_format(path)
    try:
        return input_spec(path).shape
    except InputError as e:
        raise BundleError(str(e)) from None


# --------------------------------------------------------------------------- build
def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "variant"


def _table_predictor(name: str, table: TableLike) -> tuple[Callable[[str], float], dict[str, Any]]:
    """A function arch string -> ms, and the provenance written into the manifest (with the table's precision)."""
    from latency_tables.fewshot import AdaptedLatencyPredictor, is_adapted_predictor

    if isinstance(table, (str, os.PathLike)) and is_adapted_predictor(table):
        table = AdaptedLatencyPredictor.load(table)
    if isinstance(table, AdaptedLatencyPredictor):  # a device known from a few measurements (hwnas lut adapt)
        adapted = table
        a_info = {"source": "adapted predictor", "path": adapted.info.get("path"), "device": adapted.info.get("device"),
                  "precision": adapted.precision or "fp32", "k": adapted.k, "statistic": adapted.statistic,
                  "model": adapted.info.get("chosen")}
        return (lambda arch: float(adapted.predict([adapted.space.parse(arch)])[0])), a_info
    if callable(table) and not isinstance(table, (str, os.PathLike)):
        return (lambda arch: float(table(arch))), {"source": "callable supplied to build_bundle"}
    from latency_tables.predictor import LatencyPredictor, predict_latency, resolve_table
    from latency_tables.table import LatencyTable

    if isinstance(table, LatencyPredictor):
        pred, tab = table, table.table
    else:
        tab = table if isinstance(table, LatencyTable) else resolve_table(table)
        pred = LatencyPredictor.from_table(tab)
    m = tab.meta
    info = {"source": "latency table", "path": str(tab.path) if tab.path else None, "csv_sha256": m.csv_sha256,
            "backend": m.backend, "backend_version": m.backend_version, "device": m.device, "cpu_model": m.cpu_model,
            "precision": m.precision, "threads": m.threads, "predictor": "corrected" if pred.fitted else "plain_sum",
            "statistic": pred.statistic}
    precision = m.precision
    return (lambda arch: float(predict_latency(arch, table=tab, predictor=pred, precision=precision)[0])), info


def _column_predictors(name: str, spec: TableLike | Sequence[TableLike]
                       ) -> tuple[dict[str | None, Callable[[str], float]], dict[str, Any]]:
    """One latency column from one table or from several tables of different precisions.

    Returns precision -> predictor (key ``None`` for a callable, whose precision is unknown and which then serves
    every variant) and the manifest's provenance: the single table's info, or ``{"source": "latency tables per
    precision", "per_precision": {precision: info}}``. A bit-width's latency is only ever taken from a table
    measured at that bit-width (see `build_bundle`).
    """
    parts = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not parts:
        raise BundleError(f"latency table column {name!r}: no table given")
    fns: dict[str | None, Callable[[str], float]] = {}
    infos: dict[str, dict[str, Any]] = {}
    for part in parts:
        fn, info = _table_predictor(name, part)
        key = info.get("precision")
        if key is None and len(parts) > 1:
            raise BundleError(f"latency table column {name!r}: a callable cannot be combined with other tables "
                              "(its precision is unknown)")
        if key in fns:
            raise BundleError(f"latency table column {name!r}: two tables measured at precision {key!r}; "
                              "give one table per precision")
        fns[key] = fn
        infos[str(key)] = info
    if len(parts) > 1:
        for field_ in ("backend", "device", "cpu_model", "threads"):
            seen = {str(k): i.get(field_) for k, i in infos.items()}
            if len(set(seen.values())) > 1:
                raise BundleError(f"latency table column {name!r}: its tables differ in {field_} ({seen}); one column "
                                  "holds one device's tables measured with one backend and thread count, one per "
                                  "precision")
    if len(parts) == 1:
        return fns, next(iter(infos.values()))
    return fns, {"source": "latency tables per precision", "per_precision": infos}


_WEIGHT_DTYPE_OF = {"fp32": "float32", "fp16": "float16", "int8": "int8"}


def model_weight_dtypes(path: str | os.PathLike[str]) -> dict[str, int]:
    """Conv/Gemm/MatMul weight elements of an ONNX or TFLite model by stored dtype (`supernet.quantize`)."""
    if model_format(path) == "onnx":
        from supernet.quantize import onnx_weight_dtypes

        return onnx_weight_dtypes(path)
    from supernet.quantize_tflite import tflite_weight_dtypes

    return tflite_weight_dtypes(path)


def _check_weight_precision(name: str, precision: str, path: Path) -> None:
    """Refuse a model file whose stored weights are not mostly (> 50 % of elements) of the variant's precision: its
    latency would be taken from the table of a bit-width it does not run at."""
    want = _WEIGHT_DTYPE_OF.get(precision)
    if want is None:
        return
    try:
        counts = model_weight_dtypes(path)
    except ImportError:  # pragma: no cover - no reader for this format installed
        return
    total = sum(counts.values())
    if total and counts.get(want, 0) / total <= 0.5:
        shares = ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(counts.items()))
        raise BundleError(f"variant {name!r} is labelled {precision} but its model file {path.name} stores weights "
                          f"as {shares}; export it at {precision} (hwnas quantize) or fix the label")


def _copy_into(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` via a temporary sibling and a rename (a crash leaves no torn model file)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of ``manifest`` without its ``content_sha256`` field, as canonical JSON (sorted keys, no spaces)."""
    body = {k: v for k, v in manifest.items() if k != "content_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _manifest(*, created_at: str, default_table: str, tables: Mapping[str, Any], power_model: Mapping[str, Any],
              entries: Sequence[BundleVariant], measurement: Mapping[str, Any] | None = None) -> dict[str, Any]:
    from importlib import metadata

    try:
        version = metadata.version("hwnas")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        version = "unknown"
    return {
        "schema_version": BUNDLE_SCHEMA_VERSION,
        "kind": BUNDLE_KIND,
        "created_at": created_at,
        "hwnas_version": version,
        "default_table": default_table,
        "tables": {k: dict(v) for k, v in tables.items()},
        "power_model": dict(power_model),
        **({"measurement": dict(measurement)} if measurement is not None else {}),
        "variants": [e.to_json() for e in entries],
    }


def _power_model_json(em: EnergyModel) -> dict[str, Any]:
    return {
        "static_power_w": em.static_power_w,
        "dynamic_power_w": em.dynamic_power_w,
        "formula": "energy_mj = (static_power_w + dynamic_power_w) * latency_ms  (power at nominal = max clock, "
                   "P(f) = P_static + P_dyn (f/f_max)^3; 1 W x 1 ms = 1 mJ)",
        "note": "assumed mobile-CPU figures (device_agents.energy.EnergyModel defaults unless overridden), not measured",
    }


def build_bundle(
    variants: Sequence[Variant],
    out_dir: str | os.PathLike[str],
    *,
    tables: Mapping[str, TableLike] | None = None,
    extra_files: Mapping[str, Sequence[str | os.PathLike[str]]] | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    energy_model: EnergyModel | None = None,
    default_table: str | None = None,
    overwrite: bool = False,
    measured: Mapping[str, Mapping[str, Any]] | None = None,
    measurement: Mapping[str, Any] | None = None,
    accuracy_info: Mapping[str, Mapping[str, Any]] | None = None,
) -> Bundle:
    """Copy each variant's model file(s) into ``out_dir/models/`` and write ``out_dir/manifest.json``.

    Args:
        variants: each needs ``model_path`` (ONNX or TFLite); a relative path is resolved against ``base_dir``
            (default: the current directory) - the demo's ``variants.json`` holds paths relative to its folder.
        tables: extra latency columns, name -> a `LatencyTable`, a `LatencyPredictor`, a table CSV path, an
            adapted predictor of a device known from a few measurements (its JSON path or the object, see
            `latency_tables.fewshot`), or a callable ``str(arch) -> ms``; or name -> a list of tables of different precisions (fp32, fp16, int8
            tables of one device), of which each variant uses the one measured at its own precision. A variant
            whose precision no table of a column was measured at is an error (`BundleError`): a bit-width's
            latency is never borrowed from another bit-width's table. A callable's precision is unknown and it
            serves every variant. The column ``"variants-file"`` (each variant's own
            ``predicted_latency_ms``) is always written.
        extra_files: variant name -> more files of the same network (e.g. its .tflite).
        default_table: the column `Bundle.variants` uses by default; ``"variants-file"`` unless given.
        overwrite: replace an existing bundle in ``out_dir``; otherwise an existing manifest is an error.
        measured: variant name -> per-request latency measured on the device ({median_ms, p99_ms, quantiles_ms,
            requests}); given for every variant, it adds the latency column ``measured`` (the medians) and
            ``measurement`` (how) is recorded beside it.
        accuracy_info: variant name -> where ``accuracy`` comes from ({split, images, selection_split, ...}).

    Returns the bundle as `load_bundle` would read it back (hashes just computed).
    """
    bundle = validate_bundle(variants)
    out = Path(out_dir)
    _check_bundle_target(out, overwrite=overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        result = _build_into(bundle, staging, tables=tables, extra_files=extra_files, base_dir=base_dir,
                             energy_model=energy_model, default_table=default_table, measured=measured,
                             measurement=measurement, accuracy_info=accuracy_info)
        _commit_bundle(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dataclasses.replace(result, root=out)


def _check_bundle_target(out: Path, *, overwrite: bool) -> None:
    """Refuse a target that is a file, a finished bundle (without ``overwrite``) or a folder holding other things."""
    if out.exists() and not out.is_dir():
        raise BundleError(f"bundle folder {str(out)!r} is a file; expected a new or empty folder")
    if (out / MANIFEST_NAME).exists():
        if not overwrite:
            raise BundleError(f"bundle folder {out} already holds a {MANIFEST_NAME}; pass overwrite=True "
                              "(--overwrite on the command line) to replace it")
    elif out.is_dir() and any(out.iterdir()):
        raise BundleError(f"bundle folder {str(out)!r} is not empty and holds no bundle ({MANIFEST_NAME}); expected "
                          "a new or empty folder, so that nothing of yours is mixed into the bundle or replaced")


def _commit_bundle(staging: Path, out: Path) -> None:
    """Move a finished bundle from ``staging`` to ``out``.

    A new (or empty) ``out`` is one rename. Replacing a bundle removes its ``models/`` and manifest (only those:
    anything else in the folder stays) and moves the new ones in, manifest last, so a crash in between leaves a
    folder without a manifest, which `load_bundle` refuses as unfinished, never a manifest over the wrong files.
    """
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
        return
    (out / MANIFEST_NAME).unlink()
    shutil.rmtree(out / "models", ignore_errors=True)
    if (staging / "models").exists():
        os.replace(staging / "models", out / "models")
    os.replace(staging / MANIFEST_NAME, out / MANIFEST_NAME)


def _build_into(
    bundle: Sequence[Variant],
    out: Path,
    *,
    tables: Mapping[str, TableLike] | None,
    extra_files: Mapping[str, Sequence[str | os.PathLike[str]]] | None,
    base_dir: str | os.PathLike[str] | None,
    energy_model: EnergyModel | None,
    default_table: str | None,
    measured: Mapping[str, Mapping[str, Any]] | None,
    measurement: Mapping[str, Any] | None,
    accuracy_info: Mapping[str, Mapping[str, Any]] | None,
) -> Bundle:
    """`build_bundle`'s work, written into the (staging) folder ``out``."""
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    em = energy_model or EnergyModel()
    power_w = em.static_power_w + em.dynamic_power_w
    columns: dict[str, dict[str | None, Callable[[str], float]]] = {}
    table_info: dict[str, dict[str, Any]] = {
        VARIANTS_FILE_TABLE: {"source": "Variant.predicted_latency_ms of the variants given to build_bundle"},
    }
    if measured is not None:
        missing = sorted({v.name for v in bundle} - set(measured))
        if missing:
            raise BundleError(f"measured: no measurement for variant(s) {missing}")
        for name, m in measured.items():
            if not (isinstance(m.get("median_ms"), (int, float)) and math.isfinite(m["median_ms"]) and m["median_ms"] > 0):
                raise BundleError(f"measured[{name!r}]: median_ms should be a finite number > 0, got {m.get('median_ms')!r}")
        table_info[MEASURED_TABLE] = {"source": "median per-request latency measured on this device",
                                      **{k: v for k, v in (measurement or {}).items()
                                         if k in ("device", "cpu_model", "backend", "backend_version", "threads",
                                                  "statistic", "images_per_request")}}
    for tname, tab in (tables or {}).items():
        if tname in (VARIANTS_FILE_TABLE, MEASURED_TABLE):
            raise BundleError(f"table name {tname!r} is reserved for the variants' own predictions")
        columns[tname], table_info[tname] = _column_predictors(tname, tab)
    dt = default_table or VARIANTS_FILE_TABLE
    if dt not in table_info:
        raise BundleError(f"default_table {dt!r} is not one of the tables {list(table_info)}")
    unknown_extra = sorted(set(extra_files or {}) - {v.name for v in bundle})
    if unknown_extra:
        raise BundleError(f"extra_files names variant(s) {unknown_extra} that are not in the bundle")

    entries: list[BundleVariant] = []
    used: set[str] = set()
    for v in bundle:
        if v.model_path is None:
            raise BundleError(f"variant {v.name!r} has no model_path: a bundle ships model files (export it first)")
        sources = [Path(v.model_path), *(Path(p) for p in (extra_files or {}).get(v.name, ()))]
        files: list[BundleFile] = []
        stem = _safe_stem(v.name)
        while stem in used:
            stem += "_"
        used.add(stem)
        for src in sources:
            src = src if src.is_absolute() else base / src
            if not src.is_file():
                raise BundleError(f"variant {v.name!r}: " + missing_file_message("model file", src))
            fmt = model_format(src)
            if any(f.format == fmt for f in files):
                raise BundleError(f"variant {v.name!r}: two {fmt} files; one file per format")
            rel = PurePosixPath("models") / f"{stem}{src.suffix.lower()}"
            dst = out / rel
            _copy_into(src, dst)
            files.append(BundleFile(path=str(rel), format=fmt, sha256=sha256_file(dst),
                                    size_bytes=dst.stat().st_size, input_shape=model_input_shape(dst)))
            _check_weight_precision(v.name, v.precision, dst)
        lat = {VARIANTS_FILE_TABLE: v.predicted_latency_ms}
        if measured is not None:
            lat[MEASURED_TABLE] = float(measured[v.name]["median_ms"])
        for tname, fns in columns.items():
            fn = fns.get(v.precision, fns.get(None))
            if fn is None:
                raise BundleError(
                    f"variant {v.name!r} is {v.precision} but latency table column {tname!r} was measured at "
                    f"{sorted(str(k) for k in fns)} only; a bit-width's latency must be measured at that bit-width: "
                    f"build a {v.precision} table (hwnas lut build --precision {v.precision}) and give both "
                    f"(--table {tname}=FP32.csv --table {tname}=INT8.csv)")
            try:
                ms = fn(v.arch)
            except Exception as e:
                raise BundleError(f"variant {v.name!r}: latency table {tname!r} cannot predict arch {v.arch}: {e}") from e
            if not (math.isfinite(ms) and ms > 0):
                raise BundleError(f"variant {v.name!r}: latency table {tname!r} predicted {ms} ms")
            lat[tname] = ms
        entries.append(BundleVariant(
            name=v.name, arch=v.arch, precision=v.precision, accuracy=v.accuracy,
            size_bytes=sum(f.size_bytes for f in files), files=tuple(files), predicted_latency_ms=lat,
            energy_estimate_mj={k: power_w * ms for k, ms in lat.items()},
            measured_latency=dict(measured[v.name]) if measured is not None else None,
            accuracy_info=dict((accuracy_info or {})[v.name]) if v.name in (accuracy_info or {}) else None,
        ))
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    meas = dict(measurement) if (measured is not None and measurement is not None) else None
    manifest = _manifest(created_at=created, default_table=dt, tables=table_info,
                         power_model=_power_model_json(em), entries=entries, measurement=meas)
    manifest["content_sha256"] = manifest_digest(manifest)
    atomic_write_json(out / MANIFEST_NAME, manifest)
    return Bundle(root=out, schema_version=BUNDLE_SCHEMA_VERSION, created_at=created, default_table=dt,
                  tables=table_info, power_model=manifest["power_model"], entries=tuple(entries), measurement=meas)


# --------------------------------------------------------------------------- load
def _need(d: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str) -> Any:
    if key not in d:
        raise BundleSchemaError(f"{where}: missing field {key!r}")
    v = d[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise BundleSchemaError(f"{where}: field {key!r} has the wrong type (bool)")
    if not isinstance(v, types):
        names = [t.__name__ for t in (types if isinstance(types, tuple) else (types,))]
        raise BundleSchemaError(f"{where}: field {key!r} should be {'/'.join(names)}, got {type(v).__name__}")
    return v


def _ms_map(d: Any, key: str, where: str, tables: Mapping[str, Any], *, allow_zero: bool = False) -> dict[str, float]:
    if not isinstance(d, Mapping):
        raise BundleSchemaError(f"{where}: {key} should be an object table -> number")
    out: dict[str, float] = {}
    for t in tables:
        v = d.get(t)
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and (v > 0 or (allow_zero and v == 0))):
            bound = ">= 0" if allow_zero else "> 0"
            raise BundleSchemaError(f"{where}: {key}[{t!r}] should be a finite number {bound}, got {v!r}")
        out[t] = float(v)
    extra = sorted(set(d) - set(tables))
    if extra:
        raise BundleSchemaError(f"{where}: {key} names table(s) {extra} that the manifest does not declare")
    return out


def _check_rel_path(p: str, where: str) -> str:
    pp = PurePosixPath(p)
    if pp.is_absolute() or ".." in pp.parts or "\\" in p or not pp.parts:
        raise BundleSchemaError(f"{where}: file path {p!r} must be relative and inside the bundle folder")
    return p


def load_bundle(bundle_dir: str | os.PathLike[str], *, check_hashes: bool = True) -> Bundle:
    """Read and verify ``bundle_dir/manifest.json`` and the files it lists.

    Raises `BundleSchemaError` for a missing / malformed / unsupported manifest and `BundleHashError` when a model
    file is absent or differs from the manifest (size always, sha256 unless ``check_hashes=False``).
    """
    root = Path(bundle_dir)
    mpath = root / MANIFEST_NAME
    if not mpath.is_file():
        raise BundleSchemaError(f"bundle {str(root)!r}: no {MANIFEST_NAME} (not a bundle, or its build did not finish)")
    try:
        d = read_json(mpath, what="bundle manifest")
    except ValueError as e:
        raise BundleSchemaError(str(e)) from None
    where = f"bundle manifest {mpath}"
    if not isinstance(d, Mapping):
        raise BundleSchemaError(f"{where}: expected a JSON object, got {type(d).__name__}")
    version = d.get("schema_version")
    if isinstance(version, bool) or version not in _READABLE_VERSIONS:
        raise BundleSchemaError(
            f"{where}: schema_version {version!r} is not supported (this hwnas reads {list(_READABLE_VERSIONS)}); "
            "rebuild the bundle with this hwnas (hwnas bundle)"
        )
    if version >= 2:
        recorded = d.get("content_sha256")
        if not isinstance(recorded, str):
            raise BundleHashError(f"{where}: missing field 'content_sha256' (the manifest's own hash)")
        try:
            actual = manifest_digest(d)
        except (TypeError, ValueError) as e:
            raise BundleSchemaError(f"{where}: manifest cannot be hashed ({e})") from None
        if actual != recorded:
            raise BundleHashError(
                f"{where}: content_sha256 is {actual[:12]}... but the manifest records {recorded[:12]}...; the "
                "manifest (accuracy, latency or another field) was edited after the bundle was built; rebuild it "
                "with hwnas bundle")
    else:
        logger.warning("%s: schema version 1 has no content hash, so its accuracies and latencies are not "
                       "verified; rebuild the bundle with hwnas bundle", where)
    if d.get("kind") != BUNDLE_KIND:
        raise BundleSchemaError(f"{where}: kind {d.get('kind')!r} is not {BUNDLE_KIND!r}")
    created = _need(d, "created_at", str, where)
    tables = _need(d, "tables", dict, where)
    if VARIANTS_FILE_TABLE not in tables:
        raise BundleSchemaError(f"{where}: tables lacks {VARIANTS_FILE_TABLE!r}")
    default_table = _need(d, "default_table", str, where)
    if default_table not in tables:
        raise BundleSchemaError(f"{where}: default_table {default_table!r} is not one of {list(tables)}")
    power = _need(d, "power_model", dict, where)
    raw = _need(d, "variants", list, where)
    if not raw:
        raise BundleSchemaError(f"{where}: variants is empty")
    entries: list[BundleVariant] = []
    for i, item in enumerate(raw):
        w = f"{where}, variants[{i}]"
        if not isinstance(item, Mapping):
            raise BundleSchemaError(f"{w}: expected an object")
        name = _need(item, "name", str, w)
        w = f"{where}, variant {name!r}"
        precision = _need(item, "precision", str, w)
        if precision not in PRECISIONS:
            raise BundleSchemaError(f"{w}: precision {precision!r} is not one of {list(PRECISIONS)}")
        files_raw = _need(item, "files", list, w)
        if not files_raw:
            raise BundleSchemaError(f"{w}: files is empty")
        files = []
        for j, f in enumerate(files_raw):
            fw = f"{w}, files[{j}]"
            if not isinstance(f, Mapping):
                raise BundleSchemaError(f"{fw}: expected an object")
            rel = _check_rel_path(_need(f, "path", str, fw), fw)
            fmt = _need(f, "format", str, fw)
            if fmt not in FORMATS.values():
                raise BundleSchemaError(f"{fw}: format {fmt!r} is not one of {sorted(FORMATS.values())}")
            shape = _need(f, "input_shape", list, fw)
            bf = BundleFile(path=rel, format=fmt, sha256=_need(f, "sha256", str, fw),
                            size_bytes=_need(f, "size_bytes", int, fw), input_shape=tuple(int(s) for s in shape))
            p = root / rel
            if not p.is_file():
                raise BundleHashError(f"{fw}: model file {str(p)!r} is missing")
            if p.stat().st_size != bf.size_bytes:
                raise BundleHashError(
                    f"{fw}: model file {rel} has {p.stat().st_size} bytes, the manifest records {bf.size_bytes}"
                )
            if check_hashes:
                actual = sha256_file(p)
                if actual != bf.sha256:
                    raise BundleHashError(
                        f"{fw}: sha256 of {rel} is {actual[:12]}..., the manifest records {bf.sha256[:12]}...; the file "
                        "was changed after the bundle was built (rebuild it with hwnas bundle)"
                    )
            files.append(bf)
        try:
            entry = BundleVariant(
                name=name, arch=_need(item, "arch", str, w), precision=precision,
                accuracy=float(_need(item, "accuracy", (int, float), w)),
                size_bytes=_need(item, "size_bytes", int, w), files=tuple(files),
                predicted_latency_ms=_ms_map(item.get("predicted_latency_ms"), "predicted_latency_ms", w, tables),
                energy_estimate_mj=_ms_map(item.get("energy_estimate_mj"), "energy_estimate_mj", w, tables,
                                           allow_zero=True),
                measured_latency=_optional_map(item, "measured_latency", w),
                accuracy_info=_optional_map(item, "accuracy_info", w),
            )
            # The agents' own checks (accuracy range, ...) through the Variant constructor.
            Variant(name=entry.name, arch=entry.arch, precision=entry.precision,
                    predicted_latency_ms=entry.predicted_latency_ms[default_table], accuracy=entry.accuracy,
                    size_bytes=entry.size_bytes)
        except InvalidVariantError as e:
            raise BundleSchemaError(f"{w}: {e}") from None
        entries.append(entry)
    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise BundleSchemaError(f"{where}: variant name(s) {dup} appear more than once")
    measurement = d.get("measurement")
    if measurement is not None and not isinstance(measurement, Mapping):
        raise BundleSchemaError(f"{where}: measurement should be an object")
    return Bundle(root=root, schema_version=int(version), created_at=created, default_table=default_table,
                  tables=tables, power_model=power, entries=tuple(entries), measurement=measurement,
                  verified_manifest=version >= 2)


def _optional_map(item: Mapping[str, Any], key: str, where: str) -> dict[str, Any] | None:
    v = item.get(key)
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise BundleSchemaError(f"{where}: {key} should be an object")
    if key == "measured_latency":
        q = v.get("quantiles_ms")
        if q is not None and not (isinstance(q, list) and q and all(isinstance(x, (int, float)) and x > 0 for x in q)):
            raise BundleSchemaError(f"{where}: measured_latency.quantiles_ms should be a list of numbers > 0")
    return dict(v)
