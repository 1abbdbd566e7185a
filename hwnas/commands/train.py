"""Training entry point for ``torchrun`` (every rank runs this module; `hwnas train` is the interactive CLI).

    torchrun --standalone --nproc_per_node=2 -m hwnas.commands.train --config run.toml --out runs/ddp

The process group comes from torchrun's environment (`supernet.distributed.init_from_env`); rank 0 shows a
progress bar when stdout is a terminal.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

import torch.distributed as dist

from hwnas.progress import console_progress
from supernet.config_file import load_train_config
from supernet.distributed import init_from_env
from supernet.train import TrainConfig, train_supernet

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``torchrun ... -m hwnas.commands.train --config run.toml --out DIR``."""
    ap = argparse.ArgumentParser(prog="python -m hwnas.commands.train", description=main.__doc__)
    ap.add_argument("--config", help="TOML run file (see docs/training.md); default: TrainConfig defaults")
    ap.add_argument("--out", required=True, help="run folder (shared by all ranks)")
    ap.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    env = init_from_env()
    try:
        config = load_train_config(args.config) if args.config else TrainConfig()
        with console_progress(env.is_main and os.isatty(1)) as bars:
            train_supernet(config, out_dir=args.out, progress=bars, stop_after_steps=args.stop_after_steps,
                           dist_env=env)
    finally:
        if env.distributed and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through torchrun in tests
    raise SystemExit(main())
