"""``hwnas``: the command line. Thin by design: each command parses, builds a config value, calls one library
function, and writes results (with the resolved config beside them). Sub-apps live in `hwnas.commands` and are
mounted here (``hwnas lut ...``, ``hwnas agent ...``, ``hwnas nas ...``, ``hwnas quantize``).

Errors: any `supernet.errors.InputError` (bad user input; every library's "bad name / file / value" error
derives from it) raised by any command becomes ``error: <message>`` on stderr and exit code 2, without a
traceback; ``hwnas --debug ...`` re-raises it with the traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from supernet.errors import InputError

INPUT_ERROR_EXIT_CODE = 2


class _InputErrorsToExit2(TyperGroup):
    """The top-level group: one error path for every subcommand, mounted sub-apps included.

    Lives in the group (not only in `main`) so that `typer.testing.CliRunner` sees the same behaviour as the
    console script.
    """

    def invoke(self, ctx: Any) -> Any:  # a click Context (typer vendors its own click)
        try:
            return super().invoke(ctx)
        except InputError as e:
            if ctx.params.get("debug"):
                raise
            typer.echo(f"error: {e}", err=True)
            ctx.exit(INPUT_ERROR_EXIT_CODE)


app = typer.Typer(
    cls=_InputErrorsToExit2,
    name="hwnas",
    help=(
        "Hardware-aware NAS: train a once-for-all supernet, measure a device's latency table, search the best "
        "subnet for a latency target, and adapt at runtime. Start with 'hwnas demo'."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
space_app = typer.Typer(help="Inspect search spaces.", no_args_is_help=True)
app.add_typer(space_app, name="space")
console = Console()
err_console = Console(stderr=True)
log = logging.getLogger("hwnas")


_MOUNTED = False


def _mount_subapps() -> None:
    """Attach the packages' own CLIs (idempotent). Top-level shortcuts reuse the same command functions."""
    global _MOUNTED
    if _MOUNTED:
        return
    _MOUNTED = True
    from hwnas.commands import agent as agents_cli
    from hwnas.commands import lut as lut_cli

    app.add_typer(lut_cli.app, name="lut", help="Latency lookup tables: build, validate, kit/import, predict, serve.")
    app.add_typer(lut_cli.app, name="latency", help="Alias of 'lut' (e.g. 'hwnas latency predict').")
    app.command("serve", help="HTTP latency-prediction service (localhost by default).")(lut_cli.serve)
    from hwnas.commands.quantize import quantize_cmd

    app.command("quantize", help="fp16 / int8 (PTQ or QAT) export of a subnet for onnxruntime or TFLite, with "
                                 "accuracy, size and latency per precision.")(
        quantize_cmd
    )
    app.add_typer(agents_cli.app, name="agent", help="Runtime device agents: simulate, live run, bundles.")
    app.command("bundle", help="Pack searched variants into a versioned, hash-checked bundle.")(agents_cli.bundle_cmd)
    app.command("serve-model", help="HTTP inference server for offloading (localhost by default).")(
        agents_cli.serve_model_cmd
    )
    from hwnas.commands.compress import compress_cmd, decompress_cmd, prune_cmd

    app.command("compress", help="Deep Compression of a subnet (prune, share weights, Huffman) to a .hwdc file "
                                 "with a size report.")(compress_cmd)
    app.command("decompress", help="Restore a .hwdc file to a runnable ONNX / TFLite model.")(decompress_cmd)
    app.command("prune", help="Structured channel pruning of a subnet with KD fine-tuning; latency by table.")(
        prune_cmd)
    from hwnas.commands.nas import app as nas_app

    app.add_typer(nas_app, name="nas", help="Search utilities: strategies, rewards.")


def _fail(message: str, code: int = INPUT_ERROR_EXIT_CODE) -> NoReturn:
    """``error: <message>`` on stderr and exit ``code`` (2: bad input, as for `InputError`)."""
    err_console.print(f"[red]error:[/] {message}", soft_wrap=True)  # keep paths unbroken (copyable)
    raise typer.Exit(code)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of input errors instead of one line.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


