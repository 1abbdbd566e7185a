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


@app.command("fit-predictor")
def fit_predictor_cmd(
    cache: Path = typer.Option(..., help="accuracy cache (sqlite) written by 'hwnas search' or measure_accuracy_pairs"),
    out: Path = typer.Option(..., help="predictor artifact (.npz)"),
    space: str = typer.Option(..., help="search space the cached architectures belong to (e.g. mnist)"),
    context: str | None = typer.Option(None, help="cache context to train on (default: the only one in the file)"),
    precisions: str | None = typer.Option(None, help="comma-separated precisions to use (default: all in the cache)"),
    hidden: str = typer.Option("400,400,400", help="hidden layer sizes"),
    epochs: int = typer.Option(200, min=1),
    test_fraction: float = typer.Option(0.2, min=0.0, max=0.9, help="architectures held out for RMSE / Kendall tau"),
    seed: int = typer.Option(0),
) -> None:
    """Train an accuracy predictor from measured accuracies: fp32 only, or bit-width aware (APQ: an fp32 predictor,
    then fine-tuned on every (subnet, precision) pair) when the cache holds other precisions. Prints held-out
    RMSE and Kendall tau per precision."""
    from nas.cache import KNOWN_PRECISIONS, AccuracyCache, list_contexts
    from nas.predictor import fit_bitwidth_predictor, fit_predictor
    from supernet.space import get_space

    try:
        sp = get_space(space)
        contexts = list_contexts(cache)
        if context is None:
            if len(contexts) != 1:
                raise ValueError(f"{cache} holds {len(contexts)} contexts {contexts}; choose one with --context")
            context = contexts[0]
        elif context not in contexts:
            raise ValueError(f"{cache} has no context {context!r}; it has {contexts}")
        sizes = tuple(int(h) for h in hidden.split(",") if h.strip())
        wanted = None if precisions is None else [p.strip() for p in precisions.split(",") if p.strip()]
        bad = [p for p in wanted or [] if p not in KNOWN_PRECISIONS]
        if bad:
            raise ValueError(f"--precisions {bad}: expected names from {', '.join(KNOWN_PRECISIONS)}")
        with AccuracyCache(cache, space=sp, context=context) as c:
            records = c.records(precisions=wanted)
        if not records:
            raise ValueError(f"{cache} context {context!r} has no records" + (f" at {wanted}" if wanted else ""))
        found = sorted({p for _, p, _ in records})
        if found == ["fp32"]:
            pred = fit_predictor(sp, [a for a, _, _ in records], [y for _, _, y in records], hidden=sizes,
                                 epochs=epochs, test_fraction=test_fraction, seed=seed)
        else:
            pred = fit_bitwidth_predictor(sp, records, hidden=sizes, epochs=epochs, test_fraction=test_fraction,
                                          seed=seed)
    except (ValueError, FileNotFoundError) as e:  # UnknownNameError is a ValueError
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    pred.save(out)
    typer.echo(json.dumps({
        "out": str(out), "context": context, "records": len(records), "precisions": list(pred.supported_precisions),
        "held_out": None if pred.metrics is None else pred.metrics.to_json(),
        "held_out_by_precision": {k: v.to_json() for k, v in pred.metrics_by_precision.items()},
    }))


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
