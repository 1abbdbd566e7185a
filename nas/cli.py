"""`hwnas nas ...`: commands that need no supernet or latency table (the main CLI wires `hwnas search`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from nas.reward import HardConstraint, Reward

__all__ = ["app"]

log = logging.getLogger(__name__)

app = typer.Typer(help="Architecture-search utilities (reward arithmetic, strategy registry, synthetic benchmark).",
                  no_args_is_help=True)


@app.command("reward")
def reward_cmd(
    accuracy: float = typer.Argument(..., help="accuracy in [0, 1]"),
    latency_ms: float = typer.Argument(..., help="latency on the device, ms"),
    target_ms: float = typer.Option(..., "--target-ms", help="latency target T, ms"),
    preset: str = typer.Option("soft", help="soft (alpha=beta=-0.07), hard (alpha=0, beta=-1) or constraint"),
    alpha: float | None = typer.Option(None, help="override alpha (exponent at or below the target)"),
    beta: float | None = typer.Option(None, help="override beta (exponent above the target)"),
) -> None:
    """Print the MnasNet reward ACC * (LAT/T)^w for one (accuracy, latency) pair."""
    if preset == "constraint":
        r: Reward | HardConstraint = HardConstraint(target_ms=target_ms)
    elif preset in ("soft", "hard"):
        base = Reward.soft(target_ms) if preset == "soft" else Reward.hard(target_ms)
        r = Reward(target_ms, base.alpha if alpha is None else alpha, base.beta if beta is None else beta)
    else:
        raise typer.BadParameter(f"preset {preset!r}: expected soft, hard or constraint")
    typer.echo(json.dumps({"reward": r(accuracy, latency_ms), **r.to_json(), "accuracy": accuracy,
                           "latency_ms": latency_ms}))


@app.command("strategies")
def strategies_cmd() -> None:
    """List the registered search strategies."""
    from nas.strategies import get_strategy_class, list_strategies

    for name in list_strategies():
        doc = (get_strategy_class(name).__doc__ or "").strip().splitlines()[0]
        typer.echo(f"{name:12s} {doc}")


@app.command("bench")
def bench_cmd(
    out: Path = typer.Option(..., help="output folder (runs.jsonl, summary.json, convergence.png)"),
    strategies: list[str] = typer.Option(["gp", "evolution", "random"], "--strategy"),
    budgets: list[int] = typer.Option([50, 100], "--budget"),
    seeds: list[int] = typer.Option([0, 1, 2], "--seed"),
    space: str = typer.Option("ofa-mbv3"),
) -> None:
    """Compare strategies on the SYNTHETIC objective (nas.synthetic) — for engineering, not for real models."""
    from nas.bench import run

    run(out=out, strategies=strategies, budgets=budgets, seeds=seeds, space=space)
    typer.echo((out / "summary.json").read_text())


if __name__ == "__main__":  # pragma: no cover
    app()