# --------------------------------------------------------------------------- demo
@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Report folder (created; a re-run resumes finished stages).")] = Path(
        "hwnas-runs/demo"
    ),
    quick: Annotated[bool, typer.Option("--quick", help="Smaller budget everywhere: about 2 minutes.")] = False,
    seed: Annotated[int, typer.Option(help="Seed for data split, training, search and simulation.")] = 0,
    fresh: Annotated[bool, typer.Option("--fresh", help="Ignore results of an earlier run in --out.")] = False,
) -> None:
    """Run the whole pipeline once on the embedded MNIST subset and write a report.

    Stages: train a small OFA supernet (with KD) -> evaluate smallest/largest subnets -> measure a per-layer
    latency table on this CPU (onnxruntime, fp32, 1 thread) -> check predicted vs measured latency ->
    search subnets for several latency targets (Optuna GP) -> export winners to ONNX -> replay a device
    agent on built-in traces. Results: OUT/report.md, OUT/report.json and PNG plots.
    """
    from hwnas.demo import DemoConfig, run_demo

    cfg = DemoConfig.preset(quick=quick, seed=seed)
    report = run_demo(cfg, out_dir=out, console=console, fresh=fresh)
    console.print(f"\n[bold green]done[/] in {report['wall_time_s']:.0f} s - report: {out / 'report.md'}")


# --------------------------------------------------------------------------- space
@space_app.command("info")
def space_info(
    space: Annotated[str, typer.Option(help="Named search space.")] = "ofa-mbv3",
    resolutions: Annotated[
        str | None, typer.Option(help="Override resolutions, comma separated (e.g. 160,192,224).")
    ] = None,
) -> None:
    """Print a space's choices and its number of distinct subnets per resolution."""
    from dataclasses import replace

    from supernet.space import get_space, list_spaces

    sp = get_space(space)  # an unknown name is an InputError: "error: ...", exit 2
    if resolutions:
        try:
            res = tuple(sorted({int(r) for r in resolutions.split(",")}))
        except ValueError:
            _fail(f"--resolutions {resolutions!r}: expected comma-separated integers")
            raise
        sp = replace(sp, resolutions=res)
    console.print(f"[bold]{sp.describe()}[/]")
    console.print(f"known spaces: {', '.join(list_spaces())}")
    per_block = len(sp.kernel_choices) * len(sp.expand_choices)
    per_stage = " + ".join(f"{per_block}^{d}" for d in sp.depth_choices)
    t = Table(title=f"distinct subnets: ({per_stage})^{sp.n_stages} per resolution")
    t.add_column("resolution", justify="right")
    t.add_column("subnets", justify="right")
    for r in sp.resolutions:
        n = sp.num_subnets(r)
        t.add_row(str(r), f"{n:.3e}  ({n})")
    console.print(t)
    total = sp.num_subnets()
    console.print(f"total over {len(sp.resolutions)} resolutions: {total:.3e}; ordinal encoding: "
                  f"{sp.n_decisions} decisions")


