"""Independent, ordinary timing of seeded ``ofa-mbv3`` subnets on every "device" this machine has.

Written apart from `latency_tables.protocol` on purpose: it is the yardstick the protocol and the latency
predictors are scored against, so it shares none of their timing code (no rounds, no probe, no round effects,
no percentile estimator). What a user would do by hand:

    per device and subnet: 3 fresh processes, each loads the model, 20 warm-up runs, 100 timed runs;
    median = median of the 3 process medians; p90 / p99 = percentiles of the 300 timed runs pooled.

A subnet's 3 processes are minutes apart (``--schedule spread``, the default: every batch's first process, then
every batch's second, in shuffled batch orders). Timed back to back (``batched``, the first runs) this shared VM's
drift moved whole batches: 20-subnet batch medians of int8 sat 8-12 % off a per-op fit of the same data, at 2
threads 20-29 %, so the yardstick itself was off by more than the ±10 % being scored.

Devices (``--devices``): ``ort-fp32-t1``, ``ort-fp32-t2``, ``ort-int8-t1`` (onnxruntime CPU, int8 via
`supernet.quantize.quantize_onnx`: the QOperator lowering of issue 14), ``litert-xnnpack-fp32-t1`` (LiteRT interpreter, default op resolver, which
applies XNNPACK), ``litert-builtin-fp32-t1`` (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``: LiteRT's own kernels), and
``torch-eager-fp32-t1`` (PyTorch eager, ``inference_mode``).

Resumable: exported models go to ``--work/models`` (written atomically, reused), every finished (device, batch,
process) lands as one JSON line in ``--work/state.jsonl``; run it again with the same arguments to continue. Timing
batches hold ``/work/coord/bench.lock`` (``--lock``) so they never overlap another engineer's benchmark; exports do
not (they are not timed). The results file (``--out``, default ``benchmarks/results/ofa-subnets.json``) is
rewritten after every batch with whatever is finished: architectures as `supernet.space.ArchConfig` JSON, per
device its environment, load average and per-subnet median / p90 / p99 in ms.

    python benchmarks/ofa_subnets.py --n 200                       # all devices
    python benchmarks/ofa_subnets.py --n 200 --devices ort-fp32-t1,ort-fp32-t2
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# run as a script, sys.path[0] is benchmarks/, whose supernet.py would shadow the supernet package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_SCHEMA_VERSION = 1
DEVICES: dict[str, dict[str, Any]] = {
    "ort-fp32-t1": {"runtime": "onnxruntime", "precision": "fp32", "threads": 1, "artifact": "fp32.onnx"},
    "ort-fp32-t2": {"runtime": "onnxruntime", "precision": "fp32", "threads": 2, "artifact": "fp32.onnx"},
    "ort-int8-t1": {"runtime": "onnxruntime", "precision": "int8", "threads": 1, "artifact": "int8.onnx"},
    "litert-xnnpack-fp32-t1": {"runtime": "litert", "precision": "fp32", "threads": 1, "artifact": "fp32.tflite",
                               "op_resolver": "AUTO"},
    "litert-builtin-fp32-t1": {"runtime": "litert", "precision": "fp32", "threads": 1, "artifact": "fp32.tflite",
                               "op_resolver": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"},
    "torch-eager-fp32-t1": {"runtime": "torch", "precision": "fp32", "threads": 1, "artifact": None},
}


# --------------------------------------------------------------------------- subnets
def sample_subnets(n: int, seed: int) -> list[Any]:
    """``n`` canonical ofa-mbv3 subnets, resolutions cycling over all 25 (128..224 step 4), seeded."""
    from supernet.space import get_space

    space = get_space("ofa-mbv3")
    rng = np.random.default_rng(seed)
    order = list(space.resolutions)
    return [space.sample(rng, resolution=order[i % len(order)]) for i in range(n)]


def _backbone(width_mult: float) -> Any:
    from supernet.layers import Backbone

    return Backbone(in_channels=3, num_classes=1000, width_mult=width_mult)


def _model(backbone: Any, arch: Any) -> Any:
    import torch

    from supernet.layers import build_static_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_static_model(backbone, arch).eval()


def _export(arch: Any, backbone: Any, artifact: str, path: Path) -> None:
    """Export one subnet's artifact (each exporter writes atomically)."""
    import torch

    from supernet.export import export_onnx, export_tflite

    torch.set_num_threads(1)
    shape = (1, 3, arch.resolution, arch.resolution)
    path.parent.mkdir(parents=True, exist_ok=True)
    if artifact == "fp32.onnx":
        export_onnx(_model(backbone, arch), path, input_shape=shape)
    elif artifact == "fp32.tflite":
        export_tflite(_model(backbone, arch), path, input_shape=shape)
    elif artifact == "int8.onnx":
        from supernet.quantize import QuantConfig, quantize_onnx

        fp32 = path.with_name("fp32.onnx")
        if not fp32.exists():
            export_onnx(_model(backbone, arch), fp32, input_shape=shape)
        rng = np.random.default_rng([0, *shape[1:]])
        calib = [rng.standard_normal((8, *shape[1:])).astype(np.float32)]
        quantize_onnx(fp32, path, config=QuantConfig(precision="int8", calib_images=8), calib_batches=calib)
    else:  # pragma: no cover - DEVICES lists the artifacts
        raise ValueError(artifact)


