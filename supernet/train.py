"""Supernet training: declared phase schedules (recipes), knowledge distillation, exact checkpoint/resume, DDP.

Recipes (`RECIPES`; a recipe is a schedule plus a distillation loss):

``progressive-shrinking`` (OFA, Cai et al. 2020)
    full network -> elastic kernel -> elastic depth (2 sub-phases) -> elastic expand (2 sub-phases); every
    phase after the first distils from the frozen full network of phase 1:
    L = CE(z_s, y) + lambda * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)).
``bignas`` (BigNAS, Yu et al. 2020, with AlphaNet's loss, Wang et al. 2021)
    every dimension elastic from the start; each step trains the largest, the smallest and two random
    subnets (sandwich rule); in-place distillation: the largest learns from the labels, the others from the
    largest's logits of the same step (detached) through the adaptive alpha-divergence.
``one-stage``
    the ablation of progressive shrinking: every dimension elastic from the start, random subnets, labels
    only (there is no trained full network to distil from).

Gradients of all subnets sampled in a step are accumulated before one optimizer step.

Determinism: every random choice of step ``i`` of epoch ``e`` in phase ``p`` comes from generators seeded by
``(seed, p, e[, i])`` - data order and augmentation from a torch.Generator per epoch, subnet sampling and
dropout per step - so a run resumed from any checkpoint reaches exactly the weights of an uninterrupted run,
and all ranks of a distributed run (`supernet.distributed`) train the same subnets in every step.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from supernet.data import DataSplits, iterate_batches, load_dataset, num_batches, resize_batch
from supernet.distributed import (
    DistEnv,
    allreduce_gradients,
    average_buffers,
    gather_objects,
    init_from_env,
    state_digest,
)
from supernet.errors import InputError
from supernet.evaluate import evaluate
from supernet.io import atomic_torch_save, atomic_write_json, json_safe, missing_file_message
from supernet.layers import Backbone
from supernet.losses import check_options, distillation_losses, feature_losses, kl_distillation
from supernet.model import OFASupernet
from supernet.progress import ProgressArg, Tasks
from supernet.registry import Registry, UnknownNameError
from supernet.space import ArchConfig, SearchSpace, get_space

__all__ = [
    "DEFAULT_RECIPE",
    "RECIPES",
    "SCHEDULES",
    "Phase",
    "TrainConfig",
    "TrainResult",
    "distillation_losses",
    "feature_losses",
    "get_schedule",
    "kl_distillation",
    "list_schedules",
    "load_supernet",
    "load_supernet_and_data",
    "phase_epochs",
    "sample_phase_subnet",
    "save_supernet",
    "train_supernet",
]

log = logging.getLogger(__name__)
CHECKPOINT_VERSION = 1


# --------------------------------------------------------------------------- schedule
@dataclass(frozen=True, kw_only=True)
class Phase:
    """One phase of a training schedule.

    ``kernels``/``depths``/``expands`` are the choices sampled in this phase; ``None`` keeps that dimension at
    its largest value. ``epochs_frac`` is the phase's share of the run's epoch budget (`TrainConfig.epochs`;
    shares are normalised, so absolute epoch counts work too). ``lr`` is the peak learning rate of the
    phase's cosine schedule; ``warmup`` ramps it up over `TrainConfig.warmup_steps` first.

    Distillation: ``distill`` uses the frozen network at the end of the first phase as the teacher;
    ``inplace_distill`` (needs ``sandwich``) uses the largest subnet of the same step instead - the largest
    learns from labels, the others only from its detached logits. ``sort_channels`` importance-sorts the
    expanded channels before the phase, keeping the channel sets of expand ratios trained earlier.
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
    distill: bool = True
    inplace_distill: bool = False
    sort_channels: bool = False
    warmup: bool = True
    arch: str | None = None  # train exactly this subnet (string form; its resolution is ignored)

    def __post_init__(self) -> None:
        for name in ("kernels", "depths", "expands"):
            v = getattr(self, name)
            if v is not None:
                v = tuple(int(c) for c in v)
                if not v:
                    raise InputError(f"Phase {self.name!r}: {name} must be null or a non-empty list")
                object.__setattr__(self, name, v)
        if not (math.isfinite(self.epochs_frac) and self.epochs_frac > 0):
            raise InputError(f"Phase {self.name!r}: epochs_frac must be a finite number > 0, got {self.epochs_frac}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"Phase {self.name!r}: lr must be a finite number > 0, got {self.lr}")
        if self.subnets_per_step < 1:
            raise InputError(f"Phase {self.name!r}: subnets_per_step must be >= 1, got {self.subnets_per_step}")
        if self.sandwich and self.subnets_per_step < 2:
            raise InputError(f"Phase {self.name!r}: sandwich needs subnets_per_step >= 2 (largest and smallest)")
        if self.inplace_distill and not self.sandwich:
            raise InputError(f"Phase {self.name!r}: inplace_distill needs sandwich (the largest is the teacher)")
        if self.inplace_distill and self.distill:
            raise InputError(f"Phase {self.name!r}: choose distill (frozen teacher) or inplace_distill, not both")

    def check_space(self, space: SearchSpace) -> None:
        """Raise ValueError naming the field if a choice of this phase is not in ``space``."""
        if self.arch is not None:
            if any(getattr(self, n) is not None for n in ("kernels", "depths", "expands")) or self.sandwich:
                raise InputError(f"Phase {self.name!r}: arch fixes the subnet; drop kernels/depths/expands/sandwich")
            space.parse(self.arch)
        for name, allowed in (("kernels", space.kernel_choices), ("depths", space.depth_choices),
                              ("expands", space.expand_choices)):
            bad = sorted(set(getattr(self, name) or ()) - set(allowed))
            if bad:
                raise InputError(f"Phase {self.name!r}: {name} {bad} not in space {space.name!r} ({list(allowed)})")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Phase:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"phase: unknown field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


# (field, flag, lower bound, lower inclusive, upper bound, upper inclusive) of every float of a TrainConfig
_FLOAT_RANGES: tuple[tuple[str, str, float, bool, float, bool], ...] = (
    ("width_mult", "--width-mult", 0.0, False, 4.0, True),
    ("momentum", "momentum", 0.0, True, 1.0, False),
    ("weight_decay", "weight_decay", 0.0, True, 1.0, True),
    ("label_smoothing", "label_smoothing", 0.0, True, 1.0, False),
    ("kd_ratio", "--kd-ratio", 0.0, True, 1e6, True),
    ("kd_temperature", "--kd-temperature", 0.0, False, 1e6, True),
    ("feature_ratio", "feature_ratio", 0.0, True, 1e6, True),
)


def _check_floats(cfg: TrainConfig) -> None:
    """Every float of the config finite and in range (NaN/inf would train a NaN supernet, and NaN is not JSON)."""
    for name, flag, lo, lo_in, hi, hi_in in _FLOAT_RANGES:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"{_label(name, flag)}: expected a number, got {v!r}")
        ok = math.isfinite(v) and (v >= lo if lo_in else v > lo) and (v <= hi if hi_in else v < hi)
        if not ok:
            rng = f"{'[' if lo_in else '('}{lo:g}, {hi:g}{']' if hi_in else ')'}"
            raise InputError(f"{_label(name, flag)}: expected a finite number in {rng}, got {v}")
    for k, v in cfg.kd_options.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise InputError(f"kd_options.{k}: expected a finite number, got {v}")


