"""Supernet training: a declared phase schedule, knowledge distillation, exact checkpoint/resume.

Loss per sampled subnet s on a batch (x, y), with teacher logits z_t from the frozen full network:
    L = CE_ls(z_s, y) + lambda * T^2 * KL( softmax(z_t / T) || softmax(z_s / T) )
(CE with label smoothing; T = temperature, lambda = kd_ratio; OFA uses lambda = 1). Gradients of all subnets
sampled in a step are accumulated before one optimizer step.

Determinism: every random choice of step ``i`` of epoch ``e`` in phase ``p`` comes from generators seeded by
``(seed, p, e[, i])`` - data order and augmentation from a torch.Generator per epoch, subnet sampling and
dropout per step - so a run resumed from any checkpoint reaches exactly the weights of an uninterrupted run.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from supernet.data import DataSplits, iterate_batches, load_dataset, num_batches, resize_batch
from supernet.evaluate import evaluate
from supernet.io import atomic_open, atomic_write_json
from supernet.layers import Backbone
from supernet.model import OFASupernet
from supernet.space import ArchConfig, SearchSpace, get_space

__all__ = [
    "Phase",
    "TrainConfig",
    "TrainResult",
    "distillation_losses",
    "get_schedule",
    "list_schedules",
    "load_supernet",
    "sample_phase_subnet",
    "save_supernet",
    "train_supernet",
]

log = logging.getLogger(__name__)
CHECKPOINT_VERSION = 1


# --------------------------------------------------------------------------- schedule
@dataclass(frozen=True)
class Phase:
    """One phase of a training schedule.

    ``kernels``/``depths``/``expands`` are the choices sampled in this phase; ``None`` keeps that dimension at
    its largest value. ``epochs_frac`` scales with the run's epoch budget (see `TrainConfig.epochs`).
    """

    name: str
    epochs_frac: float
    lr: float
    kernels: tuple[int, ...] | None = None
    depths: tuple[int, ...] | None = None
    expands: tuple[int, ...] | None = None
    elastic_resolution: bool = True
    subnets_per_step: int = 1
    sandwich: bool = False  # always include the largest and smallest subnet of the phase
    distill: bool = True  # needs a teacher: the network at the end of the first phase
    sort_channels: bool = False  # importance-sort expanded channels before the phase starts

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _progressive_shrinking(space: SearchSpace) -> tuple[Phase, ...]:
    ks, ds, es = space.kernel_choices, space.depth_choices, space.expand_choices
    big_d = tuple(d for d in ds if d >= sorted(ds)[len(ds) // 2])  # e.g. {3, 4}
    big_e = tuple(e for e in es if e >= sorted(es)[len(es) // 2])  # e.g. {4, 6}
    return (
        Phase("full", 0.25, 0.1, distill=False),
        Phase("kernel", 0.15, 0.05, kernels=ks),
        Phase("depth-1", 0.1, 0.03, kernels=ks, depths=big_d, subnets_per_step=2),
        Phase("depth-2", 0.15, 0.03, kernels=ks, depths=ds, subnets_per_step=2),
        Phase("expand-1", 0.1, 0.03, kernels=ks, depths=ds, expands=big_e, subnets_per_step=2, sort_channels=True),
        Phase("expand-2", 0.25, 0.03, kernels=ks, depths=ds, expands=es, subnets_per_step=2, sort_channels=True),
    )


def _demo(space: SearchSpace) -> tuple[Phase, ...]:
    """Two phases: the full network, then everything elastic with the sandwich rule and KD (fast on CPU)."""
    return (
        Phase("full", 0.4, 0.1, distill=False),
        Phase(
            "elastic", 0.6, 0.05, kernels=space.kernel_choices, depths=space.depth_choices,
            expands=space.expand_choices, subnets_per_step=3, sandwich=True, sort_channels=True,
        ),
    )


_SCHEDULES: dict[str, Callable[[SearchSpace], tuple[Phase, ...]]] = {
    "progressive-shrinking": _progressive_shrinking,
    "demo": _demo,
}


def list_schedules() -> list[str]:
    return sorted(_SCHEDULES)


def get_schedule(name: str, space: SearchSpace) -> tuple[Phase, ...]:
    try:
        return _SCHEDULES[name](space)
    except KeyError:
        raise KeyError(f"unknown training schedule {name!r}; known: {list_schedules()}") from None


def phase_epochs(phases: Sequence[Phase], total_epochs: int) -> list[int]:
    """Split ``total_epochs`` over phases by ``epochs_frac`` (largest remainder; each phase >= 1 epoch)."""
    fr = np.array([p.epochs_frac for p in phases], dtype=float)
    raw = fr / fr.sum() * total_epochs
    out = np.maximum(1, np.floor(raw)).astype(int)
    while out.sum() < total_epochs:
        out[int(np.argmax(raw - out))] += 1
    return [int(x) for x in out]


def sample_phase_subnet(space: SearchSpace, phase: Phase, rng: np.random.Generator, *, resolution: int) -> ArchConfig:
    """A random subnet in the part of the space this phase trains (other dimensions at their maximum)."""
    ch = lambda choices, default: int(rng.choice(choices)) if choices else default  # noqa: E731
    depths = tuple(ch(phase.depths, space.max_depth) for _ in range(space.n_stages))
    ks = tuple(ch(phase.kernels, max(space.kernel_choices)) for _ in range(space.n_slots))
    es = tuple(ch(phase.expands, max(space.expand_choices)) for _ in range(space.n_slots))
    return space.canonical(ArchConfig(resolution, depths, ks, es))


def _phase_extreme(space: SearchSpace, phase: Phase, *, resolution: int, largest: bool) -> ArchConfig:
    pick = max if largest else min
    return space.uniform(
        depth=pick(phase.depths) if phase.depths else space.max_depth,
        kernel=pick(phase.kernels) if phase.kernels else max(space.kernel_choices),
        expand=pick(phase.expands) if phase.expands else max(space.expand_choices),
        resolution=resolution,
    )


# --------------------------------------------------------------------------- losses
def kl_distillation(student: torch.Tensor, teacher: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher/T) || softmax(student/T)), batch mean (Hinton et al. 2015)."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True, reduction="batchmean"
    ) * (t * t)


distillation_losses: dict[str, Callable[..., torch.Tensor]] = {"kl": kl_distillation}


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (written beside its results as ``train_config.json``)."""

    dataset: str = "mnist"
    data_root: str | None = None
    space: str = "mnist"
    width_mult: float = 0.5
    schedule: str = "demo"
    epochs: int = 6
    batch_size: int = 32
    max_train_images: int | None = None
    momentum: float = 0.9
    weight_decay: float = 3e-5
    label_smoothing: float = 0.0
    kd_loss: str = "kl"
    kd_ratio: float = 1.0
    kd_temperature: float = 1.0
    warmup_steps: int = 5
    checkpoint_every_steps: int = 50
    eval_bn_images: int = 500
    threads: int = 1  # torch intra-op threads; >1 can be 30x *slower* on an oversubscribed shared VM
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"TrainConfig.epochs: expected >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"TrainConfig.batch_size: expected >= 2 (BatchNorm), got {self.batch_size}")
        if self.kd_loss not in distillation_losses:
            raise ValueError(f"TrainConfig.kd_loss {self.kd_loss!r}: known {sorted(distillation_losses)}")
        if self.threads < 1:
            raise ValueError(f"TrainConfig.threads: expected >= 1, got {self.threads}")
        if self.kd_temperature <= 0:
            raise ValueError("TrainConfig.kd_temperature must be > 0")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TrainConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"training config: unknown field(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        return cls(**d)


