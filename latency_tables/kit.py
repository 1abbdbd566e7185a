"""Phone measurement kit: export every one-layer model of a space, run TFLite's ``benchmark_model`` on the phone
with a generated POSIX script, and import the logs (or a CSV measured elsewhere) back as a latency table.

Split as profiler / parser / converter (nn-Meter's layout): `write_kit` converts (torch -> .tflite / .onnx) and
writes the profiler (``run_benchmark.sh``, runs on the host, drives the phone over adb); `latency_tables.benchmark_log`
is the pure parser; `import_kit_logs` / `import_kit_csv` turn its numbers into a `LatencyTable`.

A kit directory::

    kit.json              the manifest: space, backbone, precision, threads, runs, layer key <-> file names,
                          each file's sha256, and ``kit_sha256`` (sha256 of the manifest's canonical JSON
                          without that field); the script stamps it into every log, so import can check a log
                          came from this very kit
    run_benchmark.sh      POSIX sh: adb push, then ``rounds`` interleaved rounds of benchmark_model per model
    models/<name>.tflite  one-layer models (and <name>.onnx); <name> is the layer key with ':' -> '_'
    logs/<name>.log       written by the script (all rounds appended, each between marker lines)

Latency of a layer from its logs (µs -> ms): the median over successful runs (rounds) of benchmark_model's
``Inference (avg)``; ``p50_ms`` is the same median and ``iqr_ms`` the spread of the per-round averages
(0 with one round). Interleaved rounds expose a phone's thermal drift to every layer alike.
"""

from __future__ import annotations

import csv
import datetime as _dt
import functools
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from latency_tables.benchmark_log import BenchmarkRun, parse_log_file
from latency_tables.protocol import REFERENCE_KEY, REFERENCE_SPEC_JSON
from latency_tables.table import (
    LatencyTable,
    LatencyTableError,
    TableMeta,
    TableRow,
    enumerate_layers,
    seeded_build,
    torch_single_thread,
)
from supernet.io import atomic_write_json, atomic_write_text, read_json, sha256_file
from supernet.layers import Backbone, LayerSpec, build_layer
from supernet.progress import ProgressArg, Tasks
from supernet.space import SearchSpace

__all__ = [
    "FORMATS",
    "KIT_SCHEMA_VERSION",
    "KitError",
    "KitLayer",
    "KitManifest",
    "default_exporters",
    "import_kit_csv",
    "import_kit_logs",
    "load_kit",
    "model_runs",
    "run_script",
    "write_kit",
]

log = logging.getLogger(__name__)

KIT_SCHEMA_VERSION = 1
KIT_KIND = "hwnas-latency-kit"
FORMATS = ("tflite", "onnx")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
Exporter = Callable[[Any, Path, tuple[int, ...]], Path]


class KitError(LatencyTableError):
    """A kit or its logs/CSV cannot be used; the message names the file (and line) and what is wrong."""


def default_exporters() -> dict[str, Exporter]:
    """Format -> exporter through `supernet.export.export` (the layer kit's and the subnet kit's)."""
    from supernet.export import export

    return {
        "tflite": lambda model, path, shape: export(model, path, format="tflite", input_shape=shape),
        "onnx": lambda model, path, shape: export(model, path, format="onnx", input_shape=shape),
    }


def file_name_of(key: str) -> str:
    """File stem of a layer key (':' -> '_'); safe for adb, Windows and sh."""
    name = key.replace(":", "_")
    if not _SAFE_NAME.match(name):
        raise KitError(f"layer key {key!r} does not map to a safe file name ({name!r})")
    return name


# --------------------------------------------------------------------------- manifest
@dataclass(frozen=True, kw_only=True)
class KitLayer:
    """One model of the kit. ``files``: format -> path relative to the kit; ``sha256``: format -> file hash."""

    key: str
    name: str
    spec: dict[str, Any]
    input_shape: tuple[int, ...]
    files: dict[str, str]
    sha256: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        return d


