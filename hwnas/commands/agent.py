"""``hwnas agent ...``: thin CLI over the device-agents library (mounted by the main CLI as ``agent``)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from device_agents.network import OffloadTarget
from device_agents.policies import AGENT_POLICY, list_policies
from device_agents.scenarios import builtin_trace, describe_scenario, list_scenarios
from device_agents.simulator import DEFAULT_COMPARISON, SimulationResult, compare_policies, simulate
from device_agents.trace import Trace, TraceFormatError, load_trace_csv
from device_agents.variants import InvalidVariantError, example_variants, load_variants, save_variants
from supernet.errors import InputError
from supernet.io import atomic_write_json, check_output_dir, missing_file_message

__all__ = ["app", "bundle_cmd", "live_cmd", "resolve_trace", "serve_model_cmd"]

app = typer.Typer(help="Runtime device agents: choose a variant per request to meet a deadline.", no_args_is_help=True)
logger = logging.getLogger(__name__)
_console = Console()


def resolve_trace(spec: str, *, seed: int = 0, duration_s: float = 300.0) -> Trace:
    """A built-in scenario name, or a path to a trace CSV."""
    if spec in list_scenarios():
        return builtin_trace(spec, seed=seed, duration_s=duration_s)
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"--trace {spec!r} is neither a built-in scenario ({', '.join(list_scenarios())}) nor an existing CSV file"
        )
    return load_trace_csv(path)


def _metrics_table(results: dict[str, SimulationResult]) -> Table:
    table = Table(title="simulation")
    for col in ("policy", "miss rate", "mean acc", "effective acc", "energy (J)", "switches", "offloads"):
        if col == "policy":
            table.add_column(col, no_wrap=True, min_width=16)
        else:
            table.add_column(col, justify="right")
    for name, r in results.items():
        m = r.metrics
        table.add_row(name, f"{m['miss_rate']:.2%}", f"{m['mean_accuracy']:.4f}", f"{m['effective_accuracy']:.4f}",
                      f"{m['energy_mj'] / 1000:.2f}", str(m["switches"]), str(m["offloads"]))
    return table


@app.command("simulate")
def simulate_cmd(
    variants: Annotated[Path, typer.Option("--variants", help="JSON list of variants (see Variant.to_json)")],
    trace: Annotated[str, typer.Option("--trace", help="built-in scenario name or trace CSV path")],
    deadline_ms: Annotated[float, typer.Option("--deadline-ms", help="per-request deadline, ms")],
    out: Annotated[Path, typer.Option("--out", help="output directory")],
    policy: Annotated[str, typer.Option("--policy", help=f"policy name, or 'compare' for {list(DEFAULT_COMPARISON)}")]
    = AGENT_POLICY,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    duration_s: Annotated[float, typer.Option("--duration-s", help="length of a built-in trace, s")] = 300.0,
    request_rate_hz: Annotated[float, typer.Option("--request-rate-hz")] = 2.0,
    server_accuracy: Annotated[
        float | None, typer.Option("--server-accuracy", help="enable offloading to a server with this accuracy")
    ] = None,
    server_latency_ms: Annotated[float, typer.Option("--server-latency-ms")] = 8.0,
    payload_bytes: Annotated[int, typer.Option("--payload-bytes", min=0)] = 20_000,
) -> None:
    """Replay a trace with a policy; write metrics.json, config.json, steps.csv and timeline.png to --out."""
    check_output_dir(out, flag="--out", what="simulation results")
    if not (math.isfinite(server_latency_ms) and server_latency_ms >= 0):
        raise typer.BadParameter(f"--server-latency-ms {server_latency_ms}: expected a finite number >= 0")
    try:
        bundle = load_variants(variants)
        tr = resolve_trace(trace, seed=seed, duration_s=duration_s)
    except (InvalidVariantError, TraceFormatError, FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    if policy != "compare" and policy not in list_policies():
        raise typer.BadParameter(f"--policy {policy!r}: known policies are {list_policies()} (or 'compare')")
    offload = (
        OffloadTarget(accuracy=server_accuracy, server_latency_ms=server_latency_ms, payload_bytes=payload_bytes)
        if server_accuracy is not None
        else None
    )
    common: dict[str, Any] = {"deadline_ms": deadline_ms, "seed": seed, "request_rate_hz": request_rate_hz,
                              "offload": offload}
    if policy == "compare":
        results = compare_policies(bundle, tr, **common)
        main_name = AGENT_POLICY
    else:
        results = {policy: simulate(bundle, tr, policy=policy, **common)}
        main_name = policy

    from device_agents.plot import plot_timeline

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", {
        "variants": str(variants), "n_variants": len(bundle), "trace": trace, "trace_rows": len(tr),
        "policy": policy, "deadline_ms": deadline_ms, "seed": seed, "duration_s": duration_s,
        "request_rate_hz": request_rate_hz,
        "offload": None if offload is None else {"accuracy": offload.accuracy,
                                                  "server_latency_ms": offload.server_latency_ms,
                                                  "payload_bytes": offload.payload_bytes},
    })
    atomic_write_json(out / "metrics.json", {name: r.to_json() for name, r in results.items()})
    results[main_name].save_steps_csv(out / "steps.csv")
    plot_timeline(results[main_name], out / "timeline.png")
    _console.print(_metrics_table(results))
    _console.print(f"wrote {out / 'metrics.json'}, {out / 'timeline.png'}")


@app.command("scenarios")
def scenarios_cmd() -> None:
    """List the built-in trace scenarios."""
    table = Table(title="built-in scenarios")
    table.add_column("name")
    table.add_column("description")
    for name in list_scenarios():
        table.add_row(name, describe_scenario(name))
    _console.print(table)


@app.command("example-variants")
def example_variants_cmd(
    out: Annotated[Path, typer.Option("--out", help="where to write the JSON bundle")],
) -> None:
    """Write a synthetic example bundle (not measured; for trying the agent before a search has run)."""
    save_variants(example_variants(), out)
    _console.print(f"wrote {out}")


@app.command("bundle")
def bundle_cmd(
    out: Annotated[Path, typer.Option("--out", help="bundle folder to create")],
    variants: Annotated[str | None, typer.Option(
        "--variants", help="a variants JSON file; with --from-search: the number of subnets on the ladder")] = None,
    from_search: Annotated[Path | None, typer.Option(
        "--from-search", help="search output folder (hwnas search --out / the demo's OUT/search): build a measured "
        "ladder along its front (device_agents.ladder)")] = None,
    precisions: Annotated[str, typer.Option(
        "--precisions", help="with --from-search: comma-separated precisions to try; a variant slower and no more "
        "accurate than another is dropped")] = "fp32,int8",
    table: Annotated[
        list[str] | None,
        typer.Option("--table", help="NAME=PATH of a latency table CSV to predict each variant with (repeatable; "
                     "repeat a NAME with tables of other precisions, e.g. cpu=fp32.csv cpu=int8.csv, and each "
                     "variant uses the table measured at its own precision)"),
    ] = None,
    default_table: Annotated[str | None, typer.Option("--default-table", help="latency column agents use")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace an existing bundle in --out")] = False,
    statistic: Annotated[str | None, typer.Option(
        "--statistic", help="latency statistic of every --table: median (default), p99 (plan on the tail, for "
        "deadlines), p90, best")] = None,
) -> None:
    """Pack the variants' model files and a versioned manifest.json (hashes, latency per table, energy) into --out.

    Relative model paths in the variants file are resolved against the file's folder. With --from-search, the
    variants are built from a search instead: a ladder of subnets along its front x --precisions, each measured
    on this CPU (median, p99 per request) and scored on the held-out test split."""
    from device_agents.bundle import BundleError, build_bundle

    if from_search is not None:
        _bundle_from_search(from_search, out, variants, precisions, overwrite)
        return
    if variants is None:
        raise typer.BadParameter("give --variants V.json, or --from-search DIR")

    grouped: dict[str, list[str]] = {}
    for spec in table or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise typer.BadParameter(f"--table {spec!r}: expected NAME=PATH")
        grouped.setdefault(name, []).append(path)
    tables: dict[str, Any] = {name: paths[0] if len(paths) == 1 else paths for name, paths in grouped.items()}
    try:
        if statistic is not None:
            from latency_tables.table import LatencyTable

            tables = {name: [LatencyTable.load(p, statistic=statistic) for p in paths] if len(paths) > 1
                      else LatencyTable.load(paths[0], statistic=statistic) for name, paths in grouped.items()}
        vs = load_variants(variants)
        b = build_bundle(vs, out, tables=tables, base_dir=Path(variants).parent, default_table=default_table,
                         overwrite=overwrite)
    except (InvalidVariantError, BundleError, FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    t = Table(title=f"bundle {out}")
    for col in ("variant", "precision", "accuracy", "size (kB)", *(f"{k} ms" for k in b.tables), "energy mJ"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for entry in b.entries:
        t.add_row(entry.name, entry.precision, f"{entry.accuracy:.4f}", f"{entry.size_bytes / 1e3:.0f}",
                  *(f"{entry.predicted_latency_ms[k]:.3f}" for k in b.tables),
                  f"{entry.energy_estimate_mj[b.default_table]:.1f}")
    _console.print(t)
    _console.print(f"wrote {out / 'manifest.json'}")


def _bundle_from_search(search_dir: Path, out: Path, n_text: str | None, precisions: str, overwrite: bool) -> None:
    from device_agents.ladder import LadderConfig, build_ladder

    try:
        n = int(n_text) if n_text is not None else LadderConfig().n_subnets
    except ValueError:
        raise typer.BadParameter(f"--variants {n_text!r}: with --from-search, expected a number of subnets") from None
    if (out / "manifest.json").exists() and not overwrite:
        raise typer.BadParameter(f"bundle folder {out} already holds a manifest.json; pass --overwrite to replace it")
    try:
        cfg = LadderConfig(n_subnets=n, precisions=tuple(p.strip() for p in precisions.split(",") if p.strip()))
        res = build_ladder(search_dir, out, config=cfg, overwrite=True, progress=lambda m: _console.print(f"[dim]{m}"))
    except (FileNotFoundError, ValueError) as e:
        raise typer.BadParameter(str(e)) from None
    t = Table(title=f"bundle {out} (from {search_dir})")
    for col in ("variant", "precision", "val top-1", "test top-1", "median ms", "p99 ms", "kept"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for v in res.variants:
        t.add_row(v.name, v.precision, f"{v.val_top1:.4f}", f"{v.heldout_top1:.4f}", f"{v.median_ms:.4f}",
                  f"{v.p99_ms:.4f}", "yes" if v.kept else "no (dominated)")
    _console.print(t)
    m = res.measurement
    _console.print(f"measured with {m['backend']} {m['backend_version']}, {m['threads']} thread(s) on {m['cpu_model']}; "
                   f"load {m['loadavg_before']} -> {m['loadavg_after']}")
    _console.print(f"wrote {out / 'manifest.json'}")


@app.command("serve-model")
def serve_model_cmd(
    bundle: Annotated[Path | None, typer.Option("--bundle", help="serve a variant of this bundle")] = None,
    variant: Annotated[str | None, typer.Option("--variant", help="variant name (default: most accurate)")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="or serve this .onnx / .tflite file")] = None,
    accuracy: Annotated[float | None, typer.Option("--accuracy", help="accuracy to report (with --model)")] = None,
    host: Annotated[str, typer.Option("--host", help="bind address; loopback unless you mean otherwise")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option("--port")] = 8770,
    max_payload_bytes: Annotated[int, typer.Option("--max-payload-bytes")] = 4 * 1024 * 1024,
) -> None:
    """Serve one model over HTTP for offloading (POST /v1/infer, GET /health) until Ctrl-C."""
    from device_agents.bundle import load_bundle
    from device_agents.server import serve_model

    if (bundle is None) == (model is None):
        raise typer.BadParameter("give exactly one of --bundle or --model")
    if bundle is not None:
        try:
            b = load_bundle(bundle)
            entry = b.entry(variant) if variant else max(b.entries, key=lambda e: e.accuracy)
        except InputError as e:  # BundleError, or a variant name the bundle does not have
            raise typer.BadParameter(str(e)) from None
        acc: float | None
        path, name, acc = b.path_of(entry.file("onnx")), entry.name, entry.accuracy
    else:
        assert model is not None
        if not model.is_file():
            raise typer.BadParameter(missing_file_message("--model", model))
        path, name, acc = model, model.name, accuracy
    _console.print(f"serving {name} on http://{host}:{port} (POST /v1/infer, GET /health)")
    serve_model(path, host=host, port=port, name=name, accuracy=acc, max_payload_bytes=max_payload_bytes)


@app.command("live")
def live_cmd(
    bundle: Annotated[Path, typer.Option("--bundle", help="bundle folder (hwnas bundle)")],
    out: Annotated[Path, typer.Option("--out", help="output directory for live.json and live.md")],
    schedule: Annotated[str, typer.Option("--schedule", help="busy processes per phase, comma separated")]
    = "0,2,0,4,1,3,0",
    phase_s: Annotated[float, typer.Option("--phase-s", help="seconds per phase")] = 10.0,
    deadline_ms: Annotated[float | None, typer.Option("--deadline-ms", help="default: 1.5 x largest median")]
    = None,
    request_interval_s: Annotated[float, typer.Option("--request-interval-s")] = 0.02,
    max_procs: Annotated[int | None, typer.Option("--max-procs", help="cap on busy processes")] = None,
) -> None:
    """Run the agent and static-largest side by side on this machine under injected busy processes.

    The busy processes are stopped on exit, Ctrl-C or error, and end by themselves if this process dies."""
    from device_agents.bundle import BundleError, load_bundle
    from device_agents.live import format_live, run_live

    check_output_dir(out, flag="--out", what="live-run results")  # before minutes of measuring
    if not (math.isfinite(phase_s) and phase_s > 0):
        raise typer.BadParameter(f"--phase-s {phase_s}: expected a finite number of seconds > 0")
    if not (math.isfinite(request_interval_s) and request_interval_s >= 0):  # 0: back to back
        raise typer.BadParameter(f"--request-interval-s {request_interval_s}: expected a finite number of seconds >= 0")
    if deadline_ms is not None and not (math.isfinite(deadline_ms) and deadline_ms > 0):
        raise typer.BadParameter(f"--deadline-ms {deadline_ms}: expected a finite number of milliseconds > 0")
    try:
        counts = tuple(int(c) for c in schedule.split(","))
        b = load_bundle(bundle)
    except ValueError as e:  # BundleError is a ValueError
        raise typer.BadParameter(str(e) if isinstance(e, BundleError) else f"--schedule {schedule!r}: {e}") from None
    try:
        res = run_live(b, schedule=counts, phase_s=phase_s, deadline_ms=deadline_ms,
                       request_interval_s=request_interval_s, max_procs=max_procs, progress=_console.print)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "live.json", {"bundle": str(bundle), **res.to_json()})
    text = format_live(res)
    from supernet.io import atomic_write_text

    atomic_write_text(out / "live.md", text + "\n")
    _console.print(text)
    _console.print(f"state: {res.conditions['frequency_note']}; missing {res.conditions['missing_state_fields']}")
    _console.print(f"wrote {out / 'live.json'}")