@dataclass
class PhaseSummary:
    name: str
    epochs: int
    steps: int
    images_per_s: float
    mean_loss: float
    val_top1_largest: float
    val_top1_smallest: float


@dataclass
class TrainResult:
    out_dir: str
    supernet_path: str
    phases: list[PhaseSummary] = field(default_factory=list)
    wall_time_s: float = 0.0
    resumed_from_step: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir,
            "supernet_path": self.supernet_path,
            "phases": [asdict(p) for p in self.phases],
            "wall_time_s": self.wall_time_s,
            "resumed_from_step": self.resumed_from_step,
        }


# --------------------------------------------------------------------------- persistence
def save_supernet(net: OFASupernet, path: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Write config + weights (loadable with ``weights_only=True``), atomically."""
    payload = {"config": json.dumps(net.config()), "state_dict": net.state_dict(), "extra": json.dumps(extra or {})}
    with atomic_open(path, "wb") as fh:
        torch.save(payload, fh)
    return Path(path)


def load_supernet(path: str | Path) -> OFASupernet:
    """Load a supernet written by `save_supernet`; only tensors and strings are unpickled (weights_only)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"supernet file {str(p)!r} does not exist (train one with 'hwnas train')")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means "not our file"
        raise ValueError(f"supernet file {str(p)!r} could not be read as an hwnas supernet: {e}") from None
    if not isinstance(payload, dict) or "config" not in payload or "state_dict" not in payload:
        raise ValueError(f"supernet file {str(p)!r}: expected keys 'config' and 'state_dict'")
    net = OFASupernet.build_from_config(json.loads(payload["config"]))
    net.load_state_dict(payload["state_dict"])
    return net.eval()


def _rng_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