@dataclass(frozen=True, kw_only=True)
class KitManifest:
    """``kit.json``. ``kit_sha256`` is the sha256 of the canonical JSON of every other field."""

    schema_version: int = KIT_SCHEMA_VERSION
    kind: str = KIT_KIND
    space: dict[str, Any]
    backbone: dict[str, Any]
    precision: str
    threads: int
    num_runs: int
    warmup_runs: int
    rounds: int
    formats: tuple[str, ...]
    layers: tuple[KitLayer, ...]
    created_at: str
    exporter: dict[str, Any] = field(default_factory=dict)
    kit_sha256: str = ""

    def body_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("kit_sha256")
        d["formats"] = list(self.formats)
        d["layers"] = [layer.to_json() for layer in self.layers]
        return d

    def computed_sha256(self) -> str:
        text = json.dumps(self.body_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {**self.body_json(), "kit_sha256": self.kit_sha256}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], *, path: str = "kit.json") -> KitManifest:
        if not isinstance(d, Mapping) or d.get("kind") != KIT_KIND:
            raise KitError(f"{path}: not an hwnas latency kit manifest (expected \"kind\": \"{KIT_KIND}\")")
        if d.get("schema_version") != KIT_SCHEMA_VERSION:
            raise KitError(f"{path}: kit schema_version {d.get('schema_version')!r} is not supported "
                           f"(this hwnas reads {KIT_SCHEMA_VERSION})")
        try:
            layers = tuple(KitLayer(**{**lay, "input_shape": tuple(lay["input_shape"])}) for lay in d["layers"])
            return cls(**{**d, "formats": tuple(d["formats"]), "layers": layers})
        except (KeyError, TypeError) as e:
            raise KitError(f"{path}: malformed kit manifest ({e})") from None

    def by_key(self) -> dict[str, KitLayer]:
        return {layer.key: layer for layer in self.layers}


def load_kit(kit_dir: str | Path) -> KitManifest:
    """Read ``kit.json`` and check it was not edited since `write_kit` wrote it (its ``kit_sha256``)."""
    path = Path(kit_dir) / "kit.json"
    try:
        raw = read_json(path, what="latency kit manifest")
    except ValueError as e:
        raise KitError(str(e)) from None
    m = KitManifest.from_json(raw, path=str(path))
    if m.computed_sha256() != m.kit_sha256:
        raise KitError(f"{path}: the manifest does not match its kit_sha256 {m.kit_sha256[:12]}... (edited after "
                       "`hwnas lut kit` wrote it?); regenerate the kit")
    return m


# --------------------------------------------------------------------------- writing a kit
def write_kit(
    space: SearchSpace,
    backbone: Backbone,
    out_dir: str | Path,
    *,
    formats: Sequence[str] = FORMATS,
    threads: int = 1,
    num_runs: int = 50,
    warmup_runs: int = 10,
    rounds: int = 3,
    precision: str = "fp32",
    progress: ProgressArg = True,
    exporters: Mapping[str, Exporter] | None = None,
) -> KitManifest:
    """Export every distinct layer of ``space`` (plus the reference probe) in ``formats`` into ``out_dir/models``,
    and write ``kit.json`` and ``run_benchmark.sh``.

    Resumable: a model file already in ``models/`` is kept (exports are atomic, and a file name is a function
    of the layer key, which fixes the model), so a killed ``kit`` continues where it stopped. ``exporters``
    replaces the format -> exporter functions (tests use a stub for TFLite, whose conversion takes ~10 s a layer).
    """
    fmts = tuple(dict.fromkeys(formats))
    unknown = [f for f in fmts if f not in FORMATS]
    if unknown or not fmts:
        raise ValueError(f"kit formats {list(formats)}: expected some of {list(FORMATS)}")
    if precision != "fp32":
        raise ValueError(f"kit precision {precision!r}: only fp32 is supported")
    for name, v in (("threads", threads), ("num_runs", num_runs), ("rounds", rounds)):
        if v < 1:
            raise ValueError(f"kit {name} must be >= 1, got {v}")
    if warmup_runs < 0:
        raise ValueError(f"kit warmup_runs must be >= 0, got {warmup_runs}")
    exp = dict(exporters) if exporters is not None else default_exporters()
    out = Path(out_dir)
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    specs = [LayerSpec(**REFERENCE_SPEC_JSON), *enumerate_layers(space, backbone)]
    keys = [REFERENCE_KEY, *(s.key for s in specs[1:])]
    todo = [(k, s, f) for k, s in zip(keys, specs, strict=True) for f in fmts
            if not (models / f"{file_name_of(k)}.{f}").exists()]
    if len(todo) < len(keys) * len(fmts):
        log.info("kit %s: %d of %d model files already exported, continuing", out, len(keys) * len(fmts) - len(todo),
                 len(keys) * len(fmts))
    # default exporters write exactly what the tflite / onnxruntime fp32 backends do: share their model cache
    from latency_tables.model_cache import content_of_layer, open_cache

    cache = open_cache() if exporters is None else None
    with Tasks(progress, logger=log) as bars, torch_single_thread():
        advance = bars.task(f"export {'+'.join(fmts)} one-layer models", len(todo))
        for key, spec, fmt in todo:
            path = models / f"{file_name_of(key)}.{fmt}"
            shape = (1, spec.in_ch, spec.in_hw, spec.in_hw)
            if cache is None:
                exp[fmt](seeded_build(functools.partial(build_layer, spec), 0), path, shape)
            else:
                cached = cache.path(content_of_layer(spec.key), backend=_CACHE_BACKEND[fmt],
                                    lowering={"precision": "fp32"}, suffix=f".{fmt}")
                if not cached.exists():
                    cached.parent.mkdir(parents=True, exist_ok=True)
                    exp[fmt](seeded_build(functools.partial(build_layer, spec), 0), cached, shape)
                cache.link_into(cached, path)
            advance()
    layers = []
    for key, spec in zip(keys, specs, strict=True):
        name = file_name_of(key)
        files = {f: f"models/{name}.{f}" for f in fmts}
        layers.append(KitLayer(key=key, name=name, spec=spec.to_json(), input_shape=(1, spec.in_ch, spec.in_hw, spec.in_hw),
                               files=files, sha256={f: sha256_file(out / p) for f, p in files.items()}))
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise KitError("two layers map to one file name; this is a bug in file_name_of")
    manifest = KitManifest(
        space=space.to_json(), backbone=backbone.to_json(), precision=precision, threads=threads, num_runs=num_runs,
        warmup_runs=warmup_runs, rounds=rounds, formats=fmts, layers=tuple(layers),
        created_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), exporter=_exporter_versions(fmts),
    )
    manifest = replace(manifest, kit_sha256=manifest.computed_sha256())
    atomic_write_json(out / "kit.json", manifest.to_json())
    script = out / "run_benchmark.sh"
    atomic_write_text(script, run_script(manifest))
    script.chmod(0o755)
    (out / "logs").mkdir(exist_ok=True)
    return manifest


