"""How long litert-torch takes to convert one-layer ofa-mbv3 models, and whether a faster route gives the same model.

Routes, interleaved per layer (so a swing of the shared machine hits all alike), each checked against torch on one
seeded input (max |diff| of the outputs):

* ``default``: ``litert_torch.convert(module, args)`` then ``export`` (what `supernet.export.export_tflite` does);
* ``lightweight``: the same with ``lightweight_conversion=True``;
* ``multi-signature``: all layers of a batch in one converter call, one signature per layer
  (``litert_torch.signature(name, module, args)...convert()``); time per layer = the call's time / layers.

Writes ``benchmarks/results/litert-conversion.json``. Run under the bench lock: ``flock /work/coord/bench.lock
python benchmarks/litert_conversion.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _run_tflite(path: str, x: np.ndarray, signature: str | None = None) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path, num_threads=1)
    if signature is not None:
        runner = it.get_signature_runner(signature)
        out = runner(**{runner.get_input_details().popitem()[0]: x})
        return np.asarray(next(iter(out.values())))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return np.asarray(it.get_tensor(it.get_output_details()[0]["index"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=8, help="layers (spread over the space's layer list)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/litert-conversion.json")
    a = ap.parse_args(argv)
    import litert_torch
    import torch

    from latency_tables.environment import machine_environment
    from latency_tables.table import enumerate_layers
    from supernet.io import atomic_write_json
    from supernet.layers import Backbone, build_layer
    from supernet.space import get_space

    torch.set_num_threads(1)
    specs = enumerate_layers(get_space("ofa-mbv3"), Backbone())
    pick = [specs[i] for i in np.linspace(0, len(specs) - 1, a.n).astype(int)]
    rows: list[dict[str, Any]] = []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mods = []
        for i, s in enumerate(pick):
            torch.manual_seed(0)
            m = build_layer(s).eval()
            x = torch.from_numpy(np.random.default_rng(i).standard_normal((1, s.in_ch, s.in_hw, s.in_hw)).astype(np.float32))
            with torch.no_grad():
                ref = m(x).numpy()
            mods.append((s, m, x, ref))
        for i, (s, m, x, ref) in enumerate(mods):
            row: dict[str, Any] = {"layer": s.key}
            for route, kw in (("default", {}), ("lightweight", {"lightweight_conversion": True})):
                p = f"{tmp}/{route}-{i}.tflite"
                t0 = time.perf_counter()
                litert_torch.convert(m, (x,), **kw).export(p)
                row[f"{route}_s"] = time.perf_counter() - t0
                row[f"{route}_max_abs_diff"] = float(np.abs(_run_tflite(p, x.numpy()) - ref).max())
            rows.append(row)
        t0 = time.perf_counter()
        conv: Any = None
        for i, (_s, m, x, _ref) in enumerate(mods):
            conv = (litert_torch.signature if conv is None else conv.signature)(f"l{i}", m, (x,))
        p = f"{tmp}/multi.tflite"
        conv.convert().export(p)
        multi_s = time.perf_counter() - t0
        multi_diff = []
        for i, (_s, _m, x, ref) in enumerate(mods):
            try:
                multi_diff.append(float(np.abs(_run_tflite(p, x.numpy(), signature=f"l{i}") - ref).max()))
            except Exception as e:  # noqa: BLE001 - reported, not fatal: the route is an experiment
                multi_diff.append(f"{type(e).__name__}: {e}")  # type: ignore[arg-type]
    res = {
        "what": "litert-torch conversion time per one-layer ofa-mbv3 model (w1.0), three routes, interleaved",
        "machine": machine_environment(), "load1_start": load0, "load1_end": os.getloadavg()[0],
        "litert_torch": getattr(litert_torch, "__version__", None) or __import__("importlib.metadata").metadata.version("litert-torch"),
        "torch": torch.__version__, "layers": rows,
        "default_s_median": float(np.median([r["default_s"] for r in rows])),
        "lightweight_s_median": float(np.median([r["lightweight_s"] for r in rows])),
        "multi_signature_s_per_layer": multi_s / len(mods), "multi_signature_max_abs_diff": multi_diff,
    }
    atomic_write_json(a.out, res)
    print(json.dumps({k: v for k, v in res.items() if k not in ("layers", "machine")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
