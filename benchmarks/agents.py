"""Device-agents benchmark: simulated scenarios, decision time, live run. Writes benchmarks/results/agents.json and
agents.md. The logic lives in `device_agents.benchmark`; see its docstring for the protocol.

    python benchmarks/agents.py [--quick] [--no-live] [--bundle DIR] [--out benchmarks/results] [--work DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

# Run as a script, this folder is sys.path[0] and benchmarks/supernet.py would shadow the supernet package:
# the repository root takes its place (helpers here are imported as ``benchmarks.<module>``). Same lines in
# every script.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path
                             if Path(p or ".").resolve() not in (ROOT, ROOT / "benchmarks")]

from benchmarks.portable_paths import portable_paths
from supernet.io import atomic_write_json, atomic_write_text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 seed x 150 s traces, fewer timings, a short live run")
    ap.add_argument("--no-live", action="store_true", help="skip the live run")
    ap.add_argument("--bundle", default=None, help="a ladder bundle (hwnas bundle --from-search): simulation on its "
                    "measured variants and a live run with the offload server killed mid-run; any other bundle: the "
                    "live run only (default: example architectures)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "hwnas-agents-bench"),
                    help="scratch folder for the exported example bundle (~130 MB; reused between runs)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from device_agents.benchmark import render_markdown, run_benchmark

    out = Path(args.out)
    bundle = args.bundle

    def server_command(port: int) -> list[str]:
        return [sys.executable, "-c", "from hwnas.cli import main; main()", "serve-model", "--bundle", str(bundle),
                "--port", str(port)]

    result = run_benchmark(args.work, quick=args.quick, bundle_dir=bundle, live=not args.no_live,
                           progress=lambda m: print(m, file=sys.stderr, flush=True),
                           server_command=server_command if bundle else None)
    result = portable_paths(result, work=args.work, results=out)
    atomic_write_json(out / "agents.json", result)
    atomic_write_text(out / "agents.md", render_markdown(result))
    print(render_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