# --------------------------------------------------------------------------- train / eval / export
@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint.pt, supernet.pt, train_log.json.")] = Path(
        "hwnas-runs/supernet"
    ),
    config: Annotated[
        Path | None, typer.Option(help="TOML run file (keys and [[phases]] in docs/training.md); options override it.")
    ] = None,
    recipe: Annotated[
        str | None, typer.Option(help="progressive-shrinking (default) | bignas | one-stage | demo: schedule + KD loss.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="mnist (embedded), digits, cifar10, cifar100, imagefolder.")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Folder of a dataset on disk (CIFAR, ImageFolder).")] = None,
    space: Annotated[str | None, typer.Option(help="Named search space (default mnist).")] = None,
    schedule: Annotated[str | None, typer.Option(help="Schedule only: demo, progressive-shrinking, one-stage, bignas.")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Total epochs, split over the schedule's phases.")] = None,
    width_mult: Annotated[float | None, typer.Option(help="Channel width multiplier of the backbone.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=2, help="Global batch (split over DDP ranks).")] = None,
    kd_loss: Annotated[str | None, typer.Option(help="Distillation loss: kl | alpha-divergence.")] = None,
    kd_temperature: Annotated[float | None, typer.Option(help="Distillation temperature T.")] = None,
    kd_ratio: Annotated[float | None, typer.Option(help="Distillation weight lambda (0 disables KD).")] = None,
    max_train_images: Annotated[int | None, typer.Option(help="Stratified subset of the train split.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch threads (default 1; more can be slower on a shared VM).")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from OUT/checkpoint.pt.")] = True,
) -> None:
    """Train a once-for-all supernet (resumable: re-run the same command after an interruption).

    Under torchrun (WORLD_SIZE > 1) the same command trains data-parallel; see docs/training.md.
    """
    from dataclasses import replace

    from hwnas.progress import console_progress
    from supernet.config_file import load_train_config
    from supernet.train import DEFAULT_RECIPE, TrainConfig, train_supernet

    given: dict[str, Any] = {
        "dataset": dataset, "data_root": None if data_root is None else str(data_root), "space": space,
        "schedule": schedule, "epochs": epochs, "width_mult": width_mult, "batch_size": batch_size,
        "kd_loss": kd_loss, "kd_temperature": kd_temperature, "kd_ratio": kd_ratio,
        "max_train_images": max_train_images, "threads": threads, "seed": seed,
    }
    given = {k: v for k, v in given.items() if v is not None}
    try:
        if config is not None:
            cfg = load_train_config(config)
        else:
            cfg = TrainConfig().with_recipe(DEFAULT_RECIPE if schedule is None else "demo")
        if recipe is not None:
            cfg = cfg.with_recipe(recipe)
        cfg = replace(cfg, **given)
        if not resume and (out / "checkpoint.pt").exists():
            (out / "checkpoint.pt").unlink()
        # bars on rank 0 only (torchrun sets RANK; the library reports nothing on the other ranks anyway)
        with console_progress(os.environ.get("RANK", "0") == "0", console=console) as bars:
            result = train_supernet(cfg, out_dir=out, progress=bars)
    except (ValueError, FileNotFoundError) as e:  # InputError and UnknownNameError are ValueErrors
        _fail(str(e))
    if not result.supernet_path or not result.phases:
        return  # not rank 0 of a distributed run
    t = Table(title=f"phases ({cfg.schedule if cfg.phases is None else 'from ' + str(config)}, kd {cfg.kd_loss})")
    for col in ("phase", "epochs", "steps", "img/s", "loss", "val top-1 largest", "val top-1 smallest"):
        t.add_column(col)
    for p in result.phases:
        t.add_row(p.name, str(p.epochs), str(p.steps), f"{p.images_per_s:.0f}", f"{p.mean_loss:.3f}",
                  f"{p.val_top1_largest:.4f}", f"{p.val_top1_smallest:.4f}")
    console.print(t)
    console.print(f"supernet: {result.supernet_path}")


@app.command("eval")
def eval_(
    arch: Annotated[str, typer.Option(help="largest | smallest | arch JSON file | inline JSON | r28-d2... string")],
    supernet: Annotated[Path, typer.Option(help="supernet.pt written by 'hwnas train'.")] = Path(
        "hwnas-runs/supernet/supernet.pt"
    ),
    split: Annotated[str, typer.Option(help="train | val | test")] = "val",
    bn_images: Annotated[int, typer.Option(help="Training images for BN recalibration.")] = 1000,
    dataset: Annotated[str | None, typer.Option(help="Defaults to the dataset the supernet was trained on.")] = None,
    data_root: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Top-1 of one subnet after BN recalibration."""
    from supernet.evaluate import evaluate
    from supernet.space import InvalidArchError, resolve_arch
    from supernet.train import load_supernet_and_data

    try:
        net, data = load_supernet_and_data(supernet, dataset=dataset, data_root=data_root)
        cfg = resolve_arch(arch, net.space)
        r = evaluate(net, cfg, data, split=split, bn_images=bn_images)
    except (InvalidArchError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
        raise
    console.print_json(json.dumps({"arch": r.arch, "split": r.split, "top1": r.top1, "bn_images": r.bn_images}))


@app.command()
def export(
    arch: Annotated[str, typer.Option(help="largest | smallest | arch JSON file | inline JSON | r28-d2... string")],
    format: Annotated[str, typer.Option("--format", help="onnx | tflite")] = "onnx",
    supernet: Annotated[Path, typer.Option(help="supernet.pt written by 'hwnas train'.")] = Path(
        "hwnas-runs/supernet/supernet.pt"
    ),
    out: Annotated[Path | None, typer.Option(help="Output file (default: <arch>.<format> beside the supernet).")] = None,
    bn_images: Annotated[int, typer.Option(help="BN recalibration images before export (0 = keep).")] = 1000,
) -> None:
    """Extract a subnet as a static model, recalibrate its BN and export it; checks outputs against torch."""
    import torch

    from supernet.data import iterate_batches
    from supernet.evaluate import recalibrated_subnet
    from supernet.export import EXPORT_FORMATS, check_export
    from supernet.export import export as export_model
    from supernet.space import InvalidArchError, resolve_arch
    from supernet.train import load_supernet_and_data

    if format not in EXPORT_FORMATS:
        _fail(f"--format {format!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    try:
        net, data = load_supernet_and_data(supernet)
        cfg = resolve_arch(arch, net.space)
    except (InvalidArchError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
        raise
    sub = recalibrated_subnet(net, cfg, data, bn_images=bn_images) if bn_images > 0 else net.get_active_subnet(cfg)
    sub.eval()
    target = out or supernet.parent / f"{cfg}.{format}"
    path = export_model(sub, target, format=format, input_shape=sub.input_shape)
    x, _ = next(iterate_batches(data.test, batch_size=8, mean=data.mean, std=data.std, resolution=cfg.resolution))
    check = check_export(sub, path, fmt=format, inputs=x.to(torch.float32))
    console.print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); max |torch - {format}| = "
                  f"{check.max_abs_diff:.2e}, top-1 agreement {check.top1_agreement:.2f}")
    if not check.ok:
        _fail(f"exported model differs from torch by {check.max_abs_diff:.2e} (> tolerance)", code=1)


def _parse_targets(latency_ms: str | float | None, targets: str | None) -> tuple[float, ...]:
    if (latency_ms is None) == (targets is None):
        _fail("give exactly one of --latency-ms (one target or a comma-separated list) or --targets")
    if latency_ms is not None:
        targets = str(latency_ms)
    try:
        vals = tuple(float(t) for t in str(targets).split(",") if t.strip())
    except ValueError:
        _fail(f"--targets {targets!r}: expected comma-separated numbers of milliseconds, e.g. 10,15,20")
        raise
    if not vals:
        _fail("--targets: no targets given")
    return vals


def _search_with_proxy(table: Path, predictor: Path | None, targets: tuple[float, ...], accuracy: str,
                       statistic: str | None, strategy: str, budget: int, seed: int, measure: bool, out: Path) -> None:
    from hwnas.proxy_search import search_with_proxy, summary_rate
    from supernet.io import atomic_write_json

    try:
        results = search_with_proxy(table, targets_ms=targets, predictor_path=predictor, statistic=statistic,
                                    proxy=accuracy.removeprefix("proxy-"), strategy=strategy, budget=budget, seed=seed,
                                    measure=measure)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
        raise
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "search_results.json", {"accuracy_source": results[0].accuracy_source,
                                                    "winners": [r.to_json() for r in results],
                                                    "meets_target_measured_rate": summary_rate(results)})
    t = Table(title=f"winners ({strategy}, {results[0].statistic} latency; accuracy: {results[0].accuracy_source})")
    for col in ("target ms", "arch", "proxy", "predicted ms", "measured ms", "meets target (measured)"):
        t.add_column(col)
    for r in results:
        t.add_row(f"{r.target_ms:g}", r.arch, f"{r.proxy:.4f}", f"{r.predicted_ms:.3f}",
                  "-" if r.measured_ms is None else f"{r.measured_ms:.3f}", str(r.meets_target_measured))
    console.print(t)
    console.print(f"wrote {out / 'search_results.json'}")


@app.command()
def search(
    table: Annotated[Path, typer.Option(help="Latency table CSV of the target device ('hwnas lut build').")],
    latency_ms: Annotated[str | None, typer.Option(help="Latency target T in ms, or several: 4,6,8.")] = None,
    targets: Annotated[str | None, typer.Option(help="Several targets, e.g. 10,15,20,30 (a family for the agent).")] = None,
    supernet: Annotated[Path, typer.Option(help="supernet.pt from 'hwnas train'.")] = Path(
        "hwnas-runs/supernet/supernet.pt"
    ),
    predictor: Annotated[Path | None, typer.Option(help="Fitted LUT correction ('hwnas lut validate'; default: plain LUT sum), or an adapted predictor of another device ('hwnas lut adapt'; --table then only fixes space and precision).")] = None,
    latency_bound: Annotated[str, typer.Option(help="With an adapted --predictor: constrain on its 'median' prediction or the 'upper' end of its 90 % interval.")] = "median",
    strategy: Annotated[str, typer.Option(help="gp, optuna-gp, optuna-tpe, evolution, random, rl, nsga2.")] = "gp",
    compare: Annotated[str | None, typer.Option(help="Also run these strategies on the same objective, e.g. evolution,random.")] = None,
    budget: Annotated[int, typer.Option(min=1, help="Accuracy evaluations per target (and strategy).")] = 50,
    reward: Annotated[str, typer.Option(help="hard (alpha=0, beta=-1) or soft (alpha=beta=-0.07) MnasNet reward.")] = "hard",
    bn_images: Annotated[int, typer.Option(help="BN recalibration images per evaluated subnet.")] = 500,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL (sqlite:///..., journal file path, postgresql://...). Default: OUT/studies.db.")] = None,
    study_name: Annotated[str, typer.Option(help="Study name prefix; re-run with the same name to resume.")] = "search",
    out: Annotated[Path, typer.Option(help="Result folder.")] = Path("hwnas-runs/search"),
    seed: Annotated[int, typer.Option()] = 0,
    measure: Annotated[bool, typer.Option("--measure/--no-measure", help="Measure winners end to end when the table is from this machine.")] = True,
    precision: Annotated[str | None, typer.Option(help="Target precision fp32 | fp16 | int8: the table must be measured at it (default: the table's). Accuracy is measured at it (int8: per-channel PTQ on onnxruntime). auto: joint (architecture, precision) search over --table (fp32) and --int8-table.")] = None,
    int8_table: Annotated[Path | None, typer.Option(help="--precision auto: the int8 latency table of the same device.")] = None,
    accuracy: Annotated[str, typer.Option(help="measured (each evaluation measures val top-1 at the precision), predicted (by --accuracy-predictor), or proxy-macs (no supernet: a stated compute proxy, NOT an accuracy; nas.proxy).")] = "measured",
    statistic: Annotated[str | None, typer.Option(help="Latency statistic the target constrains: median (default), p99 (deadline tail), p90, best. The predictor must be fitted on it.")] = None,
    accuracy_predictor: Annotated[Path | None, typer.Option(help="Bit-width-aware accuracy predictor ('hwnas nas fit-predictor'): the GP's prior, or the accuracy with --accuracy predicted.")] = None,
    calib_images: Annotated[int, typer.Option(min=1, help="int8 accuracy: training images calibrating activation ranges.")] = 256,
) -> None:
    """Find the most accurate subnet meeting a latency target on a device (resumable Optuna study)."""
    from hwnas.pipeline import SearchJob, search_device

    tgts = _parse_targets(latency_ms, targets)
    strategies = [strategy] + [s for s in (compare or "").split(",") if s.strip() and s != strategy]
    if accuracy.startswith("proxy-"):
        _search_with_proxy(table, predictor, tgts, accuracy, statistic, strategy if strategy != "gp" else "evolution",
                           budget if budget != 50 else 300, seed, measure, out)
        return
    if precision == "auto":
        from hwnas.pipeline import search_joint

        if int8_table is None:
            _fail("--precision auto: needs --int8-table (and --table at fp32) of the same device")
        assert int8_table is not None
        try:
            common: dict[str, Any] = {
                "supernet_path": str(supernet), "targets_ms": tgts, "strategy": strategy, "budget": budget,
                "reward": reward, "seed": seed, "bn_images": bn_images, "storage": storage,
                "study_prefix": study_name, "measure_winners": measure, "accuracy": accuracy,
                "calib_images": calib_images, "statistic": statistic}
            jobs = {"fp32": SearchJob(table_path=str(table), precision="fp32", **common),
                    "int8": SearchJob(table_path=str(int8_table), precision="int8", **common)}
            joint = search_joint(jobs, out_dir=out, console=console)
        except (ValueError, FileNotFoundError) as e:
            _fail(str(e))
        t = Table(title="joint (architecture, precision) winners: most accurate per target")
        for col in ("target ms", "precision", "arch", "val top-1", "predicted ms", "vs fp32-only (pts)"):
            t.add_column(col)
        for j in joint["joint"]:
            w = j["winner"]
            gain = j["gain_vs_fp32_pts"]
            t.add_row(f"{j['target_ms']:g}", "-" if w is None else w["precision"], "-" if w is None else w["arch"],
                      "-" if w is None else f"{w['val_top1']:.4f}",
                      "-" if w is None else f"{w['predicted_latency_ms']:.3f}", "-" if gain is None else f"{gain:+.2f}")
        console.print(t)
        return
    try:
        job = SearchJob(supernet_path=str(supernet), table_path=str(table),
                        predictor_path=None if predictor is None else str(predictor), targets_ms=tgts,
                        strategy=strategy, budget=budget, reward=reward, seed=seed, bn_images=bn_images,
                        storage=storage, study_prefix=study_name, measure_winners=measure, precision=precision,
                        accuracy=accuracy, calib_images=calib_images, latency_bound=latency_bound,
                        statistic=statistic,
                        accuracy_predictor_path=None if accuracy_predictor is None else str(accuracy_predictor))
        summary = search_device(job, out_dir=out, console=console, strategies=strategies)
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
    t = Table(title=f"winners ({strategy}, {summary['precision']}); predicted and measured latency in separate columns")
    for col in ("target ms", "arch file", "val top-1", "predicted ms", "measured ms", "meets target (measured)"):
        t.add_column(col)
    for w in summary["winners"]:
        t.add_row(f"{w['target_ms']:g}", w["arch_file"], f"{w['val_top1']:.4f}", f"{w['predicted_latency_ms']:.3f}",
                  f"{w['measured_latency_ms']:.3f}" if "measured_latency_ms" in w else "-",
                  str(w.get("meets_target_measured", "-")))
    console.print(t)
    if not summary["winner_measurement"]["performed"]:
        console.print(f"[dim]winners not measured: {summary['winner_measurement'].get('reason', 'disabled')}[/]")
    console.print(f"results: {out / 'search_results.json'}; plots: {out / 'pareto.png'}, {out / 'search_convergence.png'}")


@app.command()
def pareto(
    results: Annotated[Path, typer.Option(help="Folder written by 'hwnas search' (reads evaluations.json).")] = Path(
        "hwnas-runs/search"
    ),
    out: Annotated[Path | None, typer.Option(help="PNG path (default: RESULTS/pareto.png).")] = None,
) -> None:
    """Draw the accuracy-vs-latency Pareto front of every architecture a search evaluated."""
    from nas.objective import Evaluation
    from nas.pareto import pareto_front
    from nas.plots import plot_pareto
    from supernet.io import read_json

    try:
        evals = [Evaluation.from_json(e) for e in read_json(results / "evaluations.json", what="search evaluations")]
    except (ValueError, FileNotFoundError) as e:
        _fail(str(e))
        raise
    front = pareto_front(evals)
    path = out or results / "pareto.png"
    plot_pareto(evals, path, front=front, title="val accuracy vs predicted latency")
    t = Table(title=f"Pareto front ({len(front)} of {len(evals)} architectures)")
    for col in ("predicted ms", "val top-1", "arch"):
        t.add_column(col)
    for ev in sorted(front, key=lambda ev: ev.latency_ms):
        t.add_row(f"{ev.latency_ms:.3f}", f"{ev.accuracy:.4f}", str(ev.arch))
    console.print(t)
    console.print(f"plot: {path}")


def main() -> None:
    _mount_subapps()
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        console.print("[yellow]interrupted[/] - re-run the same command to resume")
        sys.exit(130)