_CACHE_BACKEND = {"tflite": "tflite", "onnx": "onnxruntime"}  # kit format -> the backend whose fp32 export it is


def _exporter_versions(fmts: Sequence[str]) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {}
    for pkg in ("torch", "onnx", "litert-torch"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    out["formats"] = list(fmts)
    return out


def run_script(m: KitManifest) -> str:
    """The POSIX ``sh`` profiler of a kit (see docs/phones.md). Only ``tflite`` models are run."""
    if "tflite" not in m.formats:
        body = ('echo "error: this kit has no .tflite models (made with --formats '
                f'{",".join(m.formats)}); benchmark_model runs .tflite files" >&2\nexit 2\n')
        return "#!/bin/sh\n# Generated by `hwnas lut kit`.\n" + body
    listing = "\n".join(f"{layer.name} {layer.key}" for layer in m.layers)
    return f"""#!/bin/sh
# Generated by `hwnas lut kit` (kit sha256 {m.kit_sha256}); see docs/phones.md.
# Runs TFLite's benchmark_model over adb on every one-layer model of this kit: {m.rounds} interleaved round(s) over
# all models, each run appended to logs/<name>.log between marker lines. Resumable: a (model, round) whose log
# already holds 'status=0' for that round is skipped, so just run it again after an interruption.
# Then, on the host: hwnas lut import <this directory> --out table.csv
#
# Environment (optional): ADB (adb binary), ANDROID_SERIAL (which device), BENCHMARK_MODEL (path on the device,
# default /data/local/tmp/benchmark_model), REMOTE_DIR (default /data/local/tmp/hwnas-kit), EXTRA_ARGS (more
# benchmark_model flags, e.g. '--use_xnnpack=true'), TASKSET (e.g. 'taskset f0' to pin to big cores).
# Threads, runs and warm-ups are fixed by the kit (its manifest records them): regenerate the kit to change them.
set -u
KIT_SHA256={m.kit_sha256}
THREADS={m.threads}
NUM_RUNS={m.num_runs}
WARMUP_RUNS={m.warmup_runs}
ROUNDS={m.rounds}
ADB=${{ADB:-adb}}
BENCH=${{BENCHMARK_MODEL:-/data/local/tmp/benchmark_model}}
REMOTE=${{REMOTE_DIR:-/data/local/tmp/hwnas-kit}}
EXTRA_ARGS=${{EXTRA_ARGS:-}}
TASKSET=${{TASKSET:-}}

cd "$(dirname "$0")" || exit 2
mkdir -p logs

models() {{
cat <<'HWNAS_MODELS'
{listing}
HWNAS_MODELS
}}

"$ADB" shell "test -x $BENCH" </dev/null || {{
    echo "error: $BENCH is not an executable on the device; push benchmark_model first (docs/phones.md)" >&2
    exit 2
}}
"$ADB" shell "mkdir -p $REMOTE" </dev/null || exit 2
echo "pushing $(models | wc -l | tr -d ' ') models to $REMOTE"
models | while read -r name key; do
    "$ADB" push "models/$name.tflite" "$REMOTE/$name.tflite" </dev/null >/dev/null || {{
        echo "error: adb push models/$name.tflite failed" >&2
        exit 2
    }}
done || exit 2

total=$(models | wc -l | tr -d ' ')
failed=0
r=1
while [ "$r" -le "$ROUNDS" ]; do
    i=0
    models | {{
        while read -r name key; do
            i=$((i + 1))
            log="logs/$name.log"
            if [ -f "$log" ] && grep -q "^# hwnas-kit end round=$r status=0\\$" "$log"; then
                continue
            fi
            echo "round $r/$ROUNDS  model $i/$total  $name"
            echo "# hwnas-kit sha256=$KIT_SHA256 key=$key round=$r" >>"$log"
            "$ADB" shell "$TASKSET $BENCH --graph=$REMOTE/$name.tflite --num_threads=$THREADS --num_runs=$NUM_RUNS --warmup_runs=$WARMUP_RUNS $EXTRA_ARGS" </dev/null >>"$log" 2>&1
            status=$?
            echo "# hwnas-kit end round=$r status=$status" >>"$log"
            if [ "$status" -ne 0 ]; then
                echo "warning: $name round $r failed (status $status); see $log" >&2
                failed=$((failed + 1))
            fi
        done
        [ "$failed" -eq 0 ]
    }} || failed=1
    r=$((r + 1))
done
if [ "$failed" -ne 0 ]; then
    echo "some runs failed: run this script again to retry them (finished runs are kept)" >&2
    exit 1
fi
echo "done: logs in $(pwd)/logs; next: hwnas lut import $(pwd) --out table.csv"
"""


# --------------------------------------------------------------------------- importing
def model_runs(m: KitManifest, kit_dir: Path, layer: KitLayer, *,
               earlier_sha256: Sequence[str] = ()) -> tuple[list[BenchmarkRun], list[BenchmarkRun]]:
    """(ok runs, failed runs) of one model's log (``logs/<name>.log``), after checking each run belongs to this kit
    (or to an earlier version of it, ``earlier_sha256``, whose models it kept) and model. Shared by the layer kit
    and the subnet kit (`latency_tables.subnet_kit`)."""
    path = kit_dir / "logs" / f"{layer.name}.log"
    if not path.is_file():
        return [], []
    ok, failed = [], []
    for run in parse_log_file(path):
        if run.kit_sha256 is None:
            raise KitError(f"{run.where}: run without the '# hwnas-kit sha256=...' marker line: this log was not "
                           "written by this kit's run_benchmark.sh")
        if run.kit_sha256 != m.kit_sha256 and run.kit_sha256 not in earlier_sha256:
            raise KitError(f"{run.where}: the log comes from another kit (sha256 {run.kit_sha256[:12]}..., this kit "
                           f"{m.kit_sha256[:12]}...); regenerate the logs with this kit's run_benchmark.sh")
        if run.key != layer.key:
            raise KitError(f"{run.where}: the run is for layer {run.key!r} but the file belongs to {layer.key!r}")
        if not run.ok:
            failed.append(run)
            continue
        if run.num_threads is not None and run.num_threads != m.threads:
            raise KitError(f"{run.where}: benchmark_model ran with {run.num_threads} threads, the kit says {m.threads}")
        if run.graph is not None and Path(run.graph).name != f"{layer.name}.tflite":
            raise KitError(f"{run.where}: the run measured {run.graph!r}, expected {layer.name}.tflite")
        ok.append(run)
    return ok, failed


def _meta(m: KitManifest, *, n_rows: int, reference_ms: float, source: str, device: str,
          cpu_model: str, backend: str, backend_version: str, runs: int, environment: dict[str, Any]) -> TableMeta:
    return TableMeta(
        device=device, cpu_model=cpu_model, backend=backend, backend_version=backend_version, precision=m.precision,
        threads=m.threads, batch_size=1, warmups=m.warmup_runs, runs=runs, rounds=m.rounds, processes=1,
        estimator=("median over rounds of benchmark_model's Inference (avg)" if source.endswith("logs")
                   else "as measured elsewhere (imported CSV)"),
        reference={"key": REFERENCE_KEY, "spec": REFERENCE_SPEC_JSON, "latency_ms": reference_ms},
        measured_at=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), space=m.space,
        backbone=m.backbone, n_rows=n_rows, csv_sha256="", environment=environment, protocol={},
        source=source, statistic=_import_statistic(source), statistics=[_import_statistic(source)],
    )


