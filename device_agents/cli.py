"""``hwnas agent ...``: thin CLI over the device-agents library (mounted by the main CLI as ``agent``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from supernet.io import atomic_write_json

from .network import OffloadTarget
from .policies import AGENT_POLICY, list_policies
from .scenarios import builtin_trace, describe_scenario, list_scenarios
from .simulator import DEFAULT_COMPARISON, SimulationResult, compare_policies, simulate
from .trace import Trace, TraceFormatError, load_trace_csv
from .variants import InvalidVariantError, example_variants, load_variants, save_variants

__all__ = ["app", "resolve_trace"]

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
    payload_bytes: Annotated[int, typer.Option("--payload-bytes")] = 20_000,
) -> None:
    """Replay a trace with a policy; write metrics.json, config.json, steps.csv and timeline.png to --out."""
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

    from .plot import plot_timeline

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
