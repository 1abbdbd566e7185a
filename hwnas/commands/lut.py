"""``hwnas lut ...``: thin commands over the library (build, validate, predict, info). Logic lives in the library."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NoReturn

import typer

from hwnas.progress import rich_progress
from supernet.registry import UnknownNameError

MAX_KIT_SUBNETS = 500  # a few-shot kit; a full table is the per-layer kit

app = typer.Typer(help="Per-layer latency lookup tables: build, validate, predict, inspect, phone kits, serve.", no_args_is_help=True)


def _protocol(preset: str, rounds: int | None, runs: int | None, processes: int | None) -> Any:
    from latency_tables.protocol import MeasurementProtocol

    overrides = {k: v for k, v in (("rounds", rounds), ("runs_per_round", runs), ("processes", processes)) if v is not None}
    try:
        return MeasurementProtocol.preset(preset, **overrides)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _int_list(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected comma-separated integers, e.g. 160,176,224",
                                 param_hint=flag) from None
    if not vals:
        raise typer.BadParameter("no value given", param_hint=flag)
    return vals


_STATISTIC_HELP = ("latency statistic: median (typical, the default) | best (best case, the protocol's low "
                   "percentile) | p90 | p99 (tail per inference) | mean (imported tables)")


@app.command()
def build(
    out: Path = typer.Option(..., "--out", help="CSV path of the table (the manifest goes to <out>.meta.json)"),
    space: str = typer.Option("mnist", help="search space name (supernet.space.list_spaces())"),
    backend: str = typer.Option("onnxruntime", help="backend name (latency_tables.list_backends())"),
    threads: int = typer.Option(1, min=1, help="intra-op threads of the runtime"),
    precision: str = typer.Option(
        "fp32", help="precision every one-layer model is exported and measured at: fp32 | fp16 | int8 (onnxruntime: "
        "all three, int8 = QDQ per-channel PTQ; tflite and pytorch: fp32)"),
    calibration: str = typer.Option("minmax", help="int8 (onnxruntime): activation calibration minmax | percentile | entropy"),
    calib_samples: int = typer.Option(8, min=1, help="int8 (onnxruntime): seeded random calibration inputs per layer"),
    in_channels: int | None = typer.Option(None, help="backbone input channels (default: the space's backbone, "
                                           "supernet.layers.DEFAULT_BACKBONES: mnist 1, ofa-mbv3 3)"),
    num_classes: int | None = typer.Option(None, help="backbone classes (default: the space's; mnist 10)"),
    width_mult: float | None = typer.Option(None, help="backbone width multiplier (default: the space's; mnist 0.35)"),
    preset: str = typer.Option("default", help="measurement budget: quick | default | thorough"),
    rounds: int | None = typer.Option(None, min=1, help="override: rounds per process"),
    runs: int | None = typer.Option(None, min=1, help="override: timed runs per model and round"),
    processes: int | None = typer.Option(None, min=1, help="override: measuring processes"),
    resume: bool = typer.Option(True, help="continue an interrupted build with the same settings"),
    device: str | None = typer.Option(None, help="device name stored in the manifest (default: host name)"),
    export_jobs: int = typer.Option(0, min=0, help="processes converting one-layer models in parallel before "
                                    "anything is timed (tflite conversion takes seconds per model); 0 = one per core"),
    resolutions: str | None = typer.Option(None, help="build for these resolutions of the space only, e.g. "
                                           "160,176,192,208,224 (default: all)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a finished table at --out"),
) -> None:
    """Measure every distinct layer of a search space at one precision and write CSV + manifest.

    Every statistic is measured (median, the default; best case; p90 and p99 per inference). Converted models go to
    the shared model cache ($HWNAS_MODEL_CACHE, default ~/.cache/hwnas/models; 'off' disables it)."""
    from latency_tables.backends import UnknownBackendError, supported_precisions
    from latency_tables.table import build_table
    from supernet.layers import default_backbone
    from supernet.space import get_space

    try:
        sp = get_space(space)
    except UnknownNameError as e:
        raise typer.BadParameter(str(e), param_hint="--space") from None
    bb = default_backbone(sp, in_channels=in_channels, num_classes=num_classes, width_mult=width_mult)
    pr = _protocol(preset, rounds, runs, processes)
    try:
        supported = supported_precisions(backend)
    except UnknownBackendError as e:
        raise typer.BadParameter(str(e), param_hint="--backend") from None
    if precision not in supported:
        from latency_tables.backends import create_backend

        try:  # the backend's own message says why the precision is missing
            create_backend(backend, threads=threads, precision=precision)
        except (ValueError, ImportError) as e:
            raise typer.BadParameter(str(e), param_hint="--precision") from None
    extra = None
    if precision == "int8" and backend == "onnxruntime":
        extra = {"calibration": calibration, "calib_samples": calib_samples}
    res = _int_list(resolutions, "--resolutions")
    try:
        with rich_progress() as bars:
            table = build_table(sp, bb, out=out, backend=backend, threads=threads, precision=precision, protocol=pr,
                                resume=resume, progress=bars, device=device, backend_kwargs=extra,
                                export_jobs=export_jobs or None, resolutions=res, overwrite=overwrite)
    except ValueError as e:  # bad backend settings, or a checkpoint of a build with other settings
        _fail(str(e))
    m = table.meta
    typer.echo(f"wrote {out} ({m.n_rows} layers, {m.precision}) and {out}.meta.json in {m.build_seconds:.1f} s")
    if m.test_retest:
        t = m.test_retest
        typer.echo(f"test-retest between processes: within ±5 % {t['within_5pct']:.1%}, within ±10 % {t['within_10pct']:.1%}")


@app.command()
def validate(
    table: Path = typer.Argument(..., help="table CSV"),
    out_dir: Path = typer.Option(Path("lut-validation"), help="where report.json, predictor.json, plot.png go"),
    n_fit: int = typer.Option(50, min=0, help="subnets measured to fit the correction (K)"),
    n_test: int = typer.Option(200, min=1, help="held-out subnets to score"),
    seed: int = typer.Option(0),
    preset: str = typer.Option("default", help="measurement budget: quick | default | thorough"),
    rounds: int | None = typer.Option(None, min=1),
    runs: int | None = typer.Option(None, min=1),
    processes: int | None = typer.Option(None, min=1),
    retest: bool = typer.Option(False, help="measure the held-out subnets twice and report agreement"),
    measured: Path | None = typer.Option(
        None, help="CSV of (arch, latency_ms) measured elsewhere (e.g. a phone): fit on the first --n-fit rows and "
        "score the rest, instead of measuring here"),
    predictor: Path | None = typer.Option(None, help="with --measured: check this fitted predictor on all rows"),
    models_dir: Path | None = typer.Option(
        None, help="keep the exported subnet models here, so a killed validation started again re-exports nothing "
        "(default: a temporary directory)"),
    export_jobs: int = typer.Option(1, min=1, help="processes exporting subnets in parallel before anything is timed"),
    features: str = typer.Option(
        "auto", help="correction features: auto (the largest set the fitting subnets support: per-kernel from 20, "
        "memory from 14, else compact) | compact | memory | per-kernel (latency_tables.predictor.FEATURE_SETS)"),
    statistic: str | None = typer.Option(None, help=_STATISTIC_HELP + "; default: the table's"),
    also_statistics: str = typer.Option("", help="other statistics fitted and scored on the same measurements, "
                                        "e.g. p99"),
) -> None:
    """Fit the correction and score plain sum vs corrected predictor on held-out end-to-end measurements."""
    from latency_tables.predictor import candidate_feature_sets, read_measured_archs, validate_measured
    from latency_tables.predictor import validate as run_validate
    from latency_tables.table import LatencyTable

    try:
        candidate_feature_sets(features)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--features") from None
    if models_dir is not None and models_dir.exists() and not models_dir.is_dir():
        raise typer.BadParameter(f"{models_dir} is a file; expected a folder for the exported subnet models",
                                 param_hint="--models-dir")
    from supernet.io import check_output_dir

    check_output_dir(out_dir, flag="--out-dir", what="validation results")
    out_dir.mkdir(parents=True, exist_ok=True)
    if predictor is not None and measured is None:
        raise typer.BadParameter("--predictor needs --measured (a CSV of architectures measured elsewhere)")
    if measured is not None:
        from latency_tables.predictor import MeasuredArchsError

        tab = LatencyTable.load(table, statistic=statistic)
        try:
            archs, ys = read_measured_archs(measured, table=tab)
        except (MeasuredArchsError, FileNotFoundError) as e:
            _fail(str(e))
        report = validate_measured(
            tab, archs, ys, n_fit=n_fit, predictor=predictor, source=str(measured), features=features,
            predictor_out=out_dir / "predictor.json" if predictor is None else None,
            report_out=out_dir / "report.json", plot_out=out_dir / "plot.png",
        )
        typer.echo(report.summary())
        wrote = [out_dir / "report.json", out_dir / "plot.png"] + ([out_dir / "predictor.json"] if predictor is None else [])
        typer.echo("wrote " + ", ".join(str(w) for w in wrote))
        return
    pr = _protocol(preset, rounds, runs, processes)
    try:
        with rich_progress() as bars:
            report = run_validate(
                table, n_fit=n_fit, n_test=n_test, seed=seed, protocol=pr, retest=retest, progress=bars,
                workdir=models_dir, export_jobs=export_jobs, features=features,
                predictor_out=out_dir / "predictor.json", report_out=out_dir / "report.json",
                plot_out=out_dir / "plot.png", statistic=statistic,
                also_statistics=tuple(x.strip() for x in also_statistics.split(",") if x.strip()),
            )
    except ValueError as e:  # e.g. --n-fit too small for the correction's features
        _fail(str(e))
    typer.echo(report.summary())
    typer.echo(f"wrote {out_dir / 'report.json'}, {out_dir / 'predictor.json'}, {out_dir / 'plot.png'}")


@app.command()
def predict(
    table: Path | None = typer.Option(None, "--table", help="table CSV (not needed with an adapted --predictor)"),
    arch: list[str] = typer.Option([], "--arch", help="architecture string, e.g. r28-d2.2.2.2.2-k3e3.k3e3_... (repeatable)"),
    arch_file: Path | None = typer.Option(None, help="file with one architecture string or JSON object per line"),
    predictor: Path | None = typer.Option(None, help="predictor JSON from `validate` (default: plain LUT sum), or an "
                                          "adapted predictor from `adapt` (then with a 90 % interval)"),
    precision: str | None = typer.Option(None, help="precision you mean (checked against the table's; default: the table's)"),
    statistic: str | None = typer.Option(None, help=_STATISTIC_HELP + "; default: the predictor's, else the table's"),
    as_json: bool = typer.Option(False, "--json", help="print JSON lines instead of a table"),
) -> None:
    """Predict latency (ms) of architectures from a table (and a fitted correction), at the table's precision."""
    from latency_tables.predictor import PredictorError, predict_latency, predictor_statistic
    from latency_tables.table import LatencyTableError

    archs: list[Any] = list(arch)
    if arch_file is not None:
        archs += _read_arch_file(arch_file)
    if not archs:
        raise typer.BadParameter("give at least one --arch or an --arch-file")
    from latency_tables.fewshot import ADAPTED_KIND, AdaptedLatencyPredictor
    from latency_tables.predictor import resolve_table

    if predictor is not None and _json_kind(predictor) == ADAPTED_KIND:
        _predict_adapted(AdaptedLatencyPredictor.load(predictor), archs, precision=precision, as_json=as_json)
        return
    if table is None:
        raise typer.BadParameter("give --table (or an adapted --predictor from `hwnas lut adapt`)", param_hint="--table")

    try:
        tab = resolve_table(table)
        preds = predict_latency(archs, table=tab, predictor=predictor, precision=precision, statistic=statistic)
        stat_used = statistic or (predictor_statistic(predictor) if predictor is not None else tab.statistic)
    except (LatencyTableError, PredictorError, FileNotFoundError) as e:
        _fail(str(e))
    kind = "corrected" if predictor is not None else "plain_sum"
    for a, p in zip(archs, preds, strict=True):
        name = a if isinstance(a, str) else json.dumps(a)
        if as_json:
            typer.echo(json.dumps({"arch": name, "predicted_ms": float(p), "precision": tab.precision,
                                   "statistic": stat_used, "predictor": kind}))
        else:
            typer.echo(f"{p:10.4f} ms  {tab.precision}  {stat_used}  {name}")