def _import_statistic(source: str) -> str:
    """benchmark_model logs report the mean per inference (``Inference (avg)``); an imported CSV is taken as the
    median (what phone tools and `benchmarks/ofa_subnets.py` report)."""
    return "mean" if source.endswith("logs") else "median"


def _finish(m: KitManifest, kit_dir: Path, values: dict[str, tuple[float, float, float, int]], *, out: str | Path,
            missing: dict[str, str], allow_missing: bool, source: str, device: str | None, cpu_model: str | None,
            backend_version: str | None, env_extra: dict[str, Any]) -> LatencyTable:
    if missing and not allow_missing:
        listing = "\n".join(f"  {k}: {why}" for k, why in list(missing.items())[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise KitError(f"kit {kit_dir}: {len(missing)} of {len(m.layers)} layers have no usable measurement:\n"
                       f"{listing}{more}\nrerun run_benchmark.sh (it retries only what is missing), or import with "
                       "--allow-missing to write a partial table")
    if REFERENCE_KEY not in values:
        raise KitError(f"kit {kit_dir}: the reference probe ({REFERENCE_KEY}) has no measurement; a table needs it")
    ref_ms = values[REFERENCE_KEY][0]
    rows: dict[str, TableRow] = {}
    for layer in m.layers:
        if layer.key == REFERENCE_KEY or layer.key not in values:
            continue
        lat, p50, iqr, runs = values[layer.key]
        rows[layer.key] = TableRow(spec=LayerSpec(**layer.spec), latency_ms=lat, ratio=lat / ref_ms, p50_ms=p50,
                                   iqr_ms=iqr, runs=runs, stats={_import_statistic(source): lat})
    runs_per_round = m.num_runs
    env = {"device": device or "unknown-phone", "cpu_model": cpu_model or "unknown", "kit_sha256": m.kit_sha256,
           "kit_dir": str(kit_dir), "kit_created_at": m.created_at, "missing_keys": sorted(missing), **env_extra}
    meta = _meta(m, n_rows=len(rows), reference_ms=ref_ms, source=source, device=env["device"], cpu_model=env["cpu_model"],
                 backend="tflite-benchmark_model", backend_version=backend_version or "unknown", runs=runs_per_round,
                 environment=env)
    return LatencyTable(rows=rows, meta=meta).save(out)


def _check_out(out: str | Path, *, overwrite: bool) -> None:
    """A finished table is never replaced without ``overwrite``: an imported one cannot be measured again."""
    from supernet.io import check_output_file

    check_output_file(out, flag="--out", overwrite=overwrite, what="latency table")
    check_output_file(f"{out}.meta.json", flag="--out", overwrite=overwrite, what="latency table manifest")


def import_kit_logs(
    kit_dir: str | Path,
    *,
    out: str | Path,
    device: str | None = None,
    cpu_model: str | None = None,
    backend_version: str | None = None,
    allow_missing: bool = False,
    overwrite: bool = False,
) -> LatencyTable:
    """A table (``out`` CSV + manifest) from the benchmark_model logs in ``kit_dir/logs``.

    Checks every log run carries this kit's sha256 and its layer's key, ran with the kit's threads and the right
    model file. Failed runs (errors, non-zero exit, truncated) are skipped and counted; a layer with no successful run
    is an error listing each such layer and why (``allow_missing=True`` writes the other rows and lists the
    missing keys in the manifest's environment).
    """
    _check_out(out, overwrite=overwrite)
    kd = Path(kit_dir)
    m = load_kit(kd)
    values: dict[str, tuple[float, float, float, int]] = {}
    missing: dict[str, str] = {}
    failed_runs: list[str] = []
    for layer in m.layers:
        ok, failed = model_runs(m, kd, layer)
        failed_runs += [f"{r.source}:{r.error_line or r.line}: {r.error}" for r in failed]
        if not ok:
            missing[layer.key] = (f"logs/{layer.name}.log is missing" if not failed else
                                  f"{len(failed)} failed run(s), first at {failed[0].source}, line "
                                  f"{failed[0].error_line or failed[0].line}: {failed[0].error}")
            continue
        avg_ms = np.asarray([r.inference_avg_us for r in ok], dtype=np.float64) / 1e3
        q75, q25 = np.percentile(avg_ms, [75, 25])
        med = float(np.median(avg_ms))
        values[layer.key] = (med, med, float(q75 - q25), int(sum(r.count or 0 for r in ok)))
    if failed_runs:
        log.warning("kit %s: %d failed benchmark_model run(s) skipped, e.g. %s", kd, len(failed_runs), failed_runs[0])
    return _finish(m, kd, values, out=out, missing=missing, allow_missing=allow_missing,
                   source="imported:benchmark_model-logs", device=device, cpu_model=cpu_model,
                   backend_version=backend_version, env_extra={"failed_runs": failed_runs[:200],
                                                               "n_failed_runs": len(failed_runs)})


def import_kit_csv(
    kit_dir: str | Path,
    csv_path: str | Path,
    *,
    out: str | Path,
    device: str | None = None,
    cpu_model: str | None = None,
    backend_version: str | None = None,
    allow_missing: bool = False,
    overwrite: bool = False,
) -> LatencyTable:
    """A table from a CSV of per-layer latencies measured elsewhere for this kit's models.

    Columns: ``key`` (a layer key from kit.json) or ``file`` (a model file name or stem from kit.json), and
    ``latency_ms``; optional ``p50_ms``, ``iqr_ms``, ``runs``. The reference probe (key ``reference-probe``) must
    be among the rows. Errors name the CSV's line.
    """
    _check_out(out, overwrite=overwrite)
    kd, cp = Path(kit_dir), Path(csv_path)
    m = load_kit(kd)
    by_key = m.by_key()
    by_name = {layer.name: layer.key for layer in m.layers}
    for layer in m.layers:
        for f in layer.files.values():
            by_name[Path(f).name] = layer.key
    if not cp.is_file():
        raise FileNotFoundError(f"layer latency CSV {str(cp)!r} does not exist or is not a file")
    reader = csv.DictReader(io.StringIO(cp.read_text(encoding="utf-8-sig")))
    header = reader.fieldnames or []
    if "latency_ms" not in header or not ({"key", "file"} & set(header)):
        raise KitError(f"{cp}, line 1: expected columns 'key' (or 'file') and 'latency_ms', got {header}")
    values: dict[str, tuple[float, float, float, int]] = {}
    for lineno, rec in enumerate(reader, start=2):
        where = f"{cp}, line {lineno}"
        ident = (rec.get("key") or "").strip()
        if ident:
            if ident not in by_key:
                raise KitError(f"{where}: key {ident!r} is not a layer of kit {kd} (kit sha256 {m.kit_sha256[:12]}...)")
            key = ident
        else:
            fname = Path((rec.get("file") or "").strip()).name
            if not fname:
                raise KitError(f"{where}: empty 'key' and 'file'")
            if fname not in by_name:
                raise KitError(f"{where}: file {fname!r} is not a model of kit {kd}")
            key = by_name[fname]
        try:
            lat = float(rec["latency_ms"])
            p50 = float(rec["p50_ms"]) if rec.get("p50_ms") not in (None, "") else lat
            iqr = float(rec["iqr_ms"]) if rec.get("iqr_ms") not in (None, "") else float("nan")
            runs = int(rec["runs"]) if rec.get("runs") not in (None, "") else 0
        except (TypeError, ValueError) as e:
            raise KitError(f"{where}: bad number ({e})") from None
        if not (np.isfinite(lat) and lat > 0):
            raise KitError(f"{where}: latency_ms must be a positive number, got {rec['latency_ms']!r}")
        if key in values:
            raise KitError(f"{where}: second row for layer {key!r}")
        values[key] = (lat, p50, iqr, runs)
    missing = {layer.key: "no row in the CSV" for layer in m.layers if layer.key not in values}
    return _finish(m, kd, values, out=out, missing=missing, allow_missing=allow_missing, source="imported:csv",
                   device=device, cpu_model=cpu_model, backend_version=backend_version,
                   env_extra={"csv": str(cp), "csv_sha256": sha256_file(cp)})
