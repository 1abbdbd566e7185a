"""Short fine-tuning of a static model under knowledge distillation from a fixed teacher (pruning recovery).

Loss per batch (Hinton et al. 2015): ``(1 - alpha) CE(student, y) + alpha T^2 KL(teacher || student)`` with the
teacher in eval mode, never updated. Adam with a cosine decay to 0 over the run. ``after_step`` is called after
every optimizer step with the step index: pruning uses it to re-apply masks (magnitude pruning) or to raise the
sparsity on a schedule, so the pruned weights stay zero through training.

The student is trained in train mode (BN layers, if any, update their statistics; dropout is active). When
``bn_images`` > 0 the BN statistics are re-estimated on that many un-augmented training images afterwards
(`supernet.evaluate.recalibrate_bn`), as for any extracted subnet. The student is returned in eval mode.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from supernet.data import DataSplits

__all__ = ["FinetuneConfig", "FinetuneResult", "kd_finetune"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """One fine-tuning run.

    Attributes:
        epochs: passes over ``max_train_images`` training images (fractions allowed).
        lr: peak Adam learning rate, cosine decay to 0.
        batch_size: images per step.
        kd_ratio: alpha, the weight of distillation from the teacher (0: plain cross-entropy).
        kd_temperature: T.
        max_train_images: seeded subset of the train split (None: all of it).
        augment: shift augmentation of `supernet.data.iterate_batches`.
        bn_images: training images to re-estimate BN statistics on afterwards (0: keep what training left).
        seed: data order, subset and augmentation.
    """

    epochs: float = 1.0
    lr: float = 5e-4
    batch_size: int = 32
    kd_ratio: float = 0.5
    kd_temperature: float = 2.0
    max_train_images: int | None = None
    augment: bool = True
    bn_images: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.epochs > 0 or not self.lr > 0:
            raise ValueError(f"FinetuneConfig: epochs and lr must be > 0, got {self.epochs} and {self.lr}")
        if self.batch_size < 1:
            raise ValueError(f"FinetuneConfig.batch_size: expected >= 1, got {self.batch_size}")
        if not 0.0 <= self.kd_ratio <= 1.0 or not self.kd_temperature > 0:
            raise ValueError("FinetuneConfig: kd_ratio must be in [0, 1] and kd_temperature > 0")
        if self.max_train_images is not None and self.max_train_images < 1:
            raise ValueError(f"FinetuneConfig.max_train_images: expected >= 1 or None, got {self.max_train_images}")
        if self.bn_images < 0:
            raise ValueError(f"FinetuneConfig.bn_images: expected >= 0, got {self.bn_images}")

    def scaled(self, share: float) -> FinetuneConfig:
        """The same recipe for ``share`` of the epochs (iterative pruning splits one budget over its steps)."""
        return FinetuneConfig(**{**asdict(self), "epochs": self.epochs * share})


@dataclass(frozen=True)
class FinetuneResult:
    steps: int
    images: int
    seconds: float
    loss_first: float
    loss_last: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def total_steps(n_train: int, config: FinetuneConfig) -> int:
    """Optimizer steps of a run on ``n_train`` images (after ``max_train_images``)."""
    n = n_train if config.max_train_images is None else min(n_train, config.max_train_images)
    return max(1, math.ceil(config.epochs * max(1, n // config.batch_size)))


def kd_finetune(
    student: nn.Module,
    teacher: nn.Module | None,
    data: DataSplits,
    *,
    config: FinetuneConfig,
    resolution: int,
    after_step: Callable[[int], None] | None = None,
    params: list[nn.Parameter] | None = None,
) -> FinetuneResult:
    """Train ``student`` in place (see the module docstring); ``params`` defaults to its trainable parameters.

    ``teacher`` None (or ``kd_ratio`` 0) trains on labels only. Returns steps, images, seconds and the mean loss
    of the first and last tenth of the steps.
    """
    from supernet.data import ImageDataset, iterate_batches
    from supernet.evaluate import calibration_batches, recalibrate_bn
    from supernet.losses import kl_distillation

    g = torch.Generator().manual_seed(config.seed)
    train = data.train
    if config.max_train_images is not None and config.max_train_images < len(train):
        idx = torch.randperm(len(train), generator=g)[: config.max_train_images]
        train = ImageDataset(images=train.images[idx], labels=train.labels[idx])
    total = total_steps(len(train), config)
    alpha, t = (config.kd_ratio if teacher is not None else 0.0), config.kd_temperature
    if teacher is not None:
        teacher.eval()
    trainable = params if params is not None else [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    losses: list[float] = []
    step = images = 0
    t0 = time.perf_counter()
    student.train()
    for _epoch in range(math.ceil(total / max(1, len(train) // config.batch_size)) + 1):
        for x, y in iterate_batches(train, batch_size=config.batch_size, mean=data.mean, std=data.std, generator=g,
                                    augment=config.augment, resolution=resolution, drop_last=True):
            logits = student(x)
            loss = (1 - alpha) * F.cross_entropy(logits, y)
            if alpha > 0 and teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(x)
                loss = loss + alpha * kl_distillation(logits, t_logits, temperature=t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step(step)
            losses.append(float(loss.detach()))
            step += 1
            images += x.shape[0]
            if step >= total:
                break
        if step >= total:
            break
    student.zero_grad(set_to_none=True)  # no stale gradients on the returned model (exporters copy them)
    if config.bn_images > 0 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in student.modules()):
        recalibrate_bn(student, calibration_batches(data, n_images=config.bn_images, resolution=resolution,
                                                    seed=config.seed))
    student.eval()
    seconds = time.perf_counter() - t0
    tenth = max(1, len(losses) // 10)
    first, last = sum(losses[:tenth]) / tenth, sum(losses[-tenth:]) / tenth
    log.info("fine-tune: %d steps, %d images, %.1f s, loss %.3f -> %.3f", step, images, seconds, first, last)
    return FinetuneResult(steps=step, images=images, seconds=seconds, loss_first=first, loss_last=last)
