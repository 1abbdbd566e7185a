"""BN recalibration and evaluation of sub-networks.

A subnet taken from a supernet inherits batch-norm statistics accumulated over *all* subnets seen in training,
which are wrong for it; OFA re-estimates them on a few thousand training images before every evaluation.
Here that is a function on any model with plain ``nn.BatchNorm2d`` layers: `evaluate` extracts the static
subnet, recalibrates its BN on ``bn_images`` un-augmented training images at the subnet's resolution, then
measures top-1 on the requested split. The supernet is never modified.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from supernet.data import DataSplits, ImageDataset, iterate_batches
from supernet.layers import StaticSubnet
from supernet.model import OFASupernet
from supernet.space import ArchConfig

__all__ = ["EvalResult", "accuracy", "calibration_batches", "evaluate", "recalibrate_bn", "recalibrated_subnet"]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Replace every BN layer's running mean/var with the exact average over ``batches``; return images seen.

    Uses momentum=None (cumulative moving average), so the result does not depend on the previous stats.
    The model is left in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(bn, bn.momentum) for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    seen = 0
    try:
        for x in batches:
            model(x)
            seen += x.shape[0]
    finally:
        for bn, m in saved:
            bn.momentum = m
        model.eval()
    if seen == 0 and bns:
        raise ValueError("recalibrate_bn: got no batches; BN statistics would be empty")
    return seen


@torch.no_grad()
def accuracy(
    model: nn.Module, ds: ImageDataset, *, mean: tuple[float, ...], std: tuple[float, ...], resolution: int,
    batch_size: int = 256,
) -> float:
    """Top-1 accuracy of ``model`` on ``ds`` resized to ``resolution`` (eval mode, no augmentation)."""
    model.eval()
    correct = 0
    for x, y in iterate_batches(ds, batch_size=batch_size, mean=mean, std=std, resolution=resolution):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, len(ds))


def calibration_batches(
    data: DataSplits, *, n_images: int, resolution: int, seed: int = 0, batch_size: int = 256
) -> Iterator[torch.Tensor]:
    """Un-augmented batches of a seeded random subset of ``n_images`` training images at ``resolution``."""
    if n_images < 1:
        raise ValueError(f"calibration: n_images must be >= 1, got {n_images}")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train), generator=g)[: min(n_images, len(data.train))]
    calib = ImageDataset(images=data.train.images[idx], labels=data.train.labels[idx])
    for x, _ in iterate_batches(calib, batch_size=batch_size, mean=data.mean, std=data.std, resolution=resolution):
        yield x


def recalibrated_subnet(
    supernet: OFASupernet, cfg: ArchConfig, data: DataSplits, *, bn_images: int, seed: int = 0
) -> StaticSubnet:
    """The static subnet of ``cfg`` with BN statistics re-estimated on ``bn_images`` training images (eval mode)."""
    subnet = supernet.get_active_subnet(cfg)
    recalibrate_bn(subnet, calibration_batches(data, n_images=bn_images, resolution=cfg.resolution, seed=seed))
    return subnet


@dataclass(frozen=True)
class EvalResult:
    arch: str
    split: str
    top1: float
    bn_images: int
    images: int = 0  # images scored


def evaluate(
    supernet: OFASupernet,
    cfg: ArchConfig,
    data: DataSplits,
    *,
    split: str = "val",
    bn_images: int = 1000,
    batch_size: int = 256,
    seed: int = 0,
    max_images: int | None = None,
) -> EvalResult:
    """Top-1 of subnet ``cfg`` on ``data.<split>`` after recalibrating its BN on ``bn_images`` train images.

    ``max_images``: score only the first ``max_images`` images of the split (splits are stored in a seeded random
    order, so a prefix is class-balanced in expectation); None = all of it. ``EvalResult.images`` says how many.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split {split!r}: expected 'train', 'val' or 'test'")
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images: expected >= 1 or None, got {max_images}")
    subnet = supernet.get_active_subnet(cfg)
    seen = recalibrate_bn(
        subnet,
        calibration_batches(data, n_images=bn_images, resolution=cfg.resolution, seed=seed, batch_size=batch_size),
    )
    ds = getattr(data, split)
    if max_images is not None and max_images < len(ds):
        ds = ImageDataset(images=ds.images[:max_images], labels=ds.labels[:max_images])
    top1 = accuracy(subnet, ds, mean=data.mean, std=data.std, resolution=cfg.resolution, batch_size=batch_size)
    return EvalResult(arch=str(cfg), split=split, top1=top1, bn_images=seen, images=len(ds))