# --------------------------------------------------------------------------- training
def _lr_at(phase: Phase, step: int, total_steps: int, warmup: int) -> float:
    if step < warmup:
        return phase.lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total_steps - warmup)
    return 0.5 * phase.lr * (1 + math.cos(math.pi * min(1.0, t)))


def train_supernet(
    config: TrainConfig,
    *,
    out_dir: str | Path,
    data: DataSplits | None = None,
    progress: bool = True,
    resume: bool = True,
    stop_after_steps: int | None = None,
) -> TrainResult:
    """Train an OFA supernet per ``config``; checkpoints under ``out_dir`` and resumes from them.

    Writes ``out_dir/checkpoint.pt`` (every ``checkpoint_every_steps`` and at each epoch end),
    ``out_dir/supernet.pt`` (final), ``train_config.json`` and ``train_log.json``. Re-running the same call
    after a kill continues from the last checkpoint. ``stop_after_steps`` ends the run early (for tests of
    resume), leaving a checkpoint.
    """
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(config, out_dir=out_dir, data=data, progress=progress, resume=resume,
                      stop_after_steps=stop_after_steps)
    finally:
        torch.set_num_threads(prev_threads)


def _train(
    config: TrainConfig,
    *,
    out_dir: str | Path,
    data: DataSplits | None,
    progress: bool,
    resume: bool,
    stop_after_steps: int | None,
) -> TrainResult:
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    space = get_space(config.space)
    if data is None:
        data = load_dataset(config.dataset, root=config.data_root, seed=config.seed, max_train=config.max_train_images)
    backbone = Backbone(in_channels=data.in_channels, num_classes=data.num_classes, width_mult=config.width_mult)
    torch.manual_seed(_rng_seed(config.seed, 999))
    net = OFASupernet(space=space, backbone=backbone)
    phases = get_schedule(config.schedule, space)
    epochs_per_phase = phase_epochs(phases, config.epochs)
    steps_per_epoch = num_batches(len(data.train), batch_size=config.batch_size, drop_last=True)
    opt = torch.optim.SGD(
        net.parameters(), lr=phases[0].lr, momentum=config.momentum, nesterov=True,
        weight_decay=config.weight_decay,
    )
    ckpt_path = out / "checkpoint.pt"
    cfg_json = config.to_json()
    atomic_write_json(out / "train_config.json", {**cfg_json, "phases": [p.to_json() for p in phases],
                                                   "epochs_per_phase": epochs_per_phase})

    teacher: OFASupernet | None = None
    start = (0, 0, 0)  # phase, epoch, step
    summaries: list[PhaseSummary] = []
    global_step = 0
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        saved_cfg = json.loads(ck["train_config"])
        if saved_cfg != cfg_json:
            diff = {k: (saved_cfg.get(k), cfg_json.get(k)) for k in cfg_json if saved_cfg.get(k) != cfg_json.get(k)}
            raise ValueError(
                f"checkpoint {str(ckpt_path)!r} was written with a different training config {diff}; "
                "use another --out directory or --no-resume"
            )
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if ck["teacher"] is not None:
            teacher = copy.deepcopy(net)
            teacher.load_state_dict(ck["teacher"])
            teacher.eval().requires_grad_(False)
        start = (int(ck["phase"]), int(ck["epoch"]), int(ck["step"]))
        global_step = int(ck["global_step"])
        summaries = [PhaseSummary(**s) for s in json.loads(ck["summaries"])]
        log.info("resuming from %s at phase %d epoch %d step %d", ckpt_path, *start)
    resumed_from = global_step

    def save_checkpoint(p: int, e: int, s: int) -> None:
        payload = {
            "version": CHECKPOINT_VERSION,
            "train_config": json.dumps(cfg_json),
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "teacher": None if teacher is None else teacher.state_dict(),
            "phase": p, "epoch": e, "step": s, "global_step": global_step,
            "summaries": json.dumps([asdict(x) for x in summaries]),
        }
        with atomic_open(ckpt_path, "wb") as fh:
            torch.save(payload, fh)

    kd_fn = distillation_losses[config.kd_loss]
    progress_ctx = _progress(progress)
    with progress_ctx as bar:
        for p_idx, phase in enumerate(phases):
            if p_idx < start[0]:
                continue
            n_epochs = epochs_per_phase[p_idx]
            total_steps = n_epochs * steps_per_epoch
            first_epoch = start[1] if p_idx == start[0] else 0
            if p_idx != start[0] or (start[1], start[2]) == (0, 0):
                # phase start (not a mid-phase resume)
                if phase.distill and teacher is None:
                    teacher = copy.deepcopy(net).eval().requires_grad_(False)
                if phase.sort_channels:
                    net.sort_channels()
                # the momentum buffers belong to the old channel order; restart them with the phase
                opt.state.clear()
            task = bar.add_task(f"{phase.name}", total=total_steps, completed=first_epoch * steps_per_epoch,
                                info="") if bar else None
            t_phase, imgs, loss_sum, loss_n = time.perf_counter(), 0, 0.0, 0
            for epoch in range(first_epoch, n_epochs):
                first_step = start[2] if (p_idx, epoch) == start[:2] else 0
                g = torch.Generator().manual_seed(_rng_seed(config.seed, p_idx, epoch))
                batches = iterate_batches(
                    data.train, batch_size=config.batch_size, mean=data.mean, std=data.std, generator=g,
                    augment=True, hflip=data.hflip, drop_last=True,
                )
                net.train()
                for step, (x, y) in enumerate(batches):
                    if step < first_step:
                        continue
                    rng = np.random.default_rng(_rng_seed(config.seed, p_idx, epoch, step))
                    torch.manual_seed(_rng_seed(config.seed, p_idx, epoch, step, 1))
                    res = int(rng.choice(space.resolutions)) if phase.elastic_resolution else max(space.resolutions)
                    xr = resize_batch(x, res)
                    cfgs = _step_subnets(space, phase, rng, res)
                    lr = _lr_at(phase, epoch * steps_per_epoch + step, total_steps, config.warmup_steps)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    t_logits = None
                    if phase.distill and teacher is not None and config.kd_ratio > 0:
                        with torch.no_grad(), teacher.activate(space.largest(resolution=res)):
                            t_logits = teacher(xr)
                    opt.zero_grad(set_to_none=True)
                    step_loss = 0.0
                    for cfg in cfgs:
                        with net.activate(cfg):
                            logits = net(xr)
                        loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                        if t_logits is not None:
                            loss = loss + config.kd_ratio * kd_fn(logits, t_logits, temperature=config.kd_temperature)
                        loss.backward()
                        step_loss += float(loss.detach())
                    opt.step()
                    global_step += 1
                    imgs += x.shape[0]
                    loss_sum += step_loss / len(cfgs)
                    loss_n += 1
                    if bar is not None and task is not None:
                        rate = imgs / max(1e-9, time.perf_counter() - t_phase)
                        bar.update(task, advance=1, info=f"loss {loss_sum / loss_n:.3f}  {rate:.0f} img/s")
                    if stop_after_steps is not None and global_step - resumed_from >= stop_after_steps:
                        save_checkpoint(p_idx, epoch, step + 1)
                        return TrainResult(str(out), "", summaries, time.perf_counter() - t_start, resumed_from)
                    if config.checkpoint_every_steps and global_step % config.checkpoint_every_steps == 0:
                        save_checkpoint(p_idx, epoch, step + 1)
                if epoch + 1 < n_epochs:
                    save_checkpoint(p_idx, epoch + 1, 0)
            # phase summary: BN-recalibrated val accuracy of the phase's extremes
            res_max = max(space.resolutions)
            big = evaluate(net, _phase_extreme(space, phase, resolution=res_max, largest=True), data,
                           bn_images=config.eval_bn_images, seed=config.seed)
            small = evaluate(net, _phase_extreme(space, phase, resolution=min(space.resolutions), largest=False),
                             data, bn_images=config.eval_bn_images, seed=config.seed)
            elapsed = time.perf_counter() - t_phase
            summaries.append(
                PhaseSummary(phase.name, n_epochs, loss_n, imgs / max(elapsed, 1e-9),
                             loss_sum / max(1, loss_n), big.top1, small.top1)
            )
            if bar is not None and task is not None:
                bar.update(task, info=f"val top-1 largest {big.top1:.3f} / smallest {small.top1:.3f}")
            save_checkpoint(p_idx + 1, 0, 0)
    final = save_supernet(net, out / "supernet.pt", extra={"train_config": cfg_json})
    result = TrainResult(str(out), str(final), summaries, time.perf_counter() - t_start, resumed_from)
    atomic_write_json(out / "train_log.json", result.to_json())
    return result


def _step_subnets(space: SearchSpace, phase: Phase, rng: np.random.Generator, res: int) -> list[ArchConfig]:
    n = phase.subnets_per_step
    if phase.sandwich:
        cfgs = [
            _phase_extreme(space, phase, resolution=res, largest=True),
            _phase_extreme(space, phase, resolution=res, largest=False),
        ]
        cfgs += [sample_phase_subnet(space, phase, rng, resolution=res) for _ in range(max(0, n - 2))]
        return cfgs
    return [sample_phase_subnet(space, phase, rng, resolution=res) for _ in range(n)]


class _NullProgress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _progress(enabled: bool) -> Any:
    if not enabled:
        return _NullProgress()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]train[/] {task.description:<9}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
    )