def _label(name: str, flag: str) -> str:
    return flag if flag == name else f"{flag} ({name} in a run file)"


class NonFiniteLossError(InputError):
    """Training diverged: a loss (or the weights) became NaN/inf. The last checkpoint written before is kept."""


def _progressive_shrinking(space: SearchSpace) -> tuple[Phase, ...]:
    """OFA's order and structure, sized for the embedded dataset.

    OFA (ImageNet): teacher 180 epochs; kernel 120 epochs, lr 3e-2, 1 subnet/step; depth 25 + 120 epochs,
    lr 2.5e-3 / 7.5e-3, 2 subnets/step; expand 25 + 120 epochs, lr 2.5e-3 / 7.5e-3, 4 subnets/step; no warm-up
    in the short first sub-phases. Here: the same order, subnets per step, sub-phase lr ratio (1 : 3) and
    warm-up pattern; epoch shares roughly OFA's (0.3 / 0.2 / 0.05 / 0.2 / 0.05 / 0.2) and larger learning
    rates, because a run is a few epochs, not hundreds.
    """
    ks, ds, es = space.kernel_choices, space.depth_choices, space.expand_choices
    big_d = tuple(d for d in ds if d >= sorted(ds)[len(ds) // 2])  # e.g. {3, 4}
    big_e = tuple(e for e in es if e >= sorted(es)[len(es) // 2])  # e.g. {4, 6}
    return (
        Phase(name="full", epochs_frac=0.3, lr=0.1, distill=False),
        Phase(name="kernel", epochs_frac=0.2, lr=0.03, kernels=ks),
        Phase(name="depth-1", epochs_frac=0.05, lr=0.01, kernels=ks, depths=big_d, subnets_per_step=2,
              warmup=False),
        Phase(name="depth-2", epochs_frac=0.2, lr=0.03, kernels=ks, depths=ds, subnets_per_step=2),
        Phase(name="expand-1", epochs_frac=0.05, lr=0.01, kernels=ks, depths=ds, expands=big_e,
              subnets_per_step=4, sort_channels=True, warmup=False),
        Phase(name="expand-2", epochs_frac=0.2, lr=0.03, kernels=ks, depths=ds, expands=es, subnets_per_step=4,
              sort_channels=True),
    )


def _one_stage(space: SearchSpace) -> tuple[Phase, ...]:
    """Everything elastic from the first step, 2 random subnets per step, labels only (the PS ablation)."""
    return (
        Phase(name="elastic", epochs_frac=1.0, lr=0.1, kernels=space.kernel_choices, depths=space.depth_choices,
              expands=space.expand_choices, subnets_per_step=2, distill=False),
    )


def _bignas(space: SearchSpace) -> tuple[Phase, ...]:
    """BigNAS/AlphaNet: one phase, sandwich rule (largest, smallest, 2 random), in-place distillation."""
    return (
        Phase(name="sandwich", epochs_frac=1.0, lr=0.1, kernels=space.kernel_choices, depths=space.depth_choices,
              expands=space.expand_choices, subnets_per_step=4, sandwich=True, distill=False,
              inplace_distill=True),
    )


def _demo(space: SearchSpace) -> tuple[Phase, ...]:
    """Two phases: the full network, then everything elastic with the sandwich rule and KD (fast on CPU)."""
    return (
        Phase(name="full", epochs_frac=0.4, lr=0.1, distill=False),
        Phase(
            name="elastic", epochs_frac=0.6, lr=0.05, kernels=space.kernel_choices, depths=space.depth_choices,
            expands=space.expand_choices, subnets_per_step=3, sandwich=True, sort_channels=True,
        ),
    )


SCHEDULES: Registry[Callable[[SearchSpace], tuple[Phase, ...]]] = Registry("training schedule")
SCHEDULES.add("progressive-shrinking", _progressive_shrinking)
SCHEDULES.add("one-stage", _one_stage)
SCHEDULES.add("bignas", _bignas)
SCHEDULES.add("demo", _demo)

# A recipe names a schedule and the distillation loss that goes with it.
RECIPES: dict[str, dict[str, str]] = {
    "progressive-shrinking": {"schedule": "progressive-shrinking", "kd_loss": "kl"},
    "bignas": {"schedule": "bignas", "kd_loss": "alpha-divergence"},
    "one-stage": {"schedule": "one-stage", "kd_loss": "kl"},
    "demo": {"schedule": "demo", "kd_loss": "kl"},
}
# The recipe `hwnas train` and run files use when none is given (chosen by benchmarks/supernet.py).
DEFAULT_RECIPE = "progressive-shrinking"


def list_schedules() -> list[str]:
    return sorted(SCHEDULES.names())


def get_schedule(name: str, space: SearchSpace) -> tuple[Phase, ...]:
    """The phases of schedule ``name`` for ``space``; `UnknownNameError` (a KeyError) lists the known ones."""
    return SCHEDULES.get(name)(space)


def phase_epochs(phases: Sequence[Phase], total_epochs: int) -> list[int]:
    """Split ``total_epochs`` over phases by ``epochs_frac`` (largest remainder; each phase >= 1 epoch)."""
    fr = np.array([p.epochs_frac for p in phases], dtype=float)
    raw = np.round(fr / fr.sum() * total_epochs, 9)
    out = np.maximum(1, np.floor(raw)).astype(int)
    while out.sum() < total_epochs:
        out[int(np.argmax(raw - out))] += 1
    return [int(x) for x in out]


def sample_phase_subnet(space: SearchSpace, phase: Phase, rng: np.random.Generator, *, resolution: int) -> ArchConfig:
    """A random subnet in the part of the space this phase trains (other dimensions at their maximum)."""
    if phase.arch is not None:
        return replace(space.parse(phase.arch), resolution=resolution)
    ch = lambda choices, default: int(rng.choice(choices)) if choices else default
    depths = tuple(ch(phase.depths, space.max_depth) for _ in range(space.n_stages))
    ks = tuple(ch(phase.kernels, max(space.kernel_choices)) for _ in range(space.n_slots))
    es = tuple(ch(phase.expands, max(space.expand_choices)) for _ in range(space.n_slots))
    return space.canonical(ArchConfig(resolution, depths, ks, es))


def _phase_extreme(space: SearchSpace, phase: Phase, *, resolution: int, largest: bool) -> ArchConfig:
    if phase.arch is not None:
        return replace(space.parse(phase.arch), resolution=resolution)
    pick = max if largest else min
    return space.uniform(
        depth=pick(phase.depths) if phase.depths else space.max_depth,
        kernel=pick(phase.kernels) if phase.kernels else max(space.kernel_choices),
        expand=pick(phase.expands) if phase.expands else max(space.expand_choices),
        resolution=resolution,
    )


def _kept_expands(phases: Sequence[Phase], p_idx: int, space: SearchSpace) -> tuple[int, ...]:
    """Expand ratios (below the maximum) that earlier phases already trained: their channels stay put."""
    top = max(space.expand_choices)
    return tuple(sorted({e for p in phases[:p_idx] for e in (p.expands or ()) if e < top}))


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (written beside its results as ``train_config.json``).

    ``schedule`` names a built-in schedule; ``phases``, when given (e.g. from a TOML run file), replaces it.
    ``batch_size`` is the global batch: a distributed run gives each of N ranks ``batch_size / N`` images.
    ``kd_options`` are keyword options of ``kd_loss`` (e.g. ``alpha_min``, ``alpha_max``, ``clip``).
    ``feature_loss`` (``hint`` | ``attention`` | None) adds ``feature_ratio`` times a loss between the
    student's and the teacher's output of elastic stage ``feature_stage`` (negative counts from the end).
    ``teacher``: a ``supernet.pt`` whose largest subnet is the teacher of every ``distill`` phase (OFA loads a
    pre-trained full network); by default the teacher is the network at the end of the first phase.
    """

    dataset: str = "mnist"
    data_root: str | None = None
    space: str = "mnist"
    width_mult: float = 0.35  # the mnist space's default backbone (supernet.layers.DEFAULT_BACKBONES)
    schedule: str = "demo"
    phases: tuple[Phase, ...] | None = None
    epochs: int = 6
    batch_size: int = 32
    max_train_images: int | None = None
    # share of all images in val / test (`supernet.data.load_dataset`); val is the search's selection split
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 3e-5
    label_smoothing: float = 0.0
    kd_loss: str = "kl"
    kd_ratio: float = 1.0
    kd_temperature: float = 1.0
    kd_options: dict[str, float] = field(default_factory=dict)
    feature_loss: str | None = None
    feature_stage: int = -1
    feature_ratio: float = 1.0
    teacher: str | None = None
    warmup_steps: int = 5
    checkpoint_every_steps: int = 50
    eval_bn_images: int = 500
    threads: int = 1  # torch intra-op threads; >1 can be 30x *slower* on an oversubscribed shared VM
    seed: int = 0

    def __post_init__(self) -> None:
        if self.phases is not None:
            phases = tuple(p if isinstance(p, Phase) else Phase.from_json(p) for p in self.phases)
            if not phases:
                raise InputError("TrainConfig.phases: expected at least one phase (or null for the schedule)")
            object.__setattr__(self, "phases", phases)
        elif self.schedule not in SCHEDULES:
            raise InputError(f"--schedule {self.schedule!r}: known {list_schedules()}")
        object.__setattr__(self, "kd_options", dict(self.kd_options))
        _check_floats(self)
        if self.epochs < 1:
            raise InputError(f"--epochs: expected >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise InputError(f"--batch-size: expected >= 2 (BatchNorm), got {self.batch_size}")
        if self.kd_loss not in distillation_losses:
            raise InputError(f"--kd-loss {self.kd_loss!r}: known {sorted(distillation_losses)}")
        check_options(self.kd_loss, self.kd_options)
        if self.feature_loss is not None and self.feature_loss not in feature_losses:
            raise InputError(f"TrainConfig.feature_loss {self.feature_loss!r}: known {sorted(feature_losses)} or null")
        if self.threads < 1:
            raise InputError(f"--threads: expected >= 1, got {self.threads}")
        if self.max_train_images is not None and self.max_train_images < 1:
            raise InputError(f"max_train_images (--max-train-images): expected >= 1, got {self.max_train_images}")
        if self.warmup_steps < 0 or self.checkpoint_every_steps < 0 or self.eval_bn_images < 0:
            raise InputError("warmup_steps, checkpoint_every_steps and eval_bn_images: expected >= 0")

    def resolved_phases(self, space: SearchSpace) -> tuple[Phase, ...]:
        phases = self.phases if self.phases is not None else get_schedule(self.schedule, space)
        for p in phases:
            p.check_space(space)
        if phases[0].distill and self.teacher is None:
            raise InputError(
                f"phase 0 ({phases[0].name!r}): distill needs the network of an earlier phase as teacher; "
                "set distill = false (or use inplace_distill with sandwich)"
            )
        return phases

    def with_recipe(self, name: str) -> TrainConfig:
        """This config with the schedule and distillation loss of recipe ``name`` (see `RECIPES`)."""
        if name not in RECIPES:
            raise UnknownNameError(f"unknown recipe {name!r}; known recipes: {', '.join(sorted(RECIPES))}",
                                   kind="recipe", name=name, known=tuple(sorted(RECIPES)))
        recipe = RECIPES[name]
        return replace(self, phases=None, kd_options={}, schedule=recipe["schedule"], kd_loss=recipe["kd_loss"])

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["phases"] = None if self.phases is None else [p.to_json() for p in self.phases]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TrainConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise InputError(f"training config: unknown field(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
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
    world_size: int = 1
    rank_state_sha256: list[str] = field(default_factory=list)  # one per rank; all equal by construction

    def to_json(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir,
            "supernet_path": self.supernet_path,
            "phases": [asdict(p) for p in self.phases],
            "wall_time_s": self.wall_time_s,
            "resumed_from_step": self.resumed_from_step,
            "world_size": self.world_size,
            "rank_state_sha256": self.rank_state_sha256,
        }


# --------------------------------------------------------------------------- persistence
def save_supernet(net: OFASupernet, path: str | Path, *, extra: Mapping[str, Any] | None = None) -> Path:
    """Write config + weights (loadable with ``weights_only=True``), atomically."""
    payload = {"config": json.dumps(net.config()), "state_dict": net.state_dict(),
               "extra": json.dumps(json_safe(dict(extra or {})), allow_nan=False)}
    atomic_torch_save(path, payload)
    return Path(path)


def load_supernet_and_data(
    supernet_path: str | Path, *, dataset: str | None = None, data_root: str | Path | None = None
) -> tuple[OFASupernet, DataSplits]:
    """A saved supernet and the dataset splits it was trained on (same seed, subset and split fractions as recorded
    in its training config, so val and test are the images it never trained on).

    ``dataset`` / ``data_root`` override what the supernet's stored train config says.
    """
    net = load_supernet(supernet_path)
    payload = torch.load(supernet_path, map_location="cpu", weights_only=True)
    tc = json.loads(payload.get("extra", "{}")).get("train_config", {})
    root = data_root if data_root is not None else tc.get("data_root")
    data = load_dataset(dataset or tc.get("dataset", "mnist"), root=root, seed=tc.get("seed", 0),
                        max_train=tc.get("max_train_images"), val_fraction=tc.get("val_fraction", 0.1),
                        test_fraction=tc.get("test_fraction", 0.2))
    check_data_matches(net.backbone, data, supernet_path=supernet_path)
    return net, data


def load_supernet(path: str | Path) -> OFASupernet:
    """Load a supernet written by `save_supernet`; only tensors and strings are unpickled (weights_only)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(missing_file_message("supernet file", p, hint=" (train one with 'hwnas train')"))
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here means "not our file"
        raise InputError(f"supernet file {str(p)!r} could not be read as an hwnas supernet: {e}") from None
    if not isinstance(payload, dict) or "config" not in payload or "state_dict" not in payload:
        raise InputError(f"supernet file {str(p)!r}: expected keys 'config' and 'state_dict'")
    net = OFASupernet.build_from_config(json.loads(payload["config"]))
    net.load_state_dict(payload["state_dict"])
    return net.eval()


def check_data_matches(backbone: Backbone, data: DataSplits, *, supernet_path: str | Path) -> None:
    """Refuse a dataset whose class count or image channels differ from the supernet's head and stem (a top-1
    against the wrong labels would be silently meaningless; a channel mismatch fails inside conv2d)."""
    if data.num_classes != backbone.num_classes:
        raise InputError(
            f"--dataset {data.name!r} has {data.num_classes} classes but the supernet {str(supernet_path)!r} was "
            f"trained for {backbone.num_classes}; evaluate it on the dataset it was trained on"
        )
    if data.in_channels != backbone.in_channels:
        raise InputError(
            f"--dataset {data.name!r} has {data.in_channels}-channel images but the supernet {str(supernet_path)!r} "
            f"expects {backbone.in_channels}; evaluate it on the dataset it was trained on"
        )


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
    progress: ProgressArg = True,
    resume: bool = True,
    stop_after_steps: int | None = None,
    dist_env: DistEnv | None = None,
    device: str = "auto",
) -> TrainResult:
    """Train an OFA supernet per ``config``; checkpoints under ``out_dir`` and resumes from them.

    Writes ``out_dir/checkpoint.pt`` (every ``checkpoint_every_steps`` and at each epoch end),
    ``out_dir/supernet.pt`` (final), ``teacher.pt`` (the distillation teacher, when made from the first
    phase), ``train_config.json`` and ``train_log.json``. Re-running the same call
    after a kill continues from the last checkpoint. ``stop_after_steps`` ends the run early (for tests of
    resume), leaving a checkpoint.

    Distributed: ``dist_env`` defaults to `supernet.distributed.init_from_env()` (joins the process group
    when launched by torchrun with WORLD_SIZE > 1). Every rank must see the same ``out_dir`` (shared file
    system); only rank 0 writes files, every rank reads the checkpoint.

    ``device``: ``auto`` (a GPU when torch sees one, rank ``LOCAL_RANK``'s under torchrun), ``cpu`` or ``cuda``.
    Not part of the config: a checkpoint written on one device resumes on another.
    """
    env = init_from_env(device=device) if dist_env is None else dist_env
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(config, out_dir=out_dir, data=data, progress=progress if env.is_main else False,
                      resume=resume,
                      stop_after_steps=stop_after_steps, env=env)
    finally:
        torch.set_num_threads(prev_threads)


def _train(
    config: TrainConfig,
    *,
    out_dir: str | Path,
    data: DataSplits | None,
    progress: ProgressArg,
    resume: bool,
    stop_after_steps: int | None,
    env: DistEnv,
) -> TrainResult:
    t_start = time.perf_counter()
    out = Path(out_dir)
    if env.is_main:
        out.mkdir(parents=True, exist_ok=True)
    space = get_space(config.space)
    phases = config.resolved_phases(space)
    if config.batch_size % env.world_size:
        raise InputError(f"batch_size {config.batch_size} is not divisible by the world size {env.world_size}")
    local_batch = config.batch_size // env.world_size
    if data is None:
        data = load_dataset(config.dataset, root=config.data_root, seed=config.seed, max_train=config.max_train_images,
                            val_fraction=config.val_fraction, test_fraction=config.test_fraction)
    steps_per_epoch = num_batches(len(data.train), batch_size=local_batch, drop_last=True, world_size=env.world_size)
    if steps_per_epoch < 1:
        raise InputError(f"{len(data.train)} training images make no full batch of {config.batch_size}")
    device = env.device
    backbone = Backbone(in_channels=data.in_channels, num_classes=data.num_classes, width_mult=config.width_mult)
    torch.manual_seed(_rng_seed(config.seed, 999))
    net = OFASupernet(space=space, backbone=backbone).to(device)
    epochs_per_phase = phase_epochs(phases, config.epochs)
    opt = torch.optim.SGD(
        net.parameters(), lr=phases[0].lr, momentum=config.momentum, nesterov=True,
        weight_decay=config.weight_decay,
    )
    ckpt_path = out / "checkpoint.pt"
    cfg_json = json.loads(json.dumps(config.to_json()))  # lists, not tuples: compares equal to a reloaded one
    if env.is_main:
        atomic_write_json(out / "train_config.json", {
            **cfg_json, "resolved_phases": [p.to_json() for p in phases], "epochs_per_phase": epochs_per_phase,
            "world_size": env.world_size,
        })

    def make_teacher() -> OFASupernet:
        t = copy.deepcopy(net) if config.teacher is None else load_supernet(config.teacher).to(device)
        return t.eval().requires_grad_(False)

    teacher: OFASupernet | None = None
    start = (0, 0, 0)  # phase, epoch, step
    summaries: list[PhaseSummary] = []
    global_step = 0
    acc0: dict[str, float] = {}  # accumulators of the phase in progress at the checkpoint
    wall_before = 0.0
    if resume and ckpt_path.is_file():
        ck = _load_checkpoint(ckpt_path)
        saved_cfg = json.loads(ck["train_config"])
        if saved_cfg != cfg_json:
            diff = {k: (saved_cfg.get(k), cfg_json.get(k)) for k in cfg_json if saved_cfg.get(k) != cfg_json.get(k)}
            raise InputError(
                f"checkpoint {str(ckpt_path)!r} was written with a different training config {diff}; "
                "use another --out directory or --no-resume"
            )
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        if ck["teacher"] is not None:
            teacher = make_teacher()
            teacher.load_state_dict(ck["teacher"])
        start = (int(ck["phase"]), int(ck["epoch"]), int(ck["step"]))
        global_step = int(ck["global_step"])
        summaries = [PhaseSummary(**s) for s in json.loads(ck["summaries"])]
        acc0 = json.loads(ck.get("phase_accumulators", "{}"))
        wall_before = float(ck.get("wall_time_s", 0.0))
        log.info("resuming from %s at phase %d epoch %d step %d", ckpt_path, *start)
    starts = gather_objects((start, global_step), env)
    if len(set(starts)) != 1:
        raise RuntimeError(
            f"ranks start from different positions {starts}: every rank must see the same {str(ckpt_path)!r} "
            "(use a shared file system for --out)"
        )
    resumed_from = global_step

    def save_checkpoint(p: int, e: int, s: int) -> None:
        """Collective: all ranks average BN statistics; rank 0 writes."""
        average_buffers(net, env)
        if not env.is_main:
            return
        bad = [n for n, t in net.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise NonFiniteLossError(
                f"training diverged: weights {bad[:3]} became non-finite at phase {p} epoch {e} step {s}; "
                f"not overwriting the last good checkpoint {str(ckpt_path)!r}. Lower the learning rate, --kd-ratio "
                "or --kd-temperature, then re-run (it resumes from that checkpoint)"
            )
        payload = {
            "version": CHECKPOINT_VERSION,
            "train_config": json.dumps(cfg_json),
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "teacher": None if teacher is None else teacher.state_dict(),
            "phase": p, "epoch": e, "step": s, "global_step": global_step,
            "summaries": json.dumps([asdict(x) for x in summaries]),
            "phase_accumulators": json.dumps(acc),
            "wall_time_s": wall_before + time.perf_counter() - t_start,
        }
        atomic_torch_save(ckpt_path, payload)

    acc: dict[str, float] = {}
    kd_fn = distillation_losses[config.kd_loss]
    feat_fn = None if config.feature_loss is None else feature_losses[config.feature_loss]
    feat_stages = () if feat_fn is None else (config.feature_stage % space.n_stages,)

    def distill_loss(logits: torch.Tensor, feats: dict[int, torch.Tensor], t_logits: torch.Tensor,
                     t_feats: dict[int, torch.Tensor]) -> torch.Tensor:
        loss = torch.zeros((), device=logits.device)
        if config.kd_ratio > 0:
            loss = loss + config.kd_ratio * kd_fn(logits, t_logits, temperature=config.kd_temperature,
                                                   **config.kd_options)
        if feat_fn is not None:
            for st in feat_stages:
                loss = loss + config.feature_ratio * feat_fn(feats[st], t_feats[st])
        return loss

    kd_on = config.kd_ratio > 0 or feat_fn is not None
    with Tasks(progress, logger=log) as bar:
        for p_idx, phase in enumerate(phases):
            if p_idx < start[0]:
                continue
            n_epochs = epochs_per_phase[p_idx]
            total_steps = n_epochs * steps_per_epoch
            first_epoch = start[1] if p_idx == start[0] else 0
            if p_idx != start[0] or (start[1], start[2]) == (0, 0):
                # phase start (not a mid-phase resume)
                if phase.distill and teacher is None:
                    teacher = make_teacher()
                    if env.is_main and config.teacher is None:
                        save_supernet(teacher, out / "teacher.pt", extra={"train_config": cfg_json})
                if phase.sort_channels:
                    net.sort_channels(keep_expands=_kept_expands(phases, p_idx, space))
                # the momentum buffers belong to the old channel order; restart them with the phase
                opt.state.clear()
            task = bar.task(f"train {phase.name}", total=total_steps, completed=first_epoch * steps_per_epoch)
            t_phase, imgs, loss_sum, loss_n = time.perf_counter(), 0, 0.0, 0
            phase_s_before = 0.0
            if p_idx == start[0] and acc0:  # mid-phase resume: the phase's summary counts the steps before too
                imgs, loss_sum, loss_n = int(acc0["imgs"]), float(acc0["loss_sum"]), int(acc0["loss_n"])
                phase_s_before = float(acc0.get("seconds", 0.0))
            warmup = config.warmup_steps if phase.warmup else 0
            for epoch in range(first_epoch, n_epochs):
                first_step = start[2] if (p_idx, epoch) == start[:2] else 0
                g = torch.Generator().manual_seed(_rng_seed(config.seed, p_idx, epoch))
                batches = iterate_batches(
                    data.train, batch_size=local_batch, mean=data.mean, std=data.std, generator=g,
                    augment=True, hflip=data.hflip, drop_last=True, rank=env.rank, world_size=env.world_size,
                )
                net.train()
                for step, (x, y) in enumerate(batches):
                    if step < first_step:
                        continue
                    rng = np.random.default_rng(_rng_seed(config.seed, p_idx, epoch, step))
                    # dropout differs per rank (different images); subnet sampling (rng) does not
                    torch.manual_seed(_rng_seed(config.seed, p_idx, epoch, step, 1, *([env.rank] if env.rank else [])))
                    res = int(rng.choice(space.resolutions)) if phase.elastic_resolution else max(space.resolutions)
                    xr, y = resize_batch(x, res).to(device), y.to(device)
                    cfgs = _step_subnets(space, phase, rng, res)
                    lr = _lr_at(phase, epoch * steps_per_epoch + step, total_steps, warmup)
                    for group in opt.param_groups:
                        group["lr"] = lr
                    t_logits: torch.Tensor | None = None
                    t_feats: dict[int, torch.Tensor] = {}
                    if phase.distill and teacher is not None and kd_on:
                        with torch.no_grad(), teacher.activate(teacher.space.largest(resolution=res)):
                            t_logits, t_feats = teacher.forward_features(xr, feat_stages)
                    opt.zero_grad(set_to_none=True)
                    step_loss = 0.0
                    for i, cfg in enumerate(cfgs):
                        with net.activate(cfg):
                            logits, feats = net.forward_features(xr, feat_stages)
                        if phase.inplace_distill and i > 0 and kd_on:
                            # in-place distillation: students learn from the largest's logits only
                            assert t_logits is not None
                            loss = distill_loss(logits, feats, t_logits, t_feats)
                        else:
                            loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                            if t_logits is not None and not phase.inplace_distill:
                                loss = loss + distill_loss(logits, feats, t_logits, t_feats)
                        if phase.inplace_distill and i == 0:  # the sandwich puts the largest first
                            t_logits = logits.detach()
                            t_feats = {k: v.detach() for k, v in feats.items()}
                        loss_value = float(loss.detach())
                        if not math.isfinite(loss_value):
                            raise NonFiniteLossError(
                                f"training diverged: the loss became {loss_value} in phase {phase.name!r} (epoch "
                                f"{epoch}, step {step}, subnet {cfg}); the last good checkpoint "
                                f"{str(ckpt_path)!r} is kept (this step was not applied). Lower the learning rate, "
                                "--kd-ratio or --kd-temperature, then re-run"
                            )
                        loss.backward()
                        step_loss += loss_value
                    allreduce_gradients(net.parameters(), env)
                    opt.step()
                    global_step += 1
                    imgs += x.shape[0] * env.world_size
                    loss_sum += step_loss / len(cfgs)
                    loss_n += 1
                    acc.update(imgs=imgs, loss_sum=loss_sum, loss_n=loss_n,
                               seconds=phase_s_before + time.perf_counter() - t_phase)
                    if bar.enabled:
                        rate = imgs / max(1e-9, time.perf_counter() - t_phase)
                        task.advance(1, info=f"loss {loss_sum / loss_n:.3f}  {rate:.0f} img/s")
                    if stop_after_steps is not None and global_step - resumed_from >= stop_after_steps:
                        save_checkpoint(p_idx, epoch, step + 1)
                        return TrainResult(str(out), "", summaries, wall_before + time.perf_counter() - t_start,
                                           resumed_from, world_size=env.world_size)
                    if config.checkpoint_every_steps and global_step % config.checkpoint_every_steps == 0:
                        save_checkpoint(p_idx, epoch, step + 1)
                if epoch + 1 < n_epochs:
                    save_checkpoint(p_idx, epoch + 1, 0)
            elapsed = phase_s_before + time.perf_counter() - t_phase
            average_buffers(net, env)
            if env.is_main:
                # phase summary: BN-recalibrated val accuracy of the phase's extremes
                res_max = max(space.resolutions)
                big = evaluate(net, _phase_extreme(space, phase, resolution=res_max, largest=True), data,
                               bn_images=config.eval_bn_images, seed=config.seed)
                small = evaluate(net, _phase_extreme(space, phase, resolution=min(space.resolutions),
                                                     largest=False), data, bn_images=config.eval_bn_images,
                                 seed=config.seed)
                summaries.append(
                    PhaseSummary(phase.name, n_epochs, loss_n, imgs / max(elapsed, 1e-9),
                                 loss_sum / max(1, loss_n), big.top1, small.top1)
                )
                task.update(info=f"val top-1 largest {big.top1:.3f} / smallest {small.top1:.3f}")
            acc.clear()
            save_checkpoint(p_idx + 1, 0, 0)
    digests = gather_objects(state_digest(net), env)
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks ended with different weights (state sha256 per rank: {digests})")
    final = str(out / "supernet.pt")
    if env.is_main:
        save_supernet(net, final, extra={"train_config": cfg_json})
    result = TrainResult(str(out), final, summaries, wall_before + time.perf_counter() - t_start, resumed_from,
                         world_size=env.world_size, rank_state_sha256=digests)
    if env.is_main:
        atomic_write_json(out / "train_log.json", result.to_json())
    return result


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """The resume checkpoint, or `InputError` saying how to start over when it is unreadable."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, wrong file, unpickling refused: all "corrupt"
        raise InputError(
            f"checkpoint {str(path)!r} cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            "re-run with --no-resume to start over (or delete the file)"
        ) from None
    need = ("train_config", "model", "optimizer", "teacher", "phase", "epoch", "step", "global_step", "summaries")
    if not isinstance(ck, dict) or any(k not in ck for k in need):
        raise InputError(f"checkpoint {str(path)!r} is not an hwnas training checkpoint (missing keys); re-run with "
                         "--no-resume to start over")
    return ck


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