def _read_arch_file(path: Path) -> list[Any]:
    """Architectures of an --arch-file (one string or JSON object per line), errors naming the line."""
    from supernet.errors import InputError

    if path.is_dir():
        raise InputError(f"--arch-file {str(path)!r} is a directory; expected a text file")
    if not path.is_file():
        raise InputError(f"--arch-file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"--arch-file {str(path)!r} is not a UTF-8 text file") from None
    out: list[Any] = []
    for i, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InputError(f"--arch-file {str(path)!r}, line {i}: not valid JSON ({e.msg})") from None
        else:
            out.append(line)
    return out


def _json_kind(path: Path) -> str | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d.get("kind") if isinstance(d, dict) else None


def _predict_adapted(p: Any, archs: list[Any], *, precision: str | None, as_json: bool) -> None:
    from supernet.space import ArchConfig

    cfgs = [p.space.parse(a) if isinstance(a, str) else ArchConfig.from_json(a) for a in archs]
    if precision is not None and p.precision is not None and precision != p.precision:
        _fail(f"--precision {precision}: this adapted predictor is for {p.precision}")
    lo, mid, hi = p.predict_interval(cfgs, level=0.9)
    for a, lo_, mid_, hi_ in zip(archs, lo, mid, hi, strict=True):
        name = a if isinstance(a, str) else json.dumps(a)
        if as_json:
            typer.echo(json.dumps({"arch": name, "predicted_ms": float(mid_), "interval90_ms": [float(lo_), float(hi_)],
                                   "statistic": p.statistic, "predictor": "adapted", "k": p.k}))
        else:
            typer.echo(f"{mid_:10.4f} ms  [90 %: {lo_:.4f} .. {hi_:.4f}]  {p.statistic}  {name}")


@app.command()
def kit(
    out: Path = typer.Option(..., "--out", help="kit directory (models/, kit.json, run_benchmark.sh, logs/)"),
    space: str = typer.Option("mnist", help="search space name (supernet.space.list_spaces())"),
    in_channels: int | None = typer.Option(None, help="backbone input channels (default: the space's backbone)"),
    num_classes: int | None = typer.Option(None, help="backbone classes (default: the space's)"),
    width_mult: float | None = typer.Option(None, help="backbone width multiplier (default: the space's; mnist "
                                            "0.35, as the demo)"),
    formats: str = typer.Option("tflite,onnx", help="comma-separated model formats: tflite, onnx"),
    threads: int = typer.Option(1, min=1, help="benchmark_model --num_threads"),
    num_runs: int = typer.Option(50, min=1, help="benchmark_model --num_runs"),
    warmup_runs: int = typer.Option(10, min=0, help="benchmark_model --warmup_runs"),
    rounds: int = typer.Option(3, min=1, help="interleaved rounds over all models"),
    subnets: int | None = typer.Option(None, min=1, max=MAX_KIT_SUBNETS, help="few-shot kit: export only this many whole subnets, chosen to "
                                       "be informative (docs/fewshot.md), instead of every one-layer model; run again "
                                       "on the same --out to add more"),
    source: list[Path] = typer.Option([], "--source", help="with --subnets: table CSV / predictor JSON of a device "
                                      "hwnas knows (repeatable); the subnets are spread over its predicted range"),
    seed: int = typer.Option(0, help="with --subnets: seed of the candidate pool"),
) -> None:
    """Write a phone measurement kit: one-layer models (or, with --subnets, K whole subnets for `lut adapt`),
    kit.json and run_benchmark.sh (resumable). See docs/phones.md and docs/fewshot.md."""
    from latency_tables.kit import write_kit
    from supernet.layers import default_backbone
    from supernet.space import get_space

    try:
        sp = get_space(space)
    except UnknownNameError as e:
        raise typer.BadParameter(str(e), param_hint="--space") from None
    bb = default_backbone(sp, in_channels=in_channels, num_classes=num_classes, width_mult=width_mult)
    if subnets is not None:
        _subnet_kit(sp, bb, out, k=subnets, sources=source, seed=seed, formats=formats, threads=threads,
                    num_runs=num_runs, warmup_runs=warmup_runs, rounds=rounds)
        return
    if source:
        raise typer.BadParameter("--source only applies with --subnets", param_hint="--source")
    try:
        with rich_progress() as bars:
            m = write_kit(sp, bb, out, formats=[f.strip() for f in formats.split(",") if f.strip()],
                          threads=threads, num_runs=num_runs, warmup_runs=warmup_runs, rounds=rounds, progress=bars)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    typer.echo(f"wrote kit {out}: {len(m.layers)} models x {list(m.formats)}, kit sha256 {m.kit_sha256[:12]}...")
    typer.echo(f"next: sh {out / 'run_benchmark.sh'}  then  hwnas lut import {out} --out table.csv")


@app.command("import")
def import_(
    kit_dir: Path = typer.Argument(..., help="kit directory written by `kit` (with logs/ filled by run_benchmark.sh), "
                                   "or with --format ofa-yaml a folder of OFA's <r>_lookup_table.yaml files"),
    out: Path = typer.Option(..., "--out", help="CSV path of the table (the manifest goes to <out>.meta.json)"),
    fmt: str = typer.Option("kit", "--format", help="kit (benchmark_model logs of a phone kit) | ofa-yaml (OFA's "
                            "per-resolution lookup tables)"),
    width_mult: float | None = typer.Option(None, help="ofa-yaml: backbone width (default: found from the stem key)"),
    statistic: str | None = typer.Option(None, help="ofa-yaml: what the files' 'mean' is (default: as the "
                                         "hwnas-table.json beside them says, else mean)"),
    csv_file: Path | None = typer.Option(None, "--csv", help="per-layer CSV (key or file, latency_ms) instead of logs"),
    device: str | None = typer.Option(None, help="phone name for the manifest (e.g. 'Pixel 7')"),
    cpu_model: str | None = typer.Option(None, help="SoC / CPU for the manifest (e.g. 'Tensor G2, Cortex-X1')"),
    backend_version: str | None = typer.Option(None, help="benchmark_model / TFLite version used"),
    allow_missing: bool = typer.Option(False, help="write a partial table when some layers have no measurement"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a finished table at --out"),
) -> None:
    """Parse the kit's benchmark_model logs (or a CSV) into a latency table checked against the kit; for a
    subnet kit (`kit --subnets`), into the measured CSV that `lut adapt --measured` reads; with --format ofa-yaml,
    OFA's per-resolution lookup-table yaml files into a table."""
    from latency_tables.benchmark_log import BenchmarkLogError
    from latency_tables.kit import KitError, import_kit_csv, import_kit_logs
    from latency_tables.subnet_kit import import_subnet_logs, is_subnet_kit

    if fmt not in ("kit", "ofa-yaml"):
        raise typer.BadParameter(f"{fmt!r}: expected kit or ofa-yaml", param_hint="--format")
    if fmt == "ofa-yaml":
        from latency_tables.ofa_yaml import OfaYamlError, import_ofa_yaml

        try:
            t = import_ofa_yaml(kit_dir, out=out, width_mult=width_mult, statistic=statistic, device=device,
                                cpu_model=cpu_model, backend_version=backend_version, allow_missing=allow_missing)
        except (OfaYamlError, ValueError) as e:
            _fail(str(e))
        typer.echo(f"wrote {out} ({t.meta.n_rows} layers, {t.statistic}, width {t.backbone.width_mult:g}, "
                   f"resolutions {list(t.space.resolutions)}) and {out}.meta.json")
        return
    if is_subnet_kit(kit_dir):
        if csv_file is not None:
            raise typer.BadParameter("a subnet kit is imported from its logs; --csv is for layer kits", param_hint="--csv")
        path = import_subnet_logs(kit_dir, out=out, allow_missing=allow_missing)
        typer.echo(f"wrote {path} (measured subnets); next: hwnas lut adapt --measured {path} --source ... --out "
                   "device.json")
        return
    manifest = {"device": device, "cpu_model": cpu_model, "backend_version": backend_version}
    try:
        if csv_file is not None:
            table = import_kit_csv(kit_dir, csv_file, out=out, allow_missing=allow_missing, overwrite=overwrite,
                                    **manifest)
        else:
            table = import_kit_logs(kit_dir, out=out, allow_missing=allow_missing, overwrite=overwrite,
                                    **manifest)
    except (KitError, BenchmarkLogError, FileNotFoundError) as e:
        _fail(str(e))
    m = table.meta
    missing = m.environment.get("missing_keys") or []
    typer.echo(f"wrote {out} ({m.n_rows} layers, source {m.source}) and {out}.meta.json"
               + (f"; {len(missing)} layers missing" if missing else ""))
    if m.environment.get("n_failed_runs"):
        typer.echo(f"skipped {m.environment['n_failed_runs']} failed benchmark_model run(s), e.g. "
                   f"{m.environment['failed_runs'][0]}")


@app.command("export")
def export_(
    table: Path = typer.Argument(..., help="table CSV"),
    out: Path = typer.Option(..., "--out", help="folder for the <r>_lookup_table.yaml files"),
    fmt: str = typer.Option("ofa-yaml", "--format", help="ofa-yaml (OFA's per-resolution lookup tables)"),
    statistic: str | None = typer.Option(None, help=_STATISTIC_HELP + "; written as OFA's 'mean' (default: the table's)"),
) -> None:
    """Write a table in another tool's format (OFA's lookup-table yaml files, one per resolution)."""
    from latency_tables.ofa_yaml import OfaYamlError, export_ofa_yaml
    from latency_tables.table import LatencyTable, LatencyTableError

    if fmt != "ofa-yaml":
        raise typer.BadParameter(f"{fmt!r}: expected ofa-yaml", param_hint="--format")
    try:
        files = export_ofa_yaml(LatencyTable.load(table, statistic=statistic), out)
    except (OfaYamlError, LatencyTableError, FileNotFoundError) as e:
        _fail(str(e))
    typer.echo(f"wrote {len(files)} files to {out} ({files[0].name} ... {files[-1].name}) and {out}/hwnas-table.json")


def _sources(paths: list[Path]) -> list[Any]:
    from latency_tables.fewshot import load_source

    return [load_source(p) for p in paths]


def _subnet_kit(sp: Any, bb: Any, out: Path, *, k: int, sources: list[Path], seed: int, formats: str, threads: int,
                num_runs: int, warmup_runs: int, rounds: int) -> None:
    import numpy as np

    from latency_tables.fewshot import backbone_of_sources, choose_subnets
    from latency_tables.subnet_kit import existing_subnets, write_subnet_kit

    srcs = _sources(sources)
    src_bb = backbone_of_sources(srcs)
    if src_bb is not None and src_bb != bb:
        raise typer.BadParameter(f"the sources were built for backbone {src_bb.to_json()}, the kit's options give "
                                 f"{bb.to_json()}; pass matching --in-channels/--num-classes/--width-mult")
    measured = existing_subnets(out)
    chosen = choose_subnets(sp, bb, k, sources=srcs, measured=measured, rng=np.random.default_rng(seed))
    fmts = [f.strip() for f in formats.split(",") if f.strip()]
    with rich_progress() as bars:
        m = write_subnet_kit(sp, bb, [*measured, *chosen], out, formats=fmts, threads=threads, num_runs=num_runs,
                             warmup_runs=warmup_runs, rounds=rounds, progress=bars,
                             chooser={"k_added": len(chosen), "seed": seed, "sources": [str(p) for p in sources]})
    typer.echo(f"wrote subnet kit {out}: {len(m.subnets)} subnets ({len(chosen)} new) x {list(m.formats)}, kit sha256 "
               f"{m.kit_sha256[:12]}...")
    typer.echo(f"next: sh {out / 'run_benchmark.sh'}  then  hwnas lut import {out} --out measured.csv")


@app.command()
def adapt(
    measured: Path = typer.Option(..., "--measured", help="CSV of subnets measured end to end on the new device: "
                                  "columns arch (string or JSON) and latency_ms (what `lut import` writes for a "
                                  "subnet kit, or `lut validate --measured` reads)"),
    out: Path = typer.Option(..., "--out", help="adapted predictor JSON to write"),
    source: list[Path] = typer.Option([], "--source", help="table CSV, predictor JSON or adapted predictor of a device "
                                      "hwnas already knows (repeatable); none: GP on the encoding + MACs"),
    space: str | None = typer.Option(None, help="search space (default: the sources'; required without sources)"),
    in_channels: int | None = typer.Option(None, help="backbone input channels (default: the sources', else 3)"),
    num_classes: int | None = typer.Option(None, help="backbone classes (default: the sources', else 1000)"),
    width_mult: float | None = typer.Option(None, help="backbone width multiplier (default: the sources', else 1.0)"),
    statistic: str = typer.Option("median", help="what latency_ms is: median | p90 | p99 | mean (recorded)"),
    precision: str | None = typer.Option(None, help="precision the subnets ran at (recorded; queries are checked)"),
    device: str | None = typer.Option(None, help="device name to record (e.g. 'Pixel 7, 4 threads')"),
    overwrite: bool = typer.Option(False, help="replace an existing --out"),
) -> None:
    """Fit a new device's latency predictor from a few subnets measured end to end (docs/fewshot.md)."""
    from latency_tables.fewshot import adapt as fit
    from latency_tables.fewshot import backbone_of_sources, read_measured
    from supernet.layers import Backbone
    from supernet.space import get_space

    if out.exists() and not overwrite:
        _fail(f"--out {out} exists; pass --overwrite to replace it")
    if statistic not in ("median", "p90", "p99", "mean"):
        raise typer.BadParameter(f"{statistic!r}: expected median, p90, p99 or mean", param_hint="--statistic")
    srcs = _sources(source)
    if space is None and not srcs:
        raise typer.BadParameter("give --space (or at least one --source, whose space is used)", param_hint="--space")
    sp = get_space(space) if space is not None else srcs[0].space
    src_bb = backbone_of_sources(srcs)
    base = src_bb.to_json() if src_bb is not None else Backbone().to_json()
    given = {k: v for k, v in (("in_channels", in_channels), ("num_classes", num_classes),
                               ("width_mult", width_mult)) if v is not None}
    bb = Backbone.from_json({**base, **given})
    archs, ms = read_measured(measured, sp)
    p = fit(archs, ms, space=sp, backbone=bb, sources=srcs, statistic=statistic, precision=precision, device=device,
            info={"measured_csv": str(measured)})
    p.save(out)
    cands = p.info["candidates"]
    typer.echo(f"fitted on K = {p.k} subnets ({statistic}); chosen model: {p.info['chosen']}")
    for name, sc in sorted(cands.items(), key=lambda kv: kv[1]["loo_mse_log"]):
        typer.echo(f"  {name:<14} leave-one-out MAPE {sc['loo_mape_pct']:6.2f} %")
    typer.echo(f"wrote {out}; use it with: hwnas lut predict --predictor {out} --arch ...")


@app.command()
def info(table: Path = typer.Argument(..., help="table CSV")) -> None:
    """Show a table's manifest (device, backend, protocol, test-retest) after checking it loads."""
    from rich.console import Console
    from rich.table import Table

    from latency_tables.table import LatencyTable

    t = LatencyTable.load(table)
    m = t.meta
    grid = Table(title=str(table), show_header=False)
    for k, v in (
        ("schema_version", m.schema_version), ("rows", m.n_rows), ("device", m.device), ("cpu_model", m.cpu_model),
        ("backend", f"{m.backend} {m.backend_version}"), ("precision", m.precision),
        ("quantization", json.dumps(m.environment["quantization"]) if m.environment.get("quantization") else "-"),
        ("threads", m.threads),
        ("delegation", json.dumps(m.environment["delegation"]) if m.environment.get("delegation") else "-"),
        ("protocol", f"{m.processes} processes x {m.rounds} rounds x {m.runs} runs, {m.warmups} warm-ups"),
        ("statistic", f"{m.statistic} (has {', '.join(m.statistics)})"),
        ("estimator", m.estimator), ("reference_ms", f"{m.reference.get('latency_ms') or float('nan'):.4f}"),
        ("space", m.space.get("name")), ("measured_at", m.measured_at), ("build_seconds", m.build_seconds),
        ("test_retest", json.dumps(m.test_retest) if m.test_retest else "-"), ("csv_sha256", m.csv_sha256),
    ):
        grid.add_row(k, str(v))
    missing = t.missing_layers()
    grid.add_row("missing layers", "-" if not missing else f"{len(missing)} layers of space {m.space.get('name')!r} "
                 f"have no row, e.g. {missing[0]}")
    Console().print(grid)
    if missing:  # every architecture using one of them has no prediction: say so, and fail scripts that check
        typer.echo(f"error: table {table} is missing {len(missing)} of the layers of its space "
                   f"(e.g. {missing[0]}); rebuild it ('hwnas lut build') or import the missing layers", err=True)
        raise typer.Exit(1)


@app.command()
def serve(
    table: Path = typer.Option(..., "--table", help="table CSV"),
    predictor: Path | None = typer.Option(None, help="predictor JSON (default: plain LUT sum)"),
    host: str = typer.Option("127.0.0.1", help="bind address (localhost by default)"),
    port: int = typer.Option(8765),
    max_batch: int = typer.Option(1024, min=1, help="largest accepted batch"),
    max_body_bytes: int = typer.Option(
        16 * 1024, min=64,
        help="largest body of POST /predict (413 above it, refused before parsing); POST /predict/batch allows "
             "--max-batch times the size of one architecture"),
) -> None:
    """Serve latency predictions over HTTP (GET /health, POST /predict, POST /predict/batch)."""
    from latency_tables.service import serve as run_serve

    run_serve(table, host=host, port=port, predictor=predictor, max_batch=max_batch, max_body_bytes=max_body_bytes)


def main() -> None:  # pragma: no cover - console entry for `python -m hwnas.commands.lut`
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
