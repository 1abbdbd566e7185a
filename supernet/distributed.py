"""Data-parallel supernet training under ``torchrun``: process group from the environment, gradient all-reduce.

Design (why not ``DistributedDataParallel``): a supernet step runs 1-4 *different* subnets on the same batch
and accumulates their gradients before one optimizer step. DDP would need ``find_unused_parameters=True``
(a graph walk after every backward to find the parameters a subnet skipped), would all-reduce once per
subnet unless every backward but the last ran under ``no_sync()``, and only sees forwards that go through its
wrapper (the supernet is driven through ``activate(cfg)`` and ``forward_features``). Instead every rank runs
the step on its shard and then `allreduce_gradients` averages all gradients in one flat bucket, once per
step. That is correct because the subnets of a step are drawn from generators seeded by
``(seed, phase, epoch, step)`` only, so every rank trains the same subnets and has gradients for the same
parameters (a parameter no subnet touched has ``grad is None`` on every rank and is skipped by the optimizer,
as in a single-process run). With equal-sized shards (`supernet.data.iterate_batches`) the average of the
per-rank mean losses' gradients is the gradient of the global-batch mean.

BatchNorm statistics are per rank during a step (as in OFA, no SyncBN); `average_buffers` averages the
running statistics across ranks before every checkpoint, so what is saved, and what every rank continues
with, is identical. Evaluation re-estimates BN statistics anyway (`supernet.evaluate`).

Launch: ``torchrun --nproc_per_node=N -m hwnas.commands.train --config run.toml --out DIR`` (see
docs/training.md for multi-node). Backend: NCCL when CUDA is available, else gloo.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistEnv",
    "allreduce_gradients",
    "average_buffers",
    "gather_objects",
    "init_from_env",
    "state_digest",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DistEnv:
    """Where this process sits in the job. ``world_size == 1`` means a plain single-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = "none"

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")


def init_from_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """Read torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; join the process group when WORLD_SIZE > 1.

    Idempotent: an already initialised default group is reused. Without those variables (or with
    WORLD_SIZE=1) nothing is initialised and a single-process `DistEnv` is returned.
    """
    env = os.environ if environ is None else environ
    world_size = int(env.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistEnv()
    rank, local_rank = int(env["RANK"]), int(env.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    else:
        backend = str(dist.get_backend())
    if dist.get_world_size() != world_size or dist.get_rank() != rank:
        raise RuntimeError(
            f"process group (rank {dist.get_rank()} of {dist.get_world_size()}) does not match the environment "
            f"(RANK={rank}, WORLD_SIZE={world_size})"
        )
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend)


def allreduce_gradients(params: Iterable[nn.Parameter], env: DistEnv) -> None:
    """Average ``p.grad`` over ranks for every parameter that has one, in a single flat all-reduce.

    Every rank must have gradients for the same parameters (same subnets per step); the count is checked
    cheaply through the bucket size, since a mismatch would otherwise corrupt the weights silently.
    """
    if not env.distributed:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    size = torch.tensor([flat.numel()], dtype=torch.int64, device=flat.device)
    sizes = [torch.zeros_like(size) for _ in range(env.world_size)]
    dist.all_gather(sizes, size)
    if len({int(s) for s in sizes}) != 1:
        raise RuntimeError(
            f"ranks have gradients of different total size {[int(s) for s in sizes]}: they trained different "
            "subnets in the same step (subnet sampling must depend only on seed, phase, epoch and step)"
        )
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= env.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


@torch.no_grad()
def average_buffers(module: nn.Module, env: DistEnv) -> None:
    """Average floating-point buffers (BN running mean/var) over ranks; integer buffers must already agree."""
    if not env.distributed:
        return
    bufs = [b for b in module.buffers() if b.is_floating_point()]
    if not bufs:
        return
    flat = torch.cat([b.reshape(-1) for b in bufs])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= env.world_size
    offset = 0
    for b in bufs:
        n = b.numel()
        b.copy_(flat[offset : offset + n].view_as(b))
        offset += n


def gather_objects(value: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``value`` (picklable, small), in rank order; ``[value]`` in a single-process run."""
    if not env.distributed:
        return [value]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, value)
    return out


def state_digest(module: nn.Module) -> str:
    """sha256 over the names, shapes and bytes of ``module.state_dict()`` (weights and buffers)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