def _export_job(arch_json: dict[str, Any], width_mult: float, artifact: str, path: str) -> str:
    from supernet.space import ArchConfig

    _export(ArchConfig.from_json(arch_json), _backbone(width_mult), artifact, Path(path))
    return path


# --------------------------------------------------------------------------- the timing worker (own process)
def _time_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in a fresh process: for each model (in the given order) load, warm up, time; raw runs in ms."""
    dev = DEVICES[spec["device"]]
    warmup, runs = int(spec["warmup"]), int(spec["runs"])
    clock = time.perf_counter_ns
    out: dict[str, Any] = {}
    env: dict[str, Any] = {}
    if dev["runtime"] == "onnxruntime":
        import onnxruntime as ort

        env = {"runtime": "onnxruntime", "version": ort.__version__, "provider": "CPUExecutionProvider",
               "intra_op_threads": dev["threads"], "inter_op_threads": 1, "graph_optimization": "ORT_ENABLE_ALL"}
    elif dev["runtime"] == "litert":
        from importlib.metadata import version

        from ai_edge_litert import interpreter as litert

        env = {"runtime": "ai-edge-litert", "version": version("ai-edge-litert"), "num_threads": dev["threads"],
               "op_resolver": dev["op_resolver"]}
    else:
        import torch

        torch.set_num_threads(dev["threads"])
        env = {"runtime": "torch eager", "version": torch.__version__, "threads": dev["threads"],
               "mode": "inference_mode, eval"}
    for item in spec["items"]:
        shape = (1, 3, item["resolution"], item["resolution"])
        x = np.zeros(shape, dtype=np.float32)
        if dev["runtime"] == "onnxruntime":
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = dev["threads"]
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            sess = ort.InferenceSession(item["path"], sess_options=opts, providers=["CPUExecutionProvider"])
            feeds = {sess.get_inputs()[0].name: x}

            def step(sess: Any = sess, feeds: Any = feeds) -> None:
                sess.run(None, feeds)
        elif dev["runtime"] == "litert":
            resolver = getattr(litert.OpResolverType, dev["op_resolver"])
            interp = litert.Interpreter(model_path=item["path"], num_threads=dev["threads"],
                                        experimental_op_resolver_type=resolver)
            interp.allocate_tensors()
            interp.set_tensor(interp.get_input_details()[0]["index"], x)
            step = interp.invoke
        else:
            import torch

            from supernet.space import ArchConfig

            model = _model(_backbone(spec["width_mult"]), ArchConfig.from_json(item["arch"]))
            xt = torch.from_numpy(x)

            def step(model: Any = model, xt: Any = xt) -> None:
                with torch.inference_mode():
                    model(xt)
        for _ in range(warmup):
            step()
        t = np.empty(runs)
        for i in range(runs):
            t0 = clock()
            step()
            t[i] = clock() - t0
        out[item["id"]] = [round(v, 5) for v in (t * 1e-6).tolist()]
        step = None  # type: ignore[assignment]  # free the session before the next model
    return {"runs_ms": out, "environment": env, "pid": os.getpid()}


# --------------------------------------------------------------------------- coordinator
@contextlib.contextmanager
def _bench_lock(path: str | None) -> Iterator[None]:
    if not path:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _read_state(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    done = []
    for line in path.read_text().splitlines():
        try:
            done.append(json.loads(line))
        except json.JSONDecodeError:  # torn last line of a killed run: that batch is timed again
            continue
    return done


def _summarise(records: list[dict[str, Any]], ids: Sequence[str], processes: int) -> dict[str, dict[str, Any]]:
    """Per subnet id: median of process medians, pooled p90 / p99, per-process medians (ms)."""
    per: dict[str, list[list[float]]] = {}
    for rec in records:
        for sid, runs in rec["runs_ms"].items():
            per.setdefault(sid, []).append(runs)
    out: dict[str, dict[str, Any]] = {}
    for sid in ids:
        runs = per.get(sid, [])
        if len(runs) < processes:
            continue
        runs = runs[:processes]
        pooled = np.concatenate([np.asarray(r) for r in runs])
        meds = [float(np.median(r)) for r in runs]
        out[sid] = {"median_ms": float(np.median(meds)), "p90_ms": float(np.percentile(pooled, 90)),
                    "p99_ms": float(np.percentile(pooled, 99)), "min_ms": float(pooled.min()),
                    "process_medians_ms": meds, "runs": int(pooled.size)}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="subnets (resolutions cycle over 128..224 step 4)")
    ap.add_argument("--n-slow", type=int, default=None,
                    help="time only the first N subnets on the slow devices (all but onnxruntime fp32: LiteRT conversion "
                         "takes ~20-160 s per subnet here, int8 runs ~4x slower than fp32); default: all --n")
    ap.add_argument("--cap", type=int, default=None, help="time at most the first N subnets in this invocation "
                    "(whole batches; results are partial and a later run without --cap continues)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--devices", default=",".join(DEVICES), help=f"comma-separated, from {list(DEVICES)}")
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--batch", type=int, default=20, help="subnets per timing process (checkpoint granularity)")
    ap.add_argument("--export-jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks/.runs/ofa-subnets")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/ofa-subnets.json")
    ap.add_argument("--lock", default="/work/coord/bench.lock", help="flock file held while timing ('' = none)")
    ap.add_argument("--schedule", choices=["spread", "batched"], default="spread",
                    help="order of the timing processes: 'spread' (default) runs every batch's first process, then "
                         "every batch's second (batches shuffled), ... so a subnet's processes are minutes apart and "
                         "machine drift does not move whole batches; 'batched' runs a batch's processes back to back")
    ap.add_argument("--retime", action="store_true",
                    help="time the --devices again from scratch (their earlier records move to "
                         "state.superseded.jsonl, kept)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        spec = json.loads(Path(args.worker).read_text())
        sys.stdout.write(json.dumps(_time_worker(spec)))
        return 0

    from benchmarks.load_sampler import LoadSampler
    from latency_tables.environment import machine_environment
    from supernet.io import atomic_write_json, atomic_write_text

    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    unknown = [d for d in devices if d not in DEVICES]
    if unknown:
        ap.error(f"--devices: unknown {unknown}; expected some of {list(DEVICES)}")
    archs = sample_subnets(args.n, args.seed)
    ids = [f"s{i:04d}" for i in range(len(archs))]
    bb = _backbone(args.width_mult)
    args.work.mkdir(parents=True, exist_ok=True)
    settings = {"n": args.n, "seed": args.seed, "width_mult": args.width_mult, "processes": args.processes,
                "warmup": args.warmup, "runs": args.runs, "batch": args.batch}
    settings_path = args.work / "settings.json"
    if settings_path.is_file() and json.loads(settings_path.read_text()) != settings:
        ap.error(f"{args.work} holds a run with other settings ({settings_path}); use another --work")
    atomic_write_json(settings_path, settings)
    state_path = args.work / "state.jsonl"
    if args.retime and state_path.exists():
        keep, old = [], []
        for line in state_path.read_text().splitlines():
            (old if line.strip() and json.loads(line)["device"] in devices else keep).append(line)
        if old:
            with open(args.work / "state.superseded.jsonl", "a") as fh:
                fh.write("\n".join(old) + "\n")
            atomic_write_text(state_path, "".join(f"{x}\n" for x in keep))
            print(f"--retime: {len(old)} earlier records of {devices} moved to state.superseded.jsonl", flush=True)
    sampler = LoadSampler(args.work / "load.jsonl", period_s=15.0)

    def model_path(i: int, artifact: str) -> Path:
        return args.work / "models" / f"w{args.width_mult:g}" / ids[i] / artifact

    def write_results() -> None:
        records = _read_state(state_path)
        dev_out: dict[str, Any] = {}
        for d, settings in DEVICES.items():  # every device timed so far, also by earlier invocations
            recs = [r for r in records if r["device"] == d]
            if not recs:
                continue
            dev_out[d] = {
                "settings": settings, "environment": recs[0]["environment"],
                "schedule": sorted({r.get("schedule", "batched") for r in recs}),
                "load1": {"min": min(r["load1"][0] for r in recs), "max": max(r["load1"][1] for r in recs)},
                "export_s_per_subnet": recs[0].get("export_s_per_subnet"),
                "subnets": _summarise(recs, ids, args.processes),
            }
            dev_out[d]["n_done"] = len(dev_out[d]["subnets"])
        atomic_write_json(args.out, {
            "schema_version": RESULTS_SCHEMA_VERSION,
            "what": "ordinary timing of seeded ofa-mbv3 subnets, independent of latency_tables.protocol",
            "method": (f"{args.processes} fresh processes per subnet and device, each {args.warmup} warm-ups + "
                       f"{args.runs} timed runs (perf_counter_ns around one inference, zero input, batch 1); "
                       "median_ms = median of process medians; p90/p99 = percentiles of all timed runs pooled"),
            "space": "ofa-mbv3", "backbone": bb.to_json(), "settings": settings,
            "machine": machine_environment(), "load_sampled": sampler.summary(),
            "archs": {sid: a.to_json() for sid, a in zip(ids, archs, strict=True)},
            "arch_strings": {sid: str(a) for sid, a in zip(ids, archs, strict=True)},
            "devices": dev_out,
        })

    with sampler:
        for d in devices:
            dev = DEVICES[d]
            art = dev["artifact"]
            export_s = None
            fast = dev["runtime"] == "onnxruntime" and dev["precision"] == "fp32"
            n_dev = len(archs) if args.n_slow is None or fast else min(args.n_slow, len(archs))
            if args.cap is not None:  # a shorter run now; the same command without --cap continues it later
                n_dev = min(n_dev, args.cap)
            if art is not None:
                todo = [i for i in range(n_dev) if not model_path(i, art).exists()]
                if todo:
                    import concurrent.futures as cf
                    import multiprocessing as mp

                    t0 = time.perf_counter()
                    print(f"[{d}] exporting {len(todo)} subnets ({art}) with {args.export_jobs} jobs", flush=True)
                    with cf.ProcessPoolExecutor(args.export_jobs, mp_context=mp.get_context("spawn")) as pool:
                        futs = [pool.submit(_export_job, archs[i].to_json(), args.width_mult, art,
                                            str(model_path(i, art))) for i in todo]
                        for k, f in enumerate(cf.as_completed(futs), 1):
                            f.result()
                            if k % 20 == 0:
                                print(f"[{d}] exported {k}/{len(todo)}", flush=True)
                    export_s = (time.perf_counter() - t0) * args.export_jobs / len(todo)
            done = {(r["device"], r["batch"], r["process"]) for r in _read_state(state_path)}
            n_batches = -(-n_dev // args.batch)
            if all((d, b, p) in done for b in range(n_batches) for p in range(args.processes)):
                continue
            # one lock for all of a device's batches: a lock per batch would queue behind every other waiter
            lock_cm = _bench_lock(args.lock)
            print(f"[{d}] waiting for {args.lock or 'no lock'}", flush=True)
            lock_cm.__enter__()
            print(f"[{d}] timing", flush=True)
            if args.schedule == "batched":
                jobs = [(b, p) for b in range(n_batches) for p in range(args.processes)]
            else:  # process-major, batches in a fresh seeded order per process
                jobs = [(int(b), p) for p in range(args.processes)
                        for b in np.random.default_rng([args.seed, p, 99]).permutation(n_batches)]
            todo_jobs = [j for j in jobs if (d, *j) not in done]
            for k, (b, p) in enumerate(todo_jobs, 1):
                sel = list(range(b * args.batch, min(n_dev, (b + 1) * args.batch)))
                order = np.random.default_rng([args.seed, b, p, len(d)]).permutation(sel).tolist()
                items = [{"id": ids[i], "resolution": archs[i].resolution, "arch": archs[i].to_json(),
                          "path": None if art is None else str(model_path(i, art))} for i in order]
                spec = {"device": d, "warmup": args.warmup, "runs": args.runs, "width_mult": args.width_mult,
                        "items": items}
                spec_path = args.work / f".spec-{os.getpid()}.json"
                spec_path.write_text(json.dumps(spec))
                env = {**os.environ, "OMP_NUM_THREADS": str(dev["threads"]), "PYTHONPATH": str(ROOT)}
                l0 = os.getloadavg()[0]
                res = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                                      str(spec_path)], capture_output=True, text=True, env=env, check=False)
                l1 = os.getloadavg()[0]
                if res.returncode != 0:
                    lock_cm.__exit__(None, None, None)
                    raise RuntimeError(f"timing worker for {d} batch {b} failed:\n{res.stderr[-3000:]}")
                rec = json.loads(res.stdout)
                rec.update({"device": d, "batch": b, "process": p, "load1": [min(l0, l1), max(l0, l1)],
                            "finished_at": time.time(), "export_s_per_subnet": export_s,
                            "schedule": args.schedule})
                with open(state_path, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                spec_path.unlink(missing_ok=True)
                if k % args.processes == 0 or k == len(todo_jobs):
                    print(f"[{d}] {k}/{len(todo_jobs)} timing processes done", flush=True)
                    write_results()
            lock_cm.__exit__(None, None, None)
        write_results()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
